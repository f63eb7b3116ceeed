//! Per-thread channels: one local-flavour buffer (non-LOCK read-modify-writes) per
//! live thread, claimed on the thread's first event and given back after it exits.
//!
//! * **Registration is automatic.** [`PerThreadChannel::writer`] looks the calling
//!   thread up in a `const` thread-local table (no lazy initialisation, no
//!   destructor: a few loads); on a miss it claims a free slot in the channel's
//!   slot table (`slots.rs`) and arms a thread-exit hook.
//! * **Signal handlers never register.** Arming the exit hook allocates, which is
//!   not async-signal-safe, and a slot without an exit hook would never come back.
//!   [`PerThreadChannel::signal_writer`] only looks up: a handler that runs on a
//!   thread before that thread's first event outside a handler gets
//!   [`SlotError::Unregistered`], and the event is counted in
//!   [`SlotLosses::unregistered`], never dropped silently.
//! * **Slots come back.** At thread exit the hook (on the exiting thread, so the
//!   local flavour's one-CPU contract holds) forgets the registration, closes the
//!   open packet (`switch(Flush)`) and marks the slot retiring; a consumer
//!   ([`crate::Consumer::drain`] or `export`) reads it to the end and frees it; only
//!   then can another thread claim it. A thread that finds no free slot gets
//!   [`SlotError::NoFreeSlot`], counted in [`SlotLosses::no_slot`].
//! * **Live reading.** A consumer never writes a per-thread buffer; it sets a
//!   switch request in the slot's state word ([`crate::Consumer::switch_all`]), and
//!   the owner, which loads that word on every event (one plain load), closes its
//!   open packet on its next event.
//!
//! A registration names its channel by a process-unique id (never reused), so a
//! thread's entry for a dropped channel can never match a new one; the exit hook
//! holds only a `Weak` reference, so a dropped channel is not kept alive by the
//! threads that wrote to it.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{compiler_fence, AtomicU32, AtomicU64};
use std::sync::{Arc, Once, Weak};

use ringbuf_core::ctf::{self, EventError, EventSchema, Value};
use ringbuf_core::{
    Buffer, Client, Clock, LocalWord, Nesting, Reader, ReaderBusy, Region, Reservation,
    ReserveError, Stats, Switch, SwitchError,
};

use crate::backing::Shm;
use crate::channel::{ChannelError, WritePath};
use crate::producer::{current_tid, with_nesting, Backing, ChannelBuffer, ChannelOptions, Parts};
use crate::slots::{Loss, SlotLosses, SlotState, SlotTable};
use crate::wakeup::{Notify, Wakeup};

/// How many per-thread channels one thread can write to at a time.
pub const MAX_CHANNELS_PER_THREAD: usize = 8;

/// The in-process reader of a [`PerThreadChannel`] slot.
pub type ThreadReader<'c, K, T> = Reader<'c, Region<'static, LocalWord>, Notify<K>, T>;

/// Why the calling thread has no writer. Each failed call of
/// [`PerThreadChannel::writer`] or [`PerThreadChannel::signal_writer`] counts one
/// event lost in the channel's [`SlotLosses`]: call them once per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// Every slot is taken, by live threads or by exited ones whose last packets
    /// no consumer has read yet ([`SlotLosses::no_slot`]).
    NoFreeSlot,
    /// The thread already writes to [`MAX_CHANNELS_PER_THREAD`] per-thread
    /// channels ([`SlotLosses::no_slot`]).
    TooManyChannels,
    /// The thread has no slot and [`PerThreadChannel::signal_writer`] never
    /// registers ([`SlotLosses::unregistered`]).
    Unregistered,
    /// The thread is exiting: its exit hook already ran
    /// ([`SlotLosses::unregistered`]).
    Exiting,
}

impl SlotError {
    fn loss(self) -> Loss {
        match self {
            Self::NoFreeSlot | Self::TooManyChannels => Loss::NoSlot,
            Self::Unregistered | Self::Exiting => Loss::Unregistered,
        }
    }
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoFreeSlot => {
                f.write_str("no free thread slot (all owned, or their last packets not read yet)")
            }
            Self::TooManyChannels => write!(
                f,
                "this thread already writes to {MAX_CHANNELS_PER_THREAD} per-thread channels"
            ),
            Self::Unregistered => {
                f.write_str("this thread has no slot yet, and a signal handler cannot take one")
            }
            Self::Exiting => f.write_str("this thread is exiting"),
        }
    }
}

impl std::error::Error for SlotError {}

/// The channel proper, shared with the exit hooks of the threads that wrote to it
/// (through `Weak` references).
struct Inner<K: Client, T: Clock> {
    id: u64,
    parts: Parts<LocalWord, K, T>,
}

/// One local-flavour buffer per live thread, in shared memory (see the module
/// documentation for the lifecycle of a slot).
pub struct PerThreadChannel<K: Client, T: Clock> {
    inner: Arc<Inner<K, T>>,
}

/// Ids of channels: never reused, so a stale registration never matches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<K: Client + 'static, T: Clock + 'static> PerThreadChannel<K, T> {
    /// Creates the channel with `options.buffers` thread slots, all free.
    pub fn create(
        backing: Backing<'_>,
        options: &ChannelOptions<'_>,
        metadata: &str,
        client: impl FnMut(u32) -> K,
        clock: impl FnMut(u32) -> T,
    ) -> Result<Self, ChannelError> {
        let writers = WritePath::Shared;
        // A buffer is written only by its slot's owner thread (through
        // `ThreadWriter`s, which cannot leave it, and its exit hook) and that
        // thread's signal handlers; a consumer never writes it.
        // SAFETY: so one CPU at a time writes each buffer; ownership moves only
        // through the slot table's CASes, which order one owner's writes before
        // the next owner's (`slots.rs`).
        let parts = unsafe { Parts::create(backing, options, metadata, client, clock, writers) }?;
        Ok(Self {
            inner: Arc::new(Inner {
                // Relaxed: only uniqueness matters.
                id: NEXT_ID.fetch_add(1, Relaxed),
                parts,
            }),
        })
    }

    /// The calling thread's writer. On the thread's first call it claims a free
    /// slot and arms a thread-exit hook, which is not async-signal-safe: from a
    /// signal handler call [`PerThreadChannel::signal_writer`] instead. A failure
    /// counts one lost event (see [`SlotError`]); a thread without a slot tries
    /// again on its next call.
    ///
    /// ```
    /// use ringbuf_core::{Config, Mode, NoClock, RawRecords};
    /// use ringbuf_mmap::clock::Monotonic;
    /// use ringbuf_mmap::{Backing, ChannelOptions, PerThreadChannel, SlotState};
    ///
    /// let options = ChannelOptions {
    ///     config: Config::new(4096, 4, Mode::Discard),
    ///     buffers: 2,
    ///     format: 0,
    ///     prefault: false,
    ///     clock: Monotonic.describe(),
    /// };
    /// let channel = PerThreadChannel::create(
    ///     Backing::Memfd { name: "example" },
    ///     &options,
    ///     "",
    ///     |_| RawRecords,
    ///     |_| NoClock,
    /// )?;
    /// let slot = std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         // No registration: the thread's first event takes a slot.
    ///         let writer = channel.writer().expect("a free slot");
    ///         writer.write(1, b"hello").expect("room for it");
    ///         writer.slot()
    ///     })
    ///     .join()
    ///     .unwrap()
    /// });
    /// // The thread exited: its packet is closed, and its slot waits for a consumer
    /// // to read it before another thread may take it.
    /// assert!(matches!(channel.slot_state(slot), Some(SlotState::Retiring { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn writer(&self) -> Result<ThreadWriter<'_, K, T>, SlotError> {
        let (slot, owned) = match lookup(self.inner.id) {
            Some(found) => found,
            None => self.register()?,
        };
        Ok(self.writer_at(slot, owned))
    }

    /// The calling thread's writer if it has one; never registers, so it is
    /// async-signal-safe. A thread whose first event comes from a signal handler
    /// gets [`SlotError::Unregistered`] (one event counted in
    /// [`SlotLosses::unregistered`]) until it calls [`PerThreadChannel::writer`]
    /// outside a handler.
    #[inline]
    pub fn signal_writer(&self) -> Result<ThreadWriter<'_, K, T>, SlotError> {
        self.registered_writer()
            .ok_or_else(|| self.lost(SlotError::Unregistered))
    }

    /// The calling thread's writer if it has one (async-signal-safe, counts
    /// nothing): e.g. to flush its buffer when tracing ends.
    #[inline]
    pub fn registered_writer(&self) -> Option<ThreadWriter<'_, K, T>> {
        lookup(self.inner.id).map(|(slot, owned)| self.writer_at(slot, owned))
    }

    fn writer_at(&self, slot: u32, owned: u64) -> ThreadWriter<'_, K, T> {
        let parts = &self.inner.parts;
        ThreadWriter {
            // Registrations name only slots of this channel (`register`).
            buffer: &parts.buffers[slot as usize],
            state: parts
                .slots
                .state_word(slot)
                .expect("a slot of this channel"),
            owned,
            slot,
            _not_send: PhantomData,
        }
    }

    #[cold]
    fn register(&self) -> Result<(u32, u64), SlotError> {
        let id = self.inner.id;
        let registered = EXIT.try_with(|hook| {
            // Only a registration that interrupted another on this thread (a signal
            // handler calling `writer`, against its documentation) finds it
            // borrowed.
            let Ok(mut registrations) = hook.registrations.try_borrow_mut() else {
                return Err(SlotError::Unregistered);
            };
            // Registrations of channels dropped since: their entries are free again.
            registrations.retain(|r| {
                let live = r.channel.strong_count() > 0;
                if !live {
                    set_entry(r.id, None);
                }
                live
            });
            if registrations.len() >= MAX_CHANNELS_PER_THREAD {
                return Err(SlotError::TooManyChannels);
            }
            let (slot, owned) = self
                .inner
                .parts
                .slots
                .claim(current_tid())
                .ok_or(SlotError::NoFreeSlot)?;
            let channel = Arc::downgrade(&self.inner) as Weak<dyn Retire>;
            registrations.push(Registration {
                id,
                slot,
                owned,
                channel,
            });
            set_entry(0, Some((id, slot, owned)));
            Ok((slot, owned))
        });
        // `try_with` fails once the hook was destroyed: the thread is exiting, and a
        // slot claimed now would never be given back.
        registered
            .unwrap_or(Err(SlotError::Exiting))
            .map_err(|e| self.lost(e))
    }

    /// Counts the event `error` made the caller drop.
    fn lost(&self, error: SlotError) -> SlotError {
        self.inner.parts.slots.count(error.loss());
        error
    }

    /// Events dropped because their thread had no slot.
    pub fn losses(&self) -> SlotLosses {
        self.inner.parts.slots.losses()
    }

    /// The state of slot `slot` (`None` past the last).
    pub fn slot_state(&self, slot: u32) -> Option<SlotState> {
        self.inner.parts.slots.state(slot)
    }

    /// Counters of every slot's buffer.
    pub fn stats(&self) -> Vec<Stats> {
        self.inner.parts.buffers.iter().map(Buffer::stats).collect()
    }

    /// The reader of slot `slot`, for a consumer in this process that reads the
    /// buffer directly. (It does not free retiring slots: a [`crate::Consumer`]
    /// does. The buffers themselves are never handed out: writing one from another
    /// thread would break the local flavour's contract.)
    pub fn reader(&self, slot: u32) -> Option<Result<ThreadReader<'_, K, T>, ReaderBusy>> {
        self.inner
            .parts
            .buffers
            .get(slot as usize)
            .map(Buffer::reader)
    }

    /// The shared memory (to send its descriptor, or attach a consumer).
    pub fn shm(&self) -> &Shm {
        &self.inner.parts.shm
    }

    /// The wakeup descriptor.
    pub fn wakeup(&self) -> &Wakeup {
        &self.inner.parts.wakeup
    }

    /// The file, for file-backed channels.
    pub fn path(&self) -> Option<&Path> {
        self.inner.parts.path.as_deref()
    }
}

/// What a thread's exit hook does to a channel it wrote to.
trait Retire {
    /// Closes `slot`'s open packet and marks the slot retiring (if its word still
    /// says `owned`). Called on the owning thread.
    fn retire(&self, slot: u32, owned: u64);
}

impl<K: Client, T: Clock> Retire for Inner<K, T> {
    fn retire(&self, slot: u32, owned: u64) {
        if let Some(buffer) = self.parts.buffers.get(slot as usize) {
            // `Flush` closes the open packet even if empty, so the stream ends with
            // the final discarded count. It fails only when no packet is open and the
            // next sub-buffer is not free: then every event is in a closed packet.
            let _ = buffer.switch(Switch::Flush);
        }
        self.parts.slots.retire(slot, owned);
    }
}

/// A thread's registration in one channel, as the fast path sees it. Atomics
/// (Relaxed) because a signal handler on the same thread may read an entry while
/// the thread writes it; a compiler fence orders the fields.
struct Entry {
    /// The channel's id; 0: unused.
    id: AtomicU64,
    slot: AtomicU32,
    owned: AtomicU64,
}

impl Entry {
    const fn new() -> Self {
        Self {
            id: AtomicU64::new(0),
            slot: AtomicU32::new(0),
            owned: AtomicU64::new(0),
        }
    }
}

/// One registration, as the exit hook sees it.
struct Registration {
    id: u64,
    slot: u32,
    owned: u64,
    channel: Weak<dyn Retire>,
}

/// Retires the thread's slots when the thread exits.
struct ExitHook {
    registrations: RefCell<Vec<Registration>>,
}

impl Drop for ExitHook {
    fn drop(&mut self) {
        for r in self.registrations.get_mut().drain(..) {
            // First: a signal handler that runs from now on finds no writer (and
            // counts its event), so nothing is written after the flush.
            set_entry(r.id, None);
            if let Some(channel) = r.channel.upgrade() {
                channel.retire(r.slot, r.owned);
            }
        }
    }
}

thread_local! {
    /// The fast path's table: `const`, without a destructor, so that reading it
    /// (from a signal handler too) involves no lazy initialisation.
    static ENTRIES: [Entry; MAX_CHANNELS_PER_THREAD] =
        const { [const { Entry::new() }; MAX_CHANNELS_PER_THREAD] };
    /// Touched only when registering (which arms its destructor) and at exit.
    static EXIT: ExitHook = const {
        ExitHook {
            registrations: RefCell::new(Vec::new()),
        }
    };
}

/// The calling thread's (slot, owned state) in channel `id`.
#[inline(always)]
fn lookup(id: u64) -> Option<(u32, u64)> {
    ENTRIES.with(|entries| {
        entries.iter().find_map(|e| {
            // Relaxed: only this thread and its signal handlers touch the entries,
            // and they see each other's accesses in program order; the fences pair
            // with `set_entry`'s so the fields are read after the id that
            // validates them.
            (e.id.load(Relaxed) == id).then(|| {
                compiler_fence(Acquire);
                (e.slot.load(Relaxed), e.owned.load(Relaxed))
            })
        })
    })
}

/// Sets the entry of channel `id` (`Some`: fills the entry whose id is `id`, or a
/// free one when `id` is 0) or clears it (`None`).
fn set_entry(id: u64, value: Option<(u64, u32, u64)>) {
    ENTRIES.with(|entries| {
        let Some(entry) = entries.iter().find(|e| e.id.load(Relaxed) == id) else {
            return;
        };
        match value {
            Some((new_id, slot, owned)) => {
                entry.slot.store(slot, Relaxed);
                entry.owned.store(owned, Relaxed);
                // The fields before the id that makes them visible (see `lookup`).
                compiler_fence(Release);
                entry.id.store(new_id, Relaxed);
            }
            None => {
                entry.id.store(0, Relaxed);
                compiler_fence(Release);
            }
        }
    });
}

/// Installs (once per process) the `fork` handler: the child's only thread is a
/// copy of the forking one, whose registrations name slots that the parent's
/// thread keeps writing; the child forgets them (and its cached thread id), and
/// registers anew if it writes.
pub(crate) fn install_fork_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only touches this crate's thread-locals;
        // no prepare or parent handler.
        unsafe { libc::pthread_atfork(None, None, Some(forget_registrations_in_child)) };
    });
}

extern "C" fn forget_registrations_in_child() {
    ENTRIES.with(|entries| {
        for e in entries {
            e.id.store(0, Relaxed);
        }
    });
    let _ = EXIT.try_with(|hook| {
        if let Ok(mut registrations) = hook.registrations.try_borrow_mut() {
            registrations.clear();
        }
    });
    crate::producer::forget_tid();
}

/// The calling thread's buffer in a [`PerThreadChannel`]. Neither `Send` nor
/// `Sync`: only its thread (and that thread's signal handlers) write through it.
/// Every event first checks the slot's state word for a consumer's switch request
/// (one load) and honours it by closing the open packet.
pub struct ThreadWriter<'c, K: Client, T: Clock> {
    buffer: &'c ChannelBuffer<LocalWord, K, T>,
    state: &'c AtomicU64,
    /// The state word's value while this thread owns the slot with no request.
    owned: u64,
    slot: u32,
    _not_send: PhantomData<*const ()>,
}

impl<K: Client, T: Clock> ThreadWriter<'_, K, T> {
    /// Closes the open packet if a consumer asked for it since the last event.
    #[inline(always)]
    fn honour_switch_request(&self) {
        // Relaxed: compared with this thread's own value; a request carries no
        // data (see `SlotTable::take_request`).
        let seen = self.state.load(Relaxed);
        if seen != self.owned && SlotTable::take_request(self.state, seen, self.owned) {
            // `Active` never fails: it closes the open packet or finds none.
            let _ = self.buffer.switch(Switch::Active);
        }
    }

    /// Reserves room for one event in this thread's buffer (see
    /// [`Buffer::reserve`]); the reservation cannot leave the thread either.
    #[inline]
    pub fn reserve<'a>(
        &'a self,
        nest: &'a Nesting,
        event_id: u32,
        payload_len: usize,
    ) -> Result<Reservation<'a, Region<'static, LocalWord>, Notify<K>, T>, ReserveError> {
        self.honour_switch_request();
        self.buffer.reserve(nest, event_id, payload_len)
    }

    /// The slot (buffer index in the channel).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Writes one event of raw payload.
    #[inline]
    pub fn write(&self, event_id: u32, payload: &[u8]) -> Result<(), ReserveError> {
        self.honour_switch_request();
        with_nesting(|nest| self.buffer.write(nest, event_id, payload))
    }

    /// Writes one schema-described event.
    #[inline]
    pub fn write_event(
        &self,
        schema: &EventSchema,
        values: &[Value<'_>],
    ) -> Result<(), EventError> {
        self.honour_switch_request();
        with_nesting(|nest| ctf::write_event(self.buffer, nest, schema, values))
    }

    /// Writes one typed event (see [`ctf::Sink`]) whose payload starts with
    /// `context` (the stream's event context, as its `Ctf` client declares it).
    #[inline(always)]
    pub fn emit<E: ctf::Event, const N: usize>(
        &self,
        context: [u8; N],
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), ctf::EmitError> {
        let Some(id) = E::id().get() else {
            return Err(ctf::EmitError::Undeclared { event: E::NAME });
        };
        self.honour_switch_request();
        with_nesting(|nest| {
            let reserved = self.buffer.reserve(nest, id, N.saturating_add(len));
            ctf::fill_reservation(reserved, &context, len, fill)
        })
    }

    /// Closes this thread's open packet (only the owning thread may: local flavour).
    pub fn switch(&self, kind: Switch) -> Result<(), SwitchError> {
        self.buffer.switch(kind)
    }
}
