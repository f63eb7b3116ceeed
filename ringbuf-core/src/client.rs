//! The packet/record format interface, and the default raw format.
//!
//! The engine knows nothing of the bytes inside a sub-buffer beyond sizes: a
//! [`Client`] writes the packet header when a sub-buffer is entered, finalises it
//! when the sub-buffer is delivered, and writes each record's header. CTF plugs in
//! here; [`RawRecords`] is a simple length-prefixed default.

use crate::bytes::le_u64;

/// A destination for a client's bytes: a window of one sub-buffer.
pub trait Out {
    /// Writes `bytes` at `offset` in the window. Writes outside the window are
    /// ignored (and assert in debug builds): a client bug never corrupts memory.
    fn put(&mut self, offset: usize, bytes: &[u8]);
    /// Zeroes `len` bytes from `offset` (same bounds rule as [`Out::put`]).
    fn zero(&mut self, offset: usize, len: usize);
}

/// A plain byte slice as a window (tools that finish packets in their own memory,
/// such as crash recovery).
impl Out for [u8] {
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        let window = offset
            .checked_add(bytes.len())
            .and_then(|end| self.get_mut(offset..end));
        debug_assert!(window.is_some(), "client wrote outside its window");
        if let Some(window) = window {
            window.copy_from_slice(bytes);
        }
    }
    fn zero(&mut self, offset: usize, len: usize) {
        let window = offset
            .checked_add(len)
            .and_then(|end| self.get_mut(offset..end));
        debug_assert!(window.is_some(), "client zeroed outside its window");
        if let Some(window) = window {
            window.fill(0);
        }
    }
}

/// What the engine knows about a record when it reserves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// The tracer's event id.
    pub event_id: u32,
    /// Payload bytes after the record header.
    pub payload_len: usize,
    /// The record's timestamp (read after the reserve position, so timestamps never
    /// go backwards within a buffer).
    pub timestamp: u64,
    /// A timestamp no later than the previous record's in the stream: the exact
    /// previous one, or an older one when racing writers left `last_timestamp`
    /// stale, or 0 when unknown. The first record of a packet
    /// gets its own timestamp (which is the packet's `timestamp_begin`). A format that
    /// compresses timestamps against it stays correct: a stale value can only make
    /// the delta look larger.
    pub prev_timestamp: u64,
}

/// What the engine knows about a packet when it opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketBegin {
    /// Global sequence number: the sub-buffer's index since the buffer was created.
    /// Gaps mean overwritten packets.
    pub seq: u64,
    /// Timestamp of the reservation that opened the packet.
    pub timestamp: u64,
}

/// What the engine knows about a packet when it delivers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketEnd {
    /// As in [`PacketBegin::seq`].
    pub seq: u64,
    /// Timestamp of the reservation or switch that closed the packet: no earlier than
    /// any record in it, no later than the next packet's begin.
    pub timestamp: u64,
    /// Bytes of header and records; the rest, up to `packet_size`, is padding.
    pub content_size: u64,
    /// The sub-buffer size.
    pub packet_size: u64,
    /// Running total of events discarded in this buffer when the packet was closed
    /// (full, wrap, too big, nested; never decreasing along the stream).
    pub events_discarded: u64,
}

/// A packet/record format.
pub trait Client: Sync {
    /// Alignment of records in a sub-buffer (a power of two, at most 4096).
    const RECORD_ALIGN: usize;
    /// Whether record headers depend on [`RecordInfo::prev_timestamp`]. When false
    /// the engine skips maintaining `last_timestamp`.
    const USES_PREV_TIMESTAMP: bool;

    /// Bytes of packet header at the start of each sub-buffer.
    fn packet_header_size(&self) -> usize;
    /// Bytes of header this record needs.
    fn record_header_size(&self, rec: &RecordInfo) -> usize;
    /// Writes the record header (exactly `record_header_size(rec)` bytes from 0).
    fn write_record_header<O: Out>(&self, out: &mut O, rec: &RecordInfo);
    /// Turns a reserved record into padding the reader skips: `total` bytes from 0,
    /// keeping the `header_size`-byte header shape chosen at reserve time.
    fn write_padding_record<O: Out>(
        &self,
        out: &mut O,
        rec: &RecordInfo,
        header_size: usize,
        total: usize,
    );
    /// Writes the packet header when a writer enters a sub-buffer (window: the
    /// packet header).
    fn packet_begin<O: Out>(&self, out: &mut O, begin: &PacketBegin);
    /// Finalises the packet when it is delivered (window: the whole sub-buffer).
    /// Padding after `content_size` is the client's to fill.
    fn packet_end<O: Out>(&self, out: &mut O, end: &PacketEnd);
    /// Called once a packet is published to the reader (after `packet_end`), by
    /// the writer that delivered it: the place for a wakeup. Must not block: it runs
    /// on the event path, possibly in a signal handler.
    #[inline(always)]
    fn delivered(&self, _seq: u64) {}
}

/// The default format: a 48-byte packet header and 8-byte-aligned records made of a
/// little-endian `u32` payload length, a `u32` event id, and the payload.
///
/// ```text
/// packet:  magic u32 | header size u32 | seq u64 | timestamp_begin u64 |
///          timestamp_end u64 | content_size u64 | events_discarded u64
/// record:  payload_len u32 | event_id u32 | payload | zero padding to 8
/// ```
///
/// A record whose event id is [`RawRecords::PADDING_ID`] is padding (a discarded
/// reservation) and is skipped by [`RawPacket::records`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawRecords;

impl RawRecords {
    /// Magic of a raw packet header.
    pub const MAGIC: u32 = 0x5242_4b54; // "TKBR" little-endian
    /// Size of the packet header.
    pub const PACKET_HEADER: usize = 48;
    /// Size of a record header.
    pub const RECORD_HEADER: usize = 8;
    /// Event id of padding records.
    pub const PADDING_ID: u32 = u32::MAX;
}

impl Client for RawRecords {
    const RECORD_ALIGN: usize = 8;
    const USES_PREV_TIMESTAMP: bool = false;

    #[inline(always)]
    fn packet_header_size(&self) -> usize {
        Self::PACKET_HEADER
    }
    #[inline(always)]
    fn record_header_size(&self, _rec: &RecordInfo) -> usize {
        Self::RECORD_HEADER
    }
    #[inline(always)]
    fn write_record_header<O: Out>(&self, out: &mut O, rec: &RecordInfo) {
        let header = (rec.payload_len as u64) | ((rec.event_id as u64) << 32);
        out.put(0, &header.to_le_bytes());
    }
    fn write_padding_record<O: Out>(
        &self,
        out: &mut O,
        _rec: &RecordInfo,
        _header_size: usize,
        total: usize,
    ) {
        let len = (total - Self::RECORD_HEADER) as u64;
        out.put(0, &(len | ((Self::PADDING_ID as u64) << 32)).to_le_bytes());
    }
    fn packet_begin<O: Out>(&self, out: &mut O, begin: &PacketBegin) {
        let mut h = [0u8; Self::PACKET_HEADER];
        h[0..4].copy_from_slice(&Self::MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&(Self::PACKET_HEADER as u32).to_le_bytes());
        h[8..16].copy_from_slice(&begin.seq.to_le_bytes());
        h[16..24].copy_from_slice(&begin.timestamp.to_le_bytes());
        out.put(0, &h);
    }
    fn packet_end<O: Out>(&self, out: &mut O, end: &PacketEnd) {
        out.put(24, &end.timestamp.to_le_bytes());
        out.put(32, &end.content_size.to_le_bytes());
        out.put(40, &end.events_discarded.to_le_bytes());
    }
}

/// Why a raw packet could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than a packet header.
    Truncated,
    /// The magic or header size is wrong.
    BadHeader,
    /// `content_size` is smaller than the header or larger than the packet.
    BadContentSize(u64),
    /// A record runs past `content_size`.
    BadRecord {
        /// Offset of the record in the packet.
        offset: usize,
    },
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => f.write_str("raw packet shorter than its header"),
            Self::BadHeader => f.write_str("raw packet header has a wrong magic or size"),
            Self::BadContentSize(size) => write!(
                f,
                "raw packet content size {size} is smaller than the header or larger than the packet"
            ),
            Self::BadRecord { offset } => {
                write!(f, "raw record at offset {offset} runs past the content")
            }
        }
    }
}

impl core::error::Error for ParseError {}

/// A parsed raw packet. Every field comes from untrusted bytes and is checked.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    bytes: &'a [u8],
    /// Packet sequence number.
    pub seq: u64,
    /// `timestamp_begin`.
    pub timestamp_begin: u64,
    /// `timestamp_end`.
    pub timestamp_end: u64,
    /// Bytes of header and records.
    pub content_size: u64,
    /// Running total of discarded events at close.
    pub events_discarded: u64,
}

impl<'a> RawPacket<'a> {
    /// Parses a packet's header, checking it against the packet's length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < RawRecords::PACKET_HEADER {
            return Err(ParseError::Truncated);
        }
        let word0 = le_u64(bytes, 0);
        if word0 as u32 != RawRecords::MAGIC || (word0 >> 32) as usize != RawRecords::PACKET_HEADER
        {
            return Err(ParseError::BadHeader);
        }
        let content_size = le_u64(bytes, 32);
        if content_size < RawRecords::PACKET_HEADER as u64 || content_size > bytes.len() as u64 {
            return Err(ParseError::BadContentSize(content_size));
        }
        Ok(Self {
            bytes,
            seq: le_u64(bytes, 8),
            timestamp_begin: le_u64(bytes, 16),
            timestamp_end: le_u64(bytes, 24),
            content_size,
            events_discarded: le_u64(bytes, 40),
        })
    }

    /// The records, padding skipped: `Ok((event_id, payload))` or one error at the
    /// first malformed record, then the end.
    pub fn records(&self) -> RawRecordIter<'a> {
        RawRecordIter {
            content: &self.bytes[..self.content_size as usize],
            offset: RawRecords::PACKET_HEADER,
        }
    }
}

/// Iterator over the records of a [`RawPacket`].
#[derive(Clone, Debug)]
pub struct RawRecordIter<'a> {
    content: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for RawRecordIter<'a> {
    type Item = Result<(u32, &'a [u8]), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let at = self.offset;
            if at >= self.content.len() {
                return None;
            }
            let bad = Err(ParseError::BadRecord { offset: at });
            if self.content.len() - at < RawRecords::RECORD_HEADER {
                self.offset = usize::MAX;
                return Some(bad);
            }
            let header = le_u64(self.content, at);
            let (len, id) = ((header as u32) as usize, (header >> 32) as u32);
            let start = at + RawRecords::RECORD_HEADER;
            let Some(end) = start.checked_add(len).filter(|&e| e <= self.content.len()) else {
                self.offset = usize::MAX;
                return Some(bad);
            };
            self.offset = end.next_multiple_of(RawRecords::RECORD_ALIGN);
            if id != RawRecords::PADDING_ID {
                return Some(Ok((id, &self.content[start..end])));
            }
        }
    }
}
