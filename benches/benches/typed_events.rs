//! Typed events against the dynamic path, in the same run: one event `{u64; u32}`
//! into a CTF buffer (TSC timestamps, overwrite mode, both flavours), written
//!
//! * `values`: with `ctf::write_event` and a `&[Value]` slice (checked against the
//!   schema and encoded field by field at run time);
//! * `typed`: with the `event!`-generated `Sample::write` through a `BufferSink`
//!   (size a constant, fields encoded in place);
//! * `by_hand`: reserve, two stores, commit: what the typed path should compile to.
//!
//! and the same with a 4-byte event context (a thread id) before the fields
//! (`context4_*`): the context's cost is the difference with the figures without.
//!
//! `cargo bench -p benches --bench typed_events`

use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::{config, Memory};
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion, Throughput};
use ringbuf_core::ctf::{
    write_event, BufferSink, Ctf, Event, EventSchema, FieldDef, FieldType, Value,
};
use ringbuf_core::{Buffer, Mode, Nesting, Region, Tsc, Word};

ringbuf_core::event! {
    /// The measured event.
    struct Sample { a: u64, b: u32 }
}

const ID: u32 = 1;

static SCHEMA: EventSchema = EventSchema {
    id: ID,
    name: "Sample",
    fields: &[
        FieldDef {
            name: "a",
            ty: FieldType::U64,
        },
        FieldDef {
            name: "b",
            ty: FieldType::U32,
        },
    ],
};

/// The context written with each event, when there is one: a thread id.
const TID: [u8; 4] = 7u32.to_le_bytes();

type CtfBuffer<'a, W> = Buffer<Region<'a, W>, Ctf, Tsc>;

/// Times `iters` calls of `event(i)`.
fn timed(iters: u64, mut event: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        event(black_box(i));
    }
    start.elapsed()
}

fn typed_events(c: &mut Criterion) {
    Sample::id().set(ID);
    assert_eq!(EventSchema::of::<Sample>(ID), SCHEMA);
    let mut group = c.benchmark_group("typed_event_u64_u32");
    group.throughput(Throughput::Elements(1));
    let cfg = config(Mode::Overwrite);
    let ctf = Ctf::new([0x42; 16], 0);

    let mut mem = Memory::new(&cfg);
    let region = Region::init(mem.bytes(), cfg, 1).expect("region");
    let buf = Buffer::new(region, ctf, Tsc).expect("buffer");
    paths::<_, 0>(&mut group, "shared_", &buf);
    let mut mem = Memory::new(&cfg);
    let region = Region::init(mem.bytes(), cfg, 1).expect("region");
    let buf = Buffer::new(region, ctf.with_event_context(4), Tsc).expect("buffer");
    paths::<_, 4>(&mut group, "shared_context4_", &buf);

    let mut mem = Memory::new(&cfg);
    // SAFETY: only this thread (criterion's) writes to it.
    let region = unsafe { Region::init_local(mem.bytes(), cfg, 1) }.expect("region");
    let buf = Buffer::new(region, ctf, Tsc).expect("buffer");
    paths::<_, 0>(&mut group, "local_", &buf);
    let mut mem = Memory::new(&cfg);
    // SAFETY: only this thread (criterion's) writes to it.
    let region = unsafe { Region::init_local(mem.bytes(), cfg, 1) }.expect("region");
    let buf = Buffer::new(region, ctf.with_event_context(4), Tsc).expect("buffer");
    paths::<_, 4>(&mut group, "local_context4_", &buf);
    group.finish();
}

/// The ways to write the event into `buf`, whose event context is `CTX` bytes
/// (the dynamic path cannot write one: it is only measured without).
fn paths<W: Word, const CTX: usize>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    buf: &CtfBuffer<'_, W>,
) {
    assert_eq!(buf.client().event_context(), CTX);
    let nest = Nesting::new();
    let context: [u8; CTX] = TID[..CTX].try_into().expect("CTX <= 4");
    let sink = BufferSink::new(buf, &nest).with_context(context);
    if CTX == 0 {
        group.bench_function(format!("{prefix}values"), |b| {
            b.iter_custom(|iters| {
                timed(iters, |i| {
                    let values = [Value::U64(i), Value::U32(i as u32)];
                    let _ = write_event(buf, &nest, &SCHEMA, &values);
                })
            })
        });
    }
    group.bench_function(format!("{prefix}typed"), |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                let _ = Sample::write(&sink, i, i as u32);
            })
        })
    });
    group.bench_function(format!("{prefix}by_hand"), |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                if let Ok(mut r) = buf.reserve(&nest, ID, CTX + 12) {
                    let out = r.payload_mut();
                    out[..CTX].copy_from_slice(&context);
                    out[CTX..CTX + 8].copy_from_slice(&i.to_le_bytes());
                    out[CTX + 8..CTX + 12].copy_from_slice(&(i as u32).to_le_bytes());
                    r.commit();
                }
            })
        })
    });
    let lost = buf.stats().events_discarded();
    if lost != 0 {
        eprintln!("warning: {prefix}: {lost} events lost; the figures are invalid");
    }
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::typed_events);
}
criterion_main!(group::benches);
