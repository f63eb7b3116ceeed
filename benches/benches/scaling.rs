//! Scaling: 1, 2, 4, ... writer threads (up to the CPUs available), each pinned to
//! its own CPU and writing 16-byte events into its own buffer (per-CPU buffers),
//! overwrite mode. Each iteration is one event per thread, so criterion's
//! throughput is the aggregate events/s. The floor (one plain array per thread)
//! shows what the machine itself scales to. Threads are spawned per sample: its
//! fixed cost is absorbed by criterion's slope (time over iterations).
//!
//! `cargo bench -p benches --bench scaling`

use std::sync::Barrier;
use std::time::{Duration, Instant};

use benches::affinity::{allowed_cpus, thread_counts, Pinned};
use benches::ours::{percpu_channel, PerCpuSink};
use benches::sink::Alone;
use benches::{config, payload, time_events, Floor, Memory, Ringbuf, Sink};
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ringbuf_core::Mode;

const N: usize = 16;

fn scaling(c: &mut Criterion) {
    let cpus = allowed_cpus();
    let mut group = c.benchmark_group("scaling_overwrite_16B");
    let cfg = config(Mode::Overwrite);
    for threads in thread_counts(cpus.len()) {
        group.throughput(Throughput::Elements(threads as u64));
        let cpus = &cpus[..threads];

        // Each sink `Alone` on its cache lines: no false sharing between threads.
        let mut floors: Vec<_> = (0..threads).map(|_| Alone(Floor::new())).collect();
        bench_threads(&mut group, "floor", threads, &mut floors, cpus);

        let mut mems: Vec<Memory> = (0..threads).map(|_| Memory::new(&cfg)).collect();
        let mut shared: Vec<Alone<Ringbuf<_>>> = mems
            .iter_mut()
            .map(|m| Alone(Ringbuf::shared(m, cfg)))
            .collect();
        bench_threads(&mut group, "shared", threads, &mut shared, cpus);

        let mut mems: Vec<Memory> = (0..threads).map(|_| Memory::new(&cfg)).collect();
        let mut local: Vec<Alone<Ringbuf<_>>> = mems
            .iter_mut()
            // SAFETY: one buffer per thread; a buffer's successive writer threads
            // are ordered by spawn and join.
            .map(|m| Alone(unsafe { Ringbuf::local(m, cfg) }))
            .collect();
        bench_threads(&mut group, "local", threads, &mut local, cpus);

        // The shared-memory per-CPU channel of ringbuf-mmap, as a tracer uses it:
        // every thread writes through the same channel, into the buffer of the CPU
        // it runs on (sched_getcpu), with its thread-local nesting counter.
        for (name, rseq) in [("percpu_channel", false), ("percpu_rseq", true)] {
            let channel = percpu_channel(rseq);
            let mut sinks: Vec<PerCpuSink<'_>> =
                (0..threads).map(|_| PerCpuSink(&channel)).collect();
            bench_threads(&mut group, name, threads, &mut sinks, cpus);
        }
    }
    group.finish();
}

fn bench_threads<S: Sink<N> + Send>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    sinks: &mut [S],
    cpus: &[usize],
) {
    group.bench_function(BenchmarkId::new(name, threads), |b| {
        b.iter_custom(|iters| run_threads(sinks, cpus, iters))
    });
}

/// Each sink in its own thread pinned to its CPU, `iters` events each, released
/// together; the time from the first thread's start to the last one's end. Every
/// thread reads the clock itself: the spawning thread may be descheduled while the
/// writers run, so its own clock would say nothing.
fn run_threads<S: Sink<N> + Send>(sinks: &mut [S], cpus: &[usize], iters: u64) -> Duration {
    let payload = payload::<N>();
    let start = Barrier::new(sinks.len());
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = sinks
            .iter_mut()
            .zip(cpus)
            .map(|(sink, &cpu)| {
                let (start, payload) = (&start, &payload);
                s.spawn(move || {
                    let _pin = Pinned::to(cpu);
                    start.wait();
                    let begin = Instant::now();
                    time_events(sink, payload, iters);
                    (begin, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect()
    });
    let first = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("one thread at least");
    let last = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("one thread at least");
    last - first
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::scaling);
}
criterion_main!(group::benches);
