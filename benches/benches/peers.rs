//! The peers on their nearest equivalent of "store one event", next to the floor,
//! for payloads of 8, 16, 64 and 256 bytes. Every peer reads the TSC once per event
//! and stores the same `8 + N` bytes into the same capacity as ringbuf (see
//! benches/src/peers.rs).
//!
//! `cargo bench -p benches --bench peers`

mod common;

use benches::peers::{new_bbqueue, ArrayQueuePeer, BbqueuePeer, MpscPeer, RtrbPeer};
use benches::{payload, Floor};
use common::bench_sink;
use criterion::{criterion_main, Criterion, Throughput};

fn peers(c: &mut Criterion) {
    payload_size::<8>(c);
    payload_size::<16>(c);
    payload_size::<64>(c);
    payload_size::<256>(c);
}

fn payload_size<const N: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("peers_{N}B"));
    group.throughput(Throughput::Elements(1));
    let payload = payload::<N>();

    // The floor again, so that every ratio is taken within one group.
    bench_sink(&mut group, "floor", &mut Floor::new(), &payload);
    let mut queue = ArrayQueuePeer::<N>::new();
    bench_sink(&mut group, "arrayqueue_force_push", &mut queue, &payload);
    let mut channel = MpscPeer::<N>::new();
    bench_sink(&mut group, "mpsc_sync_channel", &mut channel, &payload);
    bench_sink(&mut group, "rtrb_chunk", &mut RtrbPeer::new(), &payload);
    let storage = new_bbqueue();
    let mut bbq = BbqueuePeer::new(&storage);
    bench_sink(&mut group, "bbqueue_grant", &mut bbq, &payload);
    group.finish();
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::peers);
}
criterion_main!(group::benches);
