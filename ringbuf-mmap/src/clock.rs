//! Trace clocks: `CLOCK_MONOTONIC`, and the TSC calibrated against it.
//!
//! Each clock describes itself for the CTF metadata ([`ClockDescription`]): its
//! frequency, and the offset that maps tick 0 to real (Unix epoch) time.

use std::time::Duration;

use ringbuf_core::ctf::ClockDescription;
use ringbuf_core::Clock;

const NANOS: u64 = 1_000_000_000;

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock ids used are always supported
    // on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * NANOS + ts.tv_nsec as u64
}

/// Splits an offset in ticks into (seconds, remaining ticks).
fn split(offset_ticks: u128, freq: u64) -> (i64, u64) {
    let freq = freq as u128;
    ((offset_ticks / freq) as i64, (offset_ticks % freq) as u64)
}

/// `CLOCK_MONOTONIC` in nanoseconds (served from the vDSO: cheap and usable from
/// signal handlers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Monotonic;

impl Clock for Monotonic {
    #[inline]
    fn now(&self) -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }
}

impl Monotonic {
    /// The clock's description, with the offset to real time measured now.
    pub fn describe(&self) -> ClockDescription<'static> {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let (offset_s, offset) = split(real.saturating_sub(mono) as u128, NANOS);
        ClockDescription {
            name: "monotonic",
            description: "CLOCK_MONOTONIC",
            freq: NANOS,
            offset_s,
            offset,
        }
    }
}

/// Why the TSC cannot be used as a trace clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscError {
    /// Not an x86-64 machine.
    Unsupported,
    /// The CPU does not advertise an invariant TSC.
    NotInvariant,
    /// Calibration measured no progress (a broken or virtualised TSC).
    Calibration,
}

impl std::fmt::Display for TscError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unsupported => "no TSC on this architecture",
            Self::NotInvariant => "the CPU does not advertise an invariant TSC",
            Self::Calibration => "TSC calibration measured no progress",
        })
    }
}

impl std::error::Error for TscError {}

/// The TSC, after checking it is invariant and measuring its frequency and offset
/// against `CLOCK_MONOTONIC` and `CLOCK_REALTIME`.
#[derive(Clone, Copy, Debug)]
pub struct CalibratedTsc {
    freq: u64,
    offset_s: i64,
    offset: u64,
}

#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    ringbuf_core::Tsc.now()
}

/// A (tsc, clock) pair taken as close together as possible: the clock read with the
/// narrowest TSC bracket of a few tries, paired with the bracket's midpoint.
#[cfg(target_arch = "x86_64")]
fn sample(id: libc::clockid_t) -> (u64, u64) {
    (0..16)
        .map(|_| {
            let before = tsc();
            let ns = clock_ns(id);
            let after = tsc();
            (
                after.wrapping_sub(before),
                before + after.wrapping_sub(before) / 2,
                ns,
            )
        })
        .min_by_key(|&(width, _, _)| width)
        .map(|(_, tsc, ns)| (tsc, ns))
        .expect("16 samples")
}

impl CalibratedTsc {
    /// Checks the CPU flags and calibrates over `span` (10 to 100 ms is plenty).
    #[cfg(target_arch = "x86_64")]
    pub fn calibrate(span: Duration) -> Result<Self, TscError> {
        if !ringbuf_core::Tsc::is_invariant() {
            return Err(TscError::NotInvariant);
        }
        let (tsc0, mono0) = sample(libc::CLOCK_MONOTONIC);
        std::thread::sleep(span);
        let (tsc1, mono1) = sample(libc::CLOCK_MONOTONIC);
        let (ticks, ns) = (tsc1.wrapping_sub(tsc0), mono1.saturating_sub(mono0));
        if ticks == 0 || ns == 0 || tsc1 < tsc0 {
            return Err(TscError::Calibration);
        }
        let freq = (ticks as u128 * NANOS as u128 / ns as u128) as u64;
        // Real time at TSC tick 0: now (real) minus the ticks so far.
        let (tsc_now, real_ns) = sample(libc::CLOCK_REALTIME);
        let real_ticks = real_ns as u128 * freq as u128 / NANOS as u128;
        let (offset_s, offset) = split(real_ticks.saturating_sub(tsc_now as u128), freq);
        Ok(Self {
            freq,
            offset_s,
            offset,
        })
    }

    /// Not available off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn calibrate(_span: Duration) -> Result<Self, TscError> {
        Err(TscError::Unsupported)
    }

    /// Ticks per second.
    pub fn freq(&self) -> u64 {
        self.freq
    }

    /// The clock's description for the metadata.
    pub fn describe(&self) -> ClockDescription<'static> {
        ClockDescription {
            name: "tsc",
            description: "x86-64 invariant TSC calibrated against CLOCK_MONOTONIC",
            freq: self.freq,
            offset_s: self.offset_s,
            offset: self.offset,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Clock for CalibratedTsc {
    #[inline(always)]
    fn now(&self) -> u64 {
        tsc()
    }
    #[inline(always)]
    fn now_unordered(&self) -> u64 {
        ringbuf_core::Tsc.now_unordered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances_and_maps_to_real_time() {
        let a = Monotonic.now();
        let b = Monotonic.now();
        assert!(b >= a);
        let d = Monotonic.describe();
        let real_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mapped_s = d.offset_s + (Monotonic.now() / NANOS) as i64;
        assert!((mapped_s - real_s).abs() <= 1, "{mapped_s} vs {real_s}");
    }

    #[test]
    fn a_recorded_description_gives_back_its_clock_or_an_error() {
        let mono = Monotonic.describe();
        assert!(matches!(
            TraceClock::from_description(&mono),
            Ok(TraceClock::Monotonic(_))
        ));
        let tsc = ClockDescription {
            name: "tsc",
            description: "recorded",
            freq: 2_500_000_000,
            offset_s: 1_700_000_000,
            offset: 12_345,
        };
        match TraceClock::from_description(&tsc) {
            Ok(clock) if cfg!(target_arch = "x86_64") => {
                let d = clock.describe();
                assert_eq!(
                    (d.freq, d.offset_s, d.offset),
                    (tsc.freq, tsc.offset_s, tsc.offset)
                );
            }
            Err(e) if !cfg!(target_arch = "x86_64") => assert_eq!(e.name, "tsc"),
            other => panic!("{other:?}"),
        }
        for bad in [
            ClockDescription {
                name: "realtime",
                ..mono
            },
            ClockDescription { freq: 1000, ..mono },
            ClockDescription { freq: 0, ..tsc },
        ] {
            let e = TraceClock::from_description(&bad).unwrap_err();
            let message = e.to_string();
            assert!(message.contains(bad.name), "{message}");
            assert!(message.contains(&format!("{} Hz", bad.freq)), "{message}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tsc_calibration_agrees_with_monotonic() {
        let Ok(tsc) = CalibratedTsc::calibrate(Duration::from_millis(20)) else {
            // Refused with a typed error: nothing more to check on this machine.
            return;
        };
        assert!(tsc.freq() > 100_000_000, "implausible {} Hz", tsc.freq());
        let (t0, m0) = (tsc.now(), Monotonic.now());
        std::thread::sleep(Duration::from_millis(50));
        let (t1, m1) = (tsc.now(), Monotonic.now());
        let tsc_ns = (t1 - t0) as f64 * 1e9 / tsc.freq() as f64;
        let mono_ns = (m1 - m0) as f64;
        assert!(
            (tsc_ns / mono_ns - 1.0).abs() < 0.01,
            "{tsc_ns} vs {mono_ns}"
        );
        let d = tsc.describe();
        let real_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mapped_s = d.offset_s + (tsc.now() / tsc.freq()) as i64;
        assert!((mapped_s - real_s).abs() <= 1, "{mapped_s} vs {real_s}");
    }
}

/// A clock description [`TraceClock::from_description`] cannot turn into a clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownClock {
    /// The clock's name.
    pub name: String,
    /// Its ticks per second.
    pub freq: u64,
}

impl std::fmt::Display for UnknownClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "clock {:?} at {} Hz is neither `monotonic` at 1 GHz nor `tsc` (on x86-64): \
             its time cannot be read here",
            self.name, self.freq
        )
    }
}

impl std::error::Error for UnknownClock {}

/// The best trace clock here: the calibrated TSC when it is invariant, otherwise
/// `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug)]
pub enum TraceClock {
    /// The calibrated TSC.
    Tsc(CalibratedTsc),
    /// `CLOCK_MONOTONIC`.
    Monotonic(Monotonic),
}

impl TraceClock {
    /// The TSC, calibrated (about 20 ms), when it is invariant and the kernel
    /// itself uses it as its clocksource (so it found the CPUs' counters in sync);
    /// `CLOCK_MONOTONIC` otherwise.
    pub fn best() -> Self {
        let kernel_trusts_tsc = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc");
        match CalibratedTsc::calibrate(Duration::from_millis(20)) {
            Ok(tsc) if kernel_trusts_tsc => Self::Tsc(tsc),
            _ => Self::Monotonic(Monotonic),
        }
    }

    /// The clock `clock` describes (as a channel header records it:
    /// [`crate::Consumer::clock`]), for a consumer that must timestamp the packets
    /// it closes with the producer's clock: this module's `monotonic` (1 GHz) or
    /// `tsc` (at the recorded frequency and offset, not calibrated again: the
    /// counter is the machine's). Any other clock is an error rather than a wrong
    /// time.
    pub fn from_description(clock: &ClockDescription<'_>) -> Result<Self, UnknownClock> {
        match clock.name {
            "monotonic" if clock.freq == NANOS => Ok(Self::Monotonic(Monotonic)),
            "tsc"
                if cfg!(target_arch = "x86_64") && clock.freq != 0 && clock.offset < clock.freq =>
            {
                Ok(Self::Tsc(CalibratedTsc {
                    freq: clock.freq,
                    offset_s: clock.offset_s,
                    offset: clock.offset,
                }))
            }
            _ => Err(UnknownClock {
                name: clock.name.to_owned(),
                freq: clock.freq,
            }),
        }
    }

    /// The description for the metadata.
    pub fn describe(&self) -> ClockDescription<'static> {
        match self {
            Self::Tsc(t) => t.describe(),
            Self::Monotonic(m) => m.describe(),
        }
    }
}

impl Clock for TraceClock {
    #[inline(always)]
    fn now(&self) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Tsc(t) => t.now(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Tsc(_) => Monotonic.now(),
            Self::Monotonic(m) => m.now(),
        }
    }
    #[inline(always)]
    fn now_unordered(&self) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Tsc(t) => t.now_unordered(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Tsc(_) => Monotonic.now(),
            Self::Monotonic(m) => m.now(),
        }
    }
}
