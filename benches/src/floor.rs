//! The hardware floor: what any tracer must do per event, with nothing else.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{now, record_header, Sink, CAPACITY};
use ringbuf_core::{Clock, Tsc};

/// Reads the TSC (with the engine's clock, as every system here) and stores the
/// 8-byte header and the payload into a plain array of [`CAPACITY`] bytes, wrapping
/// at the end: the floor.
pub struct Floor {
    array: Vec<u8>,
    pos: usize,
}

impl Floor {
    /// An array of [`CAPACITY`] bytes, as much as every other system gets.
    pub fn new() -> Self {
        Self {
            array: vec![0; CAPACITY],
            pos: 0,
        }
    }

    /// One event.
    #[inline(always)]
    pub fn write<const N: usize>(&mut self, payload: &[u8; N]) {
        self.write_at(now(), payload);
    }

    /// One event with timestamp `ts`, read by the caller (with whichever clock).
    #[inline(always)]
    pub fn write_at<const N: usize>(&mut self, ts: u64, payload: &[u8; N]) {
        let len = 8 + N;
        if self.pos + len > self.array.len() {
            self.pos = 0;
        }
        self.array[self.pos..self.pos + 8].copy_from_slice(&record_header(ts, N));
        self.array[self.pos + 8..self.pos + len].copy_from_slice(payload);
        self.pos += len.next_multiple_of(8);
        // The stores must happen, as a tracer's would: the array escapes.
        std::hint::black_box(&mut self.array);
    }
}

impl Default for Floor {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Sink<N> for Floor {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        self.write(payload);
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        0
    }
}

/// The floor with a bare `rdtsc` (no `lfence`s, see [`RdtscBare`]): the least any
/// tracer must do per event, one TSC read and the stores of a [`Floor`].
#[derive(Default)]
pub struct BareFloor(Floor);

impl BareFloor {
    /// An array of [`CAPACITY`] bytes, as [`Floor::new`].
    pub fn new() -> Self {
        Self(Floor::new())
    }

    /// One event.
    #[inline(always)]
    pub fn write<const N: usize>(&mut self, payload: &[u8; N]) {
        self.0.write_at(rdtsc_bare(), payload);
    }
}

impl<const N: usize> Sink<N> for BareFloor {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        self.write(payload);
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        0
    }
}

/// A bare `rdtsc`, without the `lfence`s of the engine's ordered read: the read
/// ringbuf's rseq and per-thread paths make ([`Clock::now_unordered`]).
#[inline(always)]
pub fn rdtsc_bare() -> u64 {
    Tsc.now_unordered()
}

/// Context for the floor: the TSC read alone (the engine's, fenced), its result
/// kept (no stores).
#[derive(Default)]
pub struct TscOnly;

impl<const N: usize> Sink<N> for TscOnly {
    #[inline(always)]
    fn event(&mut self, _payload: &[u8; N]) {
        std::hint::black_box(now());
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        0
    }
}

/// Context for the floor: a bare `rdtsc`, without the `lfence`s the engine's clock
/// puts around it (so that a record's time is read between its position's load and
/// its CAS). The difference to [`TscOnly`] is what that ordering costs.
#[derive(Default)]
pub struct RdtscBare;

impl<const N: usize> Sink<N> for RdtscBare {
    #[inline(always)]
    fn event(&mut self, _payload: &[u8; N]) {
        std::hint::black_box(rdtsc_bare());
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        0
    }
}

/// The floor plus one LOCK-prefixed CAS per event on a word of its own: the cost of
/// the one atomic read-modify-write a multi-writer reservation cannot avoid.
#[derive(Default)]
pub struct LockFloor {
    floor: Floor,
    word: AtomicU64,
}

impl LockFloor {
    /// A floor and a word at 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<const N: usize> Sink<N> for LockFloor {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        let v = self.word.load(Ordering::Relaxed);
        // AcqRel, as a reservation's CAS; the result is irrelevant (one writer).
        let _ =
            self.word
                .compare_exchange(v, v + 8 + N as u64, Ordering::AcqRel, Ordering::Relaxed);
        self.floor.write(payload);
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        0
    }
}
