//! Nested writes from a signal handler: a writer raises a signal to itself inside
//! an open reservation, and the handler writes `K` events into the same buffer
//! (docs/ARCHITECTURE.md, design §3: the user-space NMI).

use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use ringbuf_core::{Nesting, Word};

use crate::{write_event, TscBuffer};

thread_local! {
    /// The writer thread's nesting counter, shared with its signal handler. A `const`
    /// initialiser and no destructor: no lazy initialisation in the handler.
    static NEST: Nesting = const { Nesting::new() };
}

/// The signal raised.
pub const SIGNAL: libc::c_int = libc::SIGUSR1;

/// Payload bytes of the outer and of every nested event.
pub const NESTED_PAYLOAD: usize = 16;

/// The buffer the handler writes to (a `*const TscBuffer<W>`), or null.
static TARGET: AtomicPtr<()> = AtomicPtr::new(null_mut());
/// Events the handler writes per signal.
static NESTED_EVENTS: AtomicUsize = AtomicUsize::new(0);
/// Whether a [`NestedWriter`] exists (there is one handler, hence one at a time).
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal<W: Word>(_signal: libc::c_int) {
    let target = TARGET.load(Ordering::Acquire);
    if target.is_null() {
        return;
    }
    // SAFETY: `TARGET` points to the buffer of the live `NestedWriter<W>` that
    // installed this handler (same `W`); the writer clears it and restores the old
    // handler before the buffer can go away. The 'static lifetime never escapes.
    let buf = unsafe { &*target.cast::<TscBuffer<'static, W>>() };
    let payload = [0xcd; NESTED_PAYLOAD];
    let events = NESTED_EVENTS.load(Ordering::Relaxed);
    NEST.with(|nest| {
        for _ in 0..events {
            write_event(buf, nest, &payload);
        }
    });
}

/// While alive, [`SIGNAL`]'s handler writes `events` events into `buf` each time
/// it runs. One at a time per process.
pub struct NestedWriter<'b, 'a, W: Word> {
    buf: &'b TscBuffer<'a, W>,
    previous: libc::sigaction,
}

impl<'b, 'a, W: Word> NestedWriter<'b, 'a, W> {
    /// Installs the handler, writing `events` events per signal into `buf`.
    ///
    /// # Panics
    ///
    /// If another `NestedWriter` exists, or `sigaction` fails.
    pub fn install(buf: &'b TscBuffer<'a, W>, events: usize) -> Self {
        assert!(
            !INSTALLED.swap(true, Ordering::AcqRel),
            "one NestedWriter at a time"
        );
        NESTED_EVENTS.store(events, Ordering::Relaxed);
        // Release: the handler that sees the pointer sees the count.
        TARGET.store(std::ptr::from_ref(buf).cast_mut().cast(), Ordering::Release);
        // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags, SIG_DFL).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal::<W> as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: as above.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid `sigaction`s; the handler only touches the
        // buffer through async-signal-safe, lock-free, allocation-free code.
        let rc = unsafe { libc::sigaction(SIGNAL, &action, &mut previous) };
        assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
        Self { buf, previous }
    }

    /// One outer event: reserve, fill, raise the signal (the handler writes its
    /// events, nested one level deeper), commit.
    #[inline(always)]
    pub fn outer_event(&self, payload: &[u8; NESTED_PAYLOAD]) {
        NEST.with(|nest| {
            if let Ok(mut r) = self.buf.reserve(nest, 2, NESTED_PAYLOAD) {
                r.payload_mut().copy_from_slice(payload);
                self.raise();
                r.commit();
            }
        });
    }

    /// Raises [`SIGNAL`] in the calling thread; the handler has run when it
    /// returns.
    #[inline(always)]
    pub fn raise(&self) {
        // SAFETY: `raise` has no memory-safety preconditions, and `self` proves our
        // handler is installed (the default action would end the process).
        let rc = unsafe { libc::raise(SIGNAL) };
        debug_assert_eq!(rc, 0);
    }

    /// The buffer.
    pub fn buffer(&self) -> &'b TscBuffer<'a, W> {
        self.buf
    }
}

impl<W: Word> Drop for NestedWriter<'_, '_, W> {
    fn drop(&mut self) {
        // SAFETY: `previous` is the action `install` replaced.
        unsafe { libc::sigaction(SIGNAL, &self.previous, null_mut()) };
        TARGET.store(null_mut(), Ordering::Release);
        INSTALLED.store(false, Ordering::Release);
    }
}
