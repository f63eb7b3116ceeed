//! What the rseq tests share: the CPUs this process may run on, pinning a thread
//! to one, and the disturbance they run their writers under (forced migrations
//! and a SIGUSR2 storm), and the channel they write.

// Each test crate uses part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use ringbuf_core::{Config, RawRecords};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{possible_cpus, Backing, ChannelOptions, PerCpuChannel};

/// A per-CPU channel of raw records in a memfd named `name`, one buffer per
/// possible CPU, its writers on restartable sequences where available.
pub fn rseq_channel(name: &str, config: Config) -> PerCpuChannel<RawRecords, Monotonic> {
    let options = ChannelOptions {
        config,
        buffers: possible_cpus(),
        format: 0,
        prefault: true,
        clock: Monotonic.describe(),
    };
    let backing = Backing::Memfd { name };
    PerCpuChannel::create_rseq(backing, &options, "", |_| RawRecords, |_| Monotonic).unwrap()
}

/// CPUs a `cpu_set_t` holds.
const CPU_SET_SIZE: usize = 1024;

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..CPU_SET_SIZE)
        // SAFETY: CPU_ISSET reads the set, in range.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins thread `tid` (0: the caller) to `cpu`; false if it failed (the thread
/// may have exited).
pub fn pin(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SET_SIZE (every caller's CPU comes from
    // `allowed_cpus`).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the thread may have exited (ESRCH), which is reported, not UB.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) == 0 }
}

/// Until `done` or `deadline`: moves each thread of `tids` (0: not started yet)
/// to the next allowed CPU and sends it SIGUSR2, then `pause`s, round after round.
pub fn migrate_and_signal(tids: &[AtomicU64], done: &AtomicBool, deadline: Instant, pause: fn()) {
    let cpus = allowed_cpus();
    let mut round = 0usize;
    while !done.load(Relaxed) && Instant::now() < deadline {
        for (i, t) in tids.iter().enumerate() {
            let tid = t.load(Relaxed) as libc::pid_t;
            if tid != 0 {
                pin(tid, cpus[(i + round) % cpus.len()]);
                // SAFETY: a thread of this process (ESRCH once it exits).
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR2) };
            }
        }
        round += 1;
        pause();
    }
}
