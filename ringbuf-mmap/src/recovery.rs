//! Crash recovery: the packets a dead producer left in a file-backed channel.
//!
//! The file is read, never mapped (a producer that is not quite dead cannot change
//! what was read, and a short file is an error, not a SIGBUS), and read
//! incrementally: the header and metadata, then one buffer's control words at a
//! time (in an address-space reservation as large as the region, of which only the
//! control pages are touched), then one packet at a time. Memory stays bounded by
//! what is really read, whatever sizes the header claims.
//!
//! For every buffer, every sub-buffer from the reader position to the write
//! position is either a delivered packet, kept whole, or a partial one, cut at its
//! committed prefix (everything before it was committed) and closed with the
//! timestamp bound stored with that prefix ([`ringbuf_core::PrefixStamp`]). A
//! buffer written by restartable sequences ([`WritePath::Rseq`]) has no open
//! reservations: its open packet is kept up to `write`, whole.
//! Packets come out in order; one with nothing usable is skipped (a
//! `packet_seq_num` gap, which readers report as lost packets). Every packet is
//! checked against what CTF readers require (its sequence number, and time never
//! going backwards along the stream); one that fails is left out and counted in
//! [`RecoveryReport::rejected`]: only a corrupt file has any.
//!
//! Packets are CTF (the only format recovery knows how to close).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use ringbuf_core::ctf::{close_packet, PacketInfo, PACKET_HEADER_SIZE};
use ringbuf_core::{
    Control, Flavour, Layout, LocalWord, Mode, PrefixStamp, Region, RegionError, SharedWord, Word,
};

use crate::channel::{self, ChannelError, ChannelHeader, ChannelLayout, WritePath};

/// Why recovery failed. Every variant names the file it concerns.
#[derive(Debug)]
pub enum RecoveryError {
    /// The channel file could not be opened or read.
    Read {
        /// The channel file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The channel path is not a regular file (a directory, a FIFO, a device).
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// The file is not a valid channel.
    Channel {
        /// The channel file.
        path: PathBuf,
        /// What is wrong with it.
        error: ChannelError,
    },
    /// A buffer's control words cannot be given room in the address space (its
    /// header claims a region larger than this machine can map).
    TooLarge {
        /// The channel file.
        path: PathBuf,
        /// The buffer.
        buffer: u32,
        /// Bytes its region claims.
        bytes: u64,
    },
    /// A packet larger than the memory available.
    OutOfMemory {
        /// The channel file.
        path: PathBuf,
        /// Bytes needed.
        bytes: u64,
    },
    /// The trace directory could not be written.
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "reading {}: {source}", path.display()),
            Self::NotRegular { path } => write!(f, "{} is not a regular file", path.display()),
            Self::Channel { path, error } => write!(f, "{}: {error}", path.display()),
            Self::TooLarge {
                path,
                buffer,
                bytes,
            } => write!(
                f,
                "{}: buffer {buffer} claims {bytes} bytes, more than this machine can map",
                path.display()
            ),
            Self::OutOfMemory { path, bytes } => write!(
                f,
                "{}: no memory for a packet of {bytes} bytes",
                path.display()
            ),
            Self::Write { path, source } => write!(f, "writing {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for RecoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } | Self::Write { source, .. } => Some(source),
            Self::Channel { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Complete (delivered) packets recovered.
    pub complete: usize,
    /// Partial packets recovered up to their committed prefix.
    pub partial: usize,
    /// Sub-buffers with nothing usable, skipped.
    pub empty: usize,
    /// Packets left out because they contradict the channel or the packets around
    /// them (a wrong sequence number, time going backwards): the file is corrupt.
    pub rejected: usize,
    /// Bytes of committed records that could not be kept because they lie behind a
    /// reservation still open at the crash (the committed-prefix rule: an open
    /// record cannot be delimited, so nothing after it in its packet is trusted).
    pub committed_bytes_cut: u64,
}

/// A channel file opened for recovery: its header and metadata read and checked.
pub struct ChannelImage {
    file: File,
    path: PathBuf,
    header: ChannelHeader,
    layout: ChannelLayout,
    metadata: String,
}

impl ChannelImage {
    /// Opens and validates the channel at `path`.
    pub fn read(path: &Path) -> Result<Self, RecoveryError> {
        let read_err = |source| RecoveryError::Read {
            path: path.to_owned(),
            source,
        };
        let channel_err = |error| RecoveryError::Channel {
            path: path.to_owned(),
            error,
        };
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer;
        // it has no effect on the regular file we then insist on.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.file_type().is_file() {
            return Err(RecoveryError::NotRegular {
                path: path.to_owned(),
            });
        }
        let mut first = [0u8; size_of::<ChannelHeader>()];
        file.read_exact_at(&mut first, 0)
            .map_err(|_| channel_err(ChannelError::BadLayout("file too short")))?;
        // SAFETY: `first` holds a whole header; plain data.
        let header: ChannelHeader = unsafe { std::ptr::read_unaligned(first.as_ptr().cast()) };
        // Only a validated layout (which bounds the metadata) decides what to read.
        let (header, _, layout) =
            channel::header_config(&header, meta.len()).map_err(channel_err)?;
        let mut text = vec![0u8; header.metadata_len as usize];
        file.read_exact_at(&mut text, header.metadata_offset)
            .map_err(read_err)?;
        let metadata = String::from_utf8(text)
            .map_err(|_| channel_err(ChannelError::BadMetadata("not UTF-8")))?;
        channel::check_metadata(&metadata)
            .map_err(|why| channel_err(ChannelError::BadMetadata(why)))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            header,
            layout,
            metadata,
        })
    }

    /// The trace metadata the producer stored.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// The clock of the channel's timestamps, as its header records it.
    pub fn clock(&self) -> ringbuf_core::ctf::ClockDescription<'_> {
        // The header is our copy, checked in `read`.
        self.header.clock.describe().expect("checked when read")
    }

    /// Number of buffers.
    pub fn buffers(&self) -> u32 {
        self.header.buffers
    }

    /// Recovers every buffer's packets, in order, handing `emit(buffer, packet)`
    /// each one (exactly its `packet_size` bytes). Stops at the first error `emit`
    /// returns.
    pub fn recover(
        &mut self,
        mut emit: impl FnMut(u32, &[u8]) -> Result<(), RecoveryError>,
    ) -> Result<RecoveryReport, RecoveryError> {
        let mut report = RecoveryReport::default();
        let mut packet = Vec::new();
        for index in 0..self.header.buffers {
            let control = self.read_control(index)?;
            let channel_err = |error| RecoveryError::Channel {
                path: self.path.clone(),
                error: ChannelError::Region { index, error },
            };
            let (ptr, len, format) = (control.ptr(), control.len, self.header.format);
            // SAFETY: `control` is our private mapping of the region's size, alive
            // until the end of this iteration and used by this thread only, so the
            // local flavour's one-CPU contract holds trivially. Only the control
            // words are read through the region; packets are read from the file.
            let plans = match unsafe { Region::<SharedWord>::attach_raw(ptr, len, format) } {
                Err(RegionError::FlavourMismatch {
                    region: Flavour::Local,
                }) => {
                    // SAFETY: as above.
                    let region = unsafe { Region::<LocalWord>::attach_raw(ptr, len, format) };
                    self.plan(&region.map_err(channel_err)?, index, &mut report)?
                }
                other => self.plan(&other.map_err(channel_err)?, index, &mut report)?,
            };
            for plan in &plans {
                self.read_packet(plan, &mut packet)?;
                emit(index, &packet)?;
            }
        }
        Ok(report)
    }

    /// Buffer `index`'s control words (header, counters, slot words) in a private
    /// mapping as large as its region; the data pages are never touched.
    fn read_control(&self, index: u32) -> Result<LazyMemory, RecoveryError> {
        let size = self.layout.region_size;
        let too_large = || RecoveryError::TooLarge {
            path: self.path.clone(),
            buffer: index,
            bytes: size,
        };
        let config = ringbuf_core::Config {
            subbuf_size: self.header.subbuf_size,
            subbuf_count: self.header.subbuf_count,
            mode: Mode::from_u32(self.header.mode).expect("validated with the header"),
            nesting_limit: self.header.nesting_limit,
        };
        let control = Layout::new(&config)
            .expect("validated with the header")
            .data;
        let map = LazyMemory::new(usize::try_from(size).map_err(|_| too_large())?)
            .ok_or_else(too_large)?;
        // SAFETY: the mapping is `size >= control` bytes, ours alone.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.ptr(), control) };
        self.file
            .read_exact_at(bytes, self.layout.region_offset(index))
            .map_err(|source| RecoveryError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(map)
    }

    /// Decides, from the control words and each packet header, which packets of
    /// one buffer to recover and how to close them.
    fn plan<W: Word>(
        &self,
        region: &Region<'_, W>,
        index: u32,
        report: &mut RecoveryReport,
    ) -> Result<Vec<Plan>, RecoveryError> {
        // Relaxed everywhere: the words are our private copy, read by this thread.
        use std::sync::atomic::Ordering::Relaxed;
        let config = region.config();
        let geo = config.validate().expect("validated at attach");
        let s = geo.subbuf_size();
        let write = region.writer().write.load(Relaxed);
        let losses = region.losses();
        // Wrapping, and no `+` on positions below: every word comes from the file,
        // which may be corrupt (values near 2^64 would panic a debug build).
        let total_discarded = losses
            .full
            .load(Relaxed)
            .wrapping_add(losses.wrap.load(Relaxed))
            .wrapping_add(losses.big.load(Relaxed))
            .wrapping_add(losses.nested.load(Relaxed))
            .wrapping_add(losses.fenced.load(Relaxed));
        // Written by restartable sequences (docs/ARCHITECTURE.md §10): everything
        // behind `write` is committed (S1) and a packet's final header is written
        // before `write` leaves it (S5); commit counters and prefixes are unused.
        let sequences = WritePath::from_u32(self.header.writers) == Some(WritePath::Rseq);
        let consumed = region.reader().consumed.load(Relaxed);
        // Anything older than one lap before the write position is gone (overwrite
        // mode). At a boundary, the next sub-buffer is not opened yet, so all N slots
        // still hold the last N packets.
        let span = match geo.offset(write) {
            0 => geo.buffer_size(),
            _ => geo.buffer_size() - s,
        };
        let oldest = geo.subbuf_start(write).saturating_sub(span);
        let mut plans: Vec<Plan> = Vec::new();
        let mut next = Some(geo.subbuf_start(consumed.max(oldest)));
        while let Some(pos) = next.filter(|&pos| pos < write) {
            next = pos.checked_add(s);
            let slot = region.slot(geo.slot(pos));
            let full = geo.full_commit(pos);
            let lap_base = full.wrapping_sub(s);
            let committed = slot.commit.load(Relaxed).clamp(lap_base, full) - lap_base;
            let phys = match config.mode {
                Mode::Discard => geo.slot(pos) as u64,
                Mode::Overwrite => {
                    ringbuf_core::id::SubbufId::from_raw(slot.id.load(Relaxed)).phys()
                }
            };
            if phys >= config.physical_count() {
                report.rejected += 1;
                continue;
            }
            let offset = self.layout.region_offset(index) + region.layout().data as u64 + phys * s;
            let mut header = [0u8; PACKET_HEADER_SIZE];
            self.file
                .read_exact_at(&mut header, offset)
                .map_err(|source| RecoveryError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            let seq = geo.packet_seq(pos);
            // Left by `write` on the sequence path: final, only its delivery (which
            // anyone may do) can be missing.
            let left = sequences && write.wrapping_sub(pos) >= s;
            if slot.delivered.load(Relaxed) == full || left {
                match PacketInfo::parse_header(&header, s) {
                    Ok(info) if info.seq == seq => plans.push(Plan {
                        offset,
                        begin: info.timestamp_begin,
                        end: info.timestamp_end,
                        content: info.content_size,
                        size: info.packet_size,
                        discarded: info.events_discarded,
                        partial: false,
                    }),
                    _ => report.rejected += 1,
                }
                continue;
            }
            if sequences {
                // The open packet, committed up to `write`. `last_timestamp` bounds
                // every committed record: a sequence raises its time to it, and
                // an aborted one only ever stored a later time.
                let content = write.wrapping_sub(pos);
                match PacketInfo::parse_unclosed(&header) {
                    Ok(info) if info.seq == seq && content >= PACKET_HEADER_SIZE as u64 => plans
                        .push(Plan {
                            offset,
                            begin: info.timestamp_begin,
                            end: region
                                .writer()
                                .last_timestamp
                                .load(Relaxed)
                                .max(info.timestamp_begin),
                            content,
                            size: content.next_multiple_of(4096).min(s),
                            discarded: 0,
                            partial: true,
                        }),
                    _ => report.empty += 1,
                }
                continue;
            }
            // Not delivered: keep the committed prefix, if it is this lap's and its
            // stamp vouches for it. A prefix some stamp matches is one a committer
            // stored whole; its stamp bounds every record in it.
            let prefix = slot.prefix.load(Relaxed);
            let bound = [&slot.prefix_stamp_pre, &slot.prefix_stamp_post]
                .into_iter()
                .find_map(|w| PrefixStamp::from_raw(w.load(Relaxed)).bound_for(prefix));
            let info = PacketInfo::parse_unclosed(&header);
            match (info, bound) {
                (Ok(info), Some(bound))
                    if prefix > lap_base
                        && prefix <= full
                        && prefix - lap_base >= PACKET_HEADER_SIZE as u64
                        && info.seq == seq =>
                {
                    let content = prefix - lap_base;
                    plans.push(Plan {
                        offset,
                        begin: info.timestamp_begin,
                        end: bound.max(info.timestamp_begin),
                        content,
                        size: content.next_multiple_of(4096).min(s),
                        discarded: 0,
                        partial: true,
                    });
                    report.committed_bytes_cut += committed.saturating_sub(content);
                }
                _ => {
                    report.empty += 1;
                    report.committed_bytes_cut += committed;
                }
            }
        }
        // A partial packet's bound is rounded up: keep it within the next packet's
        // begin (time never goes backwards across packets).
        for i in 1..plans.len() {
            let next_begin = plans[i].begin;
            let plan = &mut plans[i - 1];
            if plan.partial {
                plan.end = plan.end.min(next_begin).max(plan.begin);
            }
        }
        // What readers require along a stream; a packet that breaks it is corrupt.
        let mut last_end = 0;
        plans.retain(|plan| {
            let ordered = plan.begin >= last_end && plan.end >= plan.begin;
            if ordered {
                last_end = plan.end;
            } else {
                report.rejected += 1;
            }
            ordered
        });
        // The discarded count is a running total that never decreases, and the
        // stream's last packet carries the final count.
        let mut running = 0;
        let last = plans.len().wrapping_sub(1);
        for (i, plan) in plans.iter_mut().enumerate() {
            running = running.max(plan.discarded);
            if i == last {
                running = running.max(total_discarded);
            }
            plan.discarded = running;
            if plan.partial {
                report.partial += 1;
            } else {
                report.complete += 1;
            }
        }
        Ok(plans)
    }

    /// Reads the packet `plan` describes into `packet` and closes it.
    fn read_packet(&self, plan: &Plan, packet: &mut Vec<u8>) -> Result<(), RecoveryError> {
        let size = plan.size as usize;
        packet.clear();
        packet
            .try_reserve_exact(size)
            .map_err(|_| RecoveryError::OutOfMemory {
                path: self.path.clone(),
                bytes: plan.size,
            })?;
        packet.resize(size, 0);
        self.file
            .read_exact_at(&mut packet[..plan.content as usize], plan.offset)
            .map_err(|source| RecoveryError::Read {
                path: self.path.clone(),
                source,
            })?;
        close_packet(
            &mut packet[..],
            plan.end,
            plan.content,
            plan.size,
            plan.discarded,
        );
        Ok(())
    }
}

/// One packet to recover.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Where the sub-buffer starts in the file.
    offset: u64,
    /// `timestamp_begin`.
    begin: u64,
    /// `timestamp_end` to write.
    end: u64,
    /// Bytes of header and records to keep.
    content: u64,
    /// `packet_size` to write.
    size: u64,
    /// `events_discarded` to write.
    discarded: u64,
    /// Cut at its committed prefix.
    partial: bool,
}

/// Private anonymous memory reserved without being committed (`MAP_NORESERVE`):
/// only the pages written cost memory.
struct LazyMemory {
    ptr: NonNull<u8>,
    len: usize,
}

impl LazyMemory {
    fn new(len: usize) -> Option<Self> {
        // SAFETY: a fresh anonymous private mapping; no address hint, no file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            ptr: NonNull::new(ptr.cast())?,
            len,
        })
    }

    fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for LazyMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len.max(1)) };
    }
}

/// Recovers the channel file `channel` into a new CTF trace directory `out`
/// (`metadata` plus `stream_<buffer>` files of whole packets) that babeltrace2 reads.
pub fn recover_to_dir(channel: &Path, out: &Path) -> Result<RecoveryReport, RecoveryError> {
    use std::io::Write;
    let mut image = ChannelImage::read(channel)?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RecoveryError::Write { path, source }
    };
    std::fs::create_dir(out).map_err(write_err(out))?;
    let metadata = out.join("metadata");
    std::fs::write(&metadata, image.metadata()).map_err(write_err(&metadata))?;
    let mut streams: Vec<Option<(PathBuf, io::BufWriter<File>)>> =
        (0..image.buffers()).map(|_| None).collect();
    let report = image.recover(|buffer, packet| {
        let stream = &mut streams[buffer as usize];
        if stream.is_none() {
            let path = out.join(format!("stream_{buffer}"));
            let file = File::create_new(&path).map_err(write_err(&path))?;
            *stream = Some((path, io::BufWriter::new(file)));
        }
        let (path, file) = stream.as_mut().expect("created above");
        file.write_all(packet).map_err(write_err(path))
    })?;
    for (path, mut file) in streams.into_iter().flatten() {
        file.flush().map_err(write_err(&path))?;
    }
    Ok(report)
}
