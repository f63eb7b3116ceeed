//! The main job until the `ringbuf` CLI exists: several threads write events into
//! one buffer while a reader drains it; at the end, what was written, read and lost.
//!
//! `cargo run --release -p ringbuf-core --example threads [discard|overwrite] [threads] [events]`

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use ringbuf_core::{
    Buffer, Config, Mode, Nesting, RawPacket, RawRecords, Region, SharedWord, Switch,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        None | Some("discard") => Mode::Discard,
        Some("overwrite") => Mode::Overwrite,
        Some(other) => return usage(&format!("unknown mode {other:?}")),
    };
    let parse = |arg: Option<String>, default: u64, what: &str| match arg {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| format!("{what} must be a number, not {s:?}")),
    };
    let (threads, events) = match (
        parse(args.next(), 2, "threads"),
        parse(args.next(), 2_000_000, "events"),
    ) {
        (Ok(t), Ok(e)) if t > 0 => (t, e),
        (Err(e), _) | (_, Err(e)) => return usage(&e),
        _ => return usage("threads must be at least 1"),
    };

    let config = Config::new(64 * 1024, 16, mode);
    let size = Region::<SharedWord>::size_for(&config).expect("valid configuration");
    let layout = Layout::from_size_align(size, 4096).expect("layout");
    // SAFETY: non-zero size; freed below with the same layout.
    let memory = unsafe { alloc_zeroed(layout) };
    assert!(!memory.is_null(), "out of memory");
    // SAFETY: freshly allocated, exclusively ours until dealloc.
    let bytes = unsafe { std::slice::from_raw_parts_mut(memory, size) };
    let start = Instant::now();
    let clock = move || start.elapsed().as_nanos() as u64;
    let region = Region::init(bytes, config, 0).expect("region");
    let buffer = Buffer::new(region, RawRecords, clock).expect("buffer");

    let done = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let (read, packets) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let (buffer, written) = (&buffer, &written);
                s.spawn(move || {
                    let nest = Nesting::new();
                    let mut committed = 0;
                    for i in 0..events {
                        let payload = [t.to_le_bytes(), i.to_le_bytes()].concat();
                        if buffer.write(&nest, t as u32, &payload).is_ok() {
                            committed += 1;
                        }
                    }
                    written.fetch_add(committed, Ordering::Relaxed);
                })
            })
            .collect();
        let reader = s.spawn(|| drain(&buffer, &done));
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Release);
        reader.join().expect("reader")
    });
    let elapsed = start.elapsed();
    let stats = buffer.stats();
    let attempted = threads * events;
    println!(
        "mode {:?}, {threads} writer threads, {events} events each, 16 x 64 KiB sub-buffers",
        mode
    );
    println!("attempted   {attempted:>12}");
    println!("committed   {:>12}", written.load(Ordering::Relaxed));
    println!("read        {read:>12}  in {packets} packets");
    println!("lost full   {:>12}", stats.lost_full);
    println!("lost wrap   {:>12}", stats.lost_wrap);
    println!("lost big    {:>12}", stats.lost_big);
    println!("lost nested {:>12}", stats.lost_nested);
    println!(
        "overrun     {:>12}  packets (overwrite mode)",
        stats.overrun
    );
    println!(
        "{:.1} M events/s attempted over {:.3} s",
        attempted as f64 / elapsed.as_secs_f64() / 1e6,
        elapsed.as_secs_f64()
    );
    // SAFETY: allocated above with this layout; the buffer is not used any more.
    unsafe { dealloc(memory, layout) };
}

/// Reads packets until the writers are done, then flushes and reads the rest.
/// Returns (records, packets).
fn drain<K: ringbuf_core::Client, T: ringbuf_core::Clock>(
    buffer: &Buffer<Region<'_, SharedWord>, K, T>,
    done: &AtomicBool,
) -> (u64, u64) {
    let mut reader = buffer.reader().expect("one reader");
    let (mut read, mut packets) = (0u64, 0u64);
    let mut flushed = false;
    loop {
        let finished = done.load(Ordering::Acquire);
        match reader.get_next_subbuf() {
            Ok(sub) => {
                let packet = RawPacket::parse(reader.bytes(&sub).unwrap()).expect("valid packet");
                read += packet.records().filter(Result::is_ok).count() as u64;
                packets += 1;
                reader.put_next_subbuf(sub);
            }
            // Nothing left after the final flush: done.
            Err(_) if flushed => return (read, packets),
            // Writers done: close the last packet (retried until there is room).
            Err(_) if finished => flushed = buffer.switch(Switch::Flush).is_ok(),
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn usage(error: &str) {
    eprintln!("error: {error}\nusage: threads [discard|overwrite] [threads] [events]");
    std::process::exit(2);
}
