//! LTTng-UST 2.13 against ringbuf, in one run: the event `{u64 a; u32 b}` written
//! by 1 and 2 threads (each pinned to its own CPU, each writing; an iteration is
//! one event per thread, so criterion's time per iteration is ns per thread-event
//! and its throughput the aggregate events/s). Rows, in one group
//! (`vs_lttng_u64_u32`):
//!
//! * `floor_bare`: bare `rdtsc` (no fences) and the stores of an 8-byte header and
//!   the payload into a plain array; `floor`: the same with the engine's fenced
//!   clock, as every ringbuf row uses;
//! * `ringbuf_percpu`: ringbuf-mmap's `PerCpuChannel` (shared flavour, one buffer
//!   per CPU found with `sched_getcpu`), `write`;
//! * `ringbuf_perthread`: ringbuf-mmap's `PerThreadChannel` (local flavour, one
//!   buffer per thread), `writer()?.write`;
//! * `lttng_ust`: the tracepoint `ringbuf_bench:event`, enabled in an active
//!   snapshot session (per-CPU buffers in overwrite mode);
//! * `lttng_ust_disabled`: `ringbuf_bench:event_off`, compiled in, no session
//!   listening.
//!
//! ringbuf's channels are in overwrite mode, 8 sub-buffers of 64 KiB per buffer.
//! The LTTng rows need a session: run through `benches/lttng/run.sh`, which starts
//! a session daemon, enables the event, runs this bench and checks afterwards that
//! the session recorded it. Under the script (`RINGBUF_LTTNG_SESSION=1`), a
//! tracepoint that is not enabled is an error; without it, `lttng_ust` is skipped
//! with a message. Without liblttng-ust at build time both LTTng rows are skipped.
//!
//! `benches/lttng/run.sh --warm-up-time 1 --measurement-time 3`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use benches::affinity::{allowed_cpus, Pinned};
use benches::lttng::{Lttng, NOT_BUILT};
use benches::{config, u64_u32, BareFloor, Floor};
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ringbuf_core::ctf::ClockDescription;
use ringbuf_core::{Mode, RawRecords, Tsc};
use ringbuf_mmap::{
    possible_cpus, Backing, ChannelError, ChannelOptions, PerCpuChannel, PerThreadChannel,
    SlotLosses, WritePath,
};

/// The thread counts measured (those the CPUs available allow).
const THREADS: [usize; 2] = [1, 2];

/// A system under test, as every bench thread sees it.
trait System: Sync {
    /// One thread's handle, made on that thread before it is timed.
    type Writer<'a>
    where
        Self: 'a;

    /// The calling thread's handle.
    fn writer(&self) -> Self::Writer<'_>;

    /// Writes `n` events `a = first + i`, `b = a as u32` through `writer`.
    fn events(writer: &mut Self::Writer<'_>, first: u64, n: u64);

    /// Events the system failed to store so far (must stay 0).
    fn lost(&self) -> u64 {
        0
    }
}

fn vs_lttng(c: &mut Criterion) {
    let cpus = allowed_cpus();
    let lttng = Lttng::new();
    let enabled = lttng.is_some_and(check_session);
    let percpu = percpu_channel(PerCpuChannel::create);
    let percpu_rseq = percpu_channel(PerCpuChannel::create_rseq);
    let perthread = perthread_channel();
    let mut group = c.benchmark_group("vs_lttng_u64_u32");
    for threads in THREADS {
        if threads > cpus.len() {
            println!(
                "vs_lttng: {threads} threads skipped: only {} CPU(s)",
                cpus.len()
            );
            continue;
        }
        group.throughput(Throughput::Elements(threads as u64));
        let cpus = &cpus[..threads];
        // The rows: one `row` each (a new system is one `System` impl and one line).
        row(&mut group, "floor_bare", cpus, &FloorBare);
        row(&mut group, "floor", cpus, &FloorFenced);
        row(&mut group, "ringbuf_percpu", cpus, &percpu);
        if percpu_rseq.write_path() == WritePath::Rseq {
            row(&mut group, "ringbuf_percpu_rseq", cpus, &percpu_rseq);
        } else {
            println!("vs_lttng: ringbuf_percpu_rseq/{threads}: skipped: no rseq here");
        }
        row(&mut group, "ringbuf_perthread", cpus, &perthread);
        match lttng {
            Some(lttng) if enabled => row(&mut group, "lttng_ust", cpus, &LttngOn(lttng)),
            Some(_) => println!(
                "vs_lttng: lttng_ust/{threads}: skipped: ringbuf_bench:event is not enabled \
                 (no LTTng session: run benches/lttng/run.sh)"
            ),
            None => println!("vs_lttng: lttng_ust/{threads}: {NOT_BUILT}"),
        }
        match lttng {
            Some(lttng) => row(&mut group, "lttng_ust_disabled", cpus, &LttngOff(lttng)),
            None => println!("vs_lttng: lttng_ust_disabled/{threads}: {NOT_BUILT}"),
        }
    }
    group.finish();
}

/// Whether `ringbuf_bench:event` is enabled; panics if the script says a session
/// enabled it (`RINGBUF_LTTNG_SESSION=1`) and it is not, or if `event_off` is.
fn check_session(lttng: Lttng) -> bool {
    let required = std::env::var_os("RINGBUF_LTTNG_SESSION").is_some_and(|v| v == "1");
    // The registration with the session daemon is synchronous at start-up
    // (LTTNG_UST_REGISTER_TIMEOUT), but give a slow daemon a few more seconds.
    let deadline = Instant::now() + Duration::from_secs(if required { 10 } else { 0 });
    while !lttng.enabled() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !lttng.off_enabled(),
        "vs_lttng: ringbuf_bench:event_off is enabled: the `lttng_ust_disabled` row \
         would not measure a disabled tracepoint"
    );
    let enabled = lttng.enabled();
    assert!(
        enabled || !required,
        "vs_lttng: RINGBUF_LTTNG_SESSION=1 but ringbuf_bench:event is not enabled in \
         this process: it did not register with the session daemon"
    );
    if enabled {
        println!("vs_lttng: ringbuf_bench:event is enabled (LTTng session active)");
    }
    enabled
}

/// Benches `system` as `name` with one pinned thread per CPU of `cpus`.
fn row<S: System>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    cpus: &[usize],
    system: &S,
) {
    let pool = &Pool::new(cpus.len());
    std::thread::scope(|s| {
        for &cpu in cpus {
            s.spawn(move || pool.work(cpu, system));
        }
        group.bench_function(BenchmarkId::new(name, cpus.len()), |b| {
            b.iter_custom(|iters| pool.run(iters))
        });
        pool.stop();
    });
    let lost = system.lost();
    if lost != 0 {
        eprintln!("warning: vs_lttng: {name}: {lost} events not stored; its figure is invalid");
    }
}

/// Writer threads that live as long as a row (so that a per-thread channel's slot
/// is claimed once, and no thread is spawned per sample), released together for
/// each sample.
struct Pool {
    start: Barrier,
    done: Barrier,
    iters: AtomicU64,
    stop: AtomicBool,
    spans: Mutex<Vec<(Instant, Instant)>>,
}

impl Pool {
    fn new(threads: usize) -> Self {
        Self {
            start: Barrier::new(threads + 1),
            done: Barrier::new(threads + 1),
            iters: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            spans: Mutex::new(Vec::with_capacity(threads)),
        }
    }

    /// A writer thread's loop, pinned to `cpu`.
    fn work<S: System>(&self, cpu: usize, system: &S) {
        let _pin = Pinned::to(cpu);
        let mut writer = system.writer();
        let mut first = 0;
        loop {
            self.start.wait();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let n = self.iters.load(Ordering::Acquire);
            let begin = Instant::now();
            S::events(&mut writer, first, n);
            let end = Instant::now();
            first += n;
            self.spans.lock().expect("spans").push((begin, end));
            self.done.wait();
        }
    }

    /// One sample: every thread writes `iters` events; the time from the first
    /// thread's start to the last one's end (each thread reads the clock itself:
    /// this thread may be descheduled while they run).
    fn run(&self, iters: u64) -> Duration {
        self.iters.store(iters, Ordering::Release);
        self.start.wait();
        self.done.wait();
        let mut spans = self.spans.lock().expect("spans");
        let first = spans.iter().map(|s| s.0).min().expect("one thread");
        let last = spans.iter().map(|s| s.1).max().expect("one thread");
        spans.clear();
        last - first
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.start.wait();
    }
}

/// [`BareFloor`] per thread.
struct FloorBare;

impl System for FloorBare {
    type Writer<'a> = BareFloor;
    fn writer(&self) -> BareFloor {
        let mut floor = BareFloor::new();
        // Fault its pages in, untimed: every event takes 24 bytes of it.
        for _ in 0..benches::CAPACITY / 16 {
            floor.write(&u64_u32(0, 0));
        }
        floor
    }
    fn events(floor: &mut BareFloor, first: u64, n: u64) {
        for a in first..first + n {
            floor.write(&u64_u32(a, a as u32));
        }
    }
}

/// [`Floor`] (the engine's fenced clock) per thread.
struct FloorFenced;

impl System for FloorFenced {
    type Writer<'a> = Floor;
    fn writer(&self) -> Floor {
        let mut floor = Floor::new();
        // Fault its pages in, untimed: every event takes 24 bytes of it.
        for _ in 0..benches::CAPACITY / 16 {
            floor.write(&u64_u32(0, 0));
        }
        floor
    }
    fn events(floor: &mut Floor, first: u64, n: u64) {
        for a in first..first + n {
            floor.write(&u64_u32(a, a as u32));
        }
    }
}

type PerCpu = PerCpuChannel<RawRecords, Tsc>;
type PerThread = PerThreadChannel<RawRecords, Tsc>;

impl System for PerCpu {
    type Writer<'a> = &'a PerCpu;
    fn writer(&self) -> &PerCpu {
        self
    }
    fn events(channel: &mut &PerCpu, first: u64, n: u64) {
        for a in first..first + n {
            let _ = channel.write(1, &u64_u32(a, a as u32));
        }
    }
    fn lost(&self) -> u64 {
        self.stats().iter().map(|s| s.events_discarded()).sum()
    }
}

impl System for PerThread {
    type Writer<'a> = &'a PerThread;
    fn writer(&self) -> &PerThread {
        // Claim the thread's slot now, untimed (it would be on the first event).
        self.writer().expect("a free slot");
        self
    }
    fn events(channel: &mut &PerThread, first: u64, n: u64) {
        for a in first..first + n {
            if let Ok(w) = channel.writer() {
                let _ = w.write(1, &u64_u32(a, a as u32));
            }
        }
    }
    fn lost(&self) -> u64 {
        let SlotLosses {
            no_slot,
            unregistered,
        } = self.losses();
        let discarded: u64 = self.stats().iter().map(|s| s.events_discarded()).sum();
        discarded + no_slot + unregistered
    }
}

/// `ringbuf_bench:event`, enabled.
struct LttngOn(Lttng);

impl System for LttngOn {
    type Writer<'a> = Lttng;
    fn writer(&self) -> Lttng {
        self.0
    }
    fn events(lttng: &mut Lttng, first: u64, n: u64) {
        lttng.events(first, n);
    }
}

/// `ringbuf_bench:event_off`, compiled in and disabled.
struct LttngOff(Lttng);

impl System for LttngOff {
    type Writer<'a> = Lttng;
    fn writer(&self) -> Lttng {
        self.0
    }
    fn events(lttng: &mut Lttng, first: u64, n: u64) {
        lttng.events_off(first, n);
    }
}

/// Channel options: overwrite mode, the benches' buffer size, `buffers` buffers.
fn options(buffers: u32) -> ChannelOptions<'static> {
    ChannelOptions {
        config: config(Mode::Overwrite),
        buffers,
        format: 0,
        prefault: true,
        // Recorded in the header only: nothing reads these timestamps.
        clock: ClockDescription {
            name: "tsc",
            description: "uncalibrated TSC",
            freq: 1_000_000_000,
            offset_s: 0,
            offset: 0,
        },
    }
}

/// `PerCpuChannel::create` (Shared writers) or `create_rseq`.
type CreatePerCpu = fn(
    Backing<'_>,
    &ChannelOptions<'_>,
    &str,
    fn(u32) -> RawRecords,
    fn(u32) -> Tsc,
) -> Result<PerCpu, ChannelError>;

fn percpu_channel(create: CreatePerCpu) -> PerCpu {
    let backing = Backing::Memfd { name: "vs_lttng" };
    create(
        backing,
        &options(possible_cpus()),
        "",
        |_| RawRecords,
        |_| Tsc,
    )
    .expect("per-CPU channel")
}

fn perthread_channel() -> PerThread {
    // A slot per writer thread of every row (threads exit after their row and their
    // slots are not read back, so not reused): 1 + 2, and room to spare.
    let slots = 2 * THREADS.iter().sum::<usize>() as u32;
    let backing = Backing::Memfd { name: "vs_lttng" };
    PerThreadChannel::create(backing, &options(slots), "", |_| RawRecords, |_| Tsc)
        .expect("per-thread channel")
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::vs_lttng);
}
criterion_main!(group::benches);
