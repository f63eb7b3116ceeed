//! A signal storm: a writer thread interrupted by a timer signal every 25 µs, whose
//! handler writes into the same buffer (and sometimes raises another signal inside
//! its own open reservation to nest deeper than the limit). At least 10^6 events
//! and 20,000 handlers; every one read once and intact, or counted lost; the
//! nesting limit respected.
//! Both flavours: a per-CPU (shared) channel and a per-thread (local) one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringbuf_mmap::clock::Monotonic;

use ringbuf_core::{
    Client, Clock, Config, Mapped, Mode, Nesting, NoClock, RawPacket, RawRecords, Reader,
    Reservation, ReserveError, Switch,
};
use ringbuf_mmap::{
    with_nesting, Backing, ChannelOptions, PerCpuChannel, PerThreadChannel, SlotLosses,
    ThreadWriter,
};

const EVENTS: u64 = 1_000_000;
/// Signal handlers the storm runs at least.
const SIGNALS: u64 = 20_000;
const LIMIT: u32 = 3;
const HANDLER_BIT: u64 = 1 << 63;

static SHARED: OnceLock<PerCpuChannel<RawRecords, NoClock>> = OnceLock::new();
static LOCAL: OnceLock<PerThreadChannel<RawRecords, NoClock>> = OnceLock::new();

/// Which channel the handler writes to (0: shared, 1: local).
static USE_LOCAL: AtomicBool = AtomicBool::new(false);

/// What the handler did, in atomics (signal-safe).
static HANDLER_SEQ: AtomicU64 = AtomicU64::new(0);
static HANDLER_OK: AtomicU64 = AtomicU64::new(0);
static HANDLER_LOST: AtomicU64 = AtomicU64::new(0);
static HANDLER_NESTED: AtomicU64 = AtomicU64::new(0);
static NESTING_VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// A chain of nested handlers is under way (see `handler`).
static CHAINING: AtomicBool = AtomicBool::new(false);
static MAX_DEPTH: AtomicU32 = AtomicU32::new(0);

fn check(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0xdead_beef
}

/// Writes one checksummed event through `reserve`, calling `inside` while the
/// reservation is open (where a nested signal may land).
fn write_one<C: Mapped, K: Client, T: Clock>(
    reserve: impl FnOnce(&Nesting) -> Result<Reservation<'_, C, K, T>, ReserveError>,
    seq: u64,
    inside: impl FnOnce(),
) -> Result<(), ReserveError> {
    with_nesting(|nest| {
        let mut r = reserve(nest)?;
        r.payload_mut()[..8].copy_from_slice(&seq.to_le_bytes());
        r.payload_mut()[8..].copy_from_slice(&check(seq).to_le_bytes());
        inside();
        r.commit();
        Ok(())
    })
}

extern "C" fn handler(_sig: libc::c_int) {
    let depth = with_nesting(|n| n.depth());
    let seq = HANDLER_BIT | HANDLER_SEQ.fetch_add(1, Ordering::Relaxed);
    // Every 50th handler starts a chain: it raises SIGUSR1 inside its open
    // reservation (SA_NODEFER delivers it at once, nested), and so does each nested
    // handler, until one is refused at the nesting limit (which ends the chain).
    let chain = seq.is_multiple_of(50) || CHAINING.load(Ordering::Relaxed);
    let nest_deeper = || {
        if chain && depth < LIMIT {
            CHAINING.store(true, Ordering::Relaxed);
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(libc::SIGUSR1) };
        }
    };
    let result = if USE_LOCAL.load(Ordering::Relaxed) {
        // The writer thread registered before its timer started; a handler never
        // registers.
        let Ok(writer) = LOCAL.get().expect("set").signal_writer() else {
            return;
        };
        write_one(|nest| writer.reserve(nest, 1, 16), seq, nest_deeper)
    } else {
        let buffer = SHARED.get().expect("set").current();
        write_one(|nest| buffer.reserve(nest, 1, 16), seq, nest_deeper)
    };
    let depth_ok = match result {
        Ok(()) => {
            HANDLER_OK.fetch_add(1, Ordering::Relaxed);
            MAX_DEPTH.fetch_max(depth + 1, Ordering::Relaxed);
            depth < LIMIT
        }
        Err(ReserveError::Nested) => {
            HANDLER_NESTED.fetch_add(1, Ordering::Relaxed);
            CHAINING.store(false, Ordering::Relaxed);
            depth >= LIMIT
        }
        Err(_) => {
            HANDLER_LOST.fetch_add(1, Ordering::Relaxed);
            depth < LIMIT
        }
    };
    if !depth_ok {
        NESTING_VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A per-thread POSIX timer sending SIGUSR2 to `tid` every `period`.
struct Timer(libc::timer_t);

impl Timer {
    fn start(tid: libc::pid_t, period: Duration) -> Self {
        // SAFETY: a zeroed sigevent filled for SIGEV_THREAD_ID; timer_create writes
        // the id; all results are checked.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGUSR2;
            sev.sigev_notify_thread_id = tid;
            let mut id: libc::timer_t = std::mem::zeroed();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id),
                0
            );
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: period.as_nanos() as _,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            assert_eq!(libc::timer_settime(id, 0, &spec, std::ptr::null_mut()), 0);
            Self(id)
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: a timer we created.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// The timer's SIGUSR2 stays blocked while its handler (and any chain nested in it)
/// runs: timer ticks that come faster than a slow (debug, loaded) handler would
/// otherwise nest without bound and overflow the stack. The chain's SIGUSR1 nests
/// (SA_NODEFER), as deep as the chain goes: bounded by the nesting limit.
fn install_handler() {
    for (signal, flags) in [
        (libc::SIGUSR2, libc::SA_RESTART),
        (libc::SIGUSR1, libc::SA_NODEFER | libc::SA_RESTART),
    ] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty extra mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = flags;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
        }
    }
}

/// Drains until `done`; returns every seq read (checksums verified).
fn reader<C: Mapped, K: Client, T: Clock>(
    mut readers: Vec<Reader<'_, C, K, T>>,
    done: &AtomicBool,
) -> HashSet<u64> {
    let mut seen = HashSet::new();
    loop {
        let finished = done.load(Ordering::Acquire);
        let mut got = 0;
        for r in &mut readers {
            while let Ok(sub) = r.get_next_subbuf() {
                let packet = RawPacket::parse(r.bytes(&sub).unwrap()).expect("valid packet");
                for rec in packet.records() {
                    let (_, p) = rec.expect("valid record");
                    let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
                    assert_eq!(u64::from_le_bytes(p[8..].try_into().unwrap()), check(seq));
                    assert!(seen.insert(seq), "{seq:#x} read twice");
                }
                r.put_next_subbuf(sub);
                got += 1;
            }
        }
        if finished && got == 0 {
            return seen;
        }
        if got == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

struct Outcome {
    main_ok: u64,
    main_lost: u64,
    seen: HashSet<u64>,
    signals_per_sec: f64,
}

/// The writer thread's side of a storm.
struct StormWriter {
    /// Writes event `i`.
    write: Box<dyn Fn(u64) -> Result<(), ReserveError>>,
    /// Runs on the writer thread once the timer is gone (no more handlers).
    finish: Box<dyn FnOnce()>,
}

/// Runs the storm: `writer` runs on the writer thread (it may set up thread-local
/// state first) and returns how to write event `i` and how to finish; `flush`
/// closes the streams from the test thread once the writer is done.
fn storm<C: Mapped + Sync, K: Client, T: Clock>(
    readers: Vec<Reader<'_, C, K, T>>,
    writer: impl FnOnce() -> StormWriter + Send,
    flush: impl FnOnce(),
) -> Outcome {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| reader(readers, &done));
        let writer = s.spawn(move || {
            let StormWriter { write, finish } = writer();
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let handled_before = HANDLER_SEQ.load(Ordering::Relaxed);
            let start = Instant::now();
            let timer = Timer::start(tid, Duration::from_micros(25));
            // At least EVENTS events, SIGNALS handlers and one chain refused at the
            // nesting limit, however fast this machine runs the writer and timer.
            let (mut ok, mut lost) = (0, 0);
            let mut i = 0;
            while i < EVENTS
                || HANDLER_SEQ.load(Ordering::Relaxed) - handled_before < SIGNALS
                || HANDLER_NESTED.load(Ordering::Relaxed) == 0
            {
                match write(i) {
                    Ok(()) => ok += 1,
                    Err(_) => lost += 1,
                }
                i += 1;
            }
            // Deleting the timer delivers any pending signal as the call returns:
            // no handler runs after this point.
            drop(timer);
            finish();
            let signals = HANDLER_SEQ.load(Ordering::Relaxed) - handled_before;
            (ok, lost, signals as f64 / start.elapsed().as_secs_f64())
        });
        let (main_ok, main_lost, signals_per_sec) = writer.join().unwrap();
        flush();
        done.store(true, Ordering::Release);
        Outcome {
            main_ok,
            main_lost,
            seen: reader.join().unwrap(),
            signals_per_sec,
        }
    })
}

fn verify(name: &str, outcome: &Outcome, stats: &[ringbuf_core::Stats]) {
    let handler_attempts = HANDLER_SEQ.load(Ordering::Relaxed);
    let handler_ok = HANDLER_OK.load(Ordering::Relaxed);
    let handler_nested = HANDLER_NESTED.load(Ordering::Relaxed);
    let handler_lost = HANDLER_LOST.load(Ordering::Relaxed);
    let lost: u64 = stats.iter().map(|s| s.events_discarded()).sum();
    let nested: u64 = stats.iter().map(|s| s.lost_nested).sum();
    eprintln!(
        "{name}: {} main events ({} lost), {handler_attempts} in handlers ({handler_nested} beyond the nesting limit, {handler_lost} lost), {:.0} signals/s, max depth {}",
        outcome.main_ok + outcome.main_lost,
        outcome.main_lost,
        outcome.signals_per_sec,
        MAX_DEPTH.load(Ordering::Relaxed)
    );
    assert!(outcome.main_ok + outcome.main_lost >= EVENTS);
    assert!(handler_attempts >= SIGNALS);
    assert_eq!(handler_attempts, handler_ok + handler_nested + handler_lost);
    // Exact accounting: everything committed is read, once; every loss is counted.
    assert_eq!(outcome.seen.len() as u64, outcome.main_ok + handler_ok);
    assert_eq!(lost, outcome.main_lost + handler_nested + handler_lost);
    assert_eq!(nested, handler_nested);
    assert!(handler_nested > 0, "the storm reached the nesting limit");
    assert_eq!(NESTING_VIOLATIONS.load(Ordering::Relaxed), 0);
    assert_eq!(MAX_DEPTH.load(Ordering::Relaxed), LIMIT);
}

fn reset_counters() {
    for c in [
        &HANDLER_SEQ,
        &HANDLER_OK,
        &HANDLER_LOST,
        &HANDLER_NESTED,
        &NESTING_VIOLATIONS,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    MAX_DEPTH.store(0, Ordering::Relaxed);
}

fn options() -> ChannelOptions<'static> {
    ChannelOptions {
        config: Config::new(64 * 1024, 16, Mode::Discard).with_nesting_limit(LIMIT),
        buffers: ringbuf_mmap::possible_cpus(),
        format: 0,
        prefault: true,
        clock: Monotonic.describe(),
    }
}

#[test]
fn signal_storms_write_into_the_interrupted_buffer_with_exact_accounting() {
    install_handler();

    // Shared flavour: a per-CPU channel.
    reset_counters();
    USE_LOCAL.store(false, Ordering::Relaxed);
    let shared = SHARED.get_or_init(|| {
        PerCpuChannel::create(
            Backing::Memfd { name: "storm" },
            &options(),
            "",
            |_| RawRecords,
            |_| NoClock,
        )
        .unwrap()
    });
    let readers = shared
        .buffers()
        .iter()
        .map(|b| b.reader().unwrap())
        .collect();
    let outcome = storm(
        readers,
        || StormWriter {
            write: Box::new(|i| {
                let buffer = shared.current();
                write_one(|nest| buffer.reserve(nest, 1, 16), i, || {})
            }),
            finish: Box::new(|| {}),
        },
        || while shared.switch_all(Switch::Flush).is_err() {},
    );
    verify("per-CPU", &outcome, &shared.stats());

    // Local flavour: the writer thread's own buffer.
    reset_counters();
    USE_LOCAL.store(true, Ordering::Relaxed);
    let mut opts = options();
    opts.buffers = 1;
    let local = LOCAL.get_or_init(|| {
        PerThreadChannel::create(
            Backing::Memfd {
                name: "storm-local",
            },
            &opts,
            "",
            |_| RawRecords,
            |_| NoClock,
        )
        .unwrap()
    });
    let readers = vec![local.reader(0).unwrap().unwrap()];
    static FLUSHED: AtomicBool = AtomicBool::new(false);
    let outcome = storm(
        readers,
        || {
            // Registered on the writer thread, where it stays; the handler finds it
            // with `signal_writer`.
            let writer: &'static ThreadWriter<'static, RawRecords, NoClock> =
                Box::leak(Box::new(local.writer().unwrap()));
            StormWriter {
                write: Box::new(move |i| write_one(|nest| writer.reserve(nest, 1, 16), i, || {})),
                // Only the owning thread may close its packet, and only once no
                // handler can write after it: the timer is gone.
                finish: Box::new(move || {
                    while writer.switch(Switch::Flush).is_err() {
                        std::thread::yield_now();
                    }
                    FLUSHED.store(true, Ordering::Release);
                }),
            }
        },
        || assert!(FLUSHED.load(Ordering::Acquire)),
    );
    verify("per-thread", &outcome, &local.stats());
    // The handlers found the writer thread's registration every time.
    assert_eq!(local.losses(), SlotLosses::default());
}
