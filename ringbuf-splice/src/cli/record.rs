//! `ringbuf record`: a synthetic multi-threaded workload into per-CPU buffers in
//! shared memory, exported live into a trace directory.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringbuf_core::ctf::{Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
use ringbuf_core::{Config, Mode, Stats, Switch};
use ringbuf_mmap::clock::TraceClock;
use ringbuf_mmap::{possible_cpus, Backing, ChannelOptions, PerCpuChannel, PerCpuConsumer};
use ringbuf_splice::session::{self, SessionOptions, SessionStats};
use ringbuf_splice::snapshot::snapshot_to_dir;
use ringbuf_splice::TraceDir;

use super::args::{Args, Size};
use super::out::{say, tell, Progress};
use super::{CTF_FORMAT, UUID};

pub const HELP: &str = "\
ringbuf record: run a synthetic workload into per-CPU shared-memory buffers and
write a CTF trace directory (read it with babeltrace2).

Options:
  --threads N          writer threads (default 2)
  --rate N             events per second per thread, 0 = as fast as possible (default 0)
  --duration SECS      how long to run, fractions allowed (default 2)
  --payload BYTES      payload bytes per event (default 16)
  --mode MODE          discard (keep the oldest, count drops) or overwrite (keep the
                       newest) (default discard)
  --subbuf-size SIZE   bytes per sub-buffer, a power of two, K/M suffixes (default 64K)
  --subbuf-count N     sub-buffers per CPU, a power of two >= 2 (default 16)
  --output DIR         trace directory to create (default ./ringbuf-trace-<pid>)
  --buffer-dir DIR     put the buffers in a file DIR/ringbuf-<pid> (others can
                       `ringbuf consume` or `ringbuf recover` it) instead of a memfd
  --live-ms MS         close idle packets this often so they are exported (default 100)
  --flight-recorder    overwrite mode without continuous export: SIGUSR1 writes a
                       snapshot to DIR-snapshot-N, and the end writes one to DIR
  --no-export          only fill the buffers (with --buffer-dir: for `ringbuf
                       consume`, `snapshot` or `recover` from another process)
";

static EVENTS: [EventSchema; 1] = [EventSchema {
    id: 1,
    name: "ringbuf_record",
    fields: &[
        FieldDef {
            name: "seq",
            ty: FieldType::U64,
        },
        FieldDef {
            name: "thread",
            ty: FieldType::U32,
        },
        FieldDef {
            name: "payload",
            ty: FieldType::Sequence,
        },
    ],
}];

static SNAPSHOT_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Relaxed: a request flag; nothing else is published with it.
    SNAPSHOT_REQUESTED.store(true, Ordering::Relaxed);
}

struct Workload {
    threads: u32,
    rate: u64,
    duration: Duration,
    payload: usize,
    output: PathBuf,
    live: Duration,
    flight_recorder: bool,
    export: bool,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let a = Args::parse(
        args,
        &[
            "threads",
            "rate",
            "duration",
            "payload",
            "mode",
            "subbuf-size",
            "subbuf-count",
            "output",
            "buffer-dir",
            "live-ms",
        ],
        &["flight-recorder", "no-export"],
    )?;
    let flight_recorder = a.on("flight-recorder");
    let mode = match a
        .get(
            "mode",
            String::from(if flight_recorder {
                "overwrite"
            } else {
                "discard"
            }),
        )?
        .as_str()
    {
        "discard" => Mode::Discard,
        "overwrite" => Mode::Overwrite,
        other => {
            return Err(format!(
                "--mode must be discard or overwrite, not {other:?}"
            ))
        }
    };
    if flight_recorder && mode != Mode::Overwrite {
        return Err("--flight-recorder needs --mode overwrite".into());
    }
    let duration: f64 = a.get("duration", 2.0)?;
    if !(duration.is_finite() && duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let w = Workload {
        threads: a.get("threads", 2u32)?.max(1),
        rate: a.get("rate", 0u64)?,
        duration: Duration::from_secs_f64(duration),
        payload: a.get("payload", 16usize)?,
        output: a
            .opt_path("output")
            .unwrap_or_else(|| format!("ringbuf-trace-{}", std::process::id()).into()),
        live: Duration::from_millis(a.get("live-ms", 100u64)?),
        flight_recorder,
        export: !a.on("no-export"),
    };
    if w.export && w.output.exists() {
        return Err(format!("{} already exists", w.output.display()));
    }
    let config = Config::new(
        a.get("subbuf-size", Size(64 << 10))?.0,
        a.get("subbuf-count", 16u64)?,
        mode,
    );
    config
        .validate()
        .map_err(|e| format!("invalid buffer configuration: {e}"))?;
    if w.payload > (config.subbuf_size as usize).saturating_sub(128) {
        return Err(format!(
            "--payload {} does not fit in a {}-byte sub-buffer",
            w.payload, config.subbuf_size
        ));
    }
    let buffer_dir = a.opt_path("buffer-dir");
    record(&w, config, buffer_dir.as_deref())
}

fn record(w: &Workload, config: Config, buffer_dir: Option<&Path>) -> Result<(), String> {
    let clock = TraceClock::best();
    let trace = TraceDescription {
        uuid: UUID,
        clock: clock.describe(),
        events: &EVENTS,
        tracer_name: "ringbuf record",
    };
    let mut metadata = String::new();
    ringbuf_core::ctf::write_metadata(&mut metadata, &trace)
        .map_err(|e| format!("metadata: {e:?}"))?;
    let name = format!("ringbuf-{}", std::process::id());
    let backing = match buffer_dir {
        Some(dir) => Backing::File { dir, name: &name },
        None => Backing::Memfd { name: &name },
    };
    let options = ChannelOptions {
        config,
        buffers: possible_cpus(),
        format: CTF_FORMAT,
        prefault: true,
    };
    let channel = PerCpuChannel::create(
        backing,
        &options,
        &metadata,
        |cpu| Ctf::new(UUID, cpu),
        |_| clock,
    )
    .map_err(|e| format!("creating the buffers: {e}"))?;
    // The consumer attaches through the same interface another process would.
    let memfd = channel
        .shm()
        .file()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let wake = channel.wakeup().try_clone_fd().map_err(|e| e.to_string())?;
    let consumer = PerCpuConsumer::attach_fd(
        memfd,
        Some(wake),
        CTF_FORMAT,
        |cpu| Ctf::new(UUID, cpu),
        |_| clock,
    )
    .map_err(|e| format!("attaching the consumer: {e}"))?;
    if w.flight_recorder {
        // SAFETY: installing a handler that only stores to an atomic.
        unsafe { libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t) };
    }

    let stop_writers = AtomicBool::new(false);
    let stop_consumer = AtomicBool::new(false);
    let (attempted, committed) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    let subbuf = config.subbuf_size as usize;
    let mut snapshots = 0;
    let exported = std::thread::scope(|s| -> Result<SessionStats, String> {
        let writers: Vec<_> = (0..w.threads)
            .map(|thread| {
                let (channel, stop, attempted, committed) =
                    (&channel, &stop_writers, &attempted, &committed);
                s.spawn(move || writer(channel, thread, w, stop, attempted, committed))
            })
            .collect();
        let session = (w.export && !w.flight_recorder).then(|| {
            s.spawn(|| {
                let mut trace =
                    TraceDir::with_metadata(&w.output, &metadata).map_err(|e| e.to_string())?;
                let options = SessionOptions {
                    live_period: Some(w.live),
                    ..SessionOptions::default()
                };
                session::run(
                    &consumer,
                    &mut trace,
                    &options,
                    || stop_consumer.load(Ordering::Acquire),
                    |_| {},
                    subbuf,
                )
                .map_err(|e| e.to_string())
            })
        });
        let mut last = (Instant::now(), 0u64, 0u64);
        let mut shown = Progress::new();
        while start.elapsed() < w.duration {
            std::thread::sleep(
                Duration::from_millis(50).min(w.duration.saturating_sub(start.elapsed())),
            );
            if SNAPSHOT_REQUESTED.swap(false, Ordering::Relaxed) {
                snapshots += 1;
                let dir = PathBuf::from(format!("{}-snapshot-{snapshots}", w.output.display()));
                shown.end();
                match snapshot_to_dir(&consumer, &dir, subbuf) {
                    Ok(st) => tell!("snapshot {}: {} packets", dir.display(), st.packets),
                    Err(e) => tell!("snapshot {} failed: {e}", dir.display()),
                }
            }
            if last.0.elapsed() >= Duration::from_secs(1) {
                last = progress(
                    &mut shown,
                    &channel.stats(),
                    &committed,
                    last,
                    start.elapsed(),
                );
            }
        }
        shown.end();
        stop_writers.store(true, Ordering::Release);
        for writer in writers {
            writer
                .join()
                .map_err(|_| "writer thread panicked".to_string())?;
        }
        Ok(match session {
            Some(session) => {
                // End every stream with a packet carrying the final count.
                flush(&channel);
                stop_consumer.store(true, Ordering::Release);
                session
                    .join()
                    .map_err(|_| "consumer thread panicked".to_string())??
            }
            None => {
                flush(&channel);
                SessionStats::default()
            }
        })
    })?;
    let exported = if w.flight_recorder && w.export {
        snapshot_to_dir(&consumer, &w.output, subbuf).map_err(|e| e.to_string())?
    } else {
        exported
    };
    summary(
        w,
        &channel.stats(),
        attempted.into_inner(),
        committed.into_inner(),
        &exported,
        start.elapsed(),
        config,
    );
    if let Some(path) = channel.path() {
        say!("buffers in {}", path.display());
    }
    Ok(())
}

/// One writer thread: events at the requested rate until stopped.
fn writer<K: ringbuf_core::Client, T: ringbuf_core::Clock>(
    channel: &PerCpuChannel<K, T>,
    thread: u32,
    w: &Workload,
    stop: &AtomicBool,
    attempted: &AtomicU64,
    committed: &AtomicU64,
) {
    let payload = vec![thread as u8; w.payload];
    let start = Instant::now();
    // `seq` runs for the whole thread (it paces and numbers events); the batch
    // counters are published every 1024 events.
    let (mut seq, mut tried, mut ok) = (0u64, 0u64, 0u64);
    loop {
        if tried == 1024 || seq == 0 {
            attempted.fetch_add(tried, Ordering::Relaxed);
            committed.fetch_add(ok, Ordering::Relaxed);
            (tried, ok) = (0, 0);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if w.rate > 0 {
            let due = Duration::from_secs_f64(seq as f64 / w.rate as f64);
            let ahead = due.saturating_sub(start.elapsed());
            if !ahead.is_zero() {
                std::thread::sleep(ahead);
            }
        }
        let values = [Value::U64(seq), Value::U32(thread), Value::Bytes(&payload)];
        ok += channel.write_event(&EVENTS[0], &values).is_ok() as u64;
        tried += 1;
        seq += 1;
    }
    attempted.fetch_add(tried, Ordering::Relaxed);
    committed.fetch_add(ok, Ordering::Relaxed);
}

/// Ends every stream with a packet carrying the final discarded count; in
/// discard mode a full buffer must first be drained by the consumer, so each
/// buffer is retried (alone: a flushed one must not get a second final packet).
fn flush<K: ringbuf_core::Client, T: ringbuf_core::Clock>(channel: &PerCpuChannel<K, T>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (cpu, buffer) in channel.buffers().iter().enumerate() {
        while let Err(e) = buffer.switch(Switch::Flush) {
            if Instant::now() > deadline {
                tell!("warning: cpu {cpu}: no final packet ({e}); its last losses are not in the trace");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn progress(
    shown: &mut Progress,
    stats: &[Stats],
    committed: &AtomicU64,
    last: (Instant, u64, u64),
    elapsed: Duration,
) -> (Instant, u64, u64) {
    let events = committed.load(Ordering::Relaxed);
    let bytes: u64 = stats.iter().map(|s| s.write).sum();
    let lost: u64 = stats.iter().map(|s| s.events_discarded()).sum();
    let dt = last.0.elapsed().as_secs_f64();
    shown.show(format_args!(
        "[{:5.1}s] {:8.2} M events/s {:8.1} MB/s   lost {lost}",
        elapsed.as_secs_f64(),
        (events - last.1) as f64 / dt / 1e6,
        (bytes - last.2) as f64 / dt / 1e6,
    ));
    (Instant::now(), events, bytes)
}

fn summary(
    w: &Workload,
    stats: &[Stats],
    attempted: u64,
    committed: u64,
    exported: &SessionStats,
    elapsed: Duration,
    config: Config,
) {
    say!("cpu     packets   lost_full   lost_wrap    lost_big lost_nested     overrun");
    for (cpu, s) in stats.iter().enumerate() {
        say!(
            "{cpu:>3} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            s.write.div_ceil(config.subbuf_size),
            s.lost_full,
            s.lost_wrap,
            s.lost_big,
            s.lost_nested,
            s.overrun
        );
    }
    let lost: u64 = stats.iter().map(|s| s.events_discarded()).sum();
    let secs = elapsed.as_secs_f64();
    say!("attempted {attempted} events, committed {committed}, lost {lost}");
    say!(
        "{:.2} M events/s committed over {secs:.2} s; exported {} packets, {:.1} MB",
        committed as f64 / secs / 1e6,
        exported.packets,
        exported.bytes as f64 / 1e6
    );
    if w.export {
        say!("view the trace: babeltrace2 {}", w.output.display());
    }
}
