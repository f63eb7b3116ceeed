//! The `tracing` Layer allocates nothing per event with primitive fields (and a
//! formatted message), once its callsites' first events registered their
//! classes: a counting allocator counts the calls of the recording thread.

use ringbuf_splice::Session;
use tracing::{debug, info, info_span};
use tracing_subscriber::prelude::*;

mod common;

use common::{babeltrace_count, temp_dir};

#[path = "../../ringbuf-core/tests/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ROUNDS: u64 = 1000;

#[test]
fn events_with_primitive_fields_allocate_nothing_after_the_first() {
    let dir = temp_dir("alloc");
    let out = dir.join("trace");
    let session = Session::builder().output(&out).start().unwrap();
    let subscriber = tracing_subscriber::registry().with(ringbuf_splice::tracing::Layer::new());
    let (first, rest) = tracing::subscriber::with_default(subscriber, || {
        let span = info_span!("loop", kind = "count");
        // Each round: a span entered and exited, two events of every primitive
        // type, one with a formatted message.
        let round = |i: u64| {
            span.in_scope(|| {
                info!(
                    u = i,
                    i = -(i as i64),
                    f = i as f64 / 2.0,
                    b = i.is_multiple_of(2),
                    s = "text",
                    "round {}",
                    i
                );
                debug!(n = i);
            })
        };
        let before = allocations();
        round(0);
        let first = allocations() - before;
        let before = allocations();
        for i in 1..ROUNDS {
            round(i);
        }
        (first, allocations() - before)
    });
    // The first round registered classes (which allocates): the counter counts.
    assert!(first > 0, "the counting allocator saw nothing");
    assert_eq!(rest, 0, "{rest} allocations in {} rounds", ROUNDS - 1);
    let counters = session.finish().unwrap();
    assert_eq!(counters.events_lost(), 0, "{counters:?}");
    // Per round: enter, two events, exit; and the span's new and close.
    if let Some((events, stderr)) = babeltrace_count(&out) {
        assert_eq!(events, 4 * ROUNDS + 2, "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
