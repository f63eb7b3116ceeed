//! LTTng-UST 2.13 as a peer: the tracepoint provider `ringbuf_bench` of
//! `benches/lttng/ringbuf_tp.{h,c}` (built by `build.rs` when liblttng-ust is
//! installed, which sets `cfg(has_lttng_ust)`), with one event `{u64 a; u32 b}`
//! under two names: `ringbuf_bench:event`, which `benches/lttng/run.sh` enables in
//! a snapshot session, and `ringbuf_bench:event_off`, never enabled (the cost of a
//! tracepoint no session listens to).
//!
//! The timed loops are in C, so that each event is a tracepoint expanded at its
//! call site, as in an instrumented C program (no foreign call per event).

/// The tracepoint provider, linked in: [`Lttng::new`] returns one only if
/// liblttng-ust was installed when this crate was built.
#[derive(Clone, Copy, Debug)]
pub struct Lttng(());

/// The message printed for each LTTng row when the provider is not built in.
pub const NOT_BUILT: &str = "skipped: liblttng-ust-dev not installed (pkg-config lttng-ust \
                             failed when the benches were built)";

#[cfg(has_lttng_ust)]
mod ffi {
    extern "C" {
        pub fn ringbuf_lttng_events(first: u64, n: u64);
        pub fn ringbuf_lttng_events_off(first: u64, n: u64);
        pub fn ringbuf_lttng_enabled() -> i32;
        pub fn ringbuf_lttng_off_enabled() -> i32;
    }
}

impl Lttng {
    /// The provider, if it was built in.
    pub fn new() -> Option<Self> {
        cfg!(has_lttng_ust).then_some(Self(()))
    }

    /// `n` events `ringbuf_bench:event`, `a = first + i`, `b = a as u32`.
    #[inline]
    pub fn events(self, first: u64, n: u64) {
        #[cfg(has_lttng_ust)]
        // SAFETY: a plain C loop over a tracepoint; no pointers, no preconditions
        // (liblttng-ust initialised itself when the process started).
        unsafe {
            ffi::ringbuf_lttng_events(first, n)
        };
        #[cfg(not(has_lttng_ust))]
        let _ = (first, n);
    }

    /// `n` events `ringbuf_bench:event_off` (never enabled), as [`Lttng::events`].
    #[inline]
    pub fn events_off(self, first: u64, n: u64) {
        #[cfg(has_lttng_ust)]
        // SAFETY: as in `events`.
        unsafe {
            ffi::ringbuf_lttng_events_off(first, n)
        };
        #[cfg(not(has_lttng_ust))]
        let _ = (first, n);
    }

    /// Whether a session enabled `ringbuf_bench:event` in this process.
    pub fn enabled(self) -> bool {
        #[cfg(has_lttng_ust)]
        // SAFETY: reads the tracepoint's state; no preconditions.
        return unsafe { ffi::ringbuf_lttng_enabled() } != 0;
        #[cfg(not(has_lttng_ust))]
        false
    }

    /// Whether a session enabled `ringbuf_bench:event_off` (it must not be).
    pub fn off_enabled(self) -> bool {
        #[cfg(has_lttng_ust)]
        // SAFETY: reads the tracepoint's state; no preconditions.
        return unsafe { ffi::ringbuf_lttng_off_enabled() } != 0;
        #[cfg(not(has_lttng_ust))]
        false
    }
}
