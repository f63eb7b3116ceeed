//! The consumer: another process attaches to a channel by path or descriptor and
//! reads packets from every buffer.
//!
//! The region is untrusted. Attaching validates the channel header and every
//! region; reading copies each packet into the consumer's memory first, so the
//! caller validates and parses a private copy that nobody can change under it.
//! Positions and ids that change afterwards are bounds-checked by the core at each
//! use. A file may also be truncated under the mapping: [`crate::guard`] turns the
//! resulting SIGBUS into an error.
//!
//! On a per-thread channel the consumer also looks after the slot table: reading a
//! retiring slot to the end frees it for another thread, and [`Consumer::switch_all`]
//! asks the owners to close their packets instead of closing them itself.
//!
//! The metadata may grow while the producer runs (event classes registered after
//! the start): [`Consumer::metadata`] is the text at attach time, and
//! [`Consumer::metadata_update`] and each [`ExportedPacket::metadata`] hand out
//! what was appended since, in order, each piece once.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use ringbuf_core::ctf::ClockDescription;
use ringbuf_core::{
    Buffer, Client, Clock, Flavour, LocalWord, ReadError, Region, RegionError, SharedWord, Switch,
    Word,
};

use crate::backing::Shm;
use crate::channel::{self, ChannelError, ChannelHeader, MetadataCursor, WritePath};
use crate::guard;
use crate::producer::wakeup_path;
use crate::slots::{SlotLosses, SlotState, SlotTable};
use crate::wakeup::Wakeup;

/// Why reading failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumeError {
    /// Another reader is attached to this buffer.
    ReaderBusy {
        /// The buffer.
        buffer: u32,
    },
    /// The buffer's state is inconsistent (a hostile or corrupt region).
    Corrupt {
        /// The buffer.
        buffer: u32,
        /// What the core reported.
        error: ReadError,
    },
    /// The shared file was truncated under the mapping: the channel is unusable.
    Truncated,
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReaderBusy { buffer } => write!(f, "buffer {buffer} already has a reader"),
            Self::Corrupt { buffer, error } => write!(f, "buffer {buffer}: {error}"),
            Self::Truncated => f.write_str("the channel file was truncated"),
        }
    }
}

impl std::error::Error for ConsumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Corrupt { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A packet to export, held until the exporter returns.
#[derive(Debug)]
pub struct ExportedPacket<'a> {
    /// The backing file (memfd or file) holding the packet.
    pub file: &'a std::fs::File,
    /// Offset of the packet in `file`.
    pub offset: u64,
    /// Its header (`packet_size` bytes are to be moved).
    pub info: ringbuf_core::ctf::PacketInfo,
    /// Metadata text the producer appended since this consumer last handed some
    /// out (here or by [`Consumer::metadata_update`]): append it to the
    /// destination's metadata *before* the packet, which may hold events of the
    /// classes it declares. Read after the packet was taken, so it covers every
    /// class the packet uses.
    pub metadata: Option<String>,
}

/// Why an export stopped.
#[derive(Debug)]
pub enum ExportError {
    /// Reading the buffer failed.
    Consume(ConsumeError),
    /// The packet header is invalid.
    Packet(ringbuf_core::ctf::PacketError),
    /// The packet header contradicts its position or the packets exported before
    /// it from the same buffer (a corrupt or hostile region): exporting it would
    /// make the whole stream unreadable.
    Inconsistent {
        /// The buffer.
        buffer: u32,
        /// The packet's sequence number, from its position.
        seq: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// Moving the bytes failed.
    Io(std::io::Error),
    /// The metadata appended since the last look is invalid (a corrupt or hostile
    /// channel): the packets that may use it are not exported.
    Metadata(ChannelError),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Consume(e) => write!(f, "{e}"),
            Self::Packet(e) => write!(f, "invalid packet: {e}"),
            Self::Inconsistent { buffer, seq, why } => {
                write!(f, "buffer {buffer}, packet {seq}: {why}")
            }
            Self::Io(e) => write!(f, "export: {e}"),
            Self::Metadata(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Consume(e) => Some(e),
            Self::Packet(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::Metadata(e) => Some(e),
            Self::Inconsistent { .. } => None,
        }
    }
}

/// A channel attached for reading. `W` is the flavour of its buffers
/// ([`SharedWord`] for per-CPU channels, [`LocalWord`] for per-thread ones).
pub struct Consumer<W: Word, K: Client, T: Clock> {
    buffers: Vec<Buffer<Region<'static, W>, K, T>>,
    header: ChannelHeader,
    metadata: String,
    /// How far the metadata was read (and handed out).
    metadata_read: std::sync::Mutex<MetadataCursor>,
    wakeup: Option<Wakeup>,
    /// Set for good once a truncation was seen: the zero pages mapped over the
    /// file's missing ones stay.
    truncated: std::sync::atomic::AtomicBool,
    /// Per buffer, the last packet exported (see [`StreamTail`]).
    tails: std::sync::Mutex<Vec<Option<StreamTail>>>,
    slots: SlotTable,
    shm: Shm,
}

/// What a CTF stream requires of the next packet, from the last one exported:
/// sequence numbers increase, time never goes backwards, the discarded count never
/// decreases. Packets a region's (possibly hostile) writers finalised are checked
/// against it before they are exported.
#[derive(Clone, Copy, Debug)]
struct StreamTail {
    seq: u64,
    timestamp_end: u64,
    events_discarded: u64,
}

impl StreamTail {
    /// Checks `info`, the header of the packet at sequence number `seq`, against
    /// the tail (if any) and itself.
    fn check(
        tail: Option<Self>,
        seq: u64,
        info: &ringbuf_core::ctf::PacketInfo,
    ) -> Result<Self, &'static str> {
        if info.seq != seq {
            return Err("its header's sequence number differs from its position's");
        }
        if info.timestamp_end < info.timestamp_begin {
            return Err("it ends before it begins");
        }
        if let Some(tail) = tail {
            if seq <= tail.seq {
                return Err("its sequence number does not follow the previous packet's");
            }
            if info.timestamp_begin < tail.timestamp_end {
                return Err("it begins before the previous packet ends");
            }
            if info.events_discarded < tail.events_discarded {
                return Err("its discarded-event count is lower than the previous packet's");
            }
        }
        Ok(Self {
            seq,
            timestamp_end: info.timestamp_end,
            events_discarded: info.events_discarded,
        })
    }
}

impl<W: Word, K: Client, T: Clock> Consumer<W, K, T> {
    /// Attaches to the file-backed channel at `path` (and its wakeup FIFO, if any).
    pub fn attach_path(
        path: &Path,
        format: u32,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        let shm = Shm::open(path)?;
        let wakeup = Wakeup::open_fifo(&wakeup_path(path)).ok();
        Self::attach(shm, wakeup, format, client, clock)
    }

    /// Attaches to a channel received as descriptors (memfd and eventfd).
    pub fn attach_fd(
        memfd: OwnedFd,
        wakeup: Option<OwnedFd>,
        format: u32,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        let shm = Shm::from_fd(memfd)?;
        Self::attach(shm, wakeup.map(Wakeup::from_fd), format, client, clock)
    }

    fn attach(
        shm: Shm,
        wakeup: Option<Wakeup>,
        format: u32,
        mut client: impl FnMut(u32) -> K,
        mut clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        let watch = guard::watch(&shm);
        let (header, config, layout) = channel::read_header(&shm)?;
        if header.format != format {
            return Err(ChannelError::BadHeader("record format differs"));
        }
        let mut metadata_read = MetadataCursor::new();
        let metadata = metadata_read.read(&shm, &header)?.unwrap_or_default();
        let mut buffers = Vec::with_capacity(header.buffers as usize);
        for index in 0..header.buffers {
            // SAFETY: the mapping is kept in `self` after the buffers (drop order);
            // the layout was checked against the file. For local-flavour buffers the
            // consumer never writes writer words (`switch_all` skips them; the reader
            // words it writes are full atomics in both flavours).
            let region = unsafe { channel::attach_region::<W>(&shm, &layout, format, index)? };
            // Each region validates itself, but the channel header's sub-buffer size
            // sizes `drain`'s copies: a region of another geometry would yield
            // copies that are not its packets.
            if ringbuf_core::Control::config(&region) != config {
                return Err(ChannelError::BadLayout(
                    "a region's configuration differs from the channel's",
                ));
            }
            buffers.push(Buffer::new(region, client(index), clock(index))?);
        }
        if watch.truncated() {
            return Err(ChannelError::BadLayout("truncated while attaching"));
        }
        // SAFETY: the layout was checked against the file; the mapping is kept in
        // `self` after the table (drop order).
        let slots = unsafe { channel::slot_table(&shm, &layout, header.buffers) };
        Ok(Self {
            buffers,
            header,
            metadata,
            metadata_read: std::sync::Mutex::new(metadata_read),
            wakeup,
            truncated: Default::default(),
            tails: std::sync::Mutex::new(vec![None; header.buffers as usize]),
            slots,
            shm,
        })
    }

    /// The trace metadata (TSDL) the producer had stored when this consumer
    /// attached. The producer may append to it later: see
    /// [`Consumer::metadata_update`].
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// The metadata text the producer appended since this consumer attached or
    /// last handed some out (here or with an [`ExportedPacket`]); `None` if none.
    /// Each piece is handed out once, in order: a consumer that writes a trace
    /// writes [`Consumer::metadata`] first, then every update as it comes, each
    /// before the packets exported after it. The text is checked (whole
    /// declarations; see [`crate::check_metadata_update`]) and its length against
    /// the channel's metadata area: a corrupt or hostile channel yields
    /// [`ChannelError::BadMetadata`], a truncated file
    /// [`ChannelError::BadLayout`].
    pub fn metadata_update(&self) -> Result<Option<String>, ChannelError> {
        use std::sync::atomic::Ordering::Relaxed;
        let truncated = ChannelError::BadLayout("the channel file was truncated");
        // Relaxed: as in `drain`.
        if self.truncated.load(Relaxed) {
            return Err(truncated);
        }
        let watch = guard::watch(&self.shm);
        let update = self.read_metadata_update();
        if watch.truncated() {
            self.truncated.store(true, Relaxed);
            return Err(truncated);
        }
        update
    }

    /// [`Consumer::metadata_update`] under the caller's truncation watch.
    fn read_metadata_update(&self) -> Result<Option<String>, ChannelError> {
        let mut cursor = self.metadata_read.lock().unwrap_or_else(|p| p.into_inner());
        cursor.read(&self.shm, &self.header)
    }

    /// The clock of the channel's timestamps, as its header records it.
    pub fn clock(&self) -> ClockDescription<'_> {
        // The header is this consumer's copy, checked when attaching.
        self.header
            .clock
            .describe()
            .expect("checked when attaching")
    }

    /// The mapping (e.g. to check what the consumer touches).
    pub fn shm(&self) -> &Shm {
        &self.shm
    }

    /// Where buffer `index`'s physical sub-buffer `phys` starts in the mapping.
    pub fn subbuf_offset(&self, index: u32, phys: usize) -> Option<u64> {
        let buffer = self.buffers.get(index as usize)?;
        let region = self.header.regions_offset + self.header.region_stride * index as u64;
        Some(region + buffer.control().layout().data as u64 + phys as u64 * self.header.subbuf_size)
    }

    /// Bytes per sub-buffer.
    pub fn subbuf_size(&self) -> u64 {
        self.header.subbuf_size
    }

    /// Number of buffers.
    pub fn buffer_count(&self) -> u32 {
        self.header.buffers
    }

    /// Process id of the producer.
    pub fn producer_pid(&self) -> u32 {
        self.header.producer_pid
    }

    /// How the producer's writers update the buffers (`None`: an unknown value in
    /// the header, from a newer or hostile producer).
    pub fn write_path(&self) -> Option<WritePath> {
        WritePath::from_u32(self.header.writers)
    }

    /// Counters of buffer `index` (as the region says: untrusted); `None` if there
    /// is no such buffer or the file was truncated.
    pub fn stats(&self, index: u32) -> Option<ringbuf_core::Stats> {
        use std::sync::atomic::Ordering::Relaxed;
        let buffer = self.buffers.get(index as usize)?;
        // Relaxed: as in `drain`.
        if self.truncated.load(Relaxed) {
            return None;
        }
        // Reading the counters of a truncated file raises SIGBUS like any read.
        let watch = guard::watch(&self.shm);
        let stats = buffer.stats();
        if watch.truncated() {
            self.truncated.store(true, Relaxed);
            return None;
        }
        Some(stats)
    }

    /// What the slot table says of buffer `index` (untrusted); `None` if there is
    /// no such buffer, the file was truncated, or the channel is per-CPU (whose
    /// buffers have no owner).
    pub fn slot_state(&self, index: u32) -> Option<SlotState> {
        self.read_slot_table(|slots| slots.state(index)).flatten()
    }

    /// Events a per-thread channel dropped because their thread had no slot (as
    /// the file says: untrusted); `None` if the file was truncated or the channel
    /// is per-CPU.
    pub fn slot_losses(&self) -> Option<SlotLosses> {
        self.read_slot_table(SlotTable::losses)
    }

    /// `f` of a per-thread channel's slot table, watched for truncation.
    fn read_slot_table<R>(&self, f: impl FnOnce(&SlotTable) -> R) -> Option<R> {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: as in `drain`.
        if W::FLAVOUR != Flavour::Local || self.truncated.load(Relaxed) {
            return None;
        }
        let watch = guard::watch(&self.shm);
        let result = f(&self.slots);
        if watch.truncated() {
            self.truncated.store(true, Relaxed);
            return None;
        }
        Some(result)
    }

    /// Buffer `index`'s retiring state word, loaded before it is read (see
    /// [`Consumer::free_if_read`]); never for a per-CPU channel.
    fn retiring(&self, index: u32) -> Option<u64> {
        (W::FLAVOUR == Flavour::Local)
            .then(|| self.slots.retiring(index))
            .flatten()
    }

    /// Frees buffer `index`'s slot for another thread if it was `retiring` when a
    /// read began and that read reached the end: the owner closed its last packet
    /// before it retired, so everything it wrote was read.
    fn free_if_read(&self, index: u32, retiring: Option<u64>, read_to_end: bool) {
        if let (Some(word), true) = (retiring, read_to_end) {
            self.slots.free(index, word);
        }
    }

    /// Copies the complete packets of buffer `index` out, one at a time, into
    /// `scratch` (a whole sub-buffer), and hands each copy to `f`. Returns the number
    /// of packets: at most one buffer's worth (`subbuf_count`) per call, so that
    /// writers that keep delivering (or a hostile process faking deliveries ahead
    /// of the reader) cannot keep the call from returning; call again for more.
    pub fn drain(
        &self,
        index: u32,
        scratch: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, ConsumeError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(buffer) = self.buffers.get(index as usize) else {
            return Ok(0);
        };
        // Relaxed: a flag this thread set or a previous call's; no data depends on it.
        if self.truncated.load(Relaxed) {
            return Err(ConsumeError::Truncated);
        }
        scratch.resize(self.header.subbuf_size as usize, 0);
        let watch = guard::watch(&self.shm);
        let retiring = self.retiring(index);
        let result = (|| {
            let mut reader = buffer
                .reader()
                .map_err(|_| ConsumeError::ReaderBusy { buffer: index })?;
            let mut packets = 0;
            while (packets as u64) < self.header.subbuf_count {
                match reader.get_next_subbuf() {
                    Ok(sub) => {
                        let copied = reader.read_at(&sub, 0, scratch);
                        reader.put_next_subbuf(sub);
                        if watch.truncated() {
                            return Err(ConsumeError::Truncated);
                        }
                        if !copied {
                            // Not reachable with a validated channel (its regions'
                            // sub-buffers are `scratch`'s size); never hand out a stale
                            // copy.
                            return Err(ConsumeError::Corrupt {
                                buffer: index,
                                error: ReadError::Corrupt,
                            });
                        }
                        f(scratch);
                        packets += 1;
                    }
                    Err(ReadError::NoData) => return Ok((packets, true)),
                    Err(error) => {
                        return Err(ConsumeError::Corrupt {
                            buffer: index,
                            error,
                        })
                    }
                }
            }
            Ok((packets, false))
            // `reader` is dropped here: releasing it writes the region too.
        })();
        if let Ok((_, read_to_end)) = result {
            self.free_if_read(index, retiring, read_to_end);
        }
        // Checked once the reader is released, whatever the result: the release (or
        // the read that made the state look corrupt) may be what hit the cut, and the
        // zero page the guard mapped over it would hide the truncation from every
        // later call.
        if watch.truncated() {
            self.truncated.store(true, Relaxed);
            return Err(ConsumeError::Truncated);
        }
        result.map(|(packets, _)| packets)
    }

    /// Hands each complete packet of buffer `index` to `export` without copying
    /// it: `export` gets the backing file, the packet's offset in it and its
    /// validated CTF header, and must move the bytes (e.g. with splice) and return
    /// only when the kernel no longer needs the pages: the sub-buffer is released
    /// to the writers when it returns. Only the packet header is read here. At most
    /// one buffer's worth of packets per call (see [`Consumer::drain`]).
    pub fn export(
        &self,
        index: u32,
        export: impl FnMut(ExportedPacket<'_>) -> std::io::Result<()>,
    ) -> Result<usize, ExportError> {
        self.export_until(index, false, export)
    }

    /// Like [`Consumer::export`], but only the packets that were complete when the
    /// call began: a snapshot, finite even while writers keep going.
    pub fn export_snapshot(
        &self,
        index: u32,
        export: impl FnMut(ExportedPacket<'_>) -> std::io::Result<()>,
    ) -> Result<usize, ExportError> {
        self.export_until(index, true, export)
    }

    fn export_until(
        &self,
        index: u32,
        snapshot: bool,
        mut export: impl FnMut(ExportedPacket<'_>) -> std::io::Result<()>,
    ) -> Result<usize, ExportError> {
        use ringbuf_core::ctf::{PacketInfo, PACKET_HEADER_SIZE};
        let Some(buffer) = self.buffers.get(index as usize) else {
            return Ok(0);
        };
        // Relaxed: as in `drain`.
        if self.truncated.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ExportError::Consume(ConsumeError::Truncated));
        }
        let watch = guard::watch(&self.shm);
        let retiring = self.retiring(index);
        let result = (|| {
            let mut reader = buffer
                .reader()
                .map_err(|_| ExportError::Consume(ConsumeError::ReaderBusy { buffer: index }))?;
            let mut packets = 0;
            let end = if snapshot {
                reader.snapshot().produced
            } else {
                u64::MAX
            };
            // At most one buffer's worth per call, as in `drain`: the positions come
            // from the region, so `end` alone does not bound a hostile one.
            while (packets as u64) < self.header.subbuf_count {
                // Checked before getting: in overwrite mode a get takes the packet.
                if reader.snapshot().consumed >= end {
                    return Ok((packets, true));
                }
                let sub = match reader.get_next_subbuf() {
                    Ok(sub) => sub,
                    Err(ReadError::NoData) => return Ok((packets, true)),
                    Err(error) => {
                        return Err(ExportError::Consume(ConsumeError::Corrupt {
                            buffer: index,
                            error,
                        }))
                    }
                };
                // The header is copied out and checked; the packet is described by
                // the copy, so a hostile writer cannot make us export beyond the
                // sub-buffer.
                let mut header = [0u8; PACKET_HEADER_SIZE];
                reader.read_at(&sub, 0, &mut header);
                let info = PacketInfo::parse_header(&header, self.header.subbuf_size);
                let seq = sub.packet_seq();
                let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
                let tail = &mut tails[index as usize];
                let result = match info {
                    Ok(_) if watch.truncated() => {
                        Err(ExportError::Consume(ConsumeError::Truncated))
                    }
                    Ok(info) => match StreamTail::check(*tail, seq, &info) {
                        // The metadata after the get: a class the packet uses was
                        // published before its id, so before the event, whose
                        // commit the get acquired.
                        Ok(next) => match self.read_metadata_update() {
                            Ok(metadata) => export(ExportedPacket {
                                file: self.shm.file(),
                                offset: self
                                    .subbuf_offset(index, sub.phys())
                                    .expect("index checked"),
                                info,
                                metadata,
                            })
                            .map(|()| *tail = Some(next))
                            .map_err(ExportError::Io),
                            Err(e) => Err(ExportError::Metadata(e)),
                        },
                        Err(why) => Err(ExportError::Inconsistent {
                            buffer: index,
                            seq,
                            why,
                        }),
                    },
                    Err(e) => Err(ExportError::Packet(e)),
                };
                drop(tails);
                reader.put_next_subbuf(sub);
                result?;
                packets += 1;
            }
            Ok((packets, false))
        })();
        if let Ok((_, read_to_end)) = result {
            self.free_if_read(index, retiring, read_to_end);
        }
        // As in `drain`: once the reader is released, whatever the result.
        if watch.truncated() {
            self.truncated
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(ExportError::Consume(ConsumeError::Truncated));
        }
        result.map(|(packets, _)| packets)
    }

    /// Waits up to `timeout` for a delivery wakeup (sleeps the whole timeout when the
    /// channel has no wakeup descriptor). Returns whether one came.
    pub fn wait(&self, timeout: Duration) -> bool {
        match &self.wakeup {
            Some(w) => w.wait(timeout).unwrap_or(false),
            None => {
                std::thread::sleep(timeout);
                false
            }
        }
    }

    /// Makes every buffer's open packet readable (live mode: call it
    /// periodically); returns whether the packets are closed already.
    ///
    /// On a per-CPU (shared-flavour) channel it closes them itself: the consumer is
    /// one more writer, which that flavour allows; returns true. On a per-CPU
    /// channel written by rseq sequences ([`WritePath::Rseq`]) it switches under
    /// the buffer's fence after a `membarrier` if it runs in the producer's process
    /// (true), and cannot from another process (false: packets close as they fill).
    /// A per-thread
    /// channel's buffers are never written by a consumer (the local flavour's
    /// contract: all writers on one CPU at a time), so there it *requests* a switch
    /// of every owned slot, which the owner honours on its next event with
    /// `switch(Active)` (whatever `kind`), and returns false. A thread that writes
    /// no more events keeps its packet open until it exits (its exit hook flushes
    /// it).
    pub fn switch_all(&self, kind: Switch) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: as in `drain`.
        if self.truncated.load(Relaxed) {
            return false;
        }
        // Switching writes the region, requesting writes the slot table: a truncated
        // file raises SIGBUS.
        let watch = guard::watch(&self.shm);
        let local = W::FLAVOUR == Flavour::Local;
        let rseq = WritePath::from_u32(self.header.writers) == Some(WritePath::Rseq);
        // An rseq channel's buffers are switched under a fence after a membarrier
        // that reaches the producer's threads: only from the producer's process.
        // SAFETY: getpid has no preconditions.
        let same_process = self.header.producer_pid == unsafe { libc::getpid() } as u32;
        let sequencer = if rseq && same_process {
            crate::rseq::Rseq::get().ok()
        } else {
            None
        };
        let mut switched = !local;
        for (index, b) in (0..).zip(&self.buffers) {
            if local {
                self.slots.request_switch(index);
            } else if let Some(seq) = &sequencer {
                // SAFETY: the producer's buffers are written by `write_seq` only and it
                // registered the barrier for this, its own, process.
                let _ = unsafe { b.switch_fenced(seq, kind) };
            } else if rseq {
                // Another process: its packets close as they fill (the documented
                // limit of the rseq path).
                switched = false;
            } else {
                let _ = b.switch(kind);
            }
        }
        if watch.truncated() {
            self.truncated.store(true, Relaxed);
        }
        switched
    }
}

/// A consumer of a file-backed channel of either kind: reading does not depend on
/// the writers' flavour, which [`AnyConsumer::attach_path`] reads from the
/// channel's regions. Match on it to use the consumer inside.
pub enum AnyConsumer<K: Client, T: Clock> {
    /// A per-CPU channel's (shared flavour).
    PerCpu(PerCpuConsumer<K, T>),
    /// A per-thread channel's (local flavour): see [`Consumer::switch_all`].
    PerThread(PerThreadConsumer<K, T>),
}

impl<K: Client, T: Clock> AnyConsumer<K, T> {
    /// Attaches to the file-backed channel at `path`, per-CPU or per-thread (as
    /// [`Consumer::attach_path`]).
    pub fn attach_path(
        path: &Path,
        format: u32,
        mut client: impl FnMut(u32) -> K,
        mut clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        // Each region's header names its flavour; attaching with the other one is
        // refused before anything else is done with it.
        match PerCpuConsumer::attach_path(path, format, &mut client, &mut clock) {
            Err(ChannelError::Region {
                error:
                    RegionError::FlavourMismatch {
                        region: Flavour::Local,
                    },
                ..
            }) => PerThreadConsumer::attach_path(path, format, client, clock).map(Self::PerThread),
            other => other.map(Self::PerCpu),
        }
    }
}

/// A per-CPU channel's consumer.
pub type PerCpuConsumer<K, T> = Consumer<SharedWord, K, T>;
/// A per-thread channel's consumer.
pub type PerThreadConsumer<K, T> = Consumer<LocalWord, K, T>;
