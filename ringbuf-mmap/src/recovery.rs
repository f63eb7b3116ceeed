//! Crash recovery: the packets a dead producer left in a file-backed channel.
//!
//! The file is read into private memory (a producer that is not quite dead cannot
//! change it under us, and a short file is an error, not a SIGBUS). For every
//! buffer, every sub-buffer from the reader position to the write position is
//! either a delivered packet, kept whole, or a partial one, cut at its committed
//! prefix (everything before it was committed) with its sizes, end time and discarded
//! count patched. Packets come out in order; one that has nothing committed is
//! skipped (a `packet_seq_num` gap, which readers report as lost packets).
//!
//! Packets are CTF (the only format recovery knows how to patch).

use std::path::Path;

use ringbuf_core::ctf::{PacketInfo, CTF_MAGIC, PACKET_HEADER_SIZE};
use ringbuf_core::{
    Control, Flavour, LocalWord, Mapped, Mode, Region, RegionError, SharedWord, Word,
};

use crate::channel::{self, ChannelError, ChannelHeader, ChannelLayout};

/// Why recovery failed.
#[derive(Debug)]
pub enum RecoveryError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not a valid channel.
    Channel(ChannelError),
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the channel: {e}"),
            Self::Channel(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Complete (delivered) packets recovered.
    pub complete: usize,
    /// Partial packets recovered up to their committed prefix.
    pub partial: usize,
    /// Sub-buffers with nothing committed, skipped.
    pub empty: usize,
    /// Bytes of committed records that could not be kept because they lie behind a
    /// reservation still open at the crash (the committed-prefix rule: an open
    /// record cannot be delimited, so nothing after it in its packet is trusted).
    pub committed_bytes_cut: u64,
}

/// A channel file read into private, 8-byte aligned memory.
pub struct ChannelImage {
    words: Vec<u64>,
    len: usize,
    header: ChannelHeader,
    layout: ChannelLayout,
    metadata: String,
}

impl ChannelImage {
    /// Reads and validates the channel at `path`.
    pub fn read(path: &Path) -> Result<Self, RecoveryError> {
        use std::io::Read;
        let io = RecoveryError::Io;
        let short = || RecoveryError::Channel(ChannelError::BadLayout("file too short"));
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        // The header first: only a validated layout decides how much to read, so a
        // huge (sparse) file is never read whole.
        let mut first = [0u8; std::mem::size_of::<ChannelHeader>()];
        file.read_exact(&mut first).map_err(|_| short())?;
        // SAFETY: `first` holds a whole header; plain data.
        let header: ChannelHeader = unsafe { std::ptr::read_unaligned(first.as_ptr().cast()) };
        let (header, _, layout) =
            channel::header_config(&header, file_len).map_err(RecoveryError::Channel)?;
        let len = layout.size as usize;
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: `words` owns at least `len` initialised bytes, borrowed exclusively.
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        bytes[..first.len()].copy_from_slice(&first);
        file.read_exact(&mut bytes[first.len()..])
            .map_err(|_| short())?;
        let start = header.metadata_offset as usize;
        let metadata = std::str::from_utf8(&bytes[start..start + header.metadata_len as usize])
            .map_err(|_| RecoveryError::Channel(ChannelError::BadMetadata))?
            .to_owned();
        Ok(Self {
            words,
            len,
            header,
            layout,
            metadata,
        })
    }

    /// The trace metadata the producer stored.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// Number of buffers.
    pub fn buffers(&self) -> u32 {
        self.header.buffers
    }

    /// Recovers every buffer's packets, in order, handing `emit(buffer, packet)`
    /// each one (exactly its `packet_size` bytes).
    pub fn recover(
        &mut self,
        mut emit: impl FnMut(u32, &[u8]),
    ) -> Result<RecoveryReport, RecoveryError> {
        let mut report = RecoveryReport::default();
        let base = self.words.as_mut_ptr().cast::<u8>();
        debug_assert!(self.layout.size as usize <= self.len);
        for index in 0..self.header.buffers {
            let offset = self.layout.region_offset(index) as usize;
            // SAFETY: inside our private copy (layout checked against its length).
            let ptr = unsafe { base.add(offset) };
            let len = self.layout.region_size as usize;
            let format = self.header.format;
            // SAFETY: our private memory, alive for this call; we are its only user,
            // so the local flavour's one-CPU contract holds trivially.
            let result = match unsafe { Region::<SharedWord>::attach_raw(ptr, len, format) } {
                Err(RegionError::FlavourMismatch {
                    region: Flavour::Local,
                }) => {
                    // SAFETY: as above.
                    let region = unsafe { Region::<LocalWord>::attach_raw(ptr, len, format) };
                    region.map(|r| recover_region(&r, index, &mut emit, &mut report))
                }
                other => other.map(|r| recover_region(&r, index, &mut emit, &mut report)),
            };
            result
                .map_err(|error| RecoveryError::Channel(ChannelError::Region { index, error }))?;
        }
        Ok(report)
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// One buffer: packets from the reader position to the write position.
fn recover_region<W: Word>(
    region: &Region<'_, W>,
    index: u32,
    emit: &mut impl FnMut(u32, &[u8]),
    report: &mut RecoveryReport,
) {
    // Relaxed everywhere: the region is our private copy, read by this thread only.
    use std::sync::atomic::Ordering::Relaxed;
    let config = region.config();
    let geo = config.validate().expect("validated at attach");
    let s = geo.subbuf_size();
    let write = region.writer().write.load(Relaxed);
    let losses = region.losses();
    // Wrapping, and no `+` on positions below: every word comes from the file, which
    // may be corrupt (values near 2^64 would panic a debug build).
    let total_discarded = losses
        .full
        .load(Relaxed)
        .wrapping_add(losses.wrap.load(Relaxed))
        .wrapping_add(losses.big.load(Relaxed))
        .wrapping_add(losses.nested.load(Relaxed));
    let last_ts = region.writer().last_timestamp.load(Relaxed);
    let consumed = region.reader().consumed.load(Relaxed);
    // Anything older than one lap before the write position is gone (overwrite
    // mode). At a boundary, the next sub-buffer is not opened yet, so all N slots
    // still hold the last N packets.
    // (`write` rounded up to a sub-buffer, minus a lap, without overflowing.)
    let span = match geo.offset(write) {
        0 => geo.buffer_size(),
        _ => geo.buffer_size() - s,
    };
    let oldest = geo.subbuf_start(write).saturating_sub(span);
    let first = consumed.max(oldest);
    let mut packet = vec![0u8; s as usize];
    let mut running_discarded = 0u64;
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut next = Some(geo.subbuf_start(first));
    while let Some(pos) = next.filter(|&pos| pos < write) {
        next = pos.checked_add(s);
        let slot = region.slot(geo.slot(pos));
        let full = geo.full_commit(pos);
        let lap_base = full - s;
        let phys = match config.mode {
            Mode::Discard => geo.slot(pos) as u64,
            Mode::Overwrite => ringbuf_core::id::SubbufId::from_raw(slot.id.load(Relaxed)).phys(),
        };
        if phys >= config.physical_count() {
            report.empty += 1;
            continue;
        }
        // SAFETY: phys is in range; the sub-buffer is `s` bytes of our private copy.
        let bytes =
            unsafe { std::slice::from_raw_parts(region.subbuf_ptr(phys as usize), s as usize) };
        packet.copy_from_slice(bytes);
        let is_ctf = le64(&packet, 0) as u32 == CTF_MAGIC;
        let delivered = slot.delivered.load(Relaxed) == full;
        let prefix = slot.prefix.load(Relaxed);
        let committed = slot.commit.load(Relaxed).clamp(lap_base, full) - lap_base;
        let content = if delivered {
            None
        } else if prefix > lap_base && prefix <= full {
            Some(prefix - lap_base)
        } else {
            None
        };
        if delivered && is_ctf {
            if let Ok(info) = PacketInfo::parse(&packet) {
                running_discarded = running_discarded.max(info.events_discarded);
                put64(&mut packet, 64, running_discarded);
                out.push(packet[..info.packet_size as usize].to_vec());
                report.complete += 1;
                continue;
            }
        }
        match content {
            Some(content) if is_ctf && content >= PACKET_HEADER_SIZE as u64 => {
                let begin = le64(&packet, 24);
                // The open packet's events are no later than the last reservation;
                // a closed one's end time was stored by the writer that closed it.
                let end = if geo.subbuf_start(write) == pos
                    || geo.offset(write) == 0 && next == Some(write)
                {
                    last_ts
                } else {
                    slot.end_ts.load(Relaxed)
                };
                let packet_size = content.next_multiple_of(4096).min(s);
                put64(&mut packet, 32, end.max(begin));
                put64(&mut packet, 40, content * 8);
                put64(&mut packet, 48, packet_size * 8);
                put64(&mut packet, 64, running_discarded);
                packet[content as usize..packet_size as usize].fill(0);
                out.push(packet[..packet_size as usize].to_vec());
                report.partial += 1;
                report.committed_bytes_cut += committed.saturating_sub(content);
            }
            _ => {
                report.empty += 1;
                report.committed_bytes_cut += if delivered { 0 } else { committed };
            }
        }
    }
    // The stream's last packet carries the final count (ctf-notes rule 7).
    if let Some(last) = out.last_mut() {
        put64(last, 64, running_discarded.max(total_discarded));
    }
    for packet in &out {
        emit(index, packet);
    }
}

/// Recovers the channel file `channel` into a new CTF trace directory `out`
/// (`metadata` plus `stream_<buffer>` files of whole packets) that babeltrace2 reads.
pub fn recover_to_dir(channel: &Path, out: &Path) -> Result<RecoveryReport, RecoveryError> {
    let mut image = ChannelImage::read(channel)?;
    std::fs::create_dir(out).map_err(RecoveryError::Io)?;
    std::fs::write(out.join("metadata"), image.metadata()).map_err(RecoveryError::Io)?;
    let mut streams: Vec<Vec<u8>> = vec![Vec::new(); image.buffers() as usize];
    let report =
        image.recover(|buffer, packet| streams[buffer as usize].extend_from_slice(packet))?;
    for (buffer, bytes) in streams.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
        std::fs::write(out.join(format!("stream_{buffer}")), bytes).map_err(RecoveryError::Io)?;
    }
    Ok(report)
}
