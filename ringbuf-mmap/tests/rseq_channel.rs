//! Per-CPU channels written by rseq sequences (docs/ARCHITECTURE.md §10), with
//! more writer threads than CPUs, forced migrations, a SIGUSR2 storm whose handler
//! writes, and a consumer in the same process that switches (fence + membarrier)
//! while it drains. Exact accounting: every event read once, or refused and
//! counted once; packets well formed with non-decreasing timestamps; overwrite
//! mode never loses to a preempted writer (`lost_wrap` 0). And the fallback.

use std::collections::HashSet;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

mod common;

use common::{migrate_and_signal, rseq_channel};
use ringbuf_core::{Config, Mode, RawPacket, RawRecords, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{possible_cpus, PerCpuChannel, PerCpuConsumer, WritePath};

type Channel = PerCpuChannel<RawRecords, Monotonic>;

/// The channel of the run in progress, for the signal handler (leaked per run).
static CHANNEL: AtomicPtr<Channel> = AtomicPtr::new(std::ptr::null_mut());
static SIGNAL_SEQ: AtomicU64 = AtomicU64::new(0);
static SIGNAL_OK: AtomicU64 = AtomicU64::new(0);
static SIGNAL_REFUSED: AtomicU64 = AtomicU64::new(0);
/// The handler's writer id: far from the threads'.
const HANDLER: u64 = 1 << 40;

/// Payload bytes: long enough that a sequence spends a while copying, so that
/// signals and preemptions land inside the copy.
const PAYLOAD: usize = 256;

/// Payload: (thread, seq), then a pattern derived from both.
fn payload(thread: u64, seq: u64) -> [u8; PAYLOAD] {
    let mut p = [0; PAYLOAD];
    p[..8].copy_from_slice(&thread.to_le_bytes());
    p[8..16].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in p[16..].iter_mut().enumerate() {
        *b = (thread ^ seq).wrapping_add(i as u64) as u8;
    }
    p
}

extern "C" fn on_sigusr2(_: libc::c_int) {
    // SAFETY: null or a leaked channel, never freed.
    if let Some(c) = unsafe { CHANNEL.load(Relaxed).as_ref() } {
        let seq = SIGNAL_SEQ.fetch_add(1, Relaxed);
        match c.write(2, &payload(HANDLER, seq)) {
            Ok(()) => SIGNAL_OK.fetch_add(1, Relaxed),
            Err(_) => SIGNAL_REFUSED.fetch_add(1, Relaxed),
        };
    }
}

/// What the reader saw.
#[derive(Default)]
struct Seen {
    events: HashSet<(u64, u64)>,
    duplicates: u64,
    packets: u64,
    /// Per buffer: the last packet's (seq, end timestamp).
    tails: Vec<Option<(u64, u64)>>,
}

impl Seen {
    fn drain(&mut self, consumer: &PerCpuConsumer<RawRecords, Monotonic>, buffers: u32) {
        let mut scratch = Vec::new();
        for b in 0..buffers {
            loop {
                let n = consumer
                    .drain(b, &mut scratch, |bytes| {
                        let p = RawPacket::parse(bytes).expect("well-formed packet");
                        assert!(
                            p.timestamp_begin <= p.timestamp_end,
                            "buffer {b} packet {}: begin {} > end {}",
                            p.seq,
                            p.timestamp_begin,
                            p.timestamp_end
                        );
                        if let Some((seq, end)) = self.tails[b as usize] {
                            assert!(p.seq > seq, "buffer {b}: packet {} after {seq}", p.seq);
                            assert!(
                                p.timestamp_begin >= end,
                                "buffer {b} packet {}: begins at {} before the previous end {end}",
                                p.seq,
                                p.timestamp_begin
                            );
                        }
                        self.tails[b as usize] = Some((p.seq, p.timestamp_end));
                        self.packets += 1;
                        for r in p.records() {
                            let (_, data) = r.expect("well-formed record");
                            let word =
                                |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
                            assert!(
                                data == payload(word(0), word(8)),
                                "buffer {b} packet {}: a torn record (thread {}, seq {})",
                                p.seq,
                                word(0),
                                word(8)
                            );
                            if !self.events.insert((word(0), word(8))) {
                                self.duplicates += 1;
                            }
                        }
                    })
                    .expect("drain");
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// Runs `threads` writers for `run_for` and returns (channel stats sums, seen).
fn run(mode: Mode, threads: u64, run_for: Duration) -> Option<()> {
    let config = Config::new(4096, 8, mode);
    let channel: &'static Channel = Box::leak(Box::new(rseq_channel("rseq-stress", config)));
    SIGNAL_OK.store(0, Relaxed);
    SIGNAL_REFUSED.store(0, Relaxed);
    CHANNEL.store(channel as *const Channel as *mut Channel, Relaxed);
    if channel.write_path() != WritePath::Rseq {
        eprintln!("rseq unavailable: skipped");
        return None;
    }
    let buffers = possible_cpus();
    let memfd = channel.shm().try_clone_fd().unwrap();
    let consumer =
        PerCpuConsumer::attach_fd(memfd, None, 0, |_| RawRecords, |_| Monotonic).unwrap();
    // SAFETY: the handler only writes through the channel (async-signal-safe: no
    // allocation, no lock) and bumps atomics.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr2 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    let done = AtomicBool::new(false);
    let tids: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let committed: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let refused = AtomicU64::new(0);
    let stop_at = Instant::now() + run_for;
    let mut seen = Seen {
        tails: vec![None; buffers as usize],
        ..Seen::default()
    };
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let (tids, committed, refused) = (&tids, &committed, &refused);
                s.spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    tids[t as usize].store(unsafe { libc::gettid() } as u64, Relaxed);
                    let mut seq = 0;
                    while seq % 256 != 0 || Instant::now() < stop_at {
                        match channel.write(1, &payload(t, seq)) {
                            Ok(()) => committed[t as usize].fetch_add(1, Relaxed),
                            Err(_) => refused.fetch_add(1, Relaxed),
                        };
                        seq += 1;
                    }
                })
            })
            .collect();
        // Also bounded in time: if the consumer (this scope's owner) panics,
        // `done` is never set.
        let (tids, done) = (&tids, &done);
        let deadline = stop_at + Duration::from_secs(5);
        s.spawn(move || {
            migrate_and_signal(tids, done, deadline, || {
                std::thread::sleep(Duration::from_micros(100))
            })
        });
        // The consumer: live switches (fenced) while draining, in discard mode.
        while writers.iter().any(|w| !w.is_finished()) {
            if mode == Mode::Discard {
                consumer.switch_all(Switch::Active);
                seen.drain(&consumer, buffers);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        done.store(true, Relaxed);
    });
    CHANNEL.store(std::ptr::null_mut(), Relaxed);
    assert!(consumer.switch_all(Switch::Flush), "same process: switched");
    seen.drain(&consumer, buffers);

    let stats: Vec<_> = (0..buffers).filter_map(|b| consumer.stats(b)).collect();
    let lost: u64 = stats.iter().map(|s| s.events_discarded()).sum();
    let lost_wrap: u64 = stats.iter().map(|s| s.lost_wrap).sum();
    let overrun: u64 = stats.iter().map(|s| s.overrun).sum();
    let fenced: u64 = stats.iter().map(|s| s.lost_fenced).sum();
    let thread_ok: u64 = committed.iter().map(|c| c.load(Relaxed)).sum();
    let ok = thread_ok + SIGNAL_OK.load(Relaxed);
    let refused = refused.load(Relaxed) + SIGNAL_REFUSED.load(Relaxed);
    eprintln!(
        "{mode:?}, {threads} threads: {ok} written ({} by handlers), {refused} refused, \
         {} read in {} packets, lost_wrap {lost_wrap}, lost_fenced {fenced}, overrun {overrun}",
        SIGNAL_OK.load(Relaxed),
        seen.events.len(),
        seen.packets
    );
    assert_eq!(seen.duplicates, 0, "events read twice");
    assert_eq!(refused, lost, "every refusal counted once");
    assert_eq!(
        lost_wrap, 0,
        "no loss to a preempted writer on the rseq path"
    );
    // Signals reach writers only, never the consumer holding a fence.
    assert_eq!(fenced, 0, "writers wait for a fence holder, losing nothing");
    for (t, c) in committed.iter().enumerate() {
        let read = seen.events.iter().filter(|(w, _)| *w == t as u64).count() as u64;
        match mode {
            Mode::Discard => assert_eq!(read, c.load(Relaxed), "thread {t}: written vs read"),
            Mode::Overwrite => assert!(
                read <= c.load(Relaxed),
                "thread {t}: read more than written"
            ),
        }
    }
    if mode == Mode::Discard {
        assert_eq!(
            seen.events.len() as u64,
            ok,
            "every written event read once"
        );
    }
    Some(())
}

// One test per process: the channel, its handler and its counters are global.
#[test]
fn rseq_channel_stress_discard_then_overwrite() {
    let t = Duration::from_millis(300);
    // Both modes in one process would share the channel: discard here; overwrite
    // runs in a child with its own.
    let mode = match std::env::var("RSEQ_STRESS_MODE").as_deref() {
        Ok("overwrite") => Mode::Overwrite,
        _ => Mode::Discard,
    };
    if run(mode, 8, t).is_none() {
        return;
    }
    run(mode, 32, t);
    if mode == Mode::Discard {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rseq_channel_stress_discard_then_overwrite",
                "--nocapture",
            ])
            .env("RSEQ_STRESS_MODE", "overwrite")
            .status()
            .unwrap();
        assert!(status.success(), "overwrite mode: {status}");
    }
}

#[test]
fn rseq_off_falls_back_to_the_shared_path() {
    if std::env::var_os("RINGBUF_RSEQ").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "rseq_off_falls_back_to_the_shared_path"])
            .env("RINGBUF_RSEQ", "off")
            .status()
            .unwrap();
        assert!(status.success(), "child: {status}");
        return;
    }
    let c = rseq_channel("rseq-off", Config::new(4096, 4, Mode::Discard));
    assert_eq!(c.write_path(), WritePath::Shared);
    c.write(1, &payload(0, 0)).unwrap();
    c.switch_all(Switch::Flush).unwrap();
    let stats: u64 = c.stats().iter().map(|s| s.write).sum();
    assert!(stats > 0);
}
