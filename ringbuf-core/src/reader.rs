//! The reader: `get_next_subbuf` → read the packet → `put_next_subbuf`
//! (docs/ARCHITECTURE.md, design §5).
//!
//! The reader only ever gets a sub-buffer whose lap is delivered (fully committed
//! and finalised), so never one being written. In discard mode it reads the packet
//! in place: writers cannot enter the slot again before `consumed` moves past it at
//! `put`. In overwrite mode it swaps its spare physical sub-buffer into the slot and
//! takes the packet out, then claims it by moving `consumed` past it; writers keep
//! overwriting other slots while the reader holds an immutable packet. A writer that
//! laps the reader pushes `consumed` first, so a packet is either claimed by the
//! reader or counted in `overrun`, never both, and the loss shows as a gap in the
//! packets' sequence numbers.

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::buffer::Buffer;
use crate::client::Client;
use crate::clock::Clock;
use crate::config::Mode;
use crate::control::{Control, Mapped};
use crate::id::SubbufId;
use crate::word::Word;

/// Why the reader got no sub-buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The sub-buffer is not complete yet (being written, or waiting for a commit):
    /// try again later, or `switch(Active)` to close it.
    NoData,
    /// The sub-buffer at the requested position was overwritten (overwrite mode) or
    /// already consumed; the reader position is now `consumed`.
    Overwritten {
        /// The reader position now.
        consumed: u64,
    },
    /// A sub-buffer is already held: put it first.
    AlreadyHeld,
    /// The region is inconsistent (an id out of range).
    Corrupt,
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoData => f.write_str("no complete sub-buffer to read"),
            Self::Overwritten { consumed } => {
                write!(
                    f,
                    "sub-buffer overwritten; reader position is now {consumed}"
                )
            }
            Self::AlreadyHeld => f.write_str("a sub-buffer is already held"),
            Self::Corrupt => f.write_str("corrupt sub-buffer id"),
        }
    }
}

impl core::error::Error for ReadError {}

/// How many times a read retries after writers moved the reader position under it.
pub const MAX_RETRIES: u32 = 1024;

/// A reader was already attached to the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderBusy;

impl core::fmt::Display for ReaderBusy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("another reader is attached to the buffer")
    }
}

impl core::error::Error for ReaderBusy {}

/// A sub-buffer the reader holds, from `get_*` to `put_*`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "put the sub-buffer back with put_next_subbuf"]
pub struct Subbuf {
    pos: u64,
    phys: usize,
    seq: u64,
}

impl Subbuf {
    /// Position of the sub-buffer's first byte.
    pub fn position(&self) -> u64 {
        self.pos
    }
    /// The packet sequence number (the sub-buffer's global index).
    pub fn packet_seq(&self) -> u64 {
        self.seq
    }
    /// The physical sub-buffer holding the packet (its bytes start at
    /// `Layout::data + phys * subbuf_size` in the region): for page export.
    pub fn phys(&self) -> usize {
        self.phys
    }
}

/// The range of sub-buffers a snapshot may read: `[consumed, produced)`, in steps
/// of the sub-buffer size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The oldest sub-buffer not yet consumed.
    pub consumed: u64,
    /// Start of the sub-buffer writers are in (or the next one to open).
    pub produced: u64,
}

/// The buffer's one reader. Attaching is exclusive (see [`Buffer::reader`]).
pub struct Reader<'b, C: Control, K: Client, T: Clock> {
    buf: &'b Buffer<C, K, T>,
    held: Option<(u64, usize)>,
}

impl<C: Control, K: Client, T: Clock> Buffer<C, K, T> {
    /// Attaches the reader; fails if one is attached (in any process).
    pub fn reader(&self) -> Result<Reader<'_, C, K, T>, ReaderBusy> {
        // AcqRel: the previous reader's last `put` happens before our first `get`.
        self.ctl
            .reader()
            .attached
            .compare_exchange(0, 1, AcqRel, Relaxed)
            .map_err(|_| ReaderBusy)?;
        Ok(Reader {
            buf: self,
            held: None,
        })
    }
}

impl<C: Control, K: Client, T: Clock> Reader<'_, C, K, T> {
    /// Gets the oldest unread sub-buffer. In overwrite mode, skips to the oldest
    /// one still in the buffer if the writers lapped the reader.
    ///
    /// Each retry means writers moved the reader on; after [`MAX_RETRIES`] of them
    /// (writers lapping the reader non-stop, or a hostile process rewriting the
    /// region) it gives up with `NoData` rather than spin.
    pub fn get_next_subbuf(&mut self) -> Result<Subbuf, ReadError> {
        // Acquire (O4): in overwrite mode, a writer's push happens before the packet
        // it overwrote is gone.
        let mut consumed = self.buf.ctl.reader().consumed.load(Acquire);
        for _ in 0..MAX_RETRIES {
            match self.get_subbuf(consumed) {
                Err(ReadError::Overwritten { consumed: now }) => consumed = now,
                other => return other,
            }
        }
        Err(ReadError::NoData)
    }

    /// Gets the sub-buffer at `pos` (a multiple of the sub-buffer size, not before
    /// `consumed`). Sub-buffers between `consumed` and `pos` are skipped.
    pub fn get_subbuf(&mut self, pos: u64) -> Result<Subbuf, ReadError> {
        if self.held.is_some() {
            return Err(ReadError::AlreadyHeld);
        }
        let buf = self.buf;
        let geo = buf.geo;
        let pos = geo.subbuf_start(pos);
        let slot = geo.slot(pos);
        let words = buf.ctl.slot(slot);
        let reader = buf.ctl.reader();
        for _ in 0..MAX_RETRIES {
            let consumed = reader.consumed.load(Acquire); // O4
            if geo.offset(consumed) != 0 {
                return Err(ReadError::Corrupt);
            }
            if pos < consumed {
                return Err(ReadError::Overwritten { consumed });
            }
            // Acquire (O3): the packet's bytes and final header are visible.
            if words.delivered.load(Acquire) != geo.full_commit(pos) {
                // Not delivered for this lap. If a writer lapped us it pushed
                // `consumed` before entering, and the next iteration sees it.
                if reader.consumed.load(Acquire) != consumed {
                    continue;
                }
                return Err(ReadError::NoData);
            }
            let phys = match buf.mode {
                Mode::Discard => slot,
                Mode::Overwrite => match self.swap_out(pos, consumed)? {
                    Some(phys) => phys,
                    None => continue,
                },
            };
            self.held = Some((pos, phys));
            return Ok(Subbuf {
                pos,
                phys,
                seq: geo.packet_seq(pos),
            });
        }
        Err(ReadError::NoData)
    }

    /// Overwrite mode: swaps the spare in for the packet at `pos` and claims it.
    /// `Ok(None)` means "retry": the id or `consumed` changed under us.
    fn swap_out(&mut self, pos: u64, consumed: u64) -> Result<Option<usize>, ReadError> {
        let buf = self.buf;
        let geo = buf.geo;
        let words = buf.ctl.slot(geo.slot(pos));
        let reader = buf.ctl.reader();
        // O5. (`ringbuf_mutant = "skip_noref"`: a deliberately broken variant that
        // only loom-tests builds: the noref check skipped.)
        let id = SubbufId::from_raw(words.id.load(Acquire));
        let noref = id.noref() || cfg!(ringbuf_mutant = "skip_noref");
        if !noref || !id.is_lap(geo.lap(pos)) {
            // A writer entered the next lap, and pushed `consumed` before: retry. If
            // `consumed` did not move, the id contradicts `delivered`: corrupt.
            return match reader.consumed.load(Acquire) == consumed {
                true => Err(ReadError::Corrupt),
                false => Ok(None),
            };
        }
        let phys = buf.checked_phys(id).ok_or(ReadError::Corrupt)?;
        // Relaxed: only the reader writes `spare`.
        let spare = reader.spare.load(Relaxed);
        if spare >= buf.physical || spare == phys as u64 {
            return Err(ReadError::Corrupt);
        }
        let replacement = SubbufId::referenced(geo.lap(pos), spare);
        // AcqRel (O5): Acquire takes the packet's bytes, Release hands over our reads
        // of the spare's previous content before writers reuse it.
        if words
            .id
            .compare_exchange(id.raw(), replacement.raw(), AcqRel, Relaxed)
            .is_err()
        {
            return Ok(None);
        }
        // The packet is ours whatever happens next: it is our new spare.
        reader.spare.store(phys as u64, Relaxed);
        // AcqRel (O4): claim the packet unless a writer already counted it overrun.
        // Wrapping: `pos` comes from the region, and a hostile one can put the reader
        // at the last sub-buffer before 2^64 (a panic in debug builds otherwise).
        match reader.consumed.compare_exchange(
            consumed,
            pos.wrapping_add(geo.subbuf_size()),
            AcqRel,
            Acquire,
        ) {
            Ok(_) => Ok(Some(phys)),
            Err(now) => Err(ReadError::Overwritten { consumed: now }),
        }
    }

    /// The buffer's configuration.
    pub fn config(&self) -> crate::Config {
        self.buf.config()
    }

    /// Releases the sub-buffer; in discard mode, writers may now reuse it.
    pub fn put_next_subbuf(&mut self, sub: Subbuf) {
        if self.held != Some((sub.pos, sub.phys)) {
            debug_assert!(false, "put of a sub-buffer not held");
            return;
        }
        self.held = None;
        if self.buf.mode == Mode::Discard {
            // Release (O4): our reads of the packet happen before writers reuse it.
            // Wrapping: as in `swap_out`.
            self.buf
                .ctl
                .reader()
                .consumed
                .store(sub.pos.wrapping_add(self.buf.geo.subbuf_size()), Release);
        }
    }

    /// The range of sub-buffers available to a snapshot (see [`Reader::get_subbuf`]).
    /// Call `switch(Active)` first to include the packet being written.
    pub fn snapshot(&self) -> Snapshot {
        let buf = self.buf;
        // Acquire: as in get_subbuf.
        let consumed = buf.ctl.reader().consumed.load(Acquire);
        let write = buf.ctl.writer().write.load(Acquire);
        Snapshot {
            consumed,
            produced: buf.geo.subbuf_start(write),
        }
    }

    /// Copies bytes of the held sub-buffer from `offset` into `dst`; false if out of
    /// range.
    pub fn read_at(&self, sub: &Subbuf, offset: usize, dst: &mut [u8]) -> bool {
        let in_range = self.held == Some((sub.pos, sub.phys))
            && offset
                .checked_add(dst.len())
                .is_some_and(|e| e as u64 <= self.buf.geo.subbuf_size());
        if in_range {
            // SAFETY: we hold the sub-buffer, so no writer modifies it; in range.
            unsafe { self.buf.ctl.read_bytes(sub.phys, offset, dst) }
        }
        in_range
    }
}

impl<C: Mapped, K: Client, T: Clock> Reader<'_, C, K, T> {
    /// The held packet's bytes (the whole sub-buffer), without a copy; `None` if
    /// `sub` is not the sub-buffer this reader holds.
    pub fn bytes(&self, sub: &Subbuf) -> Option<&[u8]> {
        if self.held != Some((sub.pos, sub.phys)) {
            return None;
        }
        // SAFETY: the sub-buffer is held: no writer modifies it until `put`, which
        // takes `&mut self` and so ends this borrow first.
        Some(unsafe {
            core::slice::from_raw_parts(
                self.buf.ctl.subbuf_ptr(sub.phys),
                self.buf.geo.subbuf_size() as usize,
            )
        })
    }
}

impl<C: Control, K: Client, T: Clock> Drop for Reader<'_, C, K, T> {
    fn drop(&mut self) {
        // Release: pairs with the next reader's attach.
        self.buf.ctl.reader().attached.store(0, Release);
    }
}
