//! Live streaming: packets sent over a stream socket in a simple framed protocol,
//! and a receiver that writes a trace directory from it.
//!
//! ```text
//! frame   magic u32 = "RBLS" | kind u32 | cpu u32 | len u32 | len bytes
//! kind    0: the metadata; 1: a packet; 2: metadata appended (event classes
//!         the producer registered since)
//! ```
//!
//! The metadata comes first; text appended to it comes before the first packet
//! exported after it (which may use its classes). Each packet is copied from the consumer's mapping into
//! the socket, so its sub-buffer goes back to the writers as soon as the copy
//! returns (why not splice: [`crate::export`]). The sender runs in the consumer, never in a writer: a slow or
//! disconnected receiver stalls only the consumer (which then loses its connection
//! after its write timeout), while writers go on (losing events, counted, in discard
//! mode).

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use ringbuf_core::{Client, Clock};
use ringbuf_mmap::{ExportError, PerCpuConsumer};

use crate::export::{write_all, Splicer};
use crate::trace_dir::{TraceDir, TraceError};

const MAGIC: u32 = u32::from_le_bytes(*b"RBLS");
const METADATA: u32 = 0;
const PACKET: u32 = 1;
const METADATA_APPENDED: u32 = 2;
/// The largest frame a receiver accepts (a sub-buffer, or the metadata).
pub const MAX_FRAME: u32 = 64 << 20;

fn frame_header(kind: u32, cpu: u32, len: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    for (i, v) in [MAGIC, kind, cpu, len].into_iter().enumerate() {
        h[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    h
}

/// The sending side, owned by a consumer.
pub struct LiveSender {
    socket: TcpStream,
    splicer: Splicer,
}

impl LiveSender {
    /// Connected to a receiver: sends the metadata first. Writes that block longer
    /// than `timeout` fail (and the caller drops the connection).
    pub fn new(
        socket: TcpStream,
        metadata: &str,
        subbuf_size: usize,
        timeout: Duration,
    ) -> io::Result<Self> {
        socket.set_write_timeout(Some(timeout))?;
        socket.set_nodelay(true)?;
        let splicer = Splicer::new(subbuf_size)?;
        write_all(&socket, &frame_header(METADATA, 0, metadata.len() as u32))?;
        write_all(&socket, metadata.as_bytes())?;
        Ok(Self { socket, splicer })
    }

    /// Sends every complete packet of every CPU now; returns how many.
    pub fn send_all<K: Client, T: Clock>(
        &mut self,
        consumer: &PerCpuConsumer<K, T>,
    ) -> Result<u64, ExportError> {
        let mut sent = 0;
        for cpu in 0..consumer.buffer_count() {
            sent += consumer.export(cpu, |packet| {
                if let Some(text) = &packet.metadata {
                    let len = text.len() as u32;
                    write_all(&self.socket, &frame_header(METADATA_APPENDED, 0, len))?;
                    write_all(&self.socket, text.as_bytes())?;
                }
                let len = packet.info.packet_size as usize;
                write_all(&self.socket, &frame_header(PACKET, cpu, len as u32))?;
                self.splicer
                    .export(consumer.shm(), packet.offset, len, self.socket.as_fd())
            })? as u64;
        }
        Ok(sent)
    }
}

/// Why receiving stopped.
#[derive(Debug)]
pub enum ReceiveError {
    /// The connection failed mid-frame.
    Io(io::Error),
    /// A frame is malformed (bad magic, unknown kind, too large, no metadata first).
    Protocol(&'static str),
    /// Writing the trace failed.
    Trace(TraceError),
}

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection: {e}"),
            Self::Protocol(why) => write!(f, "protocol: {why}"),
            Self::Trace(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// Reads frames from `socket` until the sender closes it, writing a trace
/// directory at `out` (created on the metadata frame). Returns the packet count.
pub fn receive(mut socket: impl Read, out: &Path) -> Result<u64, ReceiveError> {
    let mut trace: Option<TraceDir> = None;
    let mut packets = 0;
    let mut body = Vec::new();
    loop {
        let mut h = [0u8; 16];
        match socket.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(packets),
            Err(e) => return Err(ReceiveError::Io(e)),
        }
        let word = |i: usize| u32::from_le_bytes(h[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (magic, kind, cpu, len) = (word(0), word(1), word(2), word(3));
        if magic != MAGIC {
            return Err(ReceiveError::Protocol("bad frame magic"));
        }
        if len > MAX_FRAME {
            return Err(ReceiveError::Protocol("frame too large"));
        }
        body.resize(len as usize, 0);
        socket.read_exact(&mut body).map_err(ReceiveError::Io)?;
        match (kind, &mut trace) {
            (METADATA, None) => {
                let text = std::str::from_utf8(&body)
                    .map_err(|_| ReceiveError::Protocol("metadata not UTF-8"))?;
                trace = Some(TraceDir::with_metadata(out, text).map_err(ReceiveError::Trace)?);
            }
            (METADATA_APPENDED, Some(trace)) => {
                let text = std::str::from_utf8(&body)
                    .map_err(|_| ReceiveError::Protocol("metadata not UTF-8"))?;
                trace.append_metadata(text).map_err(ReceiveError::Trace)?;
            }
            (PACKET, Some(trace)) => {
                trace
                    .write_packet(cpu, &body)
                    .map_err(ReceiveError::Trace)?;
                packets += 1;
            }
            (METADATA, Some(_)) => return Err(ReceiveError::Protocol("metadata twice")),
            (PACKET | METADATA_APPENDED, None) => {
                return Err(ReceiveError::Protocol("packet before metadata"))
            }
            _ => return Err(ReceiveError::Protocol("unknown frame kind")),
        }
    }
}
