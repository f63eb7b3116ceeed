//! The `tracing_layer` bench's event as a plain loop, for callgrind: instructions
//! per event through ringbuf's Layer (`ringbuf`) or the registry alone
//! (`registry`). Run it for two event counts and divide the difference:
//!
//! ```sh
//! cargo build --release -p benches --example tracing_loop
//! for n in 20000 120000; do
//!     valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!         target/release/examples/tracing_loop ringbuf $n
//! done   # (Ir of 120000 - Ir of 20000) / 100000
//! ```

use tracing_subscriber::prelude::*;

/// The measured event (the bench's).
#[inline(never)]
fn event(i: u64) {
    tracing::info!(n = i, even = i.is_multiple_of(2), "served");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tracing_loop ringbuf|registry EVENTS";
    let with_layer = match args.next().as_deref() {
        Some("ringbuf") => true,
        Some("registry") => false,
        _ => panic!("{usage}"),
    };
    let events: u64 = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let dir = std::env::temp_dir().join(format!("ringbuf-tracing-loop-{}", std::process::id()));
    let session = ringbuf_splice::Session::builder()
        .output(&dir)
        .mode(ringbuf_splice::Mode::Overwrite)
        .subbuf_size(1 << 20)
        .start()
        .expect("a session");
    let dispatch = if with_layer {
        tracing::Dispatch::new(
            tracing_subscriber::registry().with(ringbuf_splice::tracing::Layer::new()),
        )
    } else {
        tracing::Dispatch::new(tracing_subscriber::registry())
    };
    tracing::dispatcher::with_default(&dispatch, || {
        // The first event registers the class.
        event(0);
        let start = std::time::Instant::now();
        for i in 1..=events {
            event(std::hint::black_box(i));
        }
        let ns = start.elapsed().as_nanos() as f64 / events as f64;
        eprintln!("{ns:.1} ns/event");
    });
    session.finish().expect("finishing the session");
    std::fs::remove_dir_all(&dir).expect("removing the trace");
}
