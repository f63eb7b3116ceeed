//! Clocks: where event timestamps come from.
//!
//! The engine reads the clock once per reservation attempt, after reading the
//! reserve position, so that timestamps never go backwards along a buffer.

/// A monotonic time source. `now` must be cheap and callable from signal handlers.
pub trait Clock: Sync {
    /// The current time in the clock's ticks, read in order with the loads and
    /// stores around it.
    fn now(&self) -> u64;

    /// The current time, possibly read out of order with the loads and stores
    /// around it (x86-64: a bare `rdtsc`). For write paths that order timestamps
    /// by value instead, raising each read to the buffer's previous timestamp: a
    /// buffer written by one thread, or by restartable sequences on one CPU
    /// (docs/ARCHITECTURE.md §10, "The clock of each write path"). Defaults to
    /// [`Clock::now`].
    #[inline(always)]
    fn now_unordered(&self) -> u64 {
        self.now()
    }
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

/// The x86-64 time-stamp counter, read in order: `lfence; rdtsc; lfence`.
///
/// A bare `rdtsc` may execute before the load that precedes it or after the CAS
/// that follows it (Intel SDM: it is not serializing). The engine reads the clock
/// after loading the reserve position and before its CAS, so that a later position
/// never gets an earlier time; when several CPUs write one buffer (per-CPU buffers
/// with migration, or a consumer's live switch) an unordered read breaks that by a
/// few nanoseconds, and babeltrace2 rejects the trace. The fences restore the order.
///
/// Monotonic across CPUs only on machines with an invariant, synchronised TSC; the
/// std crates check the CPU flags and calibrate it before use in traces.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tsc;

#[cfg(target_arch = "x86_64")]
impl Tsc {
    /// Whether the CPU advertises an invariant TSC (CPUID leaf 0x8000_0007, EDX bit
    /// 8): constant rate in every P-, C- and T-state. Without it the TSC is not a
    /// trace clock.
    pub fn is_invariant() -> bool {
        // Leaf 0x8000_0000 reports the highest extended leaf, so 0x8000_0007 is only
        // read when it exists.
        let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
}

#[cfg(target_arch = "x86_64")]
impl Clock for Tsc {
    #[inline(always)]
    fn now(&self) -> u64 {
        use core::arch::x86_64::{_mm_lfence, _rdtsc};
        // SAFETY: `lfence` (SSE2) and `rdtsc` exist on every x86-64 CPU and have no
        // memory effects.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }

    #[inline(always)]
    fn now_unordered(&self) -> u64 {
        // SAFETY: `rdtsc` exists on every x86-64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}
