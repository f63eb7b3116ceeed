//! The one interface every system under test implements, and the timed loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// A system that stores events of `N` payload bytes.
pub trait Sink<const N: usize> {
    /// One event: read the TSC, reserve room for a header and the payload (`8 + N`
    /// bytes; `4 + N` for ringbuf's CTF), store both, commit. The operation measured.
    fn event(&mut self, payload: &[u8; N]);

    /// How many events fit before [`Sink::drain`] must run (`u64::MAX` when the
    /// system overwrites its oldest data and never needs draining).
    fn room(&self) -> u64;

    /// Empties the system from the consumer side, in the calling thread. Never timed.
    fn drain(&mut self);

    /// Events the system failed to store so far (must stay 0 for a fair figure).
    fn lost(&self) -> u64;
}

/// Writes `iters` events into `sink` and returns the time spent writing them.
///
/// Events are written in batches of at most [`Sink::room`]; between batches the
/// sink is drained, untimed, so that systems that must be drained (discard mode,
/// SPSC queues, bounded channels) are measured on their write path only, never on a
/// full-buffer rejection. Systems that overwrite are timed in one batch.
pub fn time_events<const N: usize, S: Sink<N>>(
    sink: &mut S,
    payload: &[u8; N],
    iters: u64,
) -> Duration {
    let room = sink.room().max(1);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(room);
        let start = Instant::now();
        for _ in 0..batch {
            sink.event(black_box(payload));
        }
        total += start.elapsed();
        left -= batch;
        if room != u64::MAX {
            sink.drain();
        }
    }
    total
}

/// Prints a warning if `sink` lost events: its figure would then be too low.
pub fn check_lost<const N: usize, S: Sink<N>>(name: &str, sink: &S) {
    let lost = sink.lost();
    if lost != 0 {
        eprintln!("warning: {name}: {lost} events were not stored; its figure is invalid");
    }
}

/// A sink on cache lines of its own (128 bytes: a line and its adjacent-line
/// prefetch pair), so that the sinks of different threads, side by side in a `Vec`,
/// do not falsely share the lines their writers update on every event (a floor's
/// position, a ringbuf writer's nesting counter).
#[repr(align(128))]
pub struct Alone<S>(pub S);

impl<const N: usize, S: Sink<N>> Sink<N> for Alone<S> {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        self.0.event(payload);
    }
    fn room(&self) -> u64 {
        self.0.room()
    }
    fn drain(&mut self) {
        self.0.drain();
    }
    fn lost(&self) -> u64 {
        self.0.lost()
    }
}

#[cfg(test)]
mod tests {
    use ringbuf_core::ctf::Ctf;
    use ringbuf_core::{Mode, RawRecords};

    use super::*;
    use crate::ours::Format;
    use crate::peers::{new_bbqueue, BbqueuePeer, MpscPeer, RtrbPeer};
    use crate::{config, payload, Memory, Ringbuf};

    /// Three batches' worth, so that a drain between batches is exercised.
    fn no_loss<const N: usize, S: Sink<N>>(sink: &mut S) {
        let events = sink.room().saturating_mul(3).min(1 << 20);
        time_events(sink, &payload::<N>(), events);
        assert_eq!(sink.lost(), 0);
    }

    fn ringbuf<const N: usize, K: Format>() {
        let mut mem = Memory::new(&config(Mode::Discard));
        no_loss::<N, _>(&mut Ringbuf::<_, K>::shared(
            &mut mem,
            config(Mode::Discard),
        ));
    }

    #[test]
    fn batches_that_fit_are_never_refused() {
        ringbuf::<8, RawRecords>();
        ringbuf::<256, RawRecords>();
        ringbuf::<8, Ctf>();
        ringbuf::<256, Ctf>();
        no_loss::<8, _>(&mut RtrbPeer::new());
        no_loss::<256, _>(&mut RtrbPeer::new());
        let queue = new_bbqueue();
        no_loss::<8, _>(&mut BbqueuePeer::new(&queue));
        no_loss::<256, _>(&mut BbqueuePeer::new(&queue));
        no_loss::<16, _>(&mut MpscPeer::<16>::new());
    }
}
