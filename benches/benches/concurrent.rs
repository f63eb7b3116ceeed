//! Throughput of one writer with a concurrent reader, discard mode: events/s
//! sustained without loss. The writer (criterion's thread) and the reader run
//! pinned to two different CPUs. The reader takes every packet as a zero-copy
//! consumer (splice, another process's mmap) does: it reads the packet header only,
//! and counts the records from `content_size`; with nothing to read it yields
//! between polls. The writer applies backpressure: a
//! reservation refused because the buffer is full is retried until the reader has
//! made room, so every event is delivered and the rate is the one the pair sustains.
//! After each configuration the bench prints a `concurrent:` line: events written,
//! events read (equal when nothing was lost) and refused reservations (retried).
//!
//! `cargo bench -p benches --bench concurrent`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use benches::affinity::{allowed_cpus, Pinned};
use benches::{local_buffer, payload, shared_buffer, Memory, TscBuffer};
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion, Throughput};
use ringbuf_core::{Config, Mode, Nesting, RawPacket, RawRecords, ReserveError, Switch, Word};

/// Sub-buffer size here: 16 x 1 MiB (a usual tracer's per-CPU buffer) rides out a
/// reader preempted for a few scheduler ticks on a shared machine, which the
/// 8 x 64 KiB of the single-writer benches would not.
const READER_SUBBUF_SIZE: u64 = 1 << 20;
/// Sub-buffer count here.
const READER_SUBBUF_COUNT: u64 = 16;

fn concurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrent_discard");
    group.throughput(Throughput::Elements(1));
    with_reader::<16>(&mut group);
    with_reader::<256>(&mut group);
    group.finish();
}

fn with_reader<const N: usize>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let cfg = Config::new(READER_SUBBUF_SIZE, READER_SUBBUF_COUNT, Mode::Discard);
    let mut mem = Memory::new(&cfg);
    run(
        group,
        &format!("shared_{N}B"),
        &shared_buffer(&mut mem, cfg),
        &payload::<N>(),
    );
    let mut mem = Memory::new(&cfg);
    // SAFETY: one thread writes (criterion's); the reader thread only reads, which
    // the local flavour allows (reader words are full atomics).
    let buf = unsafe { local_buffer(&mut mem, cfg) };
    run(group, &format!("local_{N}B"), &buf, &payload::<N>());
}

fn run<const N: usize, W: Word>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    buf: &TscBuffer<'_, W>,
    payload: &[u8; N],
) {
    let cpus = allowed_cpus();
    let stop = AtomicBool::new(false);
    let nest = Nesting::new();
    let mut written = 0u64;
    let read = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let _pin = cpus.get(1).map(|&cpu| Pinned::to(cpu));
            read_all::<N, W>(buf, &stop)
        });
        let pin = cpus.first().map(|&cpu| Pinned::to(cpu));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                written += iters;
                let start = Instant::now();
                for _ in 0..iters {
                    write_until_stored(buf, &nest, black_box(payload));
                }
                start.elapsed()
            })
        });
        drop(pin);
        stop.store(true, Ordering::Release);
        reader.join().expect("reader")
    });
    let stats = buf.stats();
    println!(
        "concurrent: concurrent_discard/{name}: written {written} read {read} \
         refused_full {} (retried) lost_other {}",
        stats.lost_full,
        stats.lost_wrap + stats.lost_big + stats.lost_nested
    );
}

/// Writes one event, retrying while the buffer is full (backpressure).
#[inline(always)]
fn write_until_stored<const N: usize, W: Word>(
    buf: &TscBuffer<'_, W>,
    nest: &Nesting,
    payload: &[u8; N],
) {
    loop {
        match buf.reserve(nest, 1, N) {
            Ok(mut r) => {
                r.payload_mut().copy_from_slice(payload);
                return r.commit();
            }
            // Back off before retrying, so as not to bounce the reader's cache
            // lines (`consumed`) while it makes room.
            Err(ReserveError::Full) => (0..64).for_each(|_| std::hint::spin_loop()),
            Err(_) => return,
        }
    }
}

/// Takes packets until `stop`, then flushes and takes the rest. Returns the
/// records read (all of `N` payload bytes).
fn read_all<const N: usize, W: Word>(buf: &TscBuffer<'_, W>, stop: &AtomicBool) -> u64 {
    let record = (RawRecords::RECORD_HEADER + N).next_multiple_of(8) as u64;
    let header = RawRecords::PACKET_HEADER as u64;
    let mut reader = buf.reader().expect("one reader");
    let mut records = 0u64;
    let mut flushed = false;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        match reader.get_next_subbuf() {
            Ok(sub) => {
                if let Some(packet) = reader.bytes(&sub).and_then(|b| RawPacket::parse(b).ok()) {
                    records += (packet.content_size - header) / record;
                }
                reader.put_next_subbuf(sub);
            }
            Err(_) if flushed => return records,
            Err(_) if stopping => flushed = buf.switch(Switch::Flush).is_ok(),
            // Poll as a consumer with nothing to do would: give the CPU away
            // between polls rather than spin on the writer's cache lines.
            Err(_) => std::thread::yield_now(),
        }
    }
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::concurrent);
}
criterion_main!(group::benches);
