//! The producer side: channels of buffers in shared memory, and what every writer
//! knows about its thread.
//!
//! * [`PerCpuChannel`]: one buffer per possible CPU, shared flavour (a thread can
//!   migrate between reading its CPU number and its CAS, so two CPUs may write one
//!   buffer). Any thread, and signal handlers, write through it.
//! * [`crate::PerThreadChannel`] (in `per_thread.rs`): one local-flavour buffer per
//!   live thread.
//!
//! Every writer uses the calling thread's nesting counter, a `const`-initialised
//! thread-local with no destructor: no lazy initialisation, usable from signal
//! handlers. [`current_tid`] is cached the same way.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use ringbuf_core::ctf::{self, ClockDescription, EventError, EventSchema, Value};
use ringbuf_core::seq::SeqError;
use ringbuf_core::{
    Buffer, Client, Clock, Config, Nesting, Region, ReserveError, SharedWord, Stats, Switch,
    SwitchError, Word,
};

use crate::backing::Shm;
use crate::channel::{self, ChannelClock, ChannelError, ChannelLayout, WritePath};
use crate::rseq::Rseq;
use crate::slots::SlotTable;
use crate::wakeup::{Notify, Wakeup};

thread_local! {
    static NESTING: Nesting = const { Nesting::new() };
    /// The calling thread's id, 0 until first asked.
    static TID: Cell<u32> = const { Cell::new(0) };
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

/// The calling thread's id (`gettid`), cached in a `const` thread-local: a load
/// after the first call, and usable from signal handlers (the first call is one
/// `gettid` system call, which is async-signal-safe). For a per-event thread-id
/// context (`vtid`).
///
/// A child made by `fork` gets a new id: the cache is reset in the child once any
/// channel of this crate was created in the process (a `pthread_atfork` handler).
#[inline]
pub fn current_tid() -> u32 {
    TID.with(|cached| match cached.get() {
        0 => {
            // SAFETY: gettid has no preconditions and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            // A signal handler that runs between the load and this store stores the
            // same value.
            cached.set(tid);
            tid
        }
        tid => tid,
    })
}

/// Forgets the cached thread id (in a forked child).
pub(crate) fn forget_tid() {
    TID.with(|cached| cached.set(0));
}

/// How to build a channel.
#[derive(Clone, Copy, Debug)]
pub struct ChannelOptions<'a> {
    /// Every buffer's configuration.
    pub config: Config,
    /// Number of buffers (CPUs or thread slots).
    pub buffers: u32,
    /// Record format tag (written in every region header).
    pub format: u32,
    /// Touch every page at creation, so the event path never page-faults.
    pub prefault: bool,
    /// The clock of every buffer's timestamps (the description of the clocks that
    /// `create`'s `clock` makes), recorded in the channel header so that consumers
    /// and crash tools know it without parsing the metadata.
    pub clock: ClockDescription<'a>,
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

pub(crate) type ChannelBuffer<W, K, T> = Buffer<Region<'static, W>, Notify<K>, T>;

/// What both channel kinds hold. Field order is drop order: the buffers and the
/// slot table point into the mapping, so they go first.
pub(crate) struct Parts<W: Word, K: Client, T: Clock> {
    pub(crate) buffers: Vec<ChannelBuffer<W, K, T>>,
    pub(crate) slots: SlotTable,
    pub(crate) wakeup: Wakeup,
    pub(crate) shm: Shm,
    pub(crate) path: Option<PathBuf>,
}

impl<W: Word, K: Client, T: Clock> Parts<W, K, T> {
    /// # Safety
    ///
    /// For `LocalWord`, every buffer is written by one CPU at a time.
    pub(crate) unsafe fn create(
        backing: Backing<'_>,
        options: &ChannelOptions<'_>,
        metadata: &str,
        mut client: impl FnMut(u32) -> K,
        mut clock: impl FnMut(u32) -> T,
        writers: WritePath,
    ) -> Result<Self, ChannelError> {
        let config = options.config;
        let layout = ChannelLayout::new(&config, options.buffers, metadata.len() as u64)?;
        // Checked before any file exists.
        let recorded_clock = ChannelClock::new(&options.clock).map_err(ChannelError::Clock)?;
        crate::per_thread::install_fork_handler();
        let size = layout.size as usize;
        let (shm, wakeup, path, unpublished) = match backing {
            Backing::Memfd { name } => (
                Shm::memfd(name, size, options.prefault)?,
                Wakeup::eventfd().map_err(|e| ChannelError::Backing(e.into()))?,
                None,
                None,
            ),
            Backing::File { dir, name } => {
                let (shm, unpublished) = Shm::create_file(dir, name, size, options.prefault)?;
                let path = dir.join(name);
                let wakeup = Wakeup::create_fifo(&wakeup_path(&path))
                    .map_err(|e| ChannelError::Backing(e.into()))?;
                (shm, wakeup, Some(path), Some(unpublished))
            }
        };
        channel::write_header(&shm, options, &layout, recorded_clock, metadata, writers);
        let mut buffers = Vec::with_capacity(options.buffers as usize);
        for index in 0..options.buffers {
            let format = options.format;
            // SAFETY: the mapping lives in the returned struct, after the buffers in
            // drop order; the flavour contract is the caller's.
            let region = unsafe { channel::init_region::<W>(&shm, &layout, config, format, index) };
            let notify = Notify::new(client(index), wakeup.fd());
            buffers.push(Buffer::new(region?, notify, clock(index))?);
        }
        // SAFETY: the table lies in the mapping, which lives in the returned struct,
        // after the table in drop order.
        let slots = unsafe { channel::slot_table(&shm, &layout, options.buffers) };
        channel::mark_ready(&shm);
        if let Some(unpublished) = unpublished {
            unpublished.publish()?;
        }
        Ok(Self {
            buffers,
            slots,
            wakeup,
            shm,
            path,
        })
    }
}

/// One buffer per CPU in shared memory, written through the shared flavour or,
/// when asked and available, by restartable sequences ([`WritePath`]).
pub struct PerCpuChannel<K: Client, T: Clock> {
    parts: Parts<SharedWord, K, T>,
    /// `Some` when the buffers are written by rseq sequences only.
    rseq: Option<Rseq>,
}

/// The write path of writers that run `rseq`'s sequences, if any.
fn write_path(rseq: Option<Rseq>) -> WritePath {
    match rseq {
        Some(_) => WritePath::Rseq,
        None => WritePath::Shared,
    }
}

/// Largest schema-described event [`PerCpuChannel::write_event`] stages on the
/// stack on the rseq path; larger ones count as `lost_big` there.
pub const RSEQ_EVENT_STAGE: usize = 4096;

impl<K: Client, T: Clock> PerCpuChannel<K, T> {
    /// Creates the channel: `client(i)` and `clock(i)` make buffer `i`'s format and
    /// clock; `metadata` is stored in the channel for consumers and crash recovery.
    /// Writers use the shared flavour (see [`PerCpuChannel::create_rseq`]).
    pub fn create(
        backing: Backing<'_>,
        options: &ChannelOptions<'_>,
        metadata: &str,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        Self::with_sequencer(backing, options, metadata, client, clock, None)
    }

    /// As [`PerCpuChannel::create`], with writers on restartable sequences
    /// (docs/ARCHITECTURE.md §10) when they are available: glibc registered rseq,
    /// `RINGBUF_RSEQ` is not `off`, `membarrier` RSEQ registers, and there is a
    /// buffer for every possible CPU. Otherwise the shared flavour, as `create`;
    /// [`PerCpuChannel::write_path`] says which.
    ///
    /// On the rseq path only [`PerCpuChannel::write`], [`PerCpuChannel::write_event`]
    /// and [`PerCpuChannel::switch_all`] may write the buffers (no
    /// [`Buffer::reserve`] on [`PerCpuChannel::current`]'s buffer, no consumer
    /// switch from another process).
    pub fn create_rseq(
        backing: Backing<'_>,
        options: &ChannelOptions<'_>,
        metadata: &str,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        let rseq = Rseq::get()
            .ok()
            .filter(|r| options.buffers >= possible_cpus() && r.register_barrier().is_ok());
        Self::with_sequencer(backing, options, metadata, client, clock, rseq)
    }

    /// The channel, written by `rseq`'s sequences if given, else the shared way.
    fn with_sequencer(
        backing: Backing<'_>,
        options: &ChannelOptions<'_>,
        metadata: &str,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
        rseq: Option<Rseq>,
    ) -> Result<Self, ChannelError> {
        let writers = write_path(rseq);
        // SAFETY: shared words; on the rseq path every writer goes through
        // `write_seq` with its own CPU (this type's methods), remote switches
        // through `switch_fenced`; on the shared path there is no contract.
        let parts = unsafe { Parts::create(backing, options, metadata, client, clock, writers) };
        Ok(Self {
            parts: parts?,
            rseq,
        })
    }

    /// How the writers update the buffers.
    pub fn write_path(&self) -> WritePath {
        write_path(self.rseq)
    }

    /// The buffer of the calling thread's CPU. On the rseq path, for reading its
    /// counters only (see [`PerCpuChannel::create_rseq`]).
    #[inline(always)]
    pub fn current(&self) -> &ChannelBuffer<SharedWord, K, T> {
        let buffers = &self.parts.buffers;
        &buffers[current_cpu() as usize % buffers.len()]
    }

    /// Writes one event of raw payload to the current CPU's buffer.
    #[inline]
    pub fn write(&self, event_id: u32, payload: &[u8]) -> Result<(), ReserveError> {
        match self.rseq {
            None => with_nesting(|nest| self.current().write(nest, event_id, payload)),
            Some(rseq) => self.write_rseq(rseq, event_id, payload),
        }
    }

    #[inline]
    fn write_rseq(&self, rseq: Rseq, event_id: u32, payload: &[u8]) -> Result<(), ReserveError> {
        let buffers = &self.parts.buffers;
        loop {
            // A thread glibc did not create has no rseq area, and a CPU beyond the
            // buffers cannot be (`create_rseq` made one per possible CPU): counted as
            // a stuck writer would be.
            let cpu = rseq.cpu();
            let Some((cpu, buffer)) = cpu.and_then(|c| Some((c, buffers.get(c as usize)?))) else {
                return Err(self.current().lose(ReserveError::Wrap));
            };
            // SAFETY: shared words are u64-sized; every writer of `buffer` runs
            // `write_seq` with its CPU (above), remote switches use `switch_fenced`.
            match unsafe { buffer.write_seq(&rseq, cpu, event_id, payload) } {
                Ok(()) => return Ok(()),
                Err(SeqError::Reserve(e)) => return Err(e),
                Err(SeqError::Moved) => continue,
            }
        }
    }

    /// Writes one schema-described event to the current CPU's buffer.
    #[inline]
    pub fn write_event(
        &self,
        schema: &EventSchema,
        values: &[Value<'_>],
    ) -> Result<(), EventError> {
        let Some(rseq) = self.rseq else {
            return with_nesting(|nest| ctf::write_event(self.current(), nest, schema, values));
        };
        let mut stage = [0u8; RSEQ_EVENT_STAGE];
        match ctf::encode_event(schema, values, &mut stage).map_err(EventError::Schema)? {
            Some(len) => self
                .write_rseq(rseq, schema.id, &stage[..len])
                .map_err(EventError::Reserve),
            None => Err(EventError::Reserve(
                self.current().lose(ReserveError::TooBig),
            )),
        }
    }

    /// All buffers, indexed by CPU. On the rseq path, for reading their counters
    /// only: switch them with [`PerCpuChannel::switch`] (a plain
    /// [`Buffer::switch`] would race the sequences).
    pub fn buffers(&self) -> &[ChannelBuffer<SharedWord, K, T>] {
        &self.parts.buffers
    }

    /// Switches every buffer (e.g. `Active` from a periodic timer for live reading,
    /// `Flush` at the end); returns the first error.
    pub fn switch_all(&self, kind: Switch) -> Result<(), SwitchError> {
        (0..self.parts.buffers.len())
            .map(|i| self.switch(i, kind))
            .fold(Ok(()), Result::and)
    }

    /// Switches buffer `index` (the way this channel's writers allow: under the
    /// fence on the rseq path); `Ok` for an index out of range.
    pub fn switch(&self, index: usize, kind: Switch) -> Result<(), SwitchError> {
        let Some(b) = self.parts.buffers.get(index) else {
            return Ok(());
        };
        match self.rseq {
            None => b.switch(kind),
            // SAFETY: this channel's buffers, written by `write_seq` only; the
            // barrier reaches its writers (this process registered it).
            Some(rseq) => unsafe { b.switch_fenced(&rseq, kind) },
        }
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
