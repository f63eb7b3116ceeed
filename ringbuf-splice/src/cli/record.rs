//! `ringbuf record`: a synthetic multi-threaded workload into per-CPU buffers in
//! shared memory, exported live into a trace directory, a relayd, or both.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use ringbuf_core::ctf::{Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
use ringbuf_core::{Config, Mode, Stats, Switch};
use ringbuf_mmap::clock::TraceClock;
use ringbuf_mmap::{
    possible_cpus, wakeup_path, Backing, ChannelOptions, PerCpuChannel, PerCpuConsumer,
};
use ringbuf_splice::export_loop::{self, ExportStats, LoopOptions, Outputs};
use ringbuf_splice::snapshot::snapshot_to_dir;
use ringbuf_splice::TraceDir;

use super::args::{Args, Size};
use super::memory;
use super::out::{say, tell, Progress};
use super::relayd::{lost_notice, note_failure, Streaming};
use super::{signals, summary};
use super::{CTF_FORMAT, UUID};

pub const HELP: &str = "\
ringbuf record: run a synthetic workload into per-CPU shared-memory buffers and
write a CTF trace directory (read it with babeltrace2).

Options:
  --threads N          writer threads, 1 to 4096 (default 2)
  --rate N             events per second per thread (default 100000, which two
                       cores export without loss); 0 = as fast as possible: the
                       writers then outrun the exporter, and the summary says
                       which losses that caused
  --duration SECS      how long to run, fractions allowed (default 2); Ctrl-C
                       (or SIGTERM) ends the run early the same way: final
                       flush, export, summary
  --payload BYTES      payload bytes per event (default 16)
  --mode MODE          discard (keep the oldest, count drops) or overwrite (keep the
                       newest) (default discard)
  --subbuf-size SIZE   bytes per sub-buffer, a power of two, K/M suffixes (default 64K)
  --subbuf-count N     sub-buffers per CPU, a power of two >= 2 (default 16); all
                       the buffers (CPUs x count x size) must fit in half the
                       available memory: they are prefaulted
  --output DIR         trace directory to create (required, except with
                       --relayd or --no-export: a trace can be hundreds of MB,
                       so it goes only where asked)
  --relayd URL         stream the trace to an lttng-relayd (2.11 or later) as
                       well, or instead: net://HOST[:CONTROL_PORT[:DATA_PORT]]
                       (default ports 5342 and 5343), as the live session
                       ringbuf-record-<pid>; viewers attach with babeltrace2
                       --input-format=lttng-live while it runs. A relayd that
                       cannot be reached is an error without --output; one
                       lost later never stops the recording or the --output
                       trace: the summary counts the packets it missed and
                       the exit status is then 1
  --buffer-dir DIR     put the buffers in a file DIR/ringbuf-<pid> (others can
                       `ringbuf consume` or `ringbuf recover` it) instead of a
                       memfd; the file and its wakeup FIFO DIR/.ringbuf-<pid>.wake
                       are removed when the run ends cleanly (Ctrl-C included),
                       unless --no-export or --keep-buffers; after a crash they
                       stay, for `ringbuf recover`
  --keep-buffers       keep the --buffer-dir files after a clean end
  --live-ms MS         close idle packets this often so they are exported (default 100)
  --flight-recorder    overwrite mode without continuous export: SIGUSR1 writes a
                       snapshot to DIR-snapshot-N, and the end writes one to DIR;
                       a snapshot takes the packets it exports, so the final one
                       holds what was written after the last SIGUSR1 one
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

/// The most writer threads `--threads` accepts.
const MAX_THREADS: u32 = 4096;

struct Workload {
    threads: u32,
    rate: u64,
    duration: Duration,
    payload: usize,
    /// The trace directory; `None` with `--no-export` (or `--relayd` alone).
    output: Option<PathBuf>,
    /// The relayd URL.
    relayd: Option<String>,
    live: Duration,
    flight_recorder: bool,
    /// Whether the `--buffer-dir` files outlive a clean end.
    keep_buffers: bool,
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
            "relayd",
        ],
        &["flight-recorder", "no-export", "keep-buffers"],
    )?;
    let (flight_recorder, no_export) = (a.on("flight-recorder"), a.on("no-export"));
    let default_mode = if flight_recorder {
        "overwrite"
    } else {
        "discard"
    };
    let mode = match a.get("mode", String::from(default_mode))?.as_str() {
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
    if flight_recorder && no_export {
        return Err(
            "--flight-recorder writes snapshots: without them (--no-export) it is \
             --mode overwrite"
                .into(),
        );
    }
    let threads = a.get("threads", 2u32)?;
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(format!(
            "--threads {threads}: between 1 and {MAX_THREADS} writer threads"
        ));
    }
    let config = Config::new(
        a.get("subbuf-size", Size(64 << 10))?.0,
        a.get("subbuf-count", 16u64)?,
        mode,
    );
    config
        .validate()
        .map_err(|e| format!("invalid buffer configuration: {e}"))?;
    let payload = a.get("payload", 16usize)?;
    if payload > (config.subbuf_size as usize).saturating_sub(128) {
        return Err(format!(
            "--payload {payload} does not fit in a {}-byte sub-buffer",
            config.subbuf_size
        ));
    }
    memory::check_fits(&config, possible_cpus())?;
    let rate = a.get("rate", 100_000u64)?;
    let duration = a.seconds("duration")?.unwrap_or(Duration::from_secs(2));
    let live = Duration::from_millis(a.get("live-ms", 100u64)?);
    let relayd = a.opt_str("relayd");
    if relayd.is_some() && (no_export || flight_recorder) {
        return Err(format!(
            "--relayd streams packets as they are written: not with --{}",
            if no_export {
                "no-export"
            } else {
                "flight-recorder"
            }
        ));
    }
    // Paths last: every value is checked before the file system is looked at.
    let output = match (no_export, a.opt_path("output")) {
        (false, Some(_)) => Some(a.new_path("output")?),
        (false, None) if relayd.is_some() => None,
        (false, None) => {
            return Err("--output DIR is required (or --relayd URL): the trace to create".into())
        }
        (true, Some(path)) => {
            let path = path.display();
            return Err(format!("--output {path}: --no-export writes no trace"));
        }
        (true, None) => None,
    };
    let buffer_dir = a.opt_dir("buffer-dir")?;
    let w = Workload {
        threads,
        rate,
        duration,
        payload,
        output,
        relayd,
        live,
        flight_recorder,
        // Without export, the buffers are the output: another process reads them.
        keep_buffers: a.on("keep-buffers") || no_export,
    };
    record(&w, config, buffer_dir.as_deref())
}

type Channel = PerCpuChannel<Ctf, TraceClock>;
type Consumer = PerCpuConsumer<Ctf, TraceClock>;

fn record(w: &Workload, config: Config, buffer_dir: Option<&Path>) -> Result<(), String> {
    // First: a Ctrl-C during the setup must end the run through its normal end too.
    signals::stop_on_sigint();
    if w.flight_recorder {
        signals::snapshot_on_sigusr1();
    }
    let clock = TraceClock::best();
    let trace = TraceDescription {
        uuid: UUID,
        clock: clock.describe(),
        events: &EVENTS,
        tracer_name: "ringbuf record",
        env: &[],
        event_context: &[],
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
        clock: trace.clock,
    };
    // Restartable sequences when available (RINGBUF_RSEQ=off: the shared path).
    let channel = PerCpuChannel::create_rseq(
        backing,
        &options,
        &metadata,
        |cpu| Ctf::new(UUID, cpu),
        |_| clock,
    )
    .map_err(|e| match buffer_dir {
        Some(dir) => format!("creating the buffers in {}: {e}", dir.display()),
        None => format!("creating the buffers (memfd {name}): {e}"),
    })?;
    // The consumer attaches through the same interface another process would.
    let dup = |e| format!("duplicating the buffers' descriptors: {e}");
    let memfd = channel
        .shm()
        .file()
        .as_fd()
        .try_clone_to_owned()
        .map_err(dup)?;
    let wake = channel.wakeup().try_clone_fd().map_err(dup)?;
    let consumer = PerCpuConsumer::attach_fd(
        memfd,
        Some(wake),
        CTF_FORMAT,
        |cpu| Ctf::new(UUID, cpu),
        |_| clock,
    )
    .map_err(|e| format!("attaching the consumer: {e}"))?;
    // The live export's trace, created before anything runs (a flight recorder
    // writes its trace at the end, as a snapshot).
    let output = w.output.as_deref();
    let trace = output
        .filter(|_| !w.flight_recorder)
        .map(|out| {
            TraceDir::with_metadata(out, &metadata)
                .map_err(|e| format!("creating the trace {}: {e}", out.display()))
        })
        .transpose()?;
    let mut streaming = match &w.relayd {
        Some(url) => Some(Streaming::connect(
            url,
            &format!("ringbuf-record-{}", std::process::id()),
            Some(w.live),
            &metadata,
            options.buffers,
            output,
        )?),
        None => None,
    };
    let outputs = Outputs {
        trace,
        relayd: streaming.as_mut().and_then(|s| s.relayd.take()),
    };

    let ran = run_threads(w, &channel, &consumer, outputs)?;
    if let Some(streaming) = &mut streaming {
        streaming.relayd = ran.relayd;
    }
    let exported = match output.filter(|_| w.flight_recorder) {
        Some(out) => Some(
            snapshot_to_dir(&consumer, out, config.subbuf_size as usize)
                .map_err(|e| format!("writing the snapshot {}: {e}", out.display()))?,
        ),
        None => ran.exported,
    };
    summary::print(&summary::Run {
        stats: &channel.stats(),
        config,
        attempted: ran.attempted,
        committed: ran.committed,
        elapsed: ran.start.elapsed(),
        exported,
        trace: output,
        relayd: streaming.is_some(),
        snapshots: ran.snapshots,
        flight_recorder: w.flight_recorder,
        write_path: channel.write_path(),
    });
    let streamed = match (&streaming, exported) {
        (Some(streaming), Some(exported)) => streaming.report(&exported, output),
        _ => Ok(()),
    };
    if let Some(path) = channel.path() {
        if w.keep_buffers {
            say!("buffers kept in {}", path.display());
        } else {
            for file in [path.to_owned(), wakeup_path(path)] {
                if let Err(e) = std::fs::remove_file(&file) {
                    tell!("warning: removing {}: {e}", file.display());
                }
            }
        }
    }
    streamed
}

/// What the writer and exporter threads did.
struct Ran {
    /// When the writers started.
    start: Instant,
    /// Events the writers tried to write.
    attempted: u64,
    /// Events written.
    committed: u64,
    /// What the live export exported (`None`: there was none).
    exported: Option<ExportStats>,
    /// The relayd session, back from the export.
    relayd: Option<ringbuf_splice::relayd::Relayd>,
    /// SIGUSR1 snapshots taken, and the packets they took.
    snapshots: (u32, u64),
}

/// Runs the writers (and the live export into `outputs`, if any) until the end
/// of `--duration` or a stop request, then ends every stream with a final packet.
fn run_threads(
    w: &Workload,
    channel: &Channel,
    consumer: &Consumer,
    mut outputs: Outputs,
) -> Result<Ran, String> {
    let (attempted, committed) = (AtomicU64::new(0), AtomicU64::new(0));
    let stop_exporter = AtomicBool::new(false);
    // The relayd's failure, noted by the exporter for the main thread to print.
    let relayd_lost = OnceLock::new();
    // Writers wait at this gate until every thread is started: a thousand
    // threads spawned while the first ones already spin would starve the
    // spawning thread (and the exporter) for seconds.
    let gate = RwLock::new(());
    // When the gate opened: the writers' and the main thread's common start.
    let begin = OnceLock::new();
    std::thread::scope(|s| {
        let closed = gate
            .write()
            .expect("not poisoned: nobody panics holding it");
        let mut writers = Vec::with_capacity(w.threads as usize);
        for thread in 0..w.threads {
            let (gate, begin, attempted, committed) = (&gate, &begin, &attempted, &committed);
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                drop(gate.read());
                // Set before the gate opened (the lock orders it before us); unset
                // only when spawning failed and nothing is to be written.
                if let Some(&start) = begin.get() {
                    writer(channel, thread, w, start, attempted, committed)
                }
            });
            match spawned {
                Ok(handle) => writers.push(handle),
                // The ones started pass the gate when it drops, find no start
                // time and return.
                Err(e) => return Err(format!("starting writer thread {thread}: {e}")),
            }
        }
        let exporter = if outputs.trace.is_some() || outputs.relayd.is_some() {
            let stop = || stop_exporter.load(Ordering::Acquire);
            let options = LoopOptions {
                live_period: Some(w.live),
                ..LoopOptions::default()
            };
            let subbuf = consumer.subbuf_size() as usize;
            let lost = &relayd_lost;
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                let progress = |_: &ExportStats, o: &Outputs| note_failure(o.relayd.as_ref(), lost);
                let run =
                    export_loop::run(consumer, &mut outputs, &options, stop, progress, subbuf);
                let into = match &outputs.trace {
                    Some(trace) => format!("into {}", trace.path().display()),
                    None => String::from("to the relayd"),
                };
                run.map(|stats| (stats, outputs.relayd))
                    .map_err(|e| format!("exporting {into}: {e}"))
            });
            match spawned {
                Ok(handle) => Some(handle),
                Err(e) => return Err(format!("starting the exporter thread: {e}")),
            }
        } else {
            None
        };
        let start = *begin.get_or_init(Instant::now);
        drop(closed);
        // Until the end, a stop request, or an exporter that gave up (its error is
        // reported below).
        let exporting = || exporter.as_ref().is_none_or(|h| !h.is_finished());
        let snapshots = wait_for_the_end(
            w,
            start,
            channel,
            consumer,
            &committed,
            exporting,
            &relayd_lost,
        );
        signals::request_stop();
        let writers_done = writers.into_iter().all(|h| h.join().is_ok());
        // End every stream with a packet carrying the final count, then let the
        // exporter take it (and everything before it). A full discard-mode buffer
        // has room for it only once read: worth waiting for if a reader may come
        // (the exporter, or another process on a file channel).
        let reader = exporter.as_ref().is_some_and(|h| !h.is_finished());
        flush(channel, reader || channel.path().is_some());
        stop_exporter.store(true, Ordering::Release);
        let (exported, relayd) = match exporter {
            Some(exporter) => {
                let (stats, relayd) = exporter
                    .join()
                    .map_err(|_| "the exporter thread panicked".to_string())??;
                (Some(stats), relayd)
            }
            None => (None, None),
        };
        if !writers_done {
            return Err("a writer thread panicked".into());
        }
        Ok(Ran {
            start,
            attempted: attempted.load(Ordering::Relaxed),
            committed: committed.load(Ordering::Relaxed),
            exported,
            relayd,
            snapshots,
        })
    })
}

/// The main thread while the writers run: progress once a second, SIGUSR1
/// snapshots, until the end of `--duration`, a stop request, or `going()` turns
/// false. Returns the snapshots taken and the packets they took.
fn wait_for_the_end(
    w: &Workload,
    start: Instant,
    channel: &Channel,
    consumer: &Consumer,
    committed: &AtomicU64,
    going: impl Fn() -> bool,
    relayd_lost: &OnceLock<String>,
) -> (u32, u64) {
    let (mut snapshots, mut snapshot_packets) = (0, 0);
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut shown = Progress::new();
    let mut told = false;
    while start.elapsed() < w.duration && !signals::stop_requested() && going() {
        if let (false, Some(error)) = (told, relayd_lost.get()) {
            shown.end();
            tell!("{}", lost_notice(error));
            told = true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(w.duration.saturating_sub(start.elapsed())),
        );
        if let (true, Some(base)) = (signals::take_snapshot_request(), &w.output) {
            snapshots += 1;
            let dir = PathBuf::from(format!("{}-snapshot-{snapshots}", base.display()));
            shown.end();
            match snapshot_to_dir(consumer, &dir, consumer.subbuf_size() as usize) {
                Ok(st) => {
                    snapshot_packets += st.packets;
                    tell!("snapshot {}: {} packets", dir.display(), st.packets)
                }
                Err(e) => tell!("snapshot {} failed: {e}", dir.display()),
            }
        }
        if last.0.elapsed() >= Duration::from_secs(1) {
            last = progress(
                &mut shown,
                &channel.stats(),
                committed,
                last,
                start.elapsed(),
            );
        }
    }
    shown.end();
    (snapshots, snapshot_packets)
}

/// One writer thread: events at the requested rate from `start` for
/// `w.duration`, or until a stop is requested.
fn writer(
    channel: &Channel,
    thread: u32,
    w: &Workload,
    start: Instant,
    attempted: &AtomicU64,
    committed: &AtomicU64,
) {
    // A paced writer sleeps in slices this long at most, so it sees a stop soon.
    const SLICE: Duration = Duration::from_millis(10);
    let payload = vec![thread as u8; w.payload];
    // `seq` runs for the whole thread (it paces and numbers events); the counters
    // are published every 1024 events, for the progress line.
    let (mut seq, mut published, mut ok) = (0u64, 0u64, 0u64);
    while !signals::stop_requested() {
        // The clock: every 256 events at full speed, at every event when paced.
        // Every writer ends on time by itself, even when a thousand of them keep
        // the main thread from running.
        if w.rate > 0 || seq % 256 == 0 {
            let now = start.elapsed();
            if now >= w.duration {
                break;
            }
            if w.rate > 0 {
                let due = Duration::from_secs_f64(seq as f64 / w.rate as f64);
                if due > now {
                    std::thread::sleep((due - now).min(SLICE));
                    continue;
                }
            }
        }
        let values = [Value::U64(seq), Value::U32(thread), Value::Bytes(&payload)];
        ok += channel.write_event(&EVENTS[0], &values).is_ok() as u64;
        seq += 1;
        if seq - published == 1024 {
            // Relaxed: statistics; the final values reach the main thread by the join.
            attempted.fetch_add(seq - published, Ordering::Relaxed);
            committed.fetch_add(ok, Ordering::Relaxed);
            (published, ok) = (seq, 0);
        }
    }
    attempted.fetch_add(seq - published, Ordering::Relaxed);
    committed.fetch_add(ok, Ordering::Relaxed);
}

/// Ends every stream with a packet carrying the final discarded count; in
/// discard mode a full buffer must first be drained by a reader, so with `wait`
/// each buffer is retried for a while (alone: a flushed one must not get a
/// second final packet).
fn flush(channel: &Channel, wait: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for cpu in 0..channel.buffers().len() {
        while let Err(e) = channel.switch(cpu, Switch::Flush) {
            if !wait || Instant::now() > deadline {
                tell!("warning: cpu {cpu}: no final packet ({e}); its last losses are not in the trace");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Shows the event and byte rates since `last` (when, events, bytes); returns
/// the new `last`.
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
