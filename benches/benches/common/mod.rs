//! Helpers shared by the bench files that time [`Sink`]s.

use benches::sink::check_lost;
use benches::{time_events, Sink};
use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;

/// Benches `sink` as `name` in `group`: `iters` events per sample, timed by
/// [`time_events`]; warns afterwards if the sink lost events.
pub fn bench_sink<const N: usize, S: Sink<N>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    sink: &mut S,
    payload: &[u8; N],
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| time_events(sink, payload, iters))
    });
    check_lost(name, sink);
}
