//! A CTF trace directory: `metadata` (whose first line must be `/* CTF 1.8 */`)
//! plus one stream file per CPU, each a sequence of whole packets: babeltrace2
//! parses every other visible file as a stream, and refuses the whole trace when a
//! stream file's size is not the sum of its packets' sizes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use ringbuf_core::ctf::{
    write_metadata, Ctf, MetadataError, PacketError, PacketInfo, TraceDescription,
};
use ringbuf_core::{Buffer, Clock, Mapped, Reader, ReserveError, Switch};

use crate::export::append_packet;

/// Why a trace could not be written.
#[derive(Debug)]
pub enum TraceError {
    /// A file operation failed.
    Io(io::Error),
    /// The metadata could not be generated.
    Metadata(MetadataError),
    /// A sub-buffer did not hold a valid packet.
    Packet(PacketError),
    /// The final packet could not be opened: a writer is stuck in the next
    /// sub-buffer (`lost_wrap`).
    Flush(ReserveError),
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "trace I/O: {e}"),
            Self::Metadata(e) => write!(f, "metadata: {e:?}"),
            Self::Packet(e) => write!(f, "invalid packet: {e:?}"),
            Self::Flush(e) => write!(f, "cannot close the stream: {e}"),
        }
    }
}

impl std::error::Error for TraceError {}

impl From<io::Error> for TraceError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A trace directory being written.
#[derive(Debug)]
pub struct TraceDir {
    path: PathBuf,
    streams: Vec<Option<File>>,
}

impl TraceDir {
    /// Creates `path` (which must not exist) and writes its `metadata`.
    pub fn create(path: &Path, trace: &TraceDescription<'_>) -> Result<Self, TraceError> {
        let mut metadata = String::new();
        write_metadata(&mut metadata, trace).map_err(TraceError::Metadata)?;
        Self::with_metadata(path, &metadata)
    }

    /// Creates `path` (which must not exist) with this metadata text (e.g. the one
    /// a producer stored in its channel).
    pub fn with_metadata(path: &Path, metadata: &str) -> Result<Self, TraceError> {
        fs::create_dir(path)?;
        fs::write(path.join("metadata"), metadata)?;
        Ok(Self {
            path: path.to_owned(),
            streams: Vec::new(),
        })
    }

    /// Appends `text` (whole TSDL declarations, e.g. event classes registered
    /// while the producer runs) to `metadata`: CTF lets a class be declared after
    /// others, and readers read the whole file when they open the trace.
    pub fn append_metadata(&mut self, text: &str) -> Result<(), TraceError> {
        use std::io::Write;
        let mut file = OpenOptions::new()
            .append(true)
            .open(self.path.join("metadata"))?;
        file.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Stream `cpu`'s file, created on first use (`stream_<cpu>`).
    pub fn stream(&mut self, cpu: u32) -> io::Result<&mut File> {
        let index = cpu as usize;
        if self.streams.len() <= index {
            self.streams.resize_with(index + 1, || None);
        }
        Ok(match &mut self.streams[index] {
            Some(file) => file,
            slot => slot.insert(
                // Written sequentially at the file position; not O_APPEND, which
                // splice(2) refuses as a target.
                OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(self.path.join(format!("stream_{cpu}")))?,
            ),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the packet at the start of `bytes` (a sub-buffer) to stream `cpu`'s
    /// file: exactly `packet_size` bytes, after checking the header; on failure,
    /// nothing (the file keeps whole packets only).
    pub fn write_packet(&mut self, cpu: u32, bytes: &[u8]) -> Result<PacketInfo, TraceError> {
        let info = PacketInfo::parse(bytes).map_err(TraceError::Packet)?;
        append_packet(self.stream(cpu)?, &bytes[..info.packet_size as usize])?;
        Ok(info)
    }

    /// Writes every packet the reader can get now to stream `cpu`; returns how many.
    pub fn drain<C: Mapped, T: Clock>(
        &mut self,
        reader: &mut Reader<'_, C, Ctf, T>,
        cpu: u32,
    ) -> Result<usize, TraceError> {
        let mut packets = 0;
        while let Ok(sub) = reader.get_next_subbuf() {
            let written = match reader.bytes(&sub) {
                Some(bytes) => self.write_packet(cpu, bytes),
                None => unreachable!("the sub-buffer just got is held"),
            };
            reader.put_next_subbuf(sub);
            written?;
            packets += 1;
        }
        Ok(packets)
    }

    /// Ends stream `cpu` once its writers are done: closes the open packet (or
    /// emits a header-only one) so the stream's last packet carries the final
    /// discarded count and end time, and writes everything out.
    pub fn close_stream<C: Mapped, T: Clock>(
        &mut self,
        buffer: &Buffer<C, Ctf, T>,
        reader: &mut Reader<'_, C, Ctf, T>,
        cpu: u32,
    ) -> Result<usize, TraceError> {
        let mut packets = self.drain(reader, cpu)?;
        loop {
            match buffer.switch(Switch::Flush) {
                Ok(()) => return Ok(packets + self.drain(reader, cpu)?),
                // Discard mode, full: reading made room, or nothing will.
                Err(ReserveError::Full) => {
                    let more = self.drain(reader, cpu)?;
                    if more == 0 {
                        return Err(TraceError::Flush(ReserveError::Full));
                    }
                    packets += more;
                }
                Err(e) => return Err(TraceError::Flush(e)),
            }
        }
    }
}
