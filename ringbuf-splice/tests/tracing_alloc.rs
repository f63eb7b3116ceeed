//! The `tracing` Layer allocates nothing per event with primitive fields (and a
//! formatted message), once its callsites' first events registered their
//! classes: a counting allocator counts the calls of the recording thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringbuf_splice::Session;
use tracing::{debug, info, info_span};
use tracing_subscriber::prelude::*;

mod common;

use common::{babeltrace_count, temp_dir};

/// The system allocator, counting the calls of each thread.
struct Counting;

thread_local! {
    /// Allocator calls by this thread (`const`, no destructor: usable in the
    /// allocator).
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
}

fn calls() -> u64 {
    CALLS.with(Cell::get)
}

// SAFETY: every call goes to `System` with the caller's arguments; counting
// touches no memory of the allocator's.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

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
        let before = calls();
        round(0);
        let first = calls() - before;
        let before = calls();
        for i in 1..ROUNDS {
            round(i);
        }
        (first, calls() - before)
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
