//! Nested writes from a signal handler. Each iteration reserves an outer event,
//! raises SIGUSR1 inside the open reservation, and commits; the handler writes `K`
//! events into the same buffer (one level deeper). `k0` is the empty signal round
//! trip (handler runs, writes nothing), measured in the same run, so the cost per
//! nested event is `(time(kK) - time(k0)) / K`.
//!
//! `cargo bench -p benches --bench nested`

use benches::signal::{NestedWriter, NESTED_PAYLOAD};
use benches::{config, local_buffer, shared_buffer, Memory, TscBuffer};
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion};
use ringbuf_core::{Mode, Word};

/// Nested events per signal.
const K: [usize; 4] = [0, 1, 16, 64];

fn nested(c: &mut Criterion) {
    let mut group = c.benchmark_group("nested_signal_16B");
    let cfg = config(Mode::Overwrite);
    let mut mem = Memory::new(&cfg);
    flavour(&mut group, "shared", &shared_buffer(&mut mem, cfg));
    let mut mem = Memory::new(&cfg);
    // SAFETY: one thread writes (criterion's), plus its own signal handler.
    let buf = unsafe { local_buffer(&mut mem, cfg) };
    flavour(&mut group, "local", &buf);
    group.finish();
}

fn flavour<W: Word>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, buf: &TscBuffer<'_, W>) {
    let payload = [0xab; NESTED_PAYLOAD];
    for k in K {
        let writer = NestedWriter::install(buf, k);
        group.bench_function(format!("{name}_k{k}"), |b| {
            b.iter(|| writer.outer_event(&payload))
        });
    }
    let stats = buf.stats();
    if stats.events_discarded() != 0 {
        eprintln!(
            "warning: nested/{name}: {} events lost",
            stats.events_discarded()
        );
    }
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::nested);
}
criterion_main!(group::benches);
