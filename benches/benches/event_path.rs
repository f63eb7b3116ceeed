//! Per-event cost with one writer: ringbuf in both flavours, both modes and both
//! record formats (raw records; CTF events with a TSC timestamp), next to the
//! hardware floor (TSC read + stores into a plain array) and the floor plus one
//! LOCK-prefixed CAS, for payloads of 8, 16, 64 and 256 bytes, in one run. For
//! context, `tsc_only` is the TSC read alone (the engine's clock, fenced) and
//! `rdtsc_bare` the instruction without fences.
//!
//! `cargo bench -p benches --bench event_path`

mod common;

use benches::ours::Format;
use benches::{config, payload, Floor, LockFloor, Memory, RdtscBare, Ringbuf, TscOnly};
use common::bench_sink;
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion, Throughput};
use ringbuf_core::ctf::Ctf;
use ringbuf_core::{Mode, RawRecords};

fn event_path(c: &mut Criterion) {
    payload_size::<8>(c);
    payload_size::<16>(c);
    payload_size::<64>(c);
    payload_size::<256>(c);
}

fn payload_size<const N: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("event_{N}B"));
    group.throughput(Throughput::Elements(1));
    let payload = payload::<N>();

    bench_sink(&mut group, "rdtsc_bare", &mut RdtscBare, &payload);
    bench_sink(&mut group, "tsc_only", &mut TscOnly, &payload);
    bench_sink(&mut group, "floor", &mut Floor::new(), &payload);
    bench_sink(
        &mut group,
        "floor_lock_cas",
        &mut LockFloor::new(),
        &payload,
    );
    ours::<N, RawRecords>(&mut group, "", &payload);
    // CTF events: the same reserve/copy/commit with the CTF client (the payload is
    // one `Bytes(N)` field): 4-byte compact headers with a TSC delta, byte-aligned.
    ours::<N, Ctf>(&mut group, "ctf_", &payload);
    group.finish();
}

/// Both flavours in both modes, in format `K`.
fn ours<const N: usize, K: Format>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    payload: &[u8; N],
) {
    for (mode, name) in [(Mode::Overwrite, "overwrite"), (Mode::Discard, "discard")] {
        let mut mem = Memory::new(&config(mode));
        let mut shared = Ringbuf::<_, K>::shared(&mut mem, config(mode));
        bench_sink(
            group,
            &format!("{prefix}shared_{name}"),
            &mut shared,
            payload,
        );

        let mut mem = Memory::new(&config(mode));
        // SAFETY: only this thread (criterion's) writes to it.
        let mut local = unsafe { Ringbuf::<_, K>::local(&mut mem, config(mode)) };
        bench_sink(group, &format!("{prefix}local_{name}"), &mut local, payload);
    }
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::event_path);
}
criterion_main!(group::benches);
