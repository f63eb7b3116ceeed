//! The control block the algorithm runs on.
//!
//! The engine is generic over [`Control`]: the same code runs over a mapped region
//! ([`crate::Region`]), over loom atomics in the model checker, or over any other
//! storage that provides these words and bytes.

use crate::config::Config;
use crate::word::Word;

/// Words written by writers on every event. They share one cache line.
#[repr(C)]
#[derive(Debug, Default)]
pub struct WriterWords<W> {
    /// The reserve position: one CAS per event moves it forward.
    pub write: W,
    /// Timestamp of the latest reservation, for compact event headers. Racy by
    /// design: a stale value may only make a header larger (see `Client`).
    pub last_timestamp: W,
    /// Sequence-written buffers only (docs/ARCHITECTURE.md §10): the `write` value
    /// `last_timestamp` belongs to. Stored before `last_timestamp` by every actor
    /// that moves `write`, so `last_at == write` vouches for `last_timestamp`
    /// being the timestamp of the record that ends at `write`.
    pub last_at: W,
}

/// Loss counters, each kept apart. Written by writers only, on slow paths.
#[repr(C)]
#[derive(Debug, Default)]
pub struct LossWords<W> {
    /// Events dropped in discard mode because the reader had not freed the next
    /// sub-buffer.
    pub full: W,
    /// Events dropped because the next sub-buffer's previous lap was not fully
    /// committed and delivered (a stuck, dead or deeply nested writer).
    pub wrap: W,
    /// Events refused because they are larger than a sub-buffer's payload.
    pub big: W,
    /// Events dropped because the writer was nested deeper than the limit.
    pub nested: W,
    /// Sub-buffers overwritten before the reader got them (overwrite mode).
    pub overrun: W,
    /// Events dropped on the rseq path by a signal handler that interrupted the
    /// thread holding the buffer's fence for a switch (docs/ARCHITECTURE.md §10).
    pub fenced: W,
}

/// Words the reader modifies (always full atomics).
#[repr(C)]
#[derive(Debug, Default)]
pub struct ReaderWords<S> {
    /// The reader position. In overwrite mode writers push it forward too.
    pub consumed: S,
    /// Physical index of the sub-buffer the reader owns (overwrite mode).
    pub spare: S,
    /// Non-zero while a [`crate::Reader`] is attached; makes the reader unique.
    pub attached: S,
    /// Sequence-written buffers only (§10): non-zero while a remote actor (the
    /// consumer's switch) owns the writer words; sequences check it is 0.
    pub fence: S,
}

/// Per-slot words (one slot per logical sub-buffer). The first cache line holds
/// every word a reservation or commit touches; `discarded` (stored and read once
/// per packet) spills into a second one.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct SlotWords<W, S> {
    /// Bytes committed into this slot, accumulated over all laps and never reset:
    /// lap `L` is complete exactly when `commit == (L + 1) * S`.
    pub commit: W,
    /// The committed prefix: a commit count at which everything reserved so far in
    /// the slot had been committed. For crash recovery.
    pub prefix: W,
    /// A [`PrefixStamp`] stored just before `prefix`.
    pub prefix_stamp_pre: W,
    /// The same [`PrefixStamp`] stored just after `prefix`: whichever of the two
    /// matches `prefix` bounds its records' timestamps.
    pub prefix_stamp_post: W,
    /// Overwrite mode: `{lap tag, noref flag, physical index}` of the sub-buffer
    /// that backs this slot (see [`crate::id`]).
    pub id: S,
    /// The commit count at the last delivery (`L * S` before lap `L` is delivered);
    /// `L * S + 1` while a writer is delivering lap `L`.
    pub delivered: W,
    /// End timestamp of the packet, stored by the writer that closes it.
    pub end_ts: W,
    /// Content size in bytes of the packet, stored by the writer that closes it.
    pub content: W,
    /// Running total of discarded events, stored by the writer that closes it.
    pub discarded: W,
}

/// What crash recovery needs to close a packet cut at its committed prefix: a
/// timestamp no earlier than any record in the prefix, tagged with the prefix it
/// belongs to.
///
/// Several committers may store a prefix concurrently, and a preempted one may
/// store late (an older prefix after a newer one), so a separate timestamp word
/// could end up paired with another committer's prefix. The stamp therefore
/// carries a 16-bit tag of its prefix (the timestamp is rounded *up* to a multiple
/// of 2^16 ticks to make room: still an upper bound). Each committer stores the
/// stamp, the prefix, then the stamp again into a second word: a writer killed
/// between two of these stores leaves at least one stamp matching the prefix, and
/// a stamp whose tag does not match is never trusted (recovery then keeps none of
/// the packet's records, and counts them as cut).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixStamp(u64);

impl PrefixStamp {
    const TAG_BITS: u32 = 16;
    const TAG_MASK: u64 = (1 << Self::TAG_BITS) - 1;

    /// The stamp of `prefix` (a commit count) whose records are no later than `ts`.
    #[inline(always)]
    pub const fn new(prefix: u64, ts: u64) -> Self {
        Self((ts.saturating_add(Self::TAG_MASK) & !Self::TAG_MASK) | Self::tag(prefix))
    }

    /// A stamp as stored.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The stored value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The timestamp bound, if this stamp belongs to `prefix`.
    pub const fn bound_for(self, prefix: u64) -> Option<u64> {
        if self.0 & Self::TAG_MASK == Self::tag(prefix) {
            Some(self.0 & !Self::TAG_MASK)
        } else {
            None
        }
    }

    /// 16 bits of a multiplicative hash: nearby prefixes get unrelated tags.
    #[inline(always)]
    const fn tag(prefix: u64) -> u64 {
        prefix.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::TAG_BITS)
    }
}

/// Storage and atomics for one buffer.
///
/// # Safety
///
/// Implementors guarantee that:
/// * [`Control::config`] returns a configuration that validates and never changes;
/// * [`Control::slot`] returns the same words for the same `i` and is valid for every
///   `i < subbuf_count`;
/// * the byte methods access `physical_count` disjoint sub-buffers of `subbuf_size`
///   bytes, disjoint from every word, for `phys < physical_count` and
///   `offset + len <= subbuf_size`.
pub unsafe trait Control {
    /// Words only writers modify: [`crate::SharedWord`] or [`crate::LocalWord`].
    type Word: Word;
    /// Words the reader modifies too: always full atomics.
    type Shared: Word;

    /// The validated configuration.
    fn config(&self) -> Config;
    /// The writers' hot words.
    fn writer(&self) -> &WriterWords<Self::Word>;
    /// The loss counters.
    fn losses(&self) -> &LossWords<Self::Word>;
    /// The reader's words.
    fn reader(&self) -> &ReaderWords<Self::Shared>;
    /// The words of logical sub-buffer `i` (`i < subbuf_count`).
    fn slot(&self, i: usize) -> &SlotWords<Self::Word, Self::Shared>;

    /// Copies `src` into physical sub-buffer `phys` at `offset`.
    ///
    /// # Safety
    ///
    /// In range (see the trait), and the caller has exclusive access to those bytes
    /// by the algorithm's rules.
    unsafe fn write_bytes(&self, phys: usize, offset: usize, src: &[u8]);
    /// Zeroes `len` bytes of physical sub-buffer `phys` from `offset`.
    ///
    /// # Safety
    ///
    /// As for [`Control::write_bytes`].
    unsafe fn zero_bytes(&self, phys: usize, offset: usize, len: usize);
    /// Copies bytes of physical sub-buffer `phys` from `offset` into `dst`.
    ///
    /// # Safety
    ///
    /// In range, and no writer modifies those bytes by the algorithm's rules.
    unsafe fn read_bytes(&self, phys: usize, offset: usize, dst: &mut [u8]);
}

/// A [`Control`] whose sub-buffers are plain addressable memory, so that payloads
/// can be written in place and packets read without a copy.
///
/// # Safety
///
/// `subbuf_ptr(phys)` points at the `subbuf_size` bytes the byte methods of
/// [`Control`] access for `phys < physical_count`.
pub unsafe trait Mapped: Control {
    /// Start of physical sub-buffer `phys`.
    fn subbuf_ptr(&self, phys: usize) -> *mut u8;
}
