//! A small traced program: worker threads serving requests, a short-lived thread
//! pool for batch jobs, and a SIGALRM handler that ticks every millisecond, all
//! writing into one session.
//!
//! ```text
//! cargo run --release -p ringbuf-splice --example app -- /tmp/app-trace
//! babeltrace2 /tmp/app-trace | head
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

ringbuf_splice::event! {
    /// A worker served a request.
    pub struct Request { worker: u32, status: u16, micros: u64, path: &str }
    /// A pool thread ran a batch job.
    pub struct Job { batch: u32, items: u64, ok: bool }
    /// The interval timer fired (from a signal handler).
    pub struct Tick { n: u64 }
}

static TICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    // A probe in a signal handler: no lock, no allocation.
    let _ = Tick::emit_in_handler(TICKS.fetch_add(1, Ordering::Relaxed));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let output = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "app-trace".to_owned());
    let session = ringbuf_splice::Session::builder()
        .event::<Request>()
        .event::<Job>()
        .event::<Tick>()
        .output(&output)
        .start()?;

    // SAFETY: the handler only emits (async-signal-safe) and counts.
    unsafe { libc::signal(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t) };
    let every_ms = libc::timeval {
        tv_sec: 0,
        tv_usec: 1000,
    };
    let timer = libc::itimerval {
        it_interval: every_ms,
        it_value: every_ms,
    };
    // SAFETY: a valid timer value; the old value is not wanted.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };

    let stop = AtomicBool::new(false);
    let served = AtomicU64::new(0);
    std::thread::scope(|s| {
        for worker in 0..2 {
            let (stop, served) = (&stop, &served);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let path = if n.is_multiple_of(3) {
                        "/index.html"
                    } else {
                        "/api/items"
                    };
                    let micros = start.elapsed().as_micros() as u64 + n % 500;
                    if Request::emit(worker, 200, micros, path).is_ok() {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
            });
        }
        // A short-lived pool: a batch of threads per round, each gone after its job.
        for batch in 0..20 {
            std::thread::scope(|pool| {
                for item in 0..4u64 {
                    pool.spawn(move || Job::emit(batch, item * 100, true));
                }
            });
            std::thread::sleep(Duration::from_millis(25));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let off = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: a valid timer value (zero: disarm).
    unsafe { libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut()) };
    let counters = session.finish()?;
    println!(
        "{} requests, 80 jobs, {} ticks; lost {} events; {} packets, {:.1} KiB",
        served.load(Ordering::Relaxed),
        TICKS.load(Ordering::Relaxed),
        counters.events_lost(),
        counters.packets,
        counters.bytes as f64 / 1024.0
    );
    println!("view the trace: babeltrace2 {output}");
    Ok(())
}
