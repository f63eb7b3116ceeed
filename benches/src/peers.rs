//! The peers, each on its nearest equivalent of "store one event", as [`Sink`]s.
//!
//! Like for like: every peer reads the TSC once per event and stores the same
//! `8 + N` bytes (the header of [`record_header`] and the payload) into the same
//! amount of memory ([`CAPACITY`] bytes) as ringbuf and the floor.

use std::mem::MaybeUninit;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bbqueue::nicknames::YakiNiku;
use bbqueue::prod_cons::stream::{StreamConsumer, StreamProducer};
use bbqueue::traits::storage::BoxedSlice;
use crossbeam_queue::ArrayQueue;

use crate::{now, record_header, Sink, CAPACITY};

/// One event as a fixed-size element: header and payload, `8 + N` bytes, align 1.
pub type Record<const N: usize> = ([u8; 8], [u8; N]);

/// Elements of `8 + N` bytes that fit in [`CAPACITY`].
const fn elements<const N: usize>() -> usize {
    CAPACITY / (8 + N)
}

/// crossbeam's `ArrayQueue::force_push`: a bounded MPMC queue that, when full,
/// replaces its oldest element: the nearest peer to overwrite mode.
pub struct ArrayQueuePeer<const N: usize> {
    queue: ArrayQueue<Record<N>>,
}

impl<const N: usize> ArrayQueuePeer<N> {
    /// A queue of [`CAPACITY`] bytes of records.
    pub fn new() -> Self {
        Self {
            queue: ArrayQueue::new(elements::<N>()),
        }
    }
}

impl<const N: usize> Default for ArrayQueuePeer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Sink<N> for ArrayQueuePeer<N> {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        let old = self.queue.force_push((record_header(now(), N), *payload));
        std::hint::black_box(old);
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        0
    }
}

/// std's bounded `mpsc::sync_channel` (`try_send`): the standard library's MPSC
/// queue, preallocated like a ring buffer.
pub struct MpscPeer<const N: usize> {
    tx: SyncSender<Record<N>>,
    rx: Receiver<Record<N>>,
    lost: u64,
}

impl<const N: usize> MpscPeer<N> {
    /// A channel of [`CAPACITY`] bytes of records.
    pub fn new() -> Self {
        let (tx, rx) = sync_channel(elements::<N>());
        Self { tx, rx, lost: 0 }
    }
}

impl<const N: usize> Default for MpscPeer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Sink<N> for MpscPeer<N> {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        if self
            .tx
            .try_send((record_header(now(), N), *payload))
            .is_err()
        {
            self.lost += 1;
        }
    }
    fn room(&self) -> u64 {
        elements::<N>() as u64
    }
    fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }
    fn lost(&self) -> u64 {
        self.lost
    }
}

/// rtrb (SPSC ring of bytes): `write_chunk_uninit(8 + N)`, copy, `commit_all`.
pub struct RtrbPeer {
    tx: rtrb::Producer<u8>,
    rx: rtrb::Consumer<u8>,
    lost: u64,
}

impl RtrbPeer {
    /// A ring of [`CAPACITY`] bytes.
    pub fn new() -> Self {
        let (tx, rx) = rtrb::RingBuffer::new(CAPACITY);
        Self { tx, rx, lost: 0 }
    }
}

impl Default for RtrbPeer {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies `src` into the start of `dst` (which is at least as long).
#[inline(always)]
fn copy_uninit(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert!(dst.len() >= src.len());
    // SAFETY: `dst` has room for `src.len()` bytes (checked), `u8` and
    // `MaybeUninit<u8>` have the same layout, and the two borrows cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), src.len()) }
}

impl<const N: usize> Sink<N> for RtrbPeer {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        let header = record_header(now(), N);
        let Ok(mut chunk) = self.tx.write_chunk_uninit(8 + N) else {
            self.lost += 1;
            return;
        };
        let (first, second) = chunk.as_mut_slices();
        if first.len() >= 8 + N {
            copy_uninit(first, &header);
            copy_uninit(&mut first[8..], payload);
        } else {
            // The chunk wraps around the end of the ring (rare).
            let bytes = header.iter().chain(payload.iter());
            for (dst, &b) in first.iter_mut().chain(second.iter_mut()).zip(bytes) {
                dst.write(b);
            }
        }
        // SAFETY: all `8 + N` slots of the chunk were written above.
        unsafe { chunk.commit_all() }
    }
    fn room(&self) -> u64 {
        (CAPACITY / (8 + N)) as u64
    }
    fn drain(&mut self) {
        let n = self.rx.slots();
        if let Ok(chunk) = self.rx.read_chunk(n) {
            chunk.commit_all();
        }
    }
    fn lost(&self) -> u64 {
        self.lost
    }
}

/// bbqueue's heap, atomic, polling queue (the "YakiNiku" flavour of 0.7).
pub type Bbq = YakiNiku;

/// A bbqueue of [`CAPACITY`] bytes, for [`BbqueuePeer`] to borrow.
pub fn new_bbqueue() -> Bbq {
    Bbq::new_with_storage(BoxedSlice::new(CAPACITY))
}

/// bbqueue (SPSC bip-buffer of bytes): stream `grant_exact(8 + N)`, copy,
/// `commit(8 + N)`. It borrows its queue: the `Arc` handles would add an atomic
/// reference-count increment per grant, which this comparison should not charge.
pub struct BbqueuePeer<'a> {
    tx: StreamProducer<&'a Bbq>,
    rx: StreamConsumer<&'a Bbq>,
    lost: u64,
}

impl<'a> BbqueuePeer<'a> {
    /// Producer and consumer of `queue` (see [`new_bbqueue`]).
    pub fn new(queue: &'a Bbq) -> Self {
        Self {
            tx: queue.stream_producer(),
            rx: queue.stream_consumer(),
            lost: 0,
        }
    }
}

impl<const N: usize> Sink<N> for BbqueuePeer<'_> {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        let header = record_header(now(), N);
        let Ok(mut grant) = self.tx.grant_exact(8 + N) else {
            self.lost += 1;
            return;
        };
        grant[..8].copy_from_slice(&header);
        grant[8..8 + N].copy_from_slice(payload);
        grant.commit(8 + N);
    }
    fn room(&self) -> u64 {
        // A bip buffer needs contiguous room: half of it is always safe after a drain.
        (CAPACITY / 2 / (8 + N)) as u64
    }
    fn drain(&mut self) {
        while let Ok(grant) = self.rx.read() {
            let n = grant.len();
            grant.release(n);
        }
    }
    fn lost(&self) -> u64 {
        self.lost
    }
}
