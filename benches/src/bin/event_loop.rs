//! Writes N events in one configuration, for instruction counting under callgrind:
//! `valgrind --tool=callgrind target/release/event_loop <floor|shared|local> <N>`.
//! Per-event instructions = (count at N) - (count at 0), divided by N.

use std::hint::black_box;

use benches::{local_buffer, shared_buffer, write_event, Floor, Memory};
use ringbuf_core::{Config, Mode, Nesting};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "shared".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let payload = [0xabu8; 16];
    let config = Config::new(64 * 1024, 8, Mode::Overwrite);
    let nest = Nesting::new();
    let mut mem = Memory::new(&config);
    match which.as_str() {
        "floor" => {
            let mut floor = Floor::new();
            for _ in 0..n {
                floor.write(black_box(&payload));
            }
        }
        "shared" => {
            let buf = shared_buffer(&mut mem, config);
            for _ in 0..n {
                write_event(&buf, &nest, black_box(&payload));
            }
        }
        "local" => {
            // SAFETY: only this thread writes.
            let buf = unsafe { local_buffer(&mut mem, config) };
            for _ in 0..n {
                write_event(&buf, &nest, black_box(&payload));
            }
        }
        other => {
            eprintln!("unknown configuration {other}: floor, shared or local");
            std::process::exit(2);
        }
    }
}
