//! The producer side: channels of buffers in shared memory.
//!
//! * [`PerCpuChannel`]: one buffer per possible CPU, shared flavour (a thread can
//!   migrate between reading its CPU number and its CAS, so two CPUs may write one
//!   buffer). Any thread, and signal handlers, write through it.
//! * [`PerThreadChannel`]: one buffer per registered thread, local flavour (non-LOCK
//!   read-modify-writes): a thread registers once, outside the event path, and gets
//!   a [`ThreadWriter`] that cannot leave it.
//!
//! Every writer uses the calling thread's nesting counter, a `const`-initialised
//! thread-local with no destructor: no lazy initialisation, usable from signal
//! handlers.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ringbuf_core::ctf::{self, EventError, EventSchema, Value};
use ringbuf_core::{
    Buffer, Client, Clock, Config, LocalWord, Nesting, Reader, ReaderBusy, Region, Reservation,
    ReserveError, SharedWord, Stats, Switch, SwitchError, Word,
};

use crate::backing::Shm;
use crate::channel::{self, ChannelError, ChannelLayout};
use crate::wakeup::{Notify, Wakeup};

thread_local! {
    static NESTING: Nesting = const { Nesting::new() };
}

/// Runs `f` with the calling thread's nesting counter.
#[inline(always)]
pub fn with_nesting<R>(f: impl FnOnce(&Nesting) -> R) -> R {
    NESTING.with(f)
}

/// Where a channel lives.
#[derive(Clone, Copy, Debug)]
pub enum Backing<'a> {
    /// An anonymous memfd (hand its descriptor to the consumer).
    Memfd {
        /// Name shown in /proc (not a path).
        name: &'a str,
    },
    /// A file `dir/name` (mode 0600, created exclusively), and a FIFO
    /// `dir/.name.wake` for wakeups: a consumer opens the path; it survives a crash.
    File {
        /// The directory.
        dir: &'a Path,
        /// The file name.
        name: &'a str,
    },
}

/// How to build a channel.
#[derive(Clone, Copy, Debug)]
pub struct ChannelOptions {
    /// Every buffer's configuration.
    pub config: Config,
    /// Number of buffers (CPUs or thread slots).
    pub buffers: u32,
    /// Record format tag (written in every region header).
    pub format: u32,
    /// Touch every page at creation, so the event path never page-faults.
    pub prefault: bool,
}

/// The number of CPUs the system may have (`_SC_NPROCESSORS_CONF`).
pub fn possible_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    n.clamp(1, 4096) as u32
}

/// The CPU the calling thread runs on (glibc serves it from rseq or the vDSO).
#[inline(always)]
pub fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions; -1 (unsupported) maps to CPU 0.
    unsafe { libc::sched_getcpu() }.max(0) as u32
}

/// Path of the wakeup FIFO of the file-backed channel at `path`.
pub fn wakeup_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.wake"))
}

type ChannelBuffer<W, K, T> = Buffer<Region<'static, W>, Notify<K>, T>;

/// The in-process reader of a [`PerThreadChannel`] slot.
pub type ThreadReader<'c, K, T> = Reader<'c, Region<'static, LocalWord>, Notify<K>, T>;

/// What both channel kinds hold. Field order is drop order: the buffers point into
/// the mapping, so they go first.
struct Parts<W: Word, K: Client, T: Clock> {
    buffers: Vec<ChannelBuffer<W, K, T>>,
    wakeup: Wakeup,
    shm: Shm,
    path: Option<PathBuf>,
}

impl<W: Word, K: Client, T: Clock> Parts<W, K, T> {
    /// # Safety
    ///
    /// For `LocalWord`, every buffer is written by one CPU at a time.
    unsafe fn create(
        backing: Backing<'_>,
        options: &ChannelOptions,
        metadata: &str,
        mut client: impl FnMut(u32) -> K,
        mut clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        let config = options.config;
        let layout = ChannelLayout::new(&config, options.buffers, metadata.len() as u64)?;
        let size = layout.size as usize;
        let (shm, wakeup, path) = match backing {
            Backing::Memfd { name } => (
                Shm::memfd(name, size, options.prefault)?,
                Wakeup::eventfd().map_err(|e| ChannelError::Backing(e.into()))?,
                None,
            ),
            Backing::File { dir, name } => {
                let shm = Shm::create_file(dir, name, size, options.prefault)?;
                let path = dir.join(name);
                let wakeup = Wakeup::create_fifo(&wakeup_path(&path))
                    .map_err(|e| ChannelError::Backing(e.into()))?;
                (shm, wakeup, Some(path))
            }
        };
        channel::write_header(
            &shm,
            &config,
            &layout,
            options.buffers,
            options.format,
            metadata,
        );
        let mut buffers = Vec::with_capacity(options.buffers as usize);
        for index in 0..options.buffers {
            // SAFETY: the mapping lives in the returned struct, after the buffers in
            // drop order; the flavour contract is the caller's.
            let region =
                unsafe { channel::init_region::<W>(&shm, &layout, config, options.format, index)? };
            let notify = Notify::new(client(index), wakeup.fd());
            buffers.push(Buffer::new(region, notify, clock(index))?);
        }
        channel::mark_ready(&shm);
        Ok(Self {
            buffers,
            wakeup,
            shm,
            path,
        })
    }
}

/// One shared-flavour buffer per CPU in shared memory.
pub struct PerCpuChannel<K: Client, T: Clock> {
    parts: Parts<SharedWord, K, T>,
}

impl<K: Client, T: Clock> PerCpuChannel<K, T> {
    /// Creates the channel: `client(i)` and `clock(i)` make buffer `i`'s format and
    /// clock; `metadata` is stored in the channel for consumers and crash recovery.
    pub fn create(
        backing: Backing<'_>,
        options: &ChannelOptions,
        metadata: &str,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        // SAFETY: shared flavour: no contract.
        let parts = unsafe { Parts::create(backing, options, metadata, client, clock)? };
        Ok(Self { parts })
    }

    /// The buffer of the calling thread's CPU.
    #[inline(always)]
    pub fn current(&self) -> &ChannelBuffer<SharedWord, K, T> {
        let buffers = &self.parts.buffers;
        &buffers[current_cpu() as usize % buffers.len()]
    }

    /// Writes one event of raw payload to the current CPU's buffer.
    #[inline]
    pub fn write(&self, event_id: u32, payload: &[u8]) -> Result<(), ReserveError> {
        with_nesting(|nest| self.current().write(nest, event_id, payload))
    }

    /// Writes one schema-described event to the current CPU's buffer.
    #[inline]
    pub fn write_event(
        &self,
        schema: &EventSchema,
        values: &[Value<'_>],
    ) -> Result<(), EventError> {
        with_nesting(|nest| ctf::write_event(self.current(), nest, schema, values))
    }

    /// All buffers, indexed by CPU.
    pub fn buffers(&self) -> &[ChannelBuffer<SharedWord, K, T>] {
        &self.parts.buffers
    }

    /// Switches every buffer (e.g. `Active` from a periodic timer for live reading,
    /// `Flush` at the end); returns the first error.
    pub fn switch_all(&self, kind: Switch) -> Result<(), SwitchError> {
        self.parts
            .buffers
            .iter()
            .map(|b| b.switch(kind))
            .fold(Ok(()), Result::and)
    }

    /// Counters of every buffer.
    pub fn stats(&self) -> Vec<Stats> {
        self.parts.buffers.iter().map(Buffer::stats).collect()
    }

    /// The shared memory (to send its descriptor).
    pub fn shm(&self) -> &Shm {
        &self.parts.shm
    }

    /// The wakeup descriptor (to send with a memfd).
    pub fn wakeup(&self) -> &Wakeup {
        &self.parts.wakeup
    }

    /// The file, for file-backed channels.
    pub fn path(&self) -> Option<&Path> {
        self.parts.path.as_deref()
    }
}

/// One local-flavour buffer per registered thread in shared memory.
pub struct PerThreadChannel<K: Client, T: Clock> {
    parts: Parts<LocalWord, K, T>,
    registered: AtomicU32,
}

/// No thread slot is left in a [`PerThreadChannel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFreeSlot;

impl<K: Client, T: Clock> PerThreadChannel<K, T> {
    /// Creates the channel with `options.buffers` thread slots.
    pub fn create(
        backing: Backing<'_>,
        options: &ChannelOptions,
        metadata: &str,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        // SAFETY: buffers are only written through `ThreadWriter`s, one per slot,
        // which cannot leave the thread that registered: one CPU at a time.
        let parts = unsafe { Parts::create(backing, options, metadata, client, clock)? };
        Ok(Self {
            parts,
            registered: AtomicU32::new(0),
        })
    }

    /// Gives the calling thread a buffer of its own. Call once per thread, before
    /// tracing (not on the event path); slots are not reused.
    pub fn register(&self) -> Result<ThreadWriter<'_, K, T>, NoFreeSlot> {
        // Relaxed: a counter handing out distinct indices; the buffers were
        // published to this thread when the channel was shared with it.
        let slot = self.registered.fetch_add(1, Ordering::Relaxed);
        let buffer = self.parts.buffers.get(slot as usize).ok_or(NoFreeSlot)?;
        Ok(ThreadWriter {
            buffer,
            slot,
            _not_send: PhantomData,
        })
    }

    /// Counters of every slot.
    pub fn stats(&self) -> Vec<Stats> {
        self.parts.buffers.iter().map(Buffer::stats).collect()
    }

    /// The reader of slot `slot`, for a consumer in this process. (The buffers
    /// themselves are never handed out: writing one from another thread would break
    /// the local flavour's contract.)
    pub fn reader(&self, slot: u32) -> Option<Result<ThreadReader<'_, K, T>, ReaderBusy>> {
        self.parts.buffers.get(slot as usize).map(Buffer::reader)
    }

    /// The shared memory.
    pub fn shm(&self) -> &Shm {
        &self.parts.shm
    }

    /// The wakeup descriptor.
    pub fn wakeup(&self) -> &Wakeup {
        &self.parts.wakeup
    }
}

/// A thread's own buffer in a [`PerThreadChannel`]. Neither `Send` nor `Sync`: only
/// the registering thread (and its signal handlers) write through it.
pub struct ThreadWriter<'c, K: Client, T: Clock> {
    buffer: &'c ChannelBuffer<LocalWord, K, T>,
    slot: u32,
    _not_send: PhantomData<*const ()>,
}

impl<K: Client, T: Clock> ThreadWriter<'_, K, T> {
    /// Reserves room for one event in this thread's buffer (see
    /// [`Buffer::reserve`]); the reservation cannot leave the thread either.
    #[inline]
    pub fn reserve<'a>(
        &'a self,
        nest: &'a Nesting,
        event_id: u32,
        payload_len: usize,
    ) -> Result<Reservation<'a, Region<'static, LocalWord>, Notify<K>, T>, ReserveError> {
        self.buffer.reserve(nest, event_id, payload_len)
    }

    /// The slot (buffer index in the channel).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Writes one event of raw payload.
    #[inline]
    pub fn write(&self, event_id: u32, payload: &[u8]) -> Result<(), ReserveError> {
        with_nesting(|nest| self.buffer.write(nest, event_id, payload))
    }

    /// Writes one schema-described event.
    #[inline]
    pub fn write_event(
        &self,
        schema: &EventSchema,
        values: &[Value<'_>],
    ) -> Result<(), EventError> {
        with_nesting(|nest| ctf::write_event(self.buffer, nest, schema, values))
    }

    /// Closes this thread's open packet (only the owning thread may: local flavour).
    pub fn switch(&self, kind: Switch) -> Result<(), SwitchError> {
        self.buffer.switch(kind)
    }
}
