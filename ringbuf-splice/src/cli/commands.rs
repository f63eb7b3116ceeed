//! `ringbuf consume`, `snapshot`, `recover` and `stat`: tools for the buffers of
//! another process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringbuf_core::ctf::Ctf;
use ringbuf_core::{Flavour, NoClock, Word};
use ringbuf_mmap::clock::TraceClock;
use ringbuf_mmap::{recover_to_dir, AnyConsumer};
use ringbuf_splice::export_loop::{self, LoopOptions, Outputs};
use ringbuf_splice::snapshot::snapshot_to_dir;
use ringbuf_splice::TraceDir;

use super::args::Args;
use super::out::{say, tell, Progress};
use super::relayd::{lost_notice, Streaming};
use super::signals;
use super::CTF_FORMAT;

pub const CONSUME_HELP: &str = "\
ringbuf consume: attach to the file-backed buffers of another process (e.g.
`ringbuf record --buffer-dir DIR`) and export them live into a trace directory,
an lttng-relayd, or both, until the producer exits, --duration passes, or
Ctrl-C (or SIGTERM).

Per-CPU and per-thread channels alike. The open packets of a per-CPU channel
are closed every --live-ms; a per-thread channel's threads are asked to close
theirs (a consumer must not write to their buffers): a thread does so at its
next event, and when it exits.

Options:
  --path FILE        the channel file (required)
  --output DIR       trace directory to create (required, except with --relayd)
  --relayd URL       stream to an lttng-relayd (2.11 or later) as well, or
                     instead: net://HOST[:CONTROL_PORT[:DATA_PORT]], as the live
                     session ringbuf-consume-<producer pid> (see `ringbuf record
                     --help`); exit status 1 if it missed packets
  --duration SECS    stop after this long (default: when the producer exits)
  --live-ms MS       close idle packets this often (default 100)
";

pub const SNAPSHOT_HELP: &str = "\
ringbuf snapshot: write the current content of another process's buffers
(flight recorder) as a trace directory, while it keeps writing. A snapshot takes
the packets it exports: the next one starts after them. Per-CPU and per-thread
channels alike (of a per-thread one, the full packets and those its threads
closed: a consumer asks, a thread closes its packet at its next event).

Options:
  --path FILE        the channel file (required)
  --output DIR       trace directory to create (required)
";

pub const RECOVER_HELP: &str = "\
ringbuf recover: turn the buffer file of a dead producer into a trace directory:
every complete packet, and the committed prefix of partial ones.

Options:
  --path FILE        the channel file (required)
  --output DIR       trace directory to create (required)
";

pub const STAT_HELP: &str = "\
ringbuf stat: the counters of every buffer of a channel (one per CPU, or per
thread): packets written and read, events lost by cause, packets overwritten.

Options:
  --path FILE        the channel file (required)
";

/// A consumer of the CLI's channels, of the flavour `W` of their writers.
type Consumer<W> = ringbuf_mmap::Consumer<W, Ctf, TraceClock>;

/// Evaluates `$body` with `$c` bound to the consumer inside the [`AnyConsumer`]
/// `$any`, whichever its flavour (the body is compiled for both).
macro_rules! with_consumer {
    ($any:expr, |$c:ident| $body:expr) => {
        match $any {
            AnyConsumer::PerCpu($c) => $body,
            AnyConsumer::PerThread($c) => $body,
        }
    };
}

/// The trace uuid a CTF metadata text declares (`uuid = "…";` in its `trace`
/// block), which the producer writes in every packet header.
fn trace_uuid(metadata: &str) -> Option<[u8; 16]> {
    let (_, trace) = metadata.split_once("\ntrace {")?;
    let trace = &trace[..trace.find("\n};")?];
    let (_, value) = trace.split_once("uuid = \"")?;
    let hex: Vec<u8> = value
        .split_once('"')?
        .0
        .bytes()
        .filter(|&b| b != b'-')
        .collect();
    let mut uuid = [0u8; 16];
    if hex.len() != 32 {
        return None;
    }
    for (byte, pair) in uuid.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(uuid)
}

/// Attaches to the channel at `path`, per-CPU or per-thread; `uuid` says whether
/// the consumer must know the trace uuid (to close idle buffers with packets of
/// its own, see [`export_loop`]).
fn attach(path: &Path, uuid: bool) -> Result<AnyConsumer<Ctf, TraceClock>, String> {
    // The clock is known from the channel header, the trace uuid from the
    // metadata: attach once to read them.
    let failed =
        |e: &dyn std::fmt::Display| format!("attaching to the channel {}: {e}", path.display());
    let probe =
        AnyConsumer::attach_path(path, CTF_FORMAT, |cpu| Ctf::new([0; 16], cpu), |_| NoClock)
            .map_err(|e| failed(&e))?;
    let metadata = with_consumer!(&probe, |c| c.metadata());
    // A cut or extended metadata text would make every trace written from it
    // unreadable: refuse the channel now.
    ringbuf_mmap::check_metadata(metadata)
        .map_err(|why| failed(&ringbuf_mmap::ChannelError::BadMetadata(why)))?;
    let clock = with_consumer!(&probe, |c| TraceClock::from_description(&c.clock()))
        .map_err(|e| failed(&e))?;
    let trace_uuid = match (trace_uuid(metadata), uuid) {
        (Some(uuid), _) => uuid,
        (None, false) => [0; 16],
        (None, true) => return Err(failed(&"its metadata declares no trace uuid")),
    };
    drop(probe);
    let client = |cpu| Ctf::new(trace_uuid, cpu);
    AnyConsumer::attach_path(path, CTF_FORMAT, client, |_| clock).map_err(|e| failed(&e))
}

/// What a consumer cannot do on a per-thread channel, said once per command.
fn per_thread_note<W: Word>(_: &Consumer<W>) {
    if W::FLAVOUR == Flavour::Local {
        tell!(
            "per-thread channel: a thread's open packet is read once the thread closes it \
             (at its next event after the consumer asks, or when it exits)"
        );
    }
}

fn producer_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
}

pub fn consume(args: &[String]) -> Result<(), String> {
    let a = Args::parse(
        args,
        &["path", "output", "duration", "live-ms", "relayd"],
        &[],
    )?;
    let duration = a.seconds("duration")?;
    let live = Duration::from_millis(a.get("live-ms", 100u64)?);
    let relayd = a.opt_str("relayd");
    let path = a.file("path")?;
    let output = match (a.opt_path("output"), &relayd) {
        (None, Some(_)) => None,
        _ => Some(a.new_path("output")?),
    };
    // Before anything is attached or created: a Ctrl-C now ends the run normally.
    signals::stop_on_sigint();
    with_consumer!(attach(&path, relayd.is_some())?, |c| {
        consume_from(
            &c,
            &path,
            output.as_deref(),
            relayd.as_deref(),
            duration,
            live,
        )
    })
}

fn consume_from<W: Word>(
    consumer: &Consumer<W>,
    path: &Path,
    output: Option<&Path>,
    relayd: Option<&str>,
    duration: Option<Duration>,
    live: Duration,
) -> Result<(), String> {
    per_thread_note(consumer);
    let trace = output
        .map(|output| {
            TraceDir::with_metadata(output, consumer.metadata())
                .map_err(|e| format!("creating the trace {}: {e}", output.display()))
        })
        .transpose()?;
    let mut streaming = match relayd {
        Some(url) => Some(Streaming::connect(
            url,
            &format!("ringbuf-consume-{}", consumer.producer_pid()),
            Some(live),
            consumer.metadata(),
            consumer.buffer_count(),
            output,
        )?),
        None => None,
    };
    let mut outputs = Outputs {
        trace,
        relayd: streaming.as_mut().and_then(|s| s.relayd.take()),
    };
    let start = Instant::now();
    let pid = consumer.producer_pid();
    let options = LoopOptions {
        live_period: Some(live),
        ..LoopOptions::default()
    };
    let subbuf = consumer.subbuf_size() as usize;
    let mut progress = Progress::new();
    let mut told = false;
    let stats = export_loop::run(
        consumer,
        &mut outputs,
        &options,
        || {
            signals::stop_requested()
                || duration.is_some_and(|d| start.elapsed() >= d)
                || !producer_alive(pid)
        },
        |s, o| {
            if let (false, Some(e)) = (told, o.relayd.as_ref().and_then(|r| r.failure())) {
                progress.end();
                tell!("{}", lost_notice(&e.to_string()));
                told = true;
            }
            let mb = s.bytes as f64 / 1e6;
            progress.show(format_args!("{} packets, {mb:.1} MB", s.packets));
        },
        subbuf,
    )
    .map_err(|e| {
        progress.end();
        match output {
            Some(output) => format!(
                "exporting {} into {}: {e}",
                path.display(),
                output.display()
            ),
            None => format!("exporting {}: {e}", path.display()),
        }
    })?;
    progress.end();
    let mb = stats.bytes as f64 / 1e6;
    match output {
        Some(output) => say!(
            "exported {} packets, {mb:.1} MB to {}",
            stats.packets,
            output.display()
        ),
        None => say!("exported {} packets, {mb:.1} MB", stats.packets),
    }
    if let Some(output) = output {
        say!("view the trace: babeltrace2 {}", output.display());
    }
    match &mut streaming {
        Some(streaming) => {
            streaming.relayd = outputs.relayd;
            streaming.report(&stats, output)
        }
        None => Ok(()),
    }
}

/// The `--path FILE --output DIR` of `snapshot` and `recover`.
fn path_and_output(args: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let a = Args::parse(args, &["path", "output"], &[])?;
    Ok((a.file("path")?, a.new_path("output")?))
}

pub fn snapshot(args: &[String]) -> Result<(), String> {
    let (path, output) = path_and_output(args)?;
    let stats = with_consumer!(attach(&path, false)?, |c| {
        per_thread_note(&c);
        snapshot_to_dir(&c, &output, c.subbuf_size() as usize)
    })
    .map_err(|e| {
        let (path, output) = (path.display(), output.display());
        format!("writing a snapshot of {path} into {output}: {e}")
    })?;
    say!(
        "snapshot: {} packets, {:.1} MB in {}",
        stats.packets,
        stats.bytes as f64 / 1e6,
        output.display()
    );
    say!("view the trace: babeltrace2 {}", output.display());
    Ok(())
}

pub fn recover(args: &[String]) -> Result<(), String> {
    let (path, output) = path_and_output(args)?;
    // The error names the channel file (or the output file it could not write).
    let report = recover_to_dir(&path, &output)
        .map_err(|e| format!("recovering into {}: {e}", output.display()))?;
    say!(
        "recovered {} complete and {} partial packets ({} empty sub-buffers skipped)",
        report.complete,
        report.partial,
        report.empty
    );
    if report.committed_bytes_cut > 0 {
        say!(
            "{} bytes of committed events lay behind a reservation still open at the crash and were cut",
            report.committed_bytes_cut
        );
    }
    say!("view the trace: babeltrace2 {}", output.display());
    if report.rejected > 0 {
        return Err(format!(
            "{} packets of {} contradict the channel or their neighbours and were left out \
             (the file is corrupt); the trace holds the others",
            report.rejected,
            path.display()
        ));
    }
    Ok(())
}

pub fn stat(args: &[String]) -> Result<(), String> {
    let a = Args::parse(args, &["path"], &[])?;
    let path = a.file("path")?;
    with_consumer!(attach(&path, false)?, |c| print_stat(&c));
    Ok(())
}

fn print_stat<W: Word>(consumer: &Consumer<W>) {
    let s = consumer.subbuf_size();
    let pid = consumer.producer_pid();
    let (kind, buffer) = match W::FLAVOUR {
        Flavour::Local => ("per-thread", "thread"),
        _ => ("per-CPU", "cpu"),
    };
    let alive = if producer_alive(pid) {
        "running"
    } else {
        "gone"
    };
    say!("{kind} channel, producer pid {pid} ({alive})");
    match consumer.write_path() {
        Some(path) => say!("writers: {path}"),
        None => say!("writers: unknown write path in the header"),
    }
    say!(
        "{buffer:>6}      written        read   lost_full   lost_wrap    lost_big lost_nested     overrun"
    );
    for index in 0..consumer.buffer_count() {
        let Some(st) = consumer.stats(index) else {
            say!("{index:>6} (the channel file was truncated)");
            continue;
        };
        say!(
            "{index:>6} {:>12} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            format!("{} pk", st.write.div_ceil(s)),
            format!("{} pk", st.consumed / s),
            st.lost_full,
            st.lost_wrap,
            st.lost_big,
            st.lost_nested,
            st.overrun
        );
    }
}

#[cfg(test)]
mod tests {
    use ringbuf_core::ctf::{write_metadata, TraceDescription};

    use super::trace_uuid;

    #[test]
    fn the_trace_uuid_is_read_from_the_metadata() {
        let uuid = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\x00\x11\x22\x33\x44\x55\x66\x77";
        let mut metadata = String::new();
        let trace = TraceDescription {
            uuid,
            clock: ringbuf_mmap::clock::Monotonic.describe(),
            events: &[],
            tracer_name: "test",
            env: &[],
            event_context: &[],
        };
        write_metadata(&mut metadata, &trace).unwrap();
        assert_eq!(trace_uuid(&metadata), Some(uuid));
        // Nothing else passes for one.
        assert_eq!(trace_uuid("/* CTF 1.8 */\ntrace {\n};\n"), None);
        let cut = metadata.replace("uuid = \"01234567", "uuid = \"0123456");
        assert_eq!(trace_uuid(&cut), None);
    }
}
