//! Per-event cost of the reserve/commit path, next to the hardware floor, in one run.
//!
//! `cargo bench -p benches --bench event_path`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use benches::{local_buffer, shared_buffer, write_event, Floor, Memory};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbuf_core::{Config, Mode, Nesting};

const PAYLOAD: [u8; 16] = [0xab; 16];

fn event_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_16B_overwrite");
    group.throughput(Throughput::Elements(1));
    let config = Config::new(64 * 1024, 8, Mode::Overwrite);

    let mut floor = Floor::new();
    group.bench_function("floor_rdtsc_store", |b| {
        b.iter(|| floor.write(black_box(&PAYLOAD)))
    });

    let word = AtomicU64::new(0);
    let mut floor = Floor::new();
    group.bench_function("floor_plus_lock_cas", |b| {
        b.iter(|| {
            let v = word.load(Ordering::Relaxed);
            let _ = word.compare_exchange(v, v + 24, Ordering::AcqRel, Ordering::Relaxed);
            floor.write(black_box(&PAYLOAD))
        })
    });

    let nest = Nesting::new();
    let mut mem = Memory::new(&config);
    let buf = shared_buffer(&mut mem, config);
    group.bench_function("ringbuf_shared", |b| {
        b.iter(|| write_event(&buf, &nest, black_box(&PAYLOAD)))
    });

    let mut mem = Memory::new(&config);
    // SAFETY: only this thread writes.
    let buf = unsafe { local_buffer(&mut mem, config) };
    group.bench_function("ringbuf_local", |b| {
        b.iter(|| write_event(&buf, &nest, black_box(&PAYLOAD)))
    });
    group.finish();
}

criterion_group!(benches, event_path);
criterion_main!(benches);
