//! The CTF 1.8 packet and event layout (what babeltrace2 requires: docs/ARCHITECTURE.md, design §7).
//!
//! ```text
//! packet header   magic u32 | uuid [16] | stream_id u32                      24 bytes
//! packet context  timestamp_begin u64 | timestamp_end u64 | content_size u64 |
//!                 packet_size u64 | packet_seq_num u64 | events_discarded u64 |
//!                 cpu_id u32                                                  52 bytes
//! event header    compact:  u32 = id:5 | timestamp:27        (id < 30)       4 bytes
//!                 medium:   u8 = 30 | id u16 | timestamp u32   (id < 65536)    7 bytes
//!                 extended: u8 = 31 | id u32 | timestamp u64                  13 bytes
//! ```
//!
//! A stream may declare an event context (e.g. the writing thread's id): CTF puts
//! it between the event header and the fields, so to the engine it is the start of
//! the payload, written by the sink ([`super::BufferSink`]); [`Ctf`] only needs its
//! size, for the padding events it writes itself.
//!
//! Everything is little-endian and byte-aligned. An event gets the smallest header
//! that holds its id and the low bits of its timestamp: compact when its id is
//! below 30 and its timestamp moved by less than 2^27 ticks since
//! [`RecordInfo::prev_timestamp`]; medium when its id fits 16 bits and the time
//! moved by less than 2^32 ticks; extended otherwise. (`prev_timestamp` is never
//! later than the previous event's, so a short header is only chosen when it is
//! decodable.) Applications with hundreds of event classes (one per `tracing`
//! callsite) thus pay 7 bytes per header, not 13; the common case stays at 4.

use crate::bytes::{le_u32, le_u64};
use crate::client::{Client, Out, PacketBegin, PacketEnd, RecordInfo};

use super::{PADDING_EMPTY_ID, PADDING_ID};

/// CTF packet magic.
pub const CTF_MAGIC: u32 = 0xC1FC_1FC1;
/// Bytes of packet header and context.
pub const PACKET_HEADER_SIZE: usize = 76;
/// Bytes of a compact event header.
pub const COMPACT_HEADER: usize = 4;
/// Bytes of a medium event header.
pub const MEDIUM_HEADER: usize = 7;
/// Bytes of an extended event header.
pub const EXTENDED_HEADER: usize = 13;
/// Ids below this can have a compact header.
pub const COMPACT_IDS: u32 = 30;
/// Ids below this can have a medium header.
pub const MEDIUM_IDS: u32 = 1 << 16;
/// The compact timestamp is the low 27 bits.
pub const COMPACT_TS_BITS: u32 = 27;
/// The medium timestamp is the low 32 bits.
pub const MEDIUM_TS_BITS: u32 = 32;
/// The 5-bit tag of a medium header (compact headers hold their id there).
const MEDIUM_TAG: u8 = 30;
/// The 5-bit tag of an extended header.
const EXTENDED_TAG: u8 = 31;
/// The largest event context, in bytes. Padding events carry the context too, and
/// at most 256 bytes of fields each: a context well below that lets any gap be
/// filled with padding events.
pub const MAX_EVENT_CONTEXT: usize = 128;

const TS_BEGIN: usize = 24;
const TS_END: usize = 32;
const CONTENT_SIZE: usize = 40;
const PACKET_SIZE: usize = 48;
const SEQ_NUM: usize = 56;
const DISCARDED: usize = 64;
const CPU_ID: usize = 72;

/// The CTF format for one stream (one buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctf {
    /// The trace's uuid (also in the metadata).
    pub uuid: [u8; 16],
    /// Stream class id in the metadata.
    pub stream_id: u32,
    /// CPU (or buffer) number written in every packet.
    pub cpu_id: u32,
    /// Packets are padded with zeros from their content to a multiple of this
    /// (a power of two: 4096 moves whole pages), capped at the sub-buffer size.
    pub packet_align: u64,
    /// Bytes of event context at the start of every event's payload.
    event_context: usize,
}

impl Ctf {
    /// A stream for `cpu_id` of the trace `uuid`, stream class 0, page-padded packets.
    pub const fn new(uuid: [u8; 16], cpu_id: u32) -> Self {
        Self {
            uuid,
            stream_id: 0,
            cpu_id,
            packet_align: 4096,
            event_context: 0,
        }
    }

    /// The same stream with an event context of `bytes` bytes (the size of the
    /// `event_context` fields of its [`super::TraceDescription`]): every event's
    /// payload starts with them, and the padding events this client writes carry
    /// that many zero bytes.
    ///
    /// # Panics
    ///
    /// If `bytes` exceeds [`MAX_EVENT_CONTEXT`] (a programming error: metadata
    /// with such a context is refused by [`super::write_metadata`]).
    pub const fn with_event_context(self, bytes: usize) -> Self {
        assert!(
            bytes <= MAX_EVENT_CONTEXT,
            "event context larger than MAX_EVENT_CONTEXT"
        );
        Self {
            event_context: bytes,
            ..self
        }
    }

    /// Bytes of event context at the start of every event's payload.
    pub const fn event_context(&self) -> usize {
        self.event_context
    }

    fn put_header<O: Out>(out: &mut O, at: usize, id: u32, timestamp: u64, size: usize) {
        match size {
            COMPACT_HEADER => {
                let low = timestamp & ((1 << COMPACT_TS_BITS) - 1);
                out.put(at, &((id as u64 | (low << 5)) as u32).to_le_bytes());
            }
            MEDIUM_HEADER => {
                let mut h = [0u8; MEDIUM_HEADER];
                h[0] = MEDIUM_TAG;
                h[1..3].copy_from_slice(&(id as u16).to_le_bytes());
                h[3..7].copy_from_slice(&(timestamp as u32).to_le_bytes());
                out.put(at, &h);
            }
            _ => {
                let mut h = [0u8; EXTENDED_HEADER];
                h[0] = EXTENDED_TAG;
                h[1..5].copy_from_slice(&id.to_le_bytes());
                h[5..13].copy_from_slice(&timestamp.to_le_bytes());
                out.put(at, &h);
            }
        }
    }
}

impl Client for Ctf {
    const RECORD_ALIGN: usize = 1;
    const USES_PREV_TIMESTAMP: bool = true;

    #[inline(always)]
    fn packet_header_size(&self) -> usize {
        PACKET_HEADER_SIZE
    }

    #[inline(always)]
    fn record_header_size(&self, rec: &RecordInfo) -> usize {
        let moved = rec.timestamp.wrapping_sub(rec.prev_timestamp);
        if rec.event_id < COMPACT_IDS && moved < 1 << COMPACT_TS_BITS {
            COMPACT_HEADER
        } else if rec.event_id < MEDIUM_IDS && moved < 1 << MEDIUM_TS_BITS {
            MEDIUM_HEADER
        } else {
            EXTENDED_HEADER
        }
    }

    #[inline(always)]
    fn write_record_header<O: Out>(&self, out: &mut O, rec: &RecordInfo) {
        let size = self.record_header_size(rec);
        Self::put_header(out, 0, rec.event_id, rec.timestamp, size);
    }

    /// Padding is one or more `ringbuf_padding` events (a `u8` size and that many
    /// zero bytes), the first with the header shape chosen at reserve time, the
    /// others compact with the same timestamp; a record with no room for fields
    /// becomes one field-less `ringbuf_padding_empty` event. Each carries the
    /// event context, as zeros.
    fn write_padding_record<O: Out>(
        &self,
        out: &mut O,
        rec: &RecordInfo,
        header_size: usize,
        total: usize,
    ) {
        // A padding event carries a size byte and up to 255 bytes more.
        const MAX_FIELDS: usize = 256;
        let context = self.event_context;
        // The smallest event that can follow: compact, its context, a size byte.
        let min_next = COMPACT_HEADER + context + 1;
        let (mut at, mut header) = (0, header_size);
        while at < total {
            // (A record shorter than its context is the writer's bug; it still
            // must not be written past.)
            let context_here = context.min(total - at - header);
            out.zero(at + header, context_here);
            let fields = at + header + context_here;
            let room = total - fields;
            if room == 0 {
                Self::put_header(out, at, PADDING_EMPTY_ID, rec.timestamp, header);
                return;
            }
            let take = match room - room.min(MAX_FIELDS) {
                0 => room,
                rest if rest >= min_next => MAX_FIELDS,
                // Leave room for a whole event after this one (`min_next` is at
                // most 133: `take` stays above 120).
                _ => room - min_next,
            };
            Self::put_header(out, at, PADDING_ID, rec.timestamp, header);
            out.put(fields, &[(take - 1) as u8]);
            out.zero(fields + 1, take - 1);
            at = fields + take;
            header = COMPACT_HEADER;
        }
    }

    fn packet_begin<O: Out>(&self, out: &mut O, begin: &PacketBegin) {
        let mut h = [0u8; PACKET_HEADER_SIZE];
        h[0..4].copy_from_slice(&CTF_MAGIC.to_le_bytes());
        h[4..20].copy_from_slice(&self.uuid);
        h[20..24].copy_from_slice(&self.stream_id.to_le_bytes());
        h[TS_BEGIN..TS_BEGIN + 8].copy_from_slice(&begin.timestamp.to_le_bytes());
        h[SEQ_NUM..SEQ_NUM + 8].copy_from_slice(&begin.seq.to_le_bytes());
        h[CPU_ID..CPU_ID + 4].copy_from_slice(&self.cpu_id.to_le_bytes());
        out.put(0, &h);
    }

    fn packet_end<O: Out>(&self, out: &mut O, end: &PacketEnd) {
        let content = end.content_size;
        let packet = content
            .next_multiple_of(self.packet_align.max(1))
            .min(end.packet_size);
        close_packet(out, end.timestamp, content, packet, end.events_discarded);
    }
}

/// An event header as a reader decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// The event id.
    pub id: u32,
    /// The full timestamp, reconstructed from the previous one for the short
    /// headers (at most one wrap of their low bits, as CTF readers assume).
    pub timestamp: u64,
    /// Bytes of header.
    pub size: usize,
}

impl EventHeader {
    /// Decodes the event header at the start of `bytes`, whose stream's previous
    /// timestamp (or its packet's `timestamp_begin`) is `prev`; `None` if `bytes`
    /// is shorter than the header.
    pub fn parse(bytes: &[u8], prev: u64) -> Option<Self> {
        let near = |low: u64, bits: u32| {
            let mask = (1u64 << bits) - 1;
            let t = (prev & !mask) | low;
            if t < prev {
                t.wrapping_add(1 << bits)
            } else {
                t
            }
        };
        let tag = *bytes.first()? & 0x1f;
        Some(match tag {
            MEDIUM_TAG => Self {
                id: u32::from(u16::from_le_bytes(bytes.get(1..3)?.try_into().ok()?)),
                timestamp: near(le_u32(bytes.get(..7)?, 3) as u64, MEDIUM_TS_BITS),
                size: MEDIUM_HEADER,
            },
            EXTENDED_TAG => Self {
                id: le_u32(bytes.get(..EXTENDED_HEADER)?, 1),
                timestamp: le_u64(bytes, 5),
                size: EXTENDED_HEADER,
            },
            _ => Self {
                id: u32::from(tag),
                timestamp: near(
                    (le_u32(bytes.get(..COMPACT_HEADER)?, 0) >> 5) as u64,
                    COMPACT_TS_BITS,
                ),
                size: COMPACT_HEADER,
            },
        })
    }
}

/// Writes what closing a packet sets in its context (`timestamp_end`,
/// `content_size` and `packet_size` from byte counts, `events_discarded`) and zeroes
/// the padding from `content_size` to `packet_size`. [`Ctf`] closes every packet
/// with it; tools that close packets themselves (crash recovery) use it too.
pub fn close_packet<O: Out + ?Sized>(
    out: &mut O,
    timestamp_end: u64,
    content_size: u64,
    packet_size: u64,
    events_discarded: u64,
) {
    out.put(TS_END, &timestamp_end.to_le_bytes());
    out.put(CONTENT_SIZE, &(content_size * 8).to_le_bytes());
    out.put(PACKET_SIZE, &(packet_size * 8).to_le_bytes());
    out.put(DISCARDED, &events_discarded.to_le_bytes());
    out.zero(
        content_size as usize,
        packet_size.saturating_sub(content_size) as usize,
    );
}

/// Why bytes are not a CTF packet of this format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than the packet header.
    Truncated,
    /// Wrong magic.
    BadMagic(u32),
    /// Sizes not in bits of whole bytes, content larger than packet, packet larger
    /// than the bytes, or content smaller than the header.
    BadSizes {
        /// `content_size` in bits.
        content_bits: u64,
        /// `packet_size` in bits.
        packet_bits: u64,
    },
}

impl core::fmt::Display for PacketError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => f.write_str("CTF packet shorter than its header"),
            Self::BadMagic(magic) => write!(f, "CTF packet has magic {magic:#010x}"),
            Self::BadSizes {
                content_bits,
                packet_bits,
            } => write!(
                f,
                "CTF packet sizes are inconsistent (content_size {content_bits} bits, \
                 packet_size {packet_bits} bits)"
            ),
        }
    }
}

impl core::error::Error for PacketError {}

/// The header and context of one CTF packet, checked against its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Trace uuid.
    pub uuid: [u8; 16],
    /// Stream class id.
    pub stream_id: u32,
    /// `timestamp_begin`.
    pub timestamp_begin: u64,
    /// `timestamp_end`.
    pub timestamp_end: u64,
    /// Bytes of header and events.
    pub content_size: u64,
    /// Bytes of the packet including zero padding: what a trace file holds.
    pub packet_size: u64,
    /// `packet_seq_num`.
    pub seq: u64,
    /// `events_discarded` (running total).
    pub events_discarded: u64,
    /// `cpu_id`.
    pub cpu_id: u32,
}

impl PacketInfo {
    /// Parses the packet at the start of `bytes` (a sub-buffer, or a file's tail).
    pub fn parse(bytes: &[u8]) -> Result<Self, PacketError> {
        Self::parse_header(bytes, bytes.len() as u64)
    }

    /// Parses a packet header alone (`bytes` holds at least the header), checking
    /// that the packet fits in `capacity` bytes.
    pub fn parse_header(bytes: &[u8], capacity: u64) -> Result<Self, PacketError> {
        let info = Self::parse_unclosed(bytes)?;
        let (content_bits, packet_bits) = (le_u64(bytes, CONTENT_SIZE), le_u64(bytes, PACKET_SIZE));
        let sizes_ok = content_bits % 8 == 0
            && packet_bits % 8 == 0
            && content_bits <= packet_bits
            && content_bits / 8 >= PACKET_HEADER_SIZE as u64
            && packet_bits / 8 <= capacity;
        if !sizes_ok {
            return Err(PacketError::BadSizes {
                content_bits,
                packet_bits,
            });
        }
        Ok(info)
    }

    /// Parses the header of a packet that may not be closed yet (as its opener
    /// wrote it): only the magic is checked; the fields closing sets
    /// (`timestamp_end`, the sizes, `events_discarded`) are whatever the bytes hold.
    pub fn parse_unclosed(bytes: &[u8]) -> Result<Self, PacketError> {
        if bytes.len() < PACKET_HEADER_SIZE {
            return Err(PacketError::Truncated);
        }
        let magic = le_u32(bytes, 0);
        if magic != CTF_MAGIC {
            return Err(PacketError::BadMagic(magic));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[4..20]);
        Ok(Self {
            uuid,
            stream_id: le_u32(bytes, 20),
            timestamp_begin: le_u64(bytes, TS_BEGIN),
            timestamp_end: le_u64(bytes, TS_END),
            content_size: le_u64(bytes, CONTENT_SIZE) / 8,
            packet_size: le_u64(bytes, PACKET_SIZE) / 8,
            seq: le_u64(bytes, SEQ_NUM),
            events_discarded: le_u64(bytes, DISCARDED),
            cpu_id: le_u32(bytes, CPU_ID),
        })
    }
}
