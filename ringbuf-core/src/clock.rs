//! Clocks: where event timestamps come from.
//!
//! The engine reads the clock once per reservation attempt, after reading the
//! reserve position, so that timestamps never go backwards along a buffer.

/// A monotonic time source. `now` must be cheap and callable from signal handlers.
pub trait Clock: Sync {
    /// The current time in the clock's ticks.
    fn now(&self) -> u64;
}

impl<F: Fn() -> u64 + Sync> Clock for F {
    #[inline(always)]
    fn now(&self) -> u64 {
        self()
    }
}

/// A clock that always reads 0, for users that do not want timestamps.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoClock;

impl Clock for NoClock {
    #[inline(always)]
    fn now(&self) -> u64 {
        0
    }
}

/// The x86-64 time-stamp counter (`rdtsc`).
///
/// Monotonic across CPUs only on machines with an invariant, synchronised TSC; the
/// std crates check the CPU flags and calibrate it before use in traces.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tsc;

#[cfg(target_arch = "x86_64")]
impl Clock for Tsc {
    #[inline(always)]
    fn now(&self) -> u64 {
        // SAFETY: `rdtsc` is available on every x86-64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}
