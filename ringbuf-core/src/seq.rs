//! The sequence write path: per-CPU buffers written only by restartable
//! sequences (docs/ARCHITECTURE.md §10). The engine plans and stages each write
//! outside the sequence; a [`Sequencer`] (in `ringbuf-mmap`: Linux rseq on x86-64)
//! runs it as one [`Op`]: check the CPU and two words, copy staged segments, two
//! non-committing stores, one committing store of `write`.
//!
//! Invariants of a sequence-written buffer (each argued in §10):
//!
//! * **S1** every byte in `[start of the current sub-buffer, write)` is committed
//!   at every instant (a record is reserved, written and committed by one
//!   committing store), so commit counters are not used;
//! * **S2** `last_at == write` implies `last_timestamp` is the timestamp of the
//!   record (or close) that ends at `write`;
//! * **S3** the sub-buffer `write` has left is complete and its packet header
//!   final (S5); delivering it is idempotent and anyone may do it (helping);
//! * **S4** only sequences for the buffer's CPU, or a remote actor holding the
//!   fence after a barrier, move `write`;
//! * **S5** a packet's final header is written before `write` leaves it (in the
//!   switch sequence), so delivery is only the id and `delivered` CASes, which any
//!   helper may repeat.
//!
//! Orderings: on x86-64 (the only target with a sequencer) plain loads and stores
//! are acquire and release; the Rust-side loads below say Acquire where they read
//! a word a sequence or fence holder published (**O6**: a sequence's stores are
//! published, in program order, by its committing store; a reader of `write`
//! that sees it sees them).

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::buffer::{Buffer, ReserveError, Switch, SwitchError};
use crate::client::{Client, Out, PacketBegin, PacketEnd, RecordInfo};
use crate::clock::Clock;
use crate::config::Mode;
use crate::control::Mapped;
use crate::id::SubbufId;
use crate::word::Word;

/// One byte segment a sequence copies.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// Destination.
    pub dst: *mut u8,
    /// Source.
    pub src: *const u8,
    /// Bytes.
    pub len: usize,
}

impl Segment {
    /// A segment that copies nothing.
    pub const NONE: Self = Self {
        dst: core::ptr::null_mut(),
        src: core::ptr::null(),
        len: 0,
    };
}

/// A word compare or store: the word at `at` and a value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WordOp {
    /// The word (8-byte aligned).
    pub at: *mut u64,
    /// The value it must hold (compare) or receives (store).
    pub value: u64,
}

/// The most segments one [`Op`] copies.
pub const MAX_SEGMENTS: usize = 4;

/// One sequence. All fields are 8 bytes wide; the layout is the sequencer's
/// assembly's (offsets in comments).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Op {
    /// @0: the CPU the sequence must run on.
    pub cpu: u64,
    /// @8, @24: both words must hold their values, else [`Outcome::Changed`].
    pub expect: [WordOp; 2],
    /// @40: the segments; the first `segment_count` are copied, in order.
    pub segments: [Segment; MAX_SEGMENTS],
    /// @136: how many segments to copy.
    pub segment_count: u64,
    /// @144, @160: stored in this order after the copies; not committing.
    pub stores: [WordOp; 2],
    /// @176: the committing store, the sequence's last instruction.
    pub commit: WordOp,
}

/// What a sequence did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything, committing store included.
    Committed,
    /// Nothing: not on `Op::cpu`, or an expected word differed.
    Changed,
    /// Aborted by the kernel: the committing store did not happen; copies and
    /// non-committing stores may have.
    Aborted,
}

/// The words every writer step checks and stores: on `cpu`, with the writer
/// words' `write` still `old` and the fence free, store `last_at = new` and
/// `last_timestamp = ts` (S2) and, last, commit `write = new`.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    /// The CPU the sequence must run on.
    pub cpu: u64,
    /// The writer words ([`crate::WriterWords`]: `write` at 0, `last_timestamp`
    /// at 8, `last_at` at 16).
    pub writer: *mut u64,
    /// The fence word, which must be 0.
    pub fence: *mut u64,
    /// The expected `write`.
    pub old: u64,
    /// The committed `write` (and `last_at`).
    pub new: u64,
    /// The record's timestamp (`last_timestamp`).
    pub ts: u64,
}

impl Commit {
    /// The step as a general [`Op`]: the first `count` segments copied, then
    /// these stores.
    fn op(&self, segments: [Segment; MAX_SEGMENTS], count: usize) -> Op {
        let word = |at: *mut u64, value| WordOp { at, value };
        Op {
            cpu: self.cpu,
            expect: [word(self.writer, self.old), word(self.fence, 0)],
            segments,
            segment_count: count as u64,
            stores: [
                word(self.writer.wrapping_add(2), self.new),
                word(self.writer.wrapping_add(1), self.ts),
            ],
            commit: word(self.writer, self.new),
        }
    }
}

/// The sequence of one record in the current sub-buffer (the common case of
/// [`Buffer::write_seq`]), with no descriptor to build: under `commit`'s checks,
/// store the header (its first `header_len` bytes count; all 8 are stored, and
/// `header_len + payload_len >= 8` keeps them inside the record), copy the
/// payload after it, then `commit`'s stores.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// The words checked and stored.
    pub commit: Commit,
    /// Where the record starts.
    pub dst: *mut u8,
    /// The record header, little-endian, in its first `header_len` bytes.
    pub header: u64,
    /// Bytes of header (at most 8).
    pub header_len: usize,
    /// The payload.
    pub payload: *const u8,
    /// Its length (`header_len + payload_len >= 8`).
    pub payload_len: usize,
}

impl Record {
    /// The same sequence as a general [`Op`], copying the header from `header`
    /// (at least `header_len` bytes, alive while the sequence runs).
    pub fn to_op(&self, header: &[u8]) -> Op {
        debug_assert!(header.len() >= self.header_len);
        let mut segments = [Segment::NONE; MAX_SEGMENTS];
        segments[0] = Segment {
            dst: self.dst,
            src: header.as_ptr(),
            len: self.header_len,
        };
        segments[1] = Segment {
            dst: self.dst.wrapping_add(self.header_len),
            src: self.payload,
            len: self.payload_len,
        };
        self.commit.op(segments, 2)
    }
}

/// Runs sequences for the calling thread.
///
/// # Safety
///
/// [`Sequencer::run`] executes `op` so that its committing store happens only if
/// the thread ran on `op.cpu` with no other thread or signal handler of that CPU
/// running from its first check to that store; [`Sequencer::barrier`] returns only
/// once every sequence of the process that started before the call has committed
/// or will abort.
pub unsafe trait Sequencer {
    /// The CPU the calling thread runs on, if it can run sequences.
    fn cpu(&self) -> Option<u32>;
    /// Runs `op`.
    ///
    /// # Safety
    ///
    /// Every pointer of `op` is valid for its access, and the caller's protocol
    /// makes what a committed or aborted sequence wrote harmless.
    unsafe fn run(&self, op: &Op) -> Outcome;
    /// Runs `record` (by default as its [`Op`]).
    ///
    /// # Safety
    ///
    /// As for [`Sequencer::run`].
    #[inline(always)]
    unsafe fn run_record(&self, record: &Record) -> Outcome {
        let header = record.header.to_le_bytes();
        // SAFETY: forwarded; `header` (8 >= `header_len` bytes) lives until `run`
        // returns.
        unsafe { self.run(&record.to_op(&header)) }
    }
    /// Waits for the sequences in flight (Linux: `membarrier` RSEQ).
    fn barrier(&self);
    /// A nonzero value that identifies the calling thread among the live threads
    /// of the process (Linux: its rseq area's address): what a fence holder
    /// stores in the fence, so that a signal handler interrupting the holder
    /// knows not to wait for itself.
    fn thread_id(&self) -> u64;
    /// Lets other threads run: a writer waiting for a fence holder that may be
    /// preempted gives it the CPU (Linux: `sched_yield`).
    fn wait(&self);
}

/// Why [`Buffer::write_seq`] did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqError {
    /// Lost, counted as for a reservation.
    Reserve(ReserveError),
    /// The thread no longer runs on the CPU whose buffer this is: pick the buffer
    /// again.
    Moved,
}

/// Largest staged record header (bytes).
const RECORD_STAGE: usize = 64;
/// Largest staged packet header (bytes).
const PACKET_STAGE: usize = 256;
/// How many times a writer spins on a held fence before it yields its CPU to the
/// holder ([`Sequencer::wait`]) between looks.
const FENCE_SPINS: u32 = 1 << 10;

/// An [`Out`] over a stack array.
struct Stage<'a>(&'a mut [u8]);

impl Out for Stage<'_> {
    #[inline(always)]
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        let dst = offset
            .checked_add(bytes.len())
            .and_then(|end| self.0.get_mut(offset..end));
        debug_assert!(dst.is_some(), "the client wrote outside a staged header");
        if let Some(dst) = dst {
            dst.copy_from_slice(bytes);
        }
    }
    fn zero(&mut self, offset: usize, len: usize) {
        if let Some(dst) = offset
            .checked_add(len)
            .and_then(|end| self.0.get_mut(offset..end))
        {
            dst.fill(0);
        }
    }
}

#[inline(always)]
fn word_ptr<W: Word>(w: &W) -> *mut u64 {
    w as *const W as *mut u64
}

#[inline(always)]
const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

impl<C: Mapped, K: Client, T: Clock> Buffer<C, K, T> {
    /// Writes one record of `payload` by sequences on `cpu` (this buffer's CPU).
    ///
    /// The buffer must be written only this way (with [`Buffer::switch_fenced`] for
    /// remote switches): never [`Buffer::reserve`], [`Buffer::write`] or
    /// [`Buffer::switch`].
    ///
    /// # Safety
    ///
    /// `C::Word` is 8 bytes with the layout of a `u64` (as every flavour is), and
    /// every writer of this buffer uses `write_seq` with `cpu` equal to this buffer's
    /// CPU.
    #[inline]
    pub unsafe fn write_seq<S: Sequencer>(
        &self,
        seq: &S,
        cpu: u32,
        event_id: u32,
        payload: &[u8],
    ) -> Result<(), SeqError> {
        let w = self.ctl.writer();
        let fence = &self.ctl.reader().fence;
        let s = self.geo.subbuf_size();
        let mut spins = 0u32;
        loop {
            // Acquire (O6): the load chain W, P, tag of S2, in this order.
            let old = w.write.load(Acquire);
            let prev = w.last_timestamp.load(Acquire);
            let tag = w.last_at.load(Acquire);
            // Acquire: pairs with the fence holder's release of the fence (after
            // its stores to the writer words).
            let holder = fence.load(Acquire);
            if holder != 0 {
                // The holder finishes a switch and releases the fence whatever we
                // do: wait for it, without losing the event, unless the holder is
                // this thread (a signal handler that interrupted it): it cannot
                // resume until we return.
                if holder == seq.thread_id() {
                    return Err(SeqError::Reserve(self.lose(ReserveError::Fenced)));
                }
                spins += 1;
                if spins.is_multiple_of(FENCE_SPINS) {
                    seq.wait();
                } else {
                    core::hint::spin_loop();
                }
                continue;
            }
            // Never before the previous record: the value check, not instruction
            // order, keeps timestamps non-decreasing (§10, the clock).
            let ts = self.clock.now_unordered().max(prev);
            let off = self.geo.offset(old);
            // S2: compress against P only if it is exactly the previous record's.
            let exact = tag == old;
            let rec = RecordInfo {
                event_id,
                payload_len: payload.len(),
                timestamp: ts,
                prev_timestamp: if exact { prev } else { 0 },
            };
            let record = align_up(off, K::RECORD_ALIGN as u64);
            let header_size = self.client.record_header_size(&rec);
            if header_size > RECORD_STAGE {
                return Err(SeqError::Reserve(self.lose(ReserveError::TooBig)));
            }
            let end = record + (header_size + payload.len()) as u64;
            if off == 0 || end >= s {
                if self.switch_seq(seq, cpu, event_id, payload, old, ts)? {
                    return Ok(());
                }
                if seq.cpu() != Some(cpu) {
                    return Err(SeqError::Moved);
                }
                continue;
            }
            let base = old - off;
            let new = base + end;
            let phys = match self.seq_phys(old) {
                Some(phys) => phys,
                None => return Err(SeqError::Reserve(self.lose(ReserveError::Wrap))),
            };
            let mut header = [0u8; RECORD_STAGE];
            self.client
                .write_record_header(&mut Stage(&mut header[..header_size]), &rec);
            // In range: `end < s`, and `phys` is checked.
            let dst = self.ctl.subbuf_ptr(phys).wrapping_add(record as usize);
            let record = Record {
                commit: Commit {
                    cpu: cpu as u64,
                    writer: word_ptr(&w.write),
                    fence: word_ptr(fence),
                    old,
                    new,
                    ts,
                },
                dst,
                header: u64::from_le_bytes(header[..8].try_into().expect("8 of 64")),
                header_len: header_size,
                payload: payload.as_ptr(),
                payload_len: payload.len(),
            };
            // Both forms: the words are this buffer's (u64-sized, the caller's
            // contract); the destination lies in the open sub-buffer `phys` after
            // `write` (nobody else writes there: S4, and the reader only takes
            // delivered sub-buffers); the sources live in this frame. An abort
            // leaves bytes beyond `write` (overwritten before any commit covers
            // them) and `last_at != write` (S2).
            let outcome = if header_size <= 8 && header_size + payload.len() >= 8 {
                // SAFETY: as above; the 8-byte header store ends inside the record.
                unsafe { seq.run_record(&record) }
            } else {
                // SAFETY: as above.
                unsafe { seq.run(&record.to_op(&header[..header_size])) }
            };
            match outcome {
                Outcome::Committed => return Ok(()),
                Outcome::Changed | Outcome::Aborted => {
                    if seq.cpu() != Some(cpu) {
                        return Err(SeqError::Moved);
                    }
                }
            }
        }
    }

    /// The physical sub-buffer of the open sub-buffer containing `pos`, if the id
    /// is in range (overwrite mode reads the id table).
    #[inline(always)]
    fn seq_phys(&self, pos: u64) -> Option<usize> {
        let slot = self.geo.slot(pos);
        match self.mode {
            Mode::Discard => Some(slot),
            // Acquire (O5): the opener cleared noref before its committing store,
            // which our load of `write` saw; the id cannot change until the
            // sub-buffer is delivered, after `write` leaves it (checked in the
            // sequence).
            Mode::Overwrite => {
                self.checked_phys(SubbufId::from_raw(self.ctl.slot(slot).id.load(Acquire)))
            }
        }
    }

    /// Delivers the sub-buffer starting at `start`, which `write` has left (its
    /// packet is final: S3), unless someone did. Idempotent and helpable at any
    /// time: no claim, only CASes from the undelivered state, so a deliverer
    /// preempted or killed anywhere in here delays the packet until the next
    /// helper at most (S5).
    fn deliver_seq(&self, start: u64) {
        let slot = self.geo.slot(start);
        let words = self.ctl.slot(slot);
        let full = self.geo.full_commit(start);
        let base = full - self.geo.subbuf_size();
        if self.mode == Mode::Overwrite {
            // The id first, then `delivered`: if `delivered` is still the base, the
            // id we hold is the one being written (noref clear) or the one a helper
            // marked delivered (noref set). A reader's swap changes the physical
            // index, so our CAS from a pre-delivery id fails after any swap. Acquire
            // (O5/O3): as the reader's loads.
            let id = SubbufId::from_raw(words.id.load(Acquire));
            if words.delivered.load(Acquire) != base {
                return;
            }
            if !id.noref() {
                let done = SubbufId::delivered(self.geo.lap(start), id.phys());
                // AcqRel (O5): the packet is final before a reader can take it.
                let _ = words
                    .id
                    .compare_exchange(id.raw(), done.raw(), AcqRel, Relaxed);
            }
        }
        // AcqRel (O3): publishes the packet (and the id) to readers and to the
        // next lap's opener; only the winner notifies.
        if words
            .delivered
            .compare_exchange(base, full, AcqRel, Relaxed)
            .is_ok()
        {
            self.client.delivered(self.geo.packet_seq(start));
        }
    }

    /// Stages the final header of the packet at `pos` (physical `phys`): its
    /// current header with the packet end applied.
    fn stage_packet_end(
        &self,
        pos: u64,
        phys: usize,
        ts: u64,
        content: u64,
        stage: &mut [u8; PACKET_STAGE],
    ) {
        let header = &mut stage[..self.header as usize];
        // SAFETY: the header of an open packet: written by its opener's committed
        // sequence, changed by nobody until it is delivered; a stale read (the
        // position moved) fails the sequence's `write` check.
        unsafe { self.ctl.read_bytes(phys, 0, header) };
        let end = PacketEnd {
            seq: self.geo.packet_seq(pos),
            timestamp: ts,
            content_size: content,
            packet_size: self.geo.subbuf_size(),
            events_discarded: self.discarded_total(),
        };
        self.client.packet_end(&mut Stage(header), &end);
    }

    /// The sub-buffer switch as one sequence: close the sub-buffer at `old` (if
    /// one is open), open the next with this record as its first. `Ok(false)`:
    /// the position moved or the sequence aborted; start over.
    #[cold]
    #[inline(never)]
    fn switch_seq<S: Sequencer>(
        &self,
        seq: &S,
        cpu: u32,
        event_id: u32,
        payload: &[u8],
        old: u64,
        ts: u64,
    ) -> Result<bool, SeqError> {
        let w = self.ctl.writer();
        let s = self.geo.subbuf_size();
        let off = self.geo.offset(old);
        let current = old - off;
        if current >= s {
            self.deliver_seq(current - s);
        }
        let rec = RecordInfo {
            event_id,
            payload_len: payload.len(),
            timestamp: ts,
            prev_timestamp: ts,
        };
        let header_size = self.client.record_header_size(&rec);
        let end = self.header + (header_size + payload.len()) as u64;
        // Strictly inside: `write` never rests on a boundary a sequence left it at,
        // so a boundary means a remote switch closed the sub-buffer before it.
        if end >= s || header_size > RECORD_STAGE || self.header as usize > PACKET_STAGE {
            return Err(SeqError::Reserve(self.lose(ReserveError::TooBig)));
        }
        let open = if off == 0 {
            old
        } else {
            current.wrapping_add(s)
        };
        let phys = match self.prepare_open(open) {
            Ok(phys) => phys,
            // Acquire (O1): as `open_next`; a refusal stands only on a fresh view.
            Err(e) if w.write.load(Acquire) == old => {
                return Err(SeqError::Reserve(self.lose(e)));
            }
            Err(_) => return Ok(false),
        };
        let mut closing = [0u8; PACKET_STAGE];
        let old_phys = if off != 0 { self.seq_phys(old) } else { None };
        if off != 0 {
            match old_phys {
                Some(p) => self.stage_packet_end(old, p, ts, off, &mut closing),
                None => return Err(SeqError::Reserve(self.lose(ReserveError::Wrap))),
            }
        }
        let mut packet = [0u8; PACKET_STAGE];
        let begin = PacketBegin {
            seq: self.geo.packet_seq(open),
            timestamp: ts,
        };
        self.client
            .packet_begin(&mut Stage(&mut packet[..self.header as usize]), &begin);
        let mut header = [0u8; RECORD_STAGE];
        self.client
            .write_record_header(&mut Stage(&mut header[..header_size]), &rec);
        let base = self.ctl.subbuf_ptr(phys);
        let record = base.wrapping_add(self.header as usize);
        let new = open.wrapping_add(end);
        let mut segments = [Segment::NONE; MAX_SEGMENTS];
        let mut n = 0;
        if let Some(p) = old_phys {
            // The closed packet's final header: it is complete once `write` leaves.
            segments[n] = Segment {
                dst: self.ctl.subbuf_ptr(p),
                src: closing.as_ptr(),
                len: self.header as usize,
            };
            n += 1;
        }
        for (dst, src, len) in [
            (base, packet.as_ptr(), self.header as usize),
            (record, header.as_ptr(), header_size),
            (
                record.wrapping_add(header_size),
                payload.as_ptr(),
                payload.len(),
            ),
        ] {
            segments[n] = Segment { dst, src, len };
            n += 1;
        }
        let commit = Commit {
            cpu: cpu as u64,
            writer: word_ptr(&w.write),
            fence: word_ptr(&self.ctl.reader().fence),
            old,
            new,
            ts,
        };
        let op = commit.op(segments, n);
        // SAFETY: as in `write_seq`; the close words of the old slot are read only
        // after `write` leaves it (S3), the new sub-buffer was prepared (its
        // previous lap delivered, the reader out of it).
        match unsafe { seq.run(&op) } {
            Outcome::Committed => {
                if off != 0 {
                    self.deliver_seq(old);
                }
                Ok(true)
            }
            Outcome::Changed | Outcome::Aborted => Ok(false),
        }
    }

    /// [`Buffer::switch`] for a sequence-written buffer, from any thread (the
    /// consumer): takes the fence, waits for the sequences in flight with
    /// `seq.barrier()`, switches, delivers, releases the fence.
    ///
    /// # Safety
    ///
    /// As for [`Buffer::write_seq`]; `seq.barrier()` reaches the buffer's writers
    /// (same process).
    pub unsafe fn switch_fenced<S: Sequencer>(
        &self,
        seq: &S,
        kind: Switch,
    ) -> Result<(), SwitchError> {
        let fence = &self.ctl.reader().fence;
        // AcqRel: serialises remote actors; Acquire sees the previous holder's
        // stores, Release is paired by the writers' Acquire load of the fence.
        while fence
            .compare_exchange(0, seq.thread_id(), AcqRel, Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        seq.barrier();
        let result = self.switch_owned(kind);
        // Release: our stores to the writer words before the next sequence.
        fence.store(0, Release);
        result
    }

    /// The switch, with the writer words owned (fence held, no sequence in flight).
    fn switch_owned(&self, kind: Switch) -> Result<(), SwitchError> {
        let w = self.ctl.writer();
        let s = self.geo.subbuf_size();
        // Acquire (O6): every committed sequence's stores.
        let old = w.write.load(Acquire);
        let ts = self.clock.now().max(w.last_timestamp.load(Acquire));
        let off = self.geo.offset(old);
        let current = old - off;
        if current >= s {
            self.deliver_seq(current - s);
        }
        if off == 0 {
            if kind == Switch::Active {
                return Ok(());
            }
            // Flush with no open packet: a header-only one, closed and delivered.
            if old >= self.geo.buffer_size() {
                self.deliver_seq(old - self.geo.buffer_size());
            }
            let phys = self.prepare_open(old)?;
            self.open_packet(old, phys, ts);
        } else if off == self.header && kind == Switch::Active {
            return Ok(());
        }
        let phys = self.seq_phys(old).ok_or(ReserveError::Wrap)?;
        let content = if off == 0 { self.header } else { off };
        let mut closing = [0u8; PACKET_STAGE];
        self.stage_packet_end(old, phys, ts, content, &mut closing);
        let header = &closing[..self.header as usize];
        // SAFETY: the open packet's header; we own the writer side (fence held, no
        // sequence in flight) and readers do not take undelivered packets.
        unsafe { self.ctl.write_bytes(phys, 0, header) };
        let new = current.wrapping_add(s);
        // Relaxed stores, published by the Release store of `write` (S2 order:
        // `last_at`, then `last_timestamp`, then `write`).
        w.last_at.store(new, Relaxed);
        w.last_timestamp.store(ts, Relaxed);
        w.write.store(new, Release);
        self.deliver_seq(old);
        Ok(())
    }
}
