//! The reserve/commit engine (docs/ARCHITECTURE.md, design §1 to §3).
//!
//! Orderings, in one place (each use below refers back here):
//!
//! * **O1** `write` CAS is AcqRel. Release publishes what a writer did before it (the
//!   noref clear of an entering writer, its loss-counter reads, its read of
//!   `last_timestamp`); Acquire makes the next reserver see it. Every later CAS reads
//!   from the release sequence of every earlier one, so the chain of reservations is
//!   a chain of happens-before.
//! * **O2** `commit` add is AcqRel. Release publishes the record bytes and the closing
//!   words; Acquire lets the writer whose add completes the sub-buffer see every
//!   other committer's bytes and words before it delivers.
//! * **O3** `delivered` is published with Release after the packet is finalised (and,
//!   in overwrite mode, after the id is marked noref); readers and the next lap's
//!   entering writer load it with Acquire. The deliverer's claim CAS (`base` to
//!   `base + 1`) is AcqRel: whoever sees the claim also sees the reservations that
//!   completed the lap (see `deliver`).
//! * **O4** `consumed`: in discard mode the reader stores it with Release after it
//!   finished reading; writers load it with Acquire before overwriting. In overwrite
//!   mode it is claimed by CAS (AcqRel) by the reader and pushed by writers.
//! * **O5** the id table: the reader's swap and a writer's noref clear are AcqRel
//!   CASes, so the reader's reads of its previous packet happen before a writer
//!   writes into it again, and the delivering writer's bytes happen before the
//!   reader reads them.
//!
//! **Positions only move forward.** Every successful CAS on `write` strictly
//! increases it (a record is never empty, a switch moves to the next sub-buffer,
//! and a discarded reservation becomes padding instead of moving `write` back). So
//! a CAS from `old` succeeds only if nothing was reserved since `old` was loaded,
//! and the timestamp read between that load and the CAS is no earlier than any
//! reserved before it: timestamps never decrease along a buffer, for records and
//! for the end of a packet closed by a switch alike. (An undo that moved `write`
//! back let a writer that loaded the position before the undo succeed after an
//! equal-sized reservation took the same bytes, with an earlier timestamp: ABA.)
//!
//! Positions, commit counts and loss counters live in memory another process may
//! corrupt (design §6). Arithmetic on values loaded from it wraps: for any
//! real value (far below 2^64) that is plain addition, and a hostile one near 2^64
//! cannot panic a debug build (the consumer runs these paths too, in `switch`).

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::client::{Client, Out, PacketBegin, PacketEnd, RecordInfo};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, Geometry, Mode};
use crate::control::{Control, Mapped, PrefixStamp, SlotWords};
use crate::id::SubbufId;
use crate::nesting::Nesting;
use crate::word::{Flavour, Word};

/// Why a reservation failed. Every failure is counted in exactly one loss counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// Discard mode: the buffer is full (`lost_full`).
    Full,
    /// The next sub-buffer's previous lap is not committed and delivered yet: a
    /// writer is stuck, dead or nested around the whole buffer, or the region is
    /// corrupt (`lost_wrap`).
    Wrap,
    /// The event does not fit in an empty sub-buffer (`lost_big`).
    TooBig,
    /// The writer is nested deeper than the limit (`lost_nested`).
    Nested,
    /// rseq path: written by a signal handler that interrupted the thread holding
    /// the buffer's fence for a remote switch (`lost_fenced`).
    Fenced,
}

impl core::fmt::Display for ReserveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Full => "buffer full (discard mode)",
            Self::Wrap => "next sub-buffer not yet committed and delivered",
            Self::TooBig => "event larger than a sub-buffer payload",
            Self::Nested => "nesting limit reached",
            Self::Fenced => {
                "written by a handler interrupting the remote switch of its buffer (rseq path)"
            }
        })
    }
}

impl core::error::Error for ReserveError {}

/// A `switch` could not open the final packet: the next sub-buffer is not free
/// (`Full`: read some packets first; `Wrap`: a writer is stuck).
pub type SwitchError = ReserveError;

/// What [`Buffer::switch`] does to the current sub-buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Close the current sub-buffer if it holds records, so the reader can get it
    /// (periodic live reading, before a snapshot).
    Active,
    /// Close the current sub-buffer even if empty, and if none is open, open and
    /// close a header-only packet: the stream then ends with a packet carrying the
    /// final discarded count and end timestamp.
    Flush,
}

/// A snapshot of a buffer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The reserve position: bytes reserved since creation.
    pub write: u64,
    /// The reader position.
    pub consumed: u64,
    /// Events dropped because the buffer was full (discard mode).
    pub lost_full: u64,
    /// Events dropped because the next sub-buffer was not committed yet.
    pub lost_wrap: u64,
    /// Events refused because they were too big.
    pub lost_big: u64,
    /// Events dropped beyond the nesting limit.
    pub lost_nested: u64,
    /// Events a signal handler wrote while its own thread held the buffer's fence
    /// for a remote switch (rseq path; see [`ReserveError::Fenced`]).
    pub lost_fenced: u64,
    /// Sub-buffers overwritten before the reader got them (overwrite mode).
    pub overrun: u64,
}

impl Stats {
    /// Events discarded, all causes but overrun (which loses whole packets and shows
    /// as `packet_seq_num` gaps).
    pub fn events_discarded(&self) -> u64 {
        // Wrapping: the counters come from shared memory (see the module doc).
        self.lost_full
            .wrapping_add(self.lost_wrap)
            .wrapping_add(self.lost_big)
            .wrapping_add(self.lost_nested)
            .wrapping_add(self.lost_fenced)
    }
}

/// One buffer: writers reserve and commit; one [`crate::Reader`] reads.
///
/// Generic over its control block `C` (where the words and bytes live and which
/// atomic flavour they use), its format `K`, and its clock `T`.
pub struct Buffer<C: Control, K: Client, T: Clock> {
    pub(crate) ctl: C,
    pub(crate) client: K,
    pub(crate) clock: T,
    pub(crate) geo: Geometry,
    pub(crate) mode: Mode,
    nesting_limit: u32,
    /// Packet header size rounded up to the record alignment.
    pub(crate) header: u64,
    pub(crate) physical: u64,
}

/// Where a reservation landed.
#[derive(Clone, Copy, Debug)]
struct Placement {
    /// First byte this reservation accounts for in its sub-buffer's commit count
    /// (the packet header if it opened the sub-buffer, alignment padding otherwise).
    start: u64,
    /// The record header.
    record: u64,
    /// One past the payload.
    end: u64,
    /// The record's timestamp.
    timestamp: u64,
    /// Physical sub-buffer.
    phys: u32,
    event_id: u32,
    /// Bytes of record header.
    header_size: u32,
}

impl Placement {
    #[inline(always)]
    fn new(rec: &RecordInfo, start: u64, record: u64, header_size: usize, phys: usize) -> Self {
        Self {
            start,
            record,
            end: record.wrapping_add((header_size + rec.payload_len) as u64),
            timestamp: rec.timestamp,
            phys: phys as u32,
            event_id: rec.event_id,
            header_size: header_size as u32,
        }
    }

    #[inline(always)]
    fn payload_len(&self) -> usize {
        self.end.wrapping_sub(self.record) as usize - self.header_size as usize
    }

    /// The record as the client saw it at reserve time (for padding).
    fn record_info(&self) -> RecordInfo {
        RecordInfo {
            event_id: self.event_id,
            payload_len: self.payload_len(),
            timestamp: self.timestamp,
            prev_timestamp: 0,
        }
    }
}

/// What [`Buffer::open_next`] did.
enum Opened {
    /// The sub-buffer is entered, backed by this physical sub-buffer.
    Yes(usize),
    /// It may not be entered, and the caller's view of `write` was fresh.
    Refused(ReserveError),
    /// `write` moved meanwhile: reload and retry.
    Raced,
}

/// An [`Out`] over a window of one physical sub-buffer.
struct Window<'a, C: Control> {
    ctl: &'a C,
    phys: usize,
    base: usize,
    len: usize,
}

impl<C: Control> Out for Window<'_, C> {
    #[inline(always)]
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        let in_window = offset
            .checked_add(bytes.len())
            .is_some_and(|e| e <= self.len);
        debug_assert!(in_window, "client wrote outside its window");
        if in_window {
            // SAFETY: the window lies inside a sub-buffer this writer owns (the engine
            // builds windows only over reserved or delivered-by-us bytes), and the
            // write is inside the window.
            unsafe { self.ctl.write_bytes(self.phys, self.base + offset, bytes) }
        }
    }
    fn zero(&mut self, offset: usize, len: usize) {
        let in_window = offset.checked_add(len).is_some_and(|e| e <= self.len);
        debug_assert!(in_window, "client zeroed outside its window");
        if in_window {
            // SAFETY: as in `put`.
            unsafe { self.ctl.zero_bytes(self.phys, self.base + offset, len) }
        }
    }
}

#[inline(always)]
const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

impl<C: Control, K: Client, T: Clock> Buffer<C, K, T> {
    /// A buffer over control block `ctl`, which must already be initialised (see
    /// [`crate::Region`]).
    pub fn new(ctl: C, client: K, clock: T) -> Result<Self, ConfigError> {
        let config = ctl.config();
        let geo = config.validate()?;
        let header = align_up(client.packet_header_size() as u64, K::RECORD_ALIGN as u64);
        if header + (K::RECORD_ALIGN as u64) > geo.subbuf_size() {
            return Err(ConfigError::PacketHeaderTooLarge {
                header,
                subbuf_size: geo.subbuf_size(),
            });
        }
        Ok(Self {
            ctl,
            client,
            clock,
            geo,
            mode: config.mode,
            nesting_limit: config.nesting_limit,
            header,
            physical: config.physical_count(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.ctl.config()
    }

    /// The control block.
    pub fn control(&self) -> &C {
        &self.ctl
    }

    /// The format.
    pub fn client(&self) -> &K {
        &self.client
    }

    /// The clock.
    pub fn clock(&self) -> &T {
        &self.clock
    }

    /// The largest payload a record with `event_id` can carry.
    pub fn max_payload(&self, event_id: u32) -> usize {
        let rec = RecordInfo {
            event_id,
            payload_len: 0,
            timestamp: 0,
            prev_timestamp: 0,
        };
        let header = self.client.record_header_size(&rec) as u64;
        self.geo.subbuf_size().saturating_sub(self.header + header) as usize
    }

    /// Reserves room for a record of `payload_len` bytes with `event_id`.
    ///
    /// `nest` is the calling thread's nesting counter. On success, write the payload
    /// and [`Reservation::commit`] it; dropping the reservation discards it.
    #[inline]
    pub fn reserve<'b>(
        &'b self,
        nest: &'b Nesting,
        event_id: u32,
        payload_len: usize,
    ) -> Result<Reservation<'b, C, K, T>, ReserveError> {
        if !nest.enter(self.nesting_limit) {
            return Err(self.lose(ReserveError::Nested));
        }
        match self.place(event_id, payload_len) {
            Ok(at) => Ok(Reservation {
                buf: self,
                nest,
                at,
                _not_send: core::marker::PhantomData,
            }),
            Err(e) => {
                nest.exit();
                Err(e)
            }
        }
    }

    /// Reserves, copies `payload` and commits: one event in one call.
    #[inline]
    pub fn write(&self, nest: &Nesting, event_id: u32, payload: &[u8]) -> Result<(), ReserveError> {
        let mut r = self.reserve(nest, event_id, payload.len())?;
        r.write_at(0, payload);
        r.commit();
        Ok(())
    }

    /// Whether this buffer's writers must maintain `last_timestamp`: for the
    /// client's compression, or for the Local flavour's clock (see `stamp`).
    const KEEPS_LAST_TIMESTAMP: bool =
        K::USES_PREV_TIMESTAMP || matches!(C::Word::FLAVOUR, Flavour::Local);

    /// A reservation's timestamp and the previous one (for the client's
    /// compression), read after the reserve position.
    ///
    /// Shared flavour: the ordered clock read ([`Clock::now`]), so that a later
    /// position never gets an earlier time although several CPUs race for it.
    /// Local flavour: one thread writes the buffer (its signal handlers nest
    /// inside it), so the order is kept by value: an unordered read (a bare
    /// `rdtsc`) raised to the previous timestamp, which the same thread stored
    /// (or a handler that interrupted it, after a serialising signal delivery).
    ///
    /// Relaxed loads of `last_timestamp`: a stale value is older, which is safe
    /// (see RecordInfo); a value from a later reservation is impossible, since
    /// that one's store happens after our CAS succeeds (O1).
    #[inline(always)]
    fn stamp(&self) -> (u64, u64) {
        let last = &self.ctl.writer().last_timestamp;
        if matches!(C::Word::FLAVOUR, Flavour::Local) {
            let prev = last.load(Relaxed);
            (self.clock.now_unordered().max(prev), prev)
        } else if K::USES_PREV_TIMESTAMP {
            (self.clock.now(), last.load(Relaxed))
        } else {
            (self.clock.now(), 0)
        }
    }

    /// Counts a loss in its counter and returns its error (for write paths outside
    /// the engine that refuse an event themselves).
    #[cold]
    pub fn lose(&self, e: ReserveError) -> ReserveError {
        let l = self.ctl.losses();
        let counter = match e {
            ReserveError::Full => &l.full,
            ReserveError::Wrap => &l.wrap,
            ReserveError::TooBig => &l.big,
            ReserveError::Nested => &l.nested,
            ReserveError::Fenced => &l.fenced,
        };
        // Relaxed: a statistic; it reaches packets through the closing writer's read,
        // ordered by O1.
        counter.fetch_add(1, Relaxed);
        e
    }

    fn record_info(
        &self,
        event_id: u32,
        payload_len: usize,
        timestamp: u64,
        prev: u64,
    ) -> RecordInfo {
        RecordInfo {
            event_id,
            payload_len,
            timestamp,
            prev_timestamp: prev,
        }
    }

    /// The reservation fast path: one CAS when the record fits strictly inside the
    /// current, already opened sub-buffer.
    #[inline(always)]
    fn place(&self, event_id: u32, payload_len: usize) -> Result<Placement, ReserveError> {
        let w = self.ctl.writer();
        let s = self.geo.subbuf_size();
        loop {
            // Relaxed: the CAS below validates the value; what we must see of earlier
            // writers comes with the CAS's Acquire (O1).
            let old = w.write.load(Relaxed);
            let (ts, prev) = self.stamp();
            let rec = self.record_info(event_id, payload_len, ts, prev);
            let off = self.geo.offset(old);
            let record = align_up(off, K::RECORD_ALIGN as u64);
            let header_size = self.client.record_header_size(&rec);
            let end = record + header_size as u64 + payload_len as u64;
            if off == 0 || end >= s {
                return self.place_slow(event_id, payload_len);
            }
            let base = old - off;
            if w.write
                .compare_exchange(old, base + end, AcqRel, Relaxed) // O1
                .is_ok()
            {
                if Self::KEEPS_LAST_TIMESTAMP {
                    w.last_timestamp.store(ts, Relaxed);
                }
                let phys = self.writer_phys(old, base + end, ts)?;
                let at = Placement::new(&rec, old, base + record, header_size, phys);
                self.write_record_header(&at, &rec);
                return Ok(at);
            }
        }
    }

    /// The physical sub-buffer backing the reservation `start..end` just made in an
    /// opened sub-buffer. If the region is corrupt, the reservation is committed
    /// unwritten (so it cannot wedge the sub-buffer) and the event counted lost.
    #[inline(always)]
    fn writer_phys(&self, start: u64, end: u64, ts: u64) -> Result<usize, ReserveError> {
        let slot = self.geo.slot(start);
        match self.mode {
            Mode::Discard => Ok(slot),
            Mode::Overwrite => {
                // Relaxed: our write CAS (O1) happens after the entering writer's
                // noref clear, and the id cannot change until this lap is delivered,
                // which waits for our commit.
                let id = SubbufId::from_raw(self.ctl.slot(slot).id.load(Relaxed));
                self.checked_phys(id).ok_or_else(|| {
                    self.commit_bytes(start, end.wrapping_sub(start), ts);
                    self.lose(ReserveError::Wrap)
                })
            }
        }
    }

    /// The id's physical index if it is in range (the region may be corrupt).
    #[inline(always)]
    pub(crate) fn checked_phys(&self, id: SubbufId) -> Option<usize> {
        (id.phys() < self.physical).then_some(id.phys() as usize)
    }

    #[inline(always)]
    fn write_record_header(&self, at: &Placement, rec: &RecordInfo) {
        let mut out = Window {
            ctl: &self.ctl,
            phys: at.phys as usize,
            base: self.geo.offset(at.record) as usize,
            len: at.header_size as usize,
        };
        self.client.write_record_header(&mut out, rec);
    }

    /// Sum of the loss counters that packets report as discarded events.
    pub(crate) fn discarded_total(&self) -> u64 {
        let l = self.ctl.losses();
        // Relaxed: read before the closing CAS; O1 orders these reads before the
        // next closing writer's, so the per-packet totals never decrease.
        // Wrapping: see the module doc.
        l.full
            .load(Relaxed)
            .wrapping_add(l.wrap.load(Relaxed))
            .wrapping_add(l.big.load(Relaxed))
            .wrapping_add(l.nested.load(Relaxed))
            .wrapping_add(l.fenced.load(Relaxed))
    }

    /// The slow path: the reservation opens a sub-buffer, or closes one (exact fit
    /// or not fitting in the rest of it).
    #[cold]
    #[inline(never)]
    fn place_slow(&self, event_id: u32, payload_len: usize) -> Result<Placement, ReserveError> {
        let w = self.ctl.writer();
        let s = self.geo.subbuf_size();
        loop {
            // Acquire: pairs with O1 so that the loss totals read below are no older
            // than those of the previous closing writer.
            let old = w.write.load(Acquire);
            let (ts, prev) = self.stamp();
            let off = self.geo.offset(old);
            let here = self.record_info(event_id, payload_len, ts, prev);
            let here_header = self.client.record_header_size(&here);
            let here_end =
                align_up(off, K::RECORD_ALIGN as u64) + (here_header + payload_len) as u64;
            let discarded = self.discarded_total();

            if off != 0 && here_end <= s {
                // Fits in the current sub-buffer (exactly, or it changed under us).
                let base = old - off;
                // Wrapping: see the module doc.
                if w.write
                    .compare_exchange(old, base.wrapping_add(here_end), AcqRel, Relaxed) // O1
                    .is_err()
                {
                    continue;
                }
                let slot = self.geo.slot(old);
                if here_end == s {
                    self.close(slot, ts, s, discarded);
                }
                if Self::KEEPS_LAST_TIMESTAMP {
                    w.last_timestamp.store(ts, Relaxed);
                }
                let record = base + align_up(off, K::RECORD_ALIGN as u64);
                let phys = self.writer_phys(old, base.wrapping_add(here_end), ts)?;
                let at = Placement::new(&here, old, record, here_header, phys);
                self.write_record_header(&at, &here);
                return Ok(at);
            }

            // Open the next sub-buffer. The first record of a packet is compressed
            // against the packet's own begin timestamp.
            let rec = self.record_info(event_id, payload_len, ts, ts);
            let header_size = self.client.record_header_size(&rec);
            let end = self.header + (header_size + payload_len) as u64;
            if end > s {
                return Err(self.lose(ReserveError::TooBig));
            }
            // Wrapping: see the module doc.
            let open = if off == 0 {
                old
            } else {
                (old - off).wrapping_add(s)
            };
            let phys = match self.open_next(old, open, end, ts, discarded) {
                Opened::Yes(phys) => phys,
                Opened::Refused(e) => return Err(self.lose(e)),
                Opened::Raced => continue,
            };
            if end == s {
                self.close(self.geo.slot(open), ts, s, discarded);
            }
            if Self::KEEPS_LAST_TIMESTAMP {
                w.last_timestamp.store(ts, Relaxed);
            }
            let at = Placement::new(&rec, open, open + self.header, header_size, phys);
            self.write_record_header(&at, &rec);
            return Ok(at);
        }
    }

    /// Opens the sub-buffer starting at `open` by moving `write` from `old` (the
    /// caller's fresh load, in the current sub-buffer or at `open` itself) to
    /// `open + end`, `end` being what the opener reserves in it (packet header
    /// included). The one sequence both a reservation and a switch follow: prepare
    /// the sub-buffer, re-check a refusal against a fresh `write`, CAS, then close
    /// the old sub-buffer at `old` (if one was open) and write the new packet
    /// header. Closing the *new* packet, if the opener fills it, is the caller's.
    fn open_next(&self, old: u64, open: u64, end: u64, ts: u64, discarded: u64) -> Opened {
        let w = self.ctl.writer();
        let phys = match self.prepare_open(open) {
            Ok(phys) => phys,
            // A refusal only stands if nobody moved `write` meanwhile (our view was
            // fresh). Acquire: as the caller's load (O1).
            Err(e) if w.write.load(Acquire) == old => return Opened::Refused(e),
            Err(_) => return Opened::Raced,
        };
        if w.write
            .compare_exchange(old, open.wrapping_add(end), AcqRel, Relaxed) // O1
            .is_err()
        {
            return Opened::Raced;
        }
        if self.geo.offset(old) != 0 {
            self.close_with_padding(old, ts, discarded);
        }
        self.open_packet(open, phys, ts);
        Opened::Yes(phys)
    }

    /// Checks that the sub-buffer at `open` may be entered and makes it writable;
    /// returns its physical index. Side effects (pushing `consumed`, clearing noref)
    /// are harmless if the caller then loses its CAS: the sub-buffer is about to be
    /// entered by whoever wins.
    pub(crate) fn prepare_open(&self, open: u64) -> Result<usize, ReserveError> {
        let slot = self.geo.slot(open);
        let words = self.ctl.slot(slot);
        let lap_base = self.geo.full_commit(open) - self.geo.subbuf_size();
        // Acquire (O3): the previous lap's packet is finalised before we overwrite it.
        // Checked before the reader (design §2), so that a stuck or dead
        // writer (`lost_wrap`) is told apart from a slow reader (`lost_full`).
        if words.delivered.load(Acquire) != lap_base {
            return Err(ReserveError::Wrap);
        }
        let reader = self.ctl.reader();
        let span = self.geo.buffer_size() - self.geo.subbuf_size();
        match self.mode {
            Mode::Discard => {
                // Acquire (O4): the reader finished with the sub-buffer.
                let consumed = reader.consumed.load(Acquire);
                if open.wrapping_sub(consumed) > span {
                    return Err(ReserveError::Full);
                }
                Ok(slot)
            }
            Mode::Overwrite => {
                // Push the reader past the sub-buffer we overwrite, counting it,
                // *before* clearing noref: a reader that swaps the packet out first
                // then fails to claim it (its `consumed` CAS sees our push), so each
                // packet is read once or counted once.
                let target = open.saturating_sub(span);
                let mut consumed = reader.consumed.load(Acquire);
                while consumed < target {
                    // AcqRel (O4): races with the reader's claim.
                    match reader
                        .consumed
                        .compare_exchange(consumed, target, AcqRel, Acquire)
                    {
                        Ok(_) => {
                            let lost =
                                (target - consumed) >> self.geo.subbuf_size().trailing_zeros();
                            self.ctl.losses().overrun.fetch_add(lost, Relaxed);
                            break;
                        }
                        Err(now) => consumed = now,
                    }
                }
                // Clear noref only on the packet we overwrite: the previous lap's. A
                // writer whose view of `write` is stale can get here for a lap that
                // others have since entered, completed and delivered (its `delivered`
                // check passed just before); clearing noref on *that* packet would make
                // it untakeable, and the reader would spin on it (found by loom,
                // model 1b). Such a writer's `write` CAS is bound to fail, so leaving
                // the id alone is enough: it retries from a fresh position. For lap 0
                // the previous lap wraps to a tag no delivered id carries.
                let overwritten = self.geo.lap(open).wrapping_sub(1);
                let mut id = SubbufId::from_raw(words.id.load(Acquire));
                // (`ringbuf_mutant = "any_lap_noref"`: the unchecked clear, before the fix.)
                while id.noref()
                    && (id.is_lap(overwritten) || cfg!(ringbuf_mutant = "any_lap_noref"))
                {
                    // AcqRel (O5): after this, the reader cannot swap the sub-buffer out.
                    match words.id.compare_exchange(
                        id.raw(),
                        id.without_noref().raw(),
                        AcqRel,
                        Acquire,
                    ) {
                        Ok(_) => id = id.without_noref(),
                        Err(now) => id = SubbufId::from_raw(now),
                    }
                }
                self.checked_phys(id).ok_or(ReserveError::Wrap)
            }
        }
    }

    /// Writes the packet header of a sub-buffer just entered.
    pub(crate) fn open_packet(&self, open: u64, phys: usize, ts: u64) {
        let mut out = Window {
            ctl: &self.ctl,
            phys,
            base: 0,
            len: self.header as usize,
        };
        let begin = PacketBegin {
            seq: self.geo.packet_seq(open),
            timestamp: ts,
        };
        self.client.packet_begin(&mut out, &begin);
    }

    /// Stores what the deliverer of `slot` needs: called by the one writer whose
    /// reservation or switch closes the sub-buffer, before its commit (O2).
    pub(crate) fn close(&self, slot: usize, ts: u64, content: u64, discarded: u64) {
        let words = self.ctl.slot(slot);
        // Relaxed: published by this writer's commit add (O2).
        words.end_ts.store(ts, Relaxed);
        words.content.store(content, Relaxed);
        words.discarded.store(discarded, Relaxed);
    }

    /// Closes the sub-buffer containing `pos` at `pos` and commits its padding.
    fn close_with_padding(&self, pos: u64, ts: u64, discarded: u64) {
        let off = self.geo.offset(pos);
        self.close(self.geo.slot(pos), ts, off, discarded);
        self.commit_bytes(pos, self.geo.subbuf_size() - off, ts);
    }

    /// Adds `size` bytes to the commit count of the sub-buffer containing `start`,
    /// delivers it if complete, and maintains its committed prefix. `ts` is the
    /// timestamp of the last record in `start..start + size`.
    #[inline(always)]
    fn commit_bytes(&self, start: u64, size: u64, ts: u64) {
        let slot = self.geo.slot(start);
        let words = self.ctl.slot(slot);
        let full = self.geo.full_commit(start);
        // O2. (`ringbuf_mutant`: deliberately broken variants that only loom-tests
        // builds, to show its models catch them; never set in a normal build.)
        let order = if cfg!(ringbuf_mutant = "relaxed_commit") {
            Relaxed
        } else {
            AcqRel
        };
        let count = words.commit.fetch_add(size, order).wrapping_add(size);
        if count == full {
            self.deliver(slot, start, words);
            return;
        }
        // Committed prefix: if everything reserved so far in this sub-buffer is
        // committed, remember it. Relaxed: read after our add; if the position still
        // equals our count, nothing reserved by then is uncommitted. The words are
        // for crash recovery, read when every writer is dead (see `PrefixStamp` for
        // why a late store from a preempted committer is harmless).
        let w = self.ctl.writer().write.load(Relaxed);
        let base = full - self.geo.subbuf_size();
        if self.geo.subbuf_start(w) == self.geo.subbuf_start(start)
            && count.wrapping_sub(base) == self.geo.offset(w)
        {
            // The latest record of the prefix is the one ending at `w`. If it is
            // ours, `ts` bounds the prefix (timestamps follow positions); if another
            // committed it before us, a clock read now is later than its (rare:
            // out-of-order commits only).
            let bound = if start.wrapping_add(size) == w {
                ts
            } else {
                self.clock.now()
            };
            let stamp = PrefixStamp::new(count, bound).raw();
            words.prefix_stamp_pre.store(stamp, Relaxed);
            words.prefix.store(count, Relaxed);
            words.prefix_stamp_post.store(stamp, Relaxed);
        }
    }

    /// Finalises and publishes a complete sub-buffer. Exactly one writer wins the
    /// `delivered` CAS for each lap; a duplicate attempt is harmless.
    #[cold]
    pub(crate) fn deliver(&self, slot: usize, start: u64, words: &SlotWords<C::Word, C::Shared>) {
        let s = self.geo.subbuf_size();
        let full = self.geo.full_commit(start);
        let base = full - s;
        // Acquire: the previous lap's delivery is complete (its id store) before ours.
        // Release: a writer whose `prepare_open` sees this in-progress mark
        // (`base + 1`) also sees the reservations that completed this lap, so its
        // freshness re-check of `write` in `place_slow`/`switch` sees its view was
        // stale and retries. With Acquire alone that re-load may still return the
        // stale position, and the writer counts a spurious `lost_wrap` for a slot
        // whose previous lap was delivered long ago (found by loom, model 1).
        let claim = if cfg!(ringbuf_mutant = "acquire_claim") {
            Acquire // mutant: the ordering before the fix above
        } else {
            AcqRel
        };
        if words
            .delivered
            .compare_exchange(base, base + 1, claim, Relaxed)
            .is_err()
        {
            return;
        }
        let phys = match self.mode {
            Mode::Discard => Some(slot),
            // Relaxed: no one else changes the id of a slot being written (O5).
            Mode::Overwrite => self.checked_phys(SubbufId::from_raw(words.id.load(Relaxed))),
        };
        if let Some(phys) = phys {
            // Relaxed: the closing writer's stores reach us through O2.
            let end = PacketEnd {
                seq: self.geo.packet_seq(start),
                timestamp: words.end_ts.load(Relaxed),
                content_size: words.content.load(Relaxed).min(s),
                packet_size: s,
                events_discarded: words.discarded.load(Relaxed),
            };
            let mut out = Window {
                ctl: &self.ctl,
                phys,
                base: 0,
                len: s as usize,
            };
            self.client.packet_end(&mut out, &end);
            if self.mode == Mode::Overwrite {
                // Release (O3/O5): the packet is final before a reader can take it.
                let id = SubbufId::delivered(self.geo.lap(start), phys as u64);
                words.id.store(id.raw(), Release);
            }
        }
        words.delivered.store(full, Release); // O3
        self.client.delivered(self.geo.packet_seq(start));
    }

    /// Closes the current sub-buffer (see [`Switch`]).
    pub fn switch(&self, kind: Switch) -> Result<(), SwitchError> {
        let w = self.ctl.writer();
        let s = self.geo.subbuf_size();
        loop {
            let old = w.write.load(Acquire); // as in place_slow
            let ts = self.clock.now();
            let off = self.geo.offset(old);
            let discarded = self.discarded_total();
            if off == 0 {
                if kind == Switch::Active {
                    return Ok(());
                }
                // Flush with no open packet: open and close a header-only one.
                match self.open_next(old, old, s, ts, discarded) {
                    Opened::Yes(_) => {}
                    Opened::Refused(e) => return Err(e),
                    Opened::Raced => continue,
                }
                self.close(self.geo.slot(old), ts, self.header, discarded);
                self.commit_bytes(old, s, ts);
                return Ok(());
            }
            if off == self.header && kind == Switch::Active {
                return Ok(()); // open but empty
            }
            if w.write
                .compare_exchange(old, (old - off).wrapping_add(s), AcqRel, Relaxed) // O1
                .is_err()
            {
                continue;
            }
            self.close_with_padding(old, ts, discarded);
            return Ok(());
        }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let l = self.ctl.losses();
        // Relaxed: a statistic.
        Stats {
            write: self.ctl.writer().write.load(Relaxed),
            consumed: self.ctl.reader().consumed.load(Relaxed),
            lost_full: l.full.load(Relaxed),
            lost_wrap: l.wrap.load(Relaxed),
            lost_big: l.big.load(Relaxed),
            lost_nested: l.nested.load(Relaxed),
            lost_fenced: l.fenced.load(Relaxed),
            overrun: l.overrun.load(Relaxed),
        }
    }
}

/// A reserved record. Write the payload, then [`commit`](Reservation::commit).
/// Dropping it discards it (see [`Reservation::discard`]), so a reservation can
/// never wedge its sub-buffer.
///
/// Not `Send`: it must be committed by the thread that reserved it (whose nesting
/// counter it holds, and on whose CPU a local-flavour buffer is written).
#[must_use = "a reservation is discarded when dropped; call commit()"]
pub struct Reservation<'b, C: Control, K: Client, T: Clock> {
    buf: &'b Buffer<C, K, T>,
    nest: &'b Nesting,
    at: Placement,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl<C: Control, K: Client, T: Clock> Reservation<'_, C, K, T> {
    /// Payload bytes reserved.
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        self.at.payload_len()
    }

    /// The record's timestamp.
    #[inline(always)]
    pub fn timestamp(&self) -> u64 {
        self.at.timestamp
    }

    /// The record's position (free-running byte counter).
    #[inline(always)]
    pub fn position(&self) -> u64 {
        self.at.record
    }

    /// Sequence number of the packet the record is in.
    #[inline(always)]
    pub fn packet_seq(&self) -> u64 {
        self.buf.geo.packet_seq(self.at.record)
    }

    /// Copies `bytes` into the payload at `offset`; returns false (writing nothing)
    /// if they do not fit.
    #[inline(always)]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> bool {
        let fits = offset
            .checked_add(bytes.len())
            .is_some_and(|e| e <= self.at.payload_len());
        if fits {
            // SAFETY: the payload bytes are reserved by us alone, in range by `fits`.
            unsafe {
                self.buf.ctl.write_bytes(
                    self.at.phys as usize,
                    self.payload_offset() + offset,
                    bytes,
                )
            }
        }
        fits
    }

    /// Offset of the payload in the sub-buffer.
    #[inline(always)]
    fn payload_offset(&self) -> usize {
        self.buf.geo.offset(self.at.record) as usize + self.at.header_size as usize
    }

    /// Commits the record: it becomes part of its packet, which is delivered once
    /// every record in it is committed (in any order).
    #[inline(always)]
    pub fn commit(self) {
        let this = core::mem::ManuallyDrop::new(self);
        this.buf.commit_bytes(
            this.at.start,
            this.at.end.wrapping_sub(this.at.start),
            this.at.timestamp,
        );
        this.nest.exit();
    }

    /// Discards the reservation: it is committed as padding that readers skip.
    /// (Its bytes are not given back: moving the reserve position backwards would
    /// let another writer's stale view of it become current again; see the module
    /// documentation.)
    pub fn discard(self) {
        let this = core::mem::ManuallyDrop::new(self);
        this.pad();
        this.nest.exit();
    }

    fn pad(&self) {
        let buf = self.buf;
        // (`ringbuf_mutant = "undo_discard"`: the undo this replaced, which moved
        // `write` back when the reservation was the last one and opened or closed
        // nothing.)
        if cfg!(ringbuf_mutant = "undo_discard")
            && buf.geo.offset(self.at.start) != 0
            && buf.geo.offset(self.at.end) != 0
            && buf
                .ctl
                .writer()
                .write
                .compare_exchange(self.at.end, self.at.start, AcqRel, Relaxed)
                .is_ok()
        {
            return;
        }
        let mut out = Window {
            ctl: &buf.ctl,
            phys: self.at.phys as usize,
            base: buf.geo.offset(self.at.record) as usize,
            len: self.at.end.wrapping_sub(self.at.record) as usize,
        };
        let total = out.len;
        let rec = self.at.record_info();
        buf.client
            .write_padding_record(&mut out, &rec, self.at.header_size as usize, total);
        buf.commit_bytes(
            self.at.start,
            self.at.end.wrapping_sub(self.at.start),
            self.at.timestamp,
        );
    }
}

impl<C: Mapped, K: Client, T: Clock> Reservation<'_, C, K, T> {
    /// The payload, to write in place.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: the payload lies inside the physical sub-buffer (the reservation fits
        // in it) and is reserved by us alone until commit, which consumes `self`.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.buf
                    .ctl
                    .subbuf_ptr(self.at.phys as usize)
                    .add(self.payload_offset()),
                self.at.payload_len(),
            )
        }
    }
}

impl<C: Control, K: Client, T: Clock> Drop for Reservation<'_, C, K, T> {
    fn drop(&mut self) {
        self.pad();
        self.nest.exit();
    }
}
