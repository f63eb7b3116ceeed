//! The rseq commit primitive under fire: per-CPU counters updated only by
//! sequences must come out exact with more threads than CPUs, forced migrations
//! and a signal storm whose handler runs sequences too; a sequence armed for
//! another CPU must never commit; and rseq must be off when disabled. Both forms
//! of the sequence take turns: the general one (a descriptor, [`Op`]) and the one
//! specialised for a record ([`Record`]).
//!
//! `.ci/run` builds these tests with the features `rseq-mutant-no-cpu-check` (the
//! sequences without their CPU check) and `rseq-mutant-commit-before-copy` (their
//! committing store before the copy) and asserts that they fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

mod common;

use common::{allowed_cpus, migrate_and_signal, pin};
use ringbuf_mmap::rseq::{
    Commit, Op, Outcome, Record, Rseq, Segment, Sequencer, Unavailable, WordOp, MAX_SEGMENTS,
};

const CPUS: usize = 256;
/// Per CPU: the counter, then the two words a [`Record`] sequence stores after
/// `write` (its `last_timestamp` and `last_at`).
static COUNTERS: [[AtomicU64; 3]; CPUS] = [const { [const { AtomicU64::new(0) }; 3] }; CPUS];
/// The fence word of the [`Record`] sequences: always free.
static FENCE: AtomicU64 = AtomicU64::new(0);
/// A per-CPU scratch area each sequence copies 1 KiB into: most aborts then land
/// in the copy, where a committing store moved before it (the mutant
/// `rseq-mutant-commit-before-copy`) counts an increment twice.
static SCRATCH: [[AtomicU64; 128]; CPUS] = [const { [const { AtomicU64::new(0) }; 128] }; CPUS];
static HANDLER_INCREMENTS: AtomicU64 = AtomicU64::new(0);
static RSEQ: std::sync::OnceLock<Rseq> = std::sync::OnceLock::new();

/// Adds one to the counter of the CPU this runs on, by rseq (the sequence
/// specialised for a record if `record`); the number of sequences that aborted or
/// saw a changed word before it committed.
fn increment(rseq: Rseq, record: bool) -> u64 {
    let src = [0x5au8; 1024];
    let mut retries = 0;
    loop {
        let cpu = rseq.cpu().expect("glibc registers every thread it creates") as usize;
        assert!(cpu < CPUS, "CPU {cpu} beyond the test's table of {CPUS}");
        let counter = COUNTERS[cpu][0].as_ptr();
        let old = COUNTERS[cpu][0].load(Relaxed);
        if record {
            let r = Record {
                commit: Commit {
                    cpu: cpu as u64,
                    writer: counter,
                    fence: FENCE.as_ptr(),
                    old,
                    new: old + 1,
                    ts: old,
                },
                dst: SCRATCH[cpu].as_ptr() as *mut u8,
                header: u64::MAX,
                header_len: 8,
                payload: src.as_ptr(),
                payload_len: src.len() - 8,
            };
            // SAFETY: every pointer is into statics or this frame; the counters
            // are only ever changed by committing sequences, the rest is junk.
            match unsafe { rseq.run_record(&r) } {
                Outcome::Committed => return retries,
                Outcome::Changed | Outcome::Aborted => retries += 1,
            }
            continue;
        }
        let none = Segment {
            dst: std::ptr::null_mut(),
            src: std::ptr::null(),
            len: 0,
        };
        let mut segments = [none; MAX_SEGMENTS];
        segments[0] = Segment {
            dst: SCRATCH[cpu].as_ptr() as *mut u8,
            src: src.as_ptr(),
            len: src.len(),
        };
        let word = WordOp {
            at: counter,
            value: old,
        };
        let op = Op {
            cpu: cpu as u64,
            expect: [word, word],
            segments,
            segment_count: 1,
            stores: [
                WordOp {
                    at: SCRATCH[cpu][0].as_ptr(),
                    value: 1,
                },
                WordOp {
                    at: SCRATCH[cpu][1].as_ptr(),
                    value: 2,
                },
            ],
            commit: WordOp {
                at: counter,
                value: old + 1,
            },
        };
        // SAFETY: every pointer is into statics or this frame; the counters are
        // only ever changed by committing sequences, the scratch lines are junk.
        match unsafe { rseq.commit(&op) } {
            Outcome::Committed => return retries,
            Outcome::Changed | Outcome::Aborted => retries += 1,
        }
    }
}

extern "C" fn on_sigusr2(_: libc::c_int) {
    if let Some(rseq) = RSEQ.get() {
        let n = HANDLER_INCREMENTS.load(Relaxed);
        increment(*rseq, n % 2 == 1);
        HANDLER_INCREMENTS.fetch_add(1, Relaxed);
    }
}

fn rseq_or_skip() -> Option<Rseq> {
    match Rseq::get() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("rseq unavailable ({e}): skipped");
            None
        }
    }
}

#[test]
fn a_sequence_armed_for_another_cpu_never_commits() {
    let Some(rseq) = rseq_or_skip() else { return };
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("one CPU allowed: skipped");
        return;
    }
    let (a, b) = (cpus[0], cpus[1]);
    let mut word = 7u64;
    let mut scratch = 0u64;
    let (word_at, scratch_at) = (
        &mut word as *mut u64 as usize,
        &mut scratch as *mut u64 as usize,
    );
    let stale = std::thread::scope(|sc| {
        sc.spawn(move || {
            let w = WordOp {
                at: word_at as *mut u64,
                value: 7,
            };
            let s = WordOp {
                at: scratch_at as *mut u64,
                value: 1,
            };
            let none = Segment {
                dst: std::ptr::null_mut(),
                src: std::ptr::null(),
                len: 0,
            };
            let op = Op {
                cpu: a as u64,
                expect: [w, w],
                segments: [none; MAX_SEGMENTS],
                segment_count: 0,
                stores: [s, s],
                commit: WordOp {
                    at: word_at as *mut u64,
                    value: 8,
                },
            };
            // The record form: its words (write, last_timestamp, last_at) and a
            // destination of its own, on this thread's stack.
            let mut words = [7u64, 0, 0];
            let fence = 0u64;
            let mut dst = [0u8; 16];
            let record = Record {
                commit: Commit {
                    cpu: a as u64,
                    writer: words.as_mut_ptr(),
                    fence: &fence as *const u64 as *mut u64,
                    old: 7,
                    new: 8,
                    ts: 1,
                },
                dst: dst.as_mut_ptr(),
                header: 1,
                header_len: 8,
                payload: [2u8; 8].as_ptr(),
                payload_len: 8,
            };
            assert!(pin(0, b), "pin to CPU {b}");
            let stale = (0..1000)
                .flat_map(|_| {
                    assert_eq!(rseq.cpu(), Some(b as u32), "pinned to {b}");
                    // SAFETY: the words live in the parent frame, which outlives the
                    // scope, or in this one; the record's pointers are all locals.
                    unsafe { [rseq.commit(&op), rseq.run_record(&record)] }
                })
                .find(|o| *o == Outcome::Committed);
            assert_eq!(
                words[0], 7,
                "a record sequence for CPU {a} committed on {b}"
            );
            stale
        })
        .join()
        .unwrap()
    });
    assert_eq!(stale, None, "a sequence for CPU {a} committed on CPU {b}");
    assert_eq!(word, 7);
}

fn storm(threads: usize, run_for: Duration) {
    let Some(rseq) = rseq_or_skip() else { return };
    RSEQ.get_or_init(|| rseq);
    let cpus = allowed_cpus();
    let before: u64 = COUNTERS.iter().map(|c| c[0].load(Relaxed)).sum();
    let handled_before = HANDLER_INCREMENTS.load(Relaxed);
    // SAFETY: a handler that is async-signal-safe (loads, the sequence, an add).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr2 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    let done = AtomicBool::new(false);
    let tids: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let retries = AtomicU64::new(0);
    let increments = AtomicU64::new(0);
    let stop_at = Instant::now() + run_for;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let (tids, retries, increments) = (&tids, &retries, &increments);
                s.spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    tids[i].store(unsafe { libc::gettid() } as u64, Relaxed);
                    let (mut n, mut r) = (0, 0);
                    while n % 1024 != 0 || Instant::now() < stop_at {
                        r += increment(rseq, n % 2 == 1);
                        n += 1;
                    }
                    retries.fetch_add(r, Relaxed);
                    increments.fetch_add(n, Relaxed);
                })
            })
            .collect();
        // Forced migrations and a signal storm until the workers are done.
        let (tids, done) = (&tids, &done);
        let deadline = Instant::now() + Duration::from_secs(60);
        s.spawn(move || migrate_and_signal(tids, done, deadline, std::thread::yield_now));
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Relaxed);
    });
    let after: u64 = COUNTERS.iter().map(|c| c[0].load(Relaxed)).sum();
    let handled = HANDLER_INCREMENTS.load(Relaxed) - handled_before;
    eprintln!(
        "{threads} threads: {} increments, {handled} from signal handlers, {} retries",
        increments.load(Relaxed),
        retries.load(Relaxed)
    );
    assert_eq!(
        after - before,
        increments.load(Relaxed) + handled,
        "increments lost or doubled ({threads} threads on {} CPUs)",
        cpus.len()
    );
}

// One test runs both storms: they share the counters and the signal handler.
#[test]
fn per_cpu_counters_stay_exact_under_migrations_and_signals() {
    storm(8, Duration::from_millis(400));
    storm(32, Duration::from_millis(400));
}

#[test]
fn rseq_is_off_when_disabled_or_unregistered() {
    const CHILD: &str = "RINGBUF_RSEQ_TEST_CHILD";
    if let Ok(expect) = std::env::var(CHILD) {
        let got = Rseq::get().map(|_| ()).unwrap_err();
        let want = match expect.as_str() {
            "disabled" => Unavailable::Disabled,
            _ => Unavailable::NotRegistered,
        };
        assert_eq!(got, want);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for (env, value, expect) in [
        ("RINGBUF_RSEQ", "off", "disabled"),
        ("GLIBC_TUNABLES", "glibc.pthread.rseq=0", "unregistered"),
    ] {
        let status = std::process::Command::new(&exe)
            .args(["--exact", "rseq_is_off_when_disabled_or_unregistered"])
            .env(CHILD, expect)
            .env(env, value)
            .status()
            .unwrap();
        assert!(status.success(), "{env}={value}: child failed ({status})");
    }
}
