//! Streaming to a real, unmodified lttng-relayd (each test starts its own, on
//! loopback ports chosen at run time, and kills it whatever happens): its trace
//! holds exactly the committed events and counts every loss; live viewers
//! (babeltrace2) see events while a recording runs and end when it ends; a relayd
//! that dies, is down or never answers costs the writers nothing and is reported.
//!
//! Without lttng-relayd (or babeltrace2) the tests say so and pass, except under
//! CI (`CI` set), where they fail.

use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringbuf_core::ctf::Ctf;
use ringbuf_core::{Config, Mode, Switch};
use ringbuf_splice::export::Splicer;
use ringbuf_splice::export_loop::{export_all, ExportStats, Outputs};
use ringbuf_splice::relayd::{Relayd, RelaydAddress, RelaydError, RelaydOptions};
use ringbuf_splice::{Session, TraceDir};

mod common;

use common::numbered::{assert_exactly, channel, decode_trace, write, UUID};
use common::{babeltrace_count, babeltrace_counts, temp_dir};

const RINGBUF: &str = env!("CARGO_BIN_EXE_ringbuf");
/// The longest any step may take before the test fails: far beyond what a slow,
/// loaded machine needs, so that only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether `program` runs; outside CI a missing one skips the test (with a
/// message), under CI it fails it.
fn available(program: &str) -> bool {
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => true,
        result if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: {program} is not available ({result:?})");
            false
        }
        result => panic!("{program} is required under CI: {result:?}"),
    }
}

/// A child process killed and reaped when dropped, whatever the test did.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child (reaped only by `Drop` or `finish`).
        unsafe { libc::kill(self.0.id() as libc::pid_t, signal) };
    }

    /// Waits up to [`PATIENCE`] for the child to exit; its output.
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + PATIENCE;
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = std::mem::replace(&mut self.0, dummy());
        let status = child.wait().unwrap();
        let read = |pipe: Option<&mut dyn std::io::Read>| {
            let mut text = Vec::new();
            if let Some(pipe) = pipe {
                pipe.read_to_end(&mut text).unwrap();
            }
            text
        };
        let stdout = read(child.stdout.as_mut().map(|p| p as _));
        let stderr = read(child.stderr.as_mut().map(|p| p as _));
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

/// A process that is already done, left in a finished [`Killed`].
fn dummy() -> Child {
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child
}

/// An lttng-relayd of the test's own: loopback ports chosen at run time, its own
/// output and home directories and health socket; killed when dropped.
struct RelaydProcess {
    process: Killed,
    control: u16,
    data: u16,
    live: u16,
    output: PathBuf,
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RelaydProcess {
    /// Starts one in `dir`; `None` (the test is skipped) when lttng-relayd is
    /// missing outside CI.
    fn start(dir: &Path) -> Option<Self> {
        if !available("lttng-relayd") {
            return None;
        }
        // A port free a moment ago may be taken by the time the relayd binds it:
        // then it exits, and another set of ports is tried.
        for attempt in 0..5 {
            let (control, data, live) = (free_port(), free_port(), free_port());
            let output = dir.join(format!("relayd-{attempt}"));
            let log = std::fs::File::create(dir.join(format!("relayd-{attempt}.log"))).unwrap();
            let tcp = |port: u16| format!("tcp://127.0.0.1:{port}");
            let process = Killed(
                Command::new("lttng-relayd")
                    .args([
                        "-C",
                        &tcp(control),
                        "-D",
                        &tcp(data),
                        "-L",
                        &tcp(live),
                        "-o",
                    ])
                    .arg(&output)
                    .env("LTTNG_HOME", dir)
                    // Its health socket too, not in the system's /var/run/lttng.
                    .env("LTTNG_RELAYD_HEALTH", dir.join(format!("health-{attempt}")))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
            let mut relayd = Self {
                process,
                control,
                data,
                live,
                output,
            };
            let deadline = Instant::now() + PATIENCE;
            loop {
                if relayd.process.0.try_wait().unwrap().is_some() {
                    break; // it could not bind: try other ports
                }
                let listening = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
                if listening(control) && listening(live) {
                    return Some(relayd);
                }
                assert!(Instant::now() < deadline, "lttng-relayd does not listen");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("lttng-relayd could not bind loopback ports in 5 attempts");
    }

    fn url(&self) -> String {
        format!("net://127.0.0.1:{}:{}", self.control, self.data)
    }

    /// Kills it now (SIGKILL) and reaps it.
    fn kill(&mut self) {
        self.process.0.kill().unwrap();
        self.process.0.wait().unwrap();
    }

    /// The trace directories it wrote (each holds a `metadata` file).
    fn traces(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else if entry.file_name() == "metadata" {
                    found.push(dir.to_owned());
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.output, &mut found);
        found
    }

    /// The one trace it wrote.
    fn trace(&self) -> PathBuf {
        let traces = self.traces();
        assert_eq!(traces.len(), 1, "{traces:?}");
        traces.into_iter().next().unwrap()
    }

    /// The live URL of the session named `name`, once the relayd shows it to
    /// viewers with all its streams (one per CPU, and the metadata).
    fn viewer_url(&self, name: &str) -> String {
        let streams = format!(" {} stream(s)", ringbuf_mmap::possible_cpus() + 1);
        let list = format!("net://127.0.0.1:{}", self.live);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = Command::new("babeltrace2")
                .args(["--input-format=lttng-live", &list])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            // "net://127.0.0.1:P/host/H/NAME (timer = 100000, 3 stream(s), ...)"
            let url = text
                .lines()
                .filter(|l| l.contains(&streams))
                .filter_map(|l| l.split_whitespace().next())
                .find(|url| url.ends_with(&format!("/{name}")));
            if let Some(url) = url {
                return url.to_owned();
            }
            assert!(Instant::now() < deadline, "no session {name}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_relayd_trace_holds_exactly_the_committed_events_and_counts_every_loss() {
    let dir = temp_dir("relayd-exact");
    let Some(relayd) = RelaydProcess::start(&dir) else {
        return;
    };
    let (channel, consumer) = channel("relayd", 4096, 4, 2);
    let address: RelaydAddress = relayd.url().parse().unwrap();
    let options = RelaydOptions::new("exact", None);
    let client = Relayd::connect(&address, &options, consumer.metadata(), 2).unwrap();
    assert_eq!(client.minor(), 13, "lttng-relayd 2.13 speaks protocol 2.13");
    let local = dir.join("local");
    let mut outputs = Outputs {
        trace: Some(TraceDir::with_metadata(&local, consumer.metadata()).unwrap()),
        relayd: Some(client),
    };
    let (mut splicer, mut stats) = (Splicer::new(4096).unwrap(), ExportStats::default());
    let mut export = || {
        let before = stats.packets;
        export_all(&consumer, &mut outputs, &mut splicer, &mut stats).unwrap();
        stats.packets - before
    };
    // Each round writes far more than both buffers hold while nobody reads, so
    // events are lost (counted), then the consumer takes everything.
    let (mut committed, mut written) = (Vec::new(), 0);
    for _ in 0..4 {
        committed.extend(write(&channel, written..written + 2_000));
        written += 2_000;
        while export() > 0 {}
    }
    // Every stream ends with a packet carrying its final count.
    while channel.switch_all(Switch::Flush).is_err() {
        export();
    }
    while export() > 0 {}
    let mut client = outputs.relayd.take().unwrap();
    client.finish();
    assert!(client.failure().is_none(), "{:?}", client.failure());
    let sent = client.stats();
    assert_eq!((sent.packets_sent, sent.packets_unsent), (stats.packets, 0));

    let lost: u64 = channel.stats().iter().map(|s| s.events_discarded()).sum();
    assert!(lost > 0, "the rounds overflow the buffers");
    assert_eq!(committed.len() as u64 + lost, written, "committed or lost");
    // The relayd's trace: every byte as committed, every loss counted.
    let trace = relayd.trace();
    let streams = decode_trace(&trace);
    assert_eq!(streams.len(), 2);
    assert_exactly(&streams, &committed);
    assert_eq!(streams.iter().map(|s| s.discarded).sum::<u64>(), lost);
    // The same packets as the local trace, byte for byte.
    for file in ["metadata", "stream_0", "stream_1"] {
        let (got, want) = (trace.join(file), local.join(file));
        assert!(
            std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap(),
            "{} differs from {}",
            got.display(),
            want.display()
        );
    }
    if let Some(read) = babeltrace_counts(&trace) {
        assert_eq!(read.events, committed.len() as u64);
        assert_eq!(read.discarded, lost, "babeltrace2's discarded counts");
        assert_eq!(read.packets, stats.packets);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn classes_appended_while_streaming_reach_the_relayd_before_their_events() {
    use ringbuf_core::ctf::{EventSchema, FieldDef, FieldType, Value};
    static FIELDS: [FieldDef; 1] = [FieldDef {
        name: "n",
        ty: FieldType::U64,
    }];
    let dir = temp_dir("relayd-classes");
    let Some(relayd) = RelaydProcess::start(&dir) else {
        return;
    };
    let (channel, consumer) = channel("relayd", 4096, 4, 1);
    let address: RelaydAddress = relayd.url().parse().unwrap();
    let options = RelaydOptions::new("classes", None);
    let client = Relayd::connect(&address, &options, consumer.metadata(), 1).unwrap();
    let mut outputs = Outputs {
        trace: None,
        relayd: Some(client),
    };
    let (mut splicer, mut stats) = (Splicer::new(4096).unwrap(), ExportStats::default());
    // Ids past those of NUMBERED; each class declared on its own, then used.
    for i in 0..3u32 {
        let schema = EventSchema {
            id: 100 + i,
            name: ["added 0", "added 1", "added 2"][i as usize],
            fields: &FIELDS,
        };
        let declaration = format!(
            "\nevent {{\n    name = \"{}\";\n    id = {};\n    stream_id = 0;\n    \
             fields := struct {{\n        uint64_t n;\n    }};\n}};\n",
            schema.name, schema.id
        );
        ringbuf_mmap::append_metadata(channel.shm(), &declaration).unwrap();
        channel
            .write_event(&schema, &[Value::U64(u64::from(i))])
            .unwrap();
        channel.switch_all(Switch::Active).unwrap();
        export_all(&consumer, &mut outputs, &mut splicer, &mut stats).unwrap();
    }
    assert_eq!(stats.packets, 3);
    let mut client = outputs.relayd.take().unwrap();
    client.finish();
    assert!(client.failure().is_none(), "{:?}", client.failure());
    let trace = relayd.trace();
    let metadata = std::fs::read_to_string(trace.join("metadata")).unwrap();
    assert_eq!(metadata.matches("name = \"added ").count(), 3);
    if let Some(read) = babeltrace_counts(&trace) {
        assert_eq!(read.events, 3);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `attempted A events, committed C, lost L` line of a record summary.
fn counts(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("attempted "))
        .expect(stdout);
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1], n[2])
}

/// The lines of `pipe`, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            if send.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    receive
}

/// `(thread, seq)` of a `ringbuf record` event as babeltrace2 prints it.
fn event_of(line: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        let at = line.find(&format!(" {name} = ")).expect(line) + name.len() + 4;
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect(line)
    };
    (field("thread"), field("seq"))
}

/// `command`, to run on CPU 0 only.
fn on_cpu_0(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, and only makes
    // a system call (async-signal-safe) on memory of its own.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            match libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    }
}

/// `ringbuf record` with these arguments, its output piped.
fn record(args: &[&str]) -> Killed {
    Killed(
        Command::new(RINGBUF)
            .arg("record")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_live_viewer_sees_events_while_a_recording_runs_and_ends_with_it() {
    let dir = temp_dir("relayd-live");
    let Some(relayd) = RelaydProcess::start(&dir) else {
        return;
    };
    if !available("babeltrace2") {
        return;
    }
    let url = relayd.url();
    let args = ["--duration", "600", "--rate", "5000", "--payload", "1"];
    // On CPU 0 only: the other CPUs' streams stay idle, and live viewers would
    // wait on them for ever without the export loop's flushes.
    let recording = Killed(
        on_cpu_0(Command::new(RINGBUF).arg("record").args(args))
            .args(["--relayd", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let session = format!("ringbuf-record-{}", recording.0.id());
    let viewer_url = relayd.viewer_url(&session);
    let mut viewer = Killed(
        Command::new("babeltrace2")
            .args(["--input-format=lttng-live", &viewer_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(viewer.0.stdout.take().unwrap());
    // An event while the recording runs (it would run for ten minutes).
    let first = lines
        .recv_timeout(PATIENCE)
        .expect("no event while recording");
    let mut recording = recording;
    assert!(
        recording.0.try_wait().unwrap().is_none(),
        "the recording still runs"
    );
    // Ctrl-C: the recording's normal end, and the viewer's.
    recording.signal(libc::SIGINT);
    let recorded = recording.finish();
    let stdout = String::from_utf8_lossy(&recorded.stdout);
    assert!(recorded.status.success(), "{stdout}");
    let (attempted, committed, lost) = counts(&stdout);
    assert_eq!((attempted, lost), (committed, 0), "{stdout}");
    let viewed = viewer.finish();
    let stderr = String::from_utf8_lossy(&viewed.stderr);
    assert!(viewed.status.success(), "babeltrace2: {stderr}");
    assert!(!stderr.contains("ERROR"), "babeltrace2: {stderr}");
    let mut seen: Vec<(u64, u64)> = std::iter::once(first)
        .chain(lines.iter())
        .map(|l| event_of(&l))
        .collect();
    // The relayd's trace holds every committed event; the viewer, which began
    // at the packets current when it attached, saw some of them, each once.
    // (Not necessarily the last ones: babeltrace2 2.0 stops reading as soon as
    // the relayd says the session is closed, with packets left for it.)
    let trace = relayd.trace();
    if let Some((events, _)) = babeltrace_count(&trace) {
        assert_eq!(events, committed, "{stdout}");
    }
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), count, "an event seen twice");
    assert!(seen.len() as u64 <= committed);
    let text = Command::new("babeltrace2").arg(&trace).output().unwrap();
    let all: std::collections::BTreeSet<(u64, u64)> = String::from_utf8_lossy(&text.stdout)
        .lines()
        .map(event_of)
        .collect();
    assert!(
        seen.iter().all(|e| all.contains(e)),
        "an event not recorded"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The total size of the `stream_*` files in `dir`.
fn streams_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stream_"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Waits up to [`PATIENCE`] for `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_relayd_killed_mid_recording_costs_the_writers_nothing_and_is_reported() {
    let dir = temp_dir("relayd-kill");
    let Some(mut relayd) = RelaydProcess::start(&dir) else {
        return;
    };
    let local = dir.join("trace");
    let url = relayd.url();
    // At this rate the buffers hold a second and more of events: a consumer
    // stalled by the dead relayd would lose some, a healthy one none.
    let mut recording = record(&[
        "--duration",
        "600",
        "--rate",
        "10000",
        "--relayd",
        &url,
        "--output",
        local.to_str().unwrap(),
    ]);
    let progress = lines_of(recording.0.stderr.take().unwrap());
    wait_for("packets at the relayd", || {
        relayd.traces().iter().any(|t| streams_size(t) > 0)
    });
    relayd.kill();
    // The loss of the stream is said while the recording goes on into its trace.
    let at_kill = streams_size(&local);
    let deadline = Instant::now() + PATIENCE;
    let mut said = Vec::new();
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = progress
            .recv_timeout(wait)
            .unwrap_or_else(|_| panic!("the loss of the relayd is not reported: {said:?}"));
        if line.contains("relayd connection lost") {
            break;
        }
        said.push(line);
    }
    wait_for("the local trace to grow", || streams_size(&local) > at_kill);
    recording.signal(libc::SIGINT);
    let out = recording.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr: String = progress.iter().map(|l| l + "\n").collect();
    // Exit status 1, after the summary: the relayd missed packets.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let (attempted, committed, lost) = counts(&stdout);
    assert_eq!((attempted, lost), (committed, 0), "no event lost: {stdout}");
    let relayd_line = stdout
        .lines()
        .find(|l| l.starts_with("relayd "))
        .expect(&stdout);
    let unsent: u64 = relayd_line
        .split(", ")
        .nth(1)
        .and_then(|s| s.strip_suffix(" not sent"))
        .expect(relayd_line)
        .parse()
        .unwrap();
    assert!(unsent > 0, "{relayd_line}");
    assert!(
        stderr.contains(&format!("missed {unsent} packets"))
            && stderr.contains("holds every packet"),
        "{stderr}"
    );
    if let Some(read) = babeltrace_counts(&local) {
        assert_eq!((read.events, read.discarded), (committed, 0), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn consume_streams_another_process_buffers_to_a_relayd() {
    let dir = temp_dir("relayd-consume");
    let Some(relayd) = RelaydProcess::start(&dir) else {
        return;
    };
    let recording = Killed(
        Command::new(RINGBUF)
            .args([
                "record",
                "--no-export",
                "--duration",
                "1",
                "--rate",
                "20000",
            ])
            .args(["--subbuf-count", "64", "--buffer-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let channel = dir.join(format!("ringbuf-{}", recording.0.id()));
    // A consumer attaches once the producer has finished setting the channel up.
    wait_for("the channel", || {
        let stat = Command::new(RINGBUF)
            .args(["stat", "--path"])
            .arg(&channel)
            .stderr(Stdio::null())
            .output();
        stat.unwrap().status.success()
    });
    let consume = Killed(
        Command::new(RINGBUF)
            .args(["consume", "--path"])
            .arg(&channel)
            .args(["--relayd", &relayd.url()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let recorded = recording.finish();
    let recorded = String::from_utf8_lossy(&recorded.stdout).into_owned();
    let consumed = consume.finish();
    let stdout = String::from_utf8_lossy(&consumed.stdout);
    assert!(
        consumed.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    assert!(stdout.contains(" 0 not sent"), "{stdout}");
    let (_, committed, _) = counts(&recorded);
    if let Some((events, _)) = babeltrace_count(&relayd.trace()) {
        assert_eq!(events, committed, "{recorded}\n{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

ringbuf_splice::event! {
    /// A numbered event of the session test.
    pub struct Tick { n: u64 }
}

#[test]
fn a_session_streams_to_a_relayd_and_its_trace_directory() {
    let dir = temp_dir("relayd-session");
    let Some(relayd) = RelaydProcess::start(&dir) else {
        return;
    };
    let local = dir.join("trace");
    let session = Session::builder()
        .event::<Tick>()
        .output(&local)
        .relayd(&relayd.url())
        .name("session-test")
        .start()
        .unwrap();
    for n in 0..10_000 {
        Tick::emit(n).unwrap();
    }
    let counters = session.finish().unwrap();
    assert_eq!(counters.events_lost(), 0);
    assert_eq!(
        (counters.relayd_packets_sent, counters.relayd_packets_unsent),
        (counters.packets, 0)
    );
    let trace = relayd.trace();
    assert!(
        trace.to_string_lossy().contains("session-test-"),
        "{}",
        trace.display()
    );
    for dir in [trace, local] {
        if let Some((events, _)) = babeltrace_count(&dir) {
            assert_eq!(events, 10_000, "{}", dir.display());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A loopback port that refuses connections: bound, never listening.
struct ClosedPort(libc::c_int, u16);

impl ClosedPort {
    fn new() -> Self {
        // SAFETY: plain socket calls on a socket of our own, with a valid address.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
            let mut len = len;
            assert_eq!(libc::getsockname(fd, (&raw mut addr).cast(), &mut len), 0);
            Self(fd, u16::from_be(addr.sin_port))
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn a_relayd_that_is_down_or_silent_is_a_clear_error_in_bounded_time() {
    let metadata = "/* CTF 1.8 */";
    let options = RelaydOptions {
        timeout: Duration::from_millis(300),
        ..RelaydOptions::new("silent", Some(Duration::from_millis(100)))
    };
    // Nothing listens: refused at once.
    let closed = ClosedPort::new();
    let down: RelaydAddress = format!("net://127.0.0.1:{0}:{0}", closed.1)
        .parse()
        .unwrap();
    match Relayd::connect(&down, &options, metadata, 1) {
        Err(RelaydError::Connect { error, .. }) => {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("{other:?}"),
    }
    // Connections accepted (by the kernel) but never answered: given up after
    // the timeout, not waited on forever.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent: RelaydAddress = format!("net://127.0.0.1:{port}:{port}").parse().unwrap();
    let begin = Instant::now();
    match Relayd::connect(&silent, &options, metadata, 1) {
        Err(e @ RelaydError::Timeout { .. }) => {
            assert!(e.to_string().contains("VERSION"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(begin.elapsed() < PATIENCE);
    // Names a relayd cannot use as directories: refused before connecting.
    for bad in ["", ".hidden", "a/b"] {
        let options = RelaydOptions::new(bad, None);
        match Relayd::connect(&silent, &options, metadata, 1) {
            Err(e @ RelaydError::Name { .. }) => assert!(e.to_string().contains("session name")),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    drop(listener);

    // The CLI: alone, a relayd that is down is an error before anything runs;
    // with a trace directory, the recording goes on into it, and the summary and
    // the exit status say the relayd got nothing.
    let url = down.to_string();
    let out = Command::new(RINGBUF)
        .args(["record", "--duration", "0.2", "--relayd", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("relayd {url}")) && stderr.contains("refused"),
        "{stderr}"
    );
    let dir = temp_dir("relayd-down");
    let local = dir.join("trace");
    let out = Command::new(RINGBUF)
        .args(["record", "--duration", "0.2", "--relayd", &url, "--output"])
        .arg(&local)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("recording into"), "{stderr}");
    assert!(stdout.contains(": 0 packets sent (0.0 MB)"), "{stdout}");
    let (_, committed, lost) = counts(&stdout);
    if let Some(read) = babeltrace_counts(&local) {
        assert_eq!((read.events, read.discarded), (committed, lost), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A clock that parks the thread that armed it, once, at its n-th reading, between
/// reading the time and returning it: the engine reads the clock after loading the
/// reserve position and before its CAS, so the parked writer holds a stale
/// position and a stale time, as a writer preempted there does.
struct ParkingClock {
    now: std::sync::atomic::AtomicU64,
    parked: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

thread_local! {
    /// Clock readings of this thread left before it parks (0: never).
    static PARK_AT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl ParkingClock {
    fn wait_parked(&self) {
        let guard = self.parked.lock().unwrap();
        let (guard, waited) = self
            .cv
            .wait_timeout_while(guard, PATIENCE, |parked| !*parked)
            .unwrap();
        assert!(!waited.timed_out(), "the writer never read the clock");
        drop(guard);
    }

    fn release(&self) {
        *self.parked.lock().unwrap() = false;
        self.cv.notify_all();
    }
}

impl ringbuf_core::Clock for ParkingClock {
    fn now(&self) -> u64 {
        let t = self.now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if PARK_AT.with(|n| n.replace(n.get().saturating_sub(1))) == 1 {
            let mut parked = self.parked.lock().unwrap();
            *parked = true;
            self.cv.notify_all();
            drop(self.cv.wait_while(parked, |parked| *parked).unwrap());
        }
        t
    }
}

/// Why an idle stream gets a header-only packet rather than an lttng "beacon"
/// (an index entry saying the stream is idle up to a time): a consumer that finds
/// nothing to read and sends the current time as a beacon can be overtaken by a
/// writer preempted between its clock read and its reservation, whose event then
/// lands before the beacon's time (babeltrace2's live reader fails on it). A
/// flush moves the reserve position, so that writer's reservation fails and it
/// takes a later time than the packet's end.
#[test]
fn a_beacon_time_can_precede_a_later_event_but_a_flushed_packet_cannot() {
    use ringbuf_core::ctf::PacketInfo;
    use ringbuf_core::{Buffer, Nesting, Region, SharedWord};
    for flush in [false, true] {
        let config = Config::new(4096, 4, Mode::Discard);
        let mut mem = vec![0u64; Region::<SharedWord>::size_for(&config).unwrap() / 8];
        let (ptr, len) = (mem.as_mut_ptr().cast::<u8>(), mem.len() * 8);
        // SAFETY: the vector's own bytes, alive and unaliased while `bytes` is.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let clock = ParkingClock {
            now: Default::default(),
            parked: Default::default(),
            cv: Default::default(),
        };
        let region = Region::init(bytes, config, 0).unwrap();
        let buf = Buffer::new(region, Ctf::new(UUID, 0), clock).unwrap();
        let mut reader = buf.reader().unwrap();
        // An idle buffer: its one packet closed and read.
        let nest = Nesting::new();
        buf.reserve(&nest, 1, 8).unwrap().commit();
        buf.switch(Switch::Active).unwrap();
        let sub = reader.get_next_subbuf().unwrap();
        reader.put_next_subbuf(sub);
        let (event, stream_time) = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                // A reservation that opens a sub-buffer reads the clock on the
                // fast path, finds no open packet, and reads it again on the slow
                // path: its CAS uses the second reading.
                PARK_AT.with(|n| n.set(2));
                let nest = Nesting::new();
                let r = buf.reserve(&nest, 1, 8).unwrap();
                let at = r.timestamp();
                r.commit();
                at
            });
            buf.clock().wait_parked();
            assert!(reader.get_next_subbuf().is_err(), "nothing to read");
            let stream_time = if flush {
                buf.switch(Switch::Flush).unwrap();
                let sub = reader.get_next_subbuf().unwrap();
                let packet = PacketInfo::parse(reader.bytes(&sub).unwrap()).unwrap();
                reader.put_next_subbuf(sub);
                packet.timestamp_end
            } else {
                ringbuf_core::Clock::now(buf.clock()) // what a beacon would carry
            };
            buf.clock().release();
            (writer.join().unwrap(), stream_time)
        });
        if flush {
            assert!(
                event >= stream_time,
                "an event at {event} after the packet that ended the stream at {stream_time}"
            );
        } else {
            assert!(
                event < stream_time,
                "the beacon's time {stream_time} is earlier than the event {event} after it"
            );
        }
    }
}
