//! The consumer: another process attaches to a channel by path or descriptor and
//! reads packets from every buffer.
//!
//! The region is untrusted. Attaching validates the channel header and every
//! region; reading copies each packet into the consumer's memory first, so the
//! caller validates and parses a private copy that nobody can change under it.
//! Positions and ids that change afterwards are bounds-checked by the core at each
//! use. A file may also be truncated under the mapping: [`crate::guard`] turns the
//! resulting SIGBUS into an error.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use ringbuf_core::{Buffer, Client, Clock, LocalWord, ReadError, Region, SharedWord, Switch, Word};

use crate::backing::Shm;
use crate::channel::{self, ChannelError, ChannelHeader};
use crate::guard;
use crate::producer::wakeup_path;
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

impl std::error::Error for ConsumeError {}

/// A channel attached for reading. `W` is the flavour of its buffers
/// ([`SharedWord`] for per-CPU channels, [`LocalWord`] for per-thread ones).
pub struct Consumer<W: Word, K: Client, T: Clock> {
    buffers: Vec<Buffer<Region<'static, W>, K, T>>,
    header: ChannelHeader,
    metadata: String,
    wakeup: Option<Wakeup>,
    /// Set for good once a truncation was seen: the zero pages mapped over the
    /// file's missing ones stay.
    truncated: std::sync::atomic::AtomicBool,
    shm: Shm,
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
        let (header, _, layout) = channel::read_header(&shm)?;
        if header.format != format {
            return Err(ChannelError::BadHeader("record format differs"));
        }
        let metadata = channel::read_metadata(&shm, &header)?;
        let mut buffers = Vec::with_capacity(header.buffers as usize);
        for index in 0..header.buffers {
            // SAFETY: the mapping is kept in `self` after the buffers (drop order);
            // the layout was checked against the file. For local-flavour buffers the
            // consumer never writes (no switch is exposed for them).
            let region = unsafe { channel::attach_region::<W>(&shm, &layout, format, index)? };
            buffers.push(Buffer::new(region, client(index), clock(index))?);
        }
        if watch.truncated() {
            return Err(ChannelError::BadLayout("truncated while attaching"));
        }
        Ok(Self {
            buffers,
            header,
            metadata,
            wakeup,
            truncated: Default::default(),
            shm,
        })
    }

    /// The trace metadata (TSDL) stored by the producer.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// Number of buffers.
    pub fn buffer_count(&self) -> u32 {
        self.header.buffers
    }

    /// Process id of the producer.
    pub fn producer_pid(&self) -> u32 {
        self.header.producer_pid
    }

    /// Counters of buffer `index` (as the region says: untrusted).
    pub fn stats(&self, index: u32) -> Option<ringbuf_core::Stats> {
        self.buffers.get(index as usize).map(Buffer::stats)
    }

    /// Copies every complete packet of buffer `index` out, one at a time, into
    /// `scratch` (a whole sub-buffer), and hands each copy to `f`. Returns the number
    /// of packets.
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
        let truncated = || {
            self.truncated.store(true, Relaxed);
            ConsumeError::Truncated
        };
        let mut reader = buffer
            .reader()
            .map_err(|_| ConsumeError::ReaderBusy { buffer: index })?;
        let mut packets = 0;
        loop {
            match reader.get_next_subbuf() {
                Ok(sub) => {
                    reader.read_at(&sub, 0, scratch);
                    reader.put_next_subbuf(sub);
                    if watch.truncated() {
                        return Err(truncated());
                    }
                    f(scratch);
                    packets += 1;
                }
                Err(ReadError::NoData) => break,
                Err(error) => {
                    return Err(ConsumeError::Corrupt {
                        buffer: index,
                        error,
                    })
                }
            }
        }
        if watch.truncated() {
            return Err(truncated());
        }
        Ok(packets)
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
}

impl<K: Client, T: Clock> Consumer<SharedWord, K, T> {
    /// Closes every buffer's open packet so it can be read (live mode: call it
    /// periodically). Only for shared-flavour (per-CPU) channels: the consumer is
    /// then one more writer, which that flavour allows.
    pub fn switch_all(&self, kind: Switch) {
        for b in &self.buffers {
            let _ = b.switch(kind);
        }
    }
}

/// A per-CPU channel's consumer.
pub type PerCpuConsumer<K, T> = Consumer<SharedWord, K, T>;
/// A per-thread channel's consumer.
pub type PerThreadConsumer<K, T> = Consumer<LocalWord, K, T>;
