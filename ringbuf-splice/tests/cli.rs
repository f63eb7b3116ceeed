//! The `ringbuf` CLI end to end, with real processes and babeltrace2: record,
//! consume from another process, snapshot while writing, flight recorder, recover
//! after SIGKILL, stat, per-thread channels, and what a user trips on: hostile
//! arguments, errors without their path, Ctrl-C, a closed pipe, the end of
//! --duration, leftover files, losses at the default rate and their explanation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{babeltrace_count, babeltrace_counts, temp_dir};

const RINGBUF: &str = env!("CARGO_BIN_EXE_ringbuf");

fn ringbuf(args: &[&str]) -> Output {
    Command::new(RINGBUF).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ringbuf failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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

/// Waits for the channel file of record process `pid` in `dir` (complete once its
/// name exists).
fn channel_of(dir: &Path, pid: u32) -> PathBuf {
    let path = dir.join(format!("ringbuf-{pid}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no channel file");
        std::thread::sleep(Duration::from_millis(5));
    }
    path
}

fn record_in_background(buffers: &Path, args: &[&str]) -> Child {
    Command::new(RINGBUF)
        .args(["record", "--no-export", "--buffer-dir"])
        .arg(buffers)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn record_writes_a_trace_with_every_committed_event() {
    let dir = temp_dir("record");
    for mode in ["discard", "overwrite"] {
        let out = dir.join(mode);
        // Three writers and 5 ms live switches on per-CPU buffers: the configuration
        // in which an unordered TSC read gave a later record an earlier time (a
        // trace babeltrace2 rejects) in 12 runs out of 12 under load.
        let stdout = ok(&ringbuf(&[
            "record",
            "--rate",
            "0",
            "--duration",
            "0.5",
            "--threads",
            "3",
            "--live-ms",
            "5",
            "--payload",
            "24",
            "--mode",
            mode,
            "--output",
            out.to_str().unwrap(),
        ]));
        let (attempted, committed, lost) = counts(&stdout);
        assert_eq!(attempted, committed + lost, "{stdout}");
        assert!(committed > 0);
        assert!(stdout.contains("view the trace: babeltrace2"));
        let Some(read) = babeltrace_counts(&out) else {
            return;
        };
        if mode == "discard" {
            // Every committed event is in the trace, and every lost one is counted
            // in it: the packets' discarded counts add up to the summary's.
            assert_eq!(read.events, committed, "{stdout}");
            assert_eq!(read.discarded, lost, "{stdout}");
        } else {
            let events = read.events;
            assert!(events > 0 && events <= committed, "{events} of {committed}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn consume_exports_another_process_buffers_live() {
    let dir = temp_dir("consume");
    let mut record = record_in_background(&dir, &["--duration", "1", "--subbuf-count", "64"]);
    let channel = channel_of(&dir, record.id());
    let trace = dir.join("trace");
    let consume = Command::new(RINGBUF)
        .args([
            "consume",
            "--path",
            channel.to_str().unwrap(),
            "--output",
            trace.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let recorded = {
        let status = record.wait().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(record.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        assert!(status.success(), "{stdout}");
        stdout
    };
    let output = consume.wait_with_output().unwrap();
    let consumed = ok(&output);
    assert!(consumed.contains("exported"), "{consumed}");
    // Progress lines, not carriage returns, when stderr is not a terminal.
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(progress.contains(" packets, "), "{progress}");
    assert!(!progress.contains('\r'), "{progress:?}");
    let (_, committed, _) = counts(&recorded);
    if let Some((events, _)) = babeltrace_count(&trace) {
        // Discard mode: everything committed is read, from another process.
        assert_eq!(events, committed, "{recorded}\n{consumed}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshot_and_stat_while_another_process_writes() {
    let dir = temp_dir("snapshot");
    let mut record = record_in_background(
        &dir,
        &["--duration", "3", "--mode", "overwrite", "--rate", "200000"],
    );
    let channel = channel_of(&dir, record.id());
    std::thread::sleep(Duration::from_millis(300));
    let stat = ok(&ringbuf(&["stat", "--path", channel.to_str().unwrap()]));
    assert!(
        stat.contains("running") && stat.lines().any(|l| l.trim_start().starts_with("0 ")),
        "{stat}"
    );
    let mut totals = Vec::new();
    for n in 0..2 {
        let out = dir.join(format!("snap{n}"));
        let stdout = ok(&ringbuf(&[
            "snapshot",
            "--path",
            channel.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]));
        assert!(stdout.contains("snapshot:"), "{stdout}");
        if let Some((events, _)) = babeltrace_count(&out) {
            assert!(events > 0, "snapshot {n} is empty");
            totals.push(events);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    record.kill().unwrap();
    record.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `packets: W written = A in ... + B in ...` line of a record summary: `W`
/// and each part as (its number, its words).
fn packet_parts(stdout: &str) -> (u64, Vec<(u64, String)>) {
    let line = stdout.lines().find_map(|l| l.strip_prefix("packets: "));
    let (written, parts) = line.expect(stdout).split_once(" written = ").unwrap();
    let parts = parts
        .split(" + ")
        .map(|part| {
            let (n, words) = part.split_once(' ').unwrap();
            (n.parse().unwrap(), words.to_owned())
        })
        .collect();
    (written.parse().unwrap(), parts)
}

/// The stderr lines of a child, as they come.
fn lines_of(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            if send.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    receive
}

/// Waits for the next line of `lines` that `wanted` accepts, and returns it.
fn next_line(lines: &std::sync::mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).expect("a line");
        if wanted(&line) {
            return line;
        }
    }
}

/// Whether `line` is a progress line of `record` showing events committed.
fn writing(line: &str) -> bool {
    let rate = line
        .split("]")
        .nth(1)
        .and_then(|l| l.split_whitespace().next());
    rate.and_then(|r| r.parse::<f64>().ok())
        .is_some_and(|r| r > 0.0)
}

#[test]
fn a_flight_recorder_snapshots_on_sigusr1_and_accounts_for_every_packet() {
    let dir = temp_dir("flight");
    let out = dir.join("trace");
    let mut child = Command::new(RINGBUF)
        .args([
            "record",
            "--flight-recorder",
            "--duration",
            "60",
            "--output",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let begin = Instant::now();
    let lines = lines_of(child.stderr.take().unwrap());
    // Steps that wait for what they need, not for time: events written, a
    // snapshot of them, more events written (twice a whole progress interval
    // after the snapshot), then Ctrl-C.
    let signal = |signal| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    };
    next_line(&lines, writing);
    signal(libc::SIGUSR1);
    let snap = PathBuf::from(format!("{}-snapshot-1", out.display()));
    let said = format!("snapshot {}: ", snap.display());
    let snapped: u64 = next_line(&lines, |l| l.starts_with(&said))
        .strip_prefix(&said)
        .and_then(|l| l.strip_suffix(" packets")?.parse().ok())
        .unwrap();
    next_line(&lines, writing);
    next_line(&lines, writing);
    signal(libc::SIGINT);
    let stdout = ok(&child.wait_with_output().unwrap());
    assert!(begin.elapsed() < Duration::from_secs(60), "not stopped");
    // Every packet written is in the final snapshot, in the SIGUSR1 one, or was
    // overwritten (the summary said "lost 0" next to overrun packets, and
    // "packets 355" next to "exported 17 packets").
    let (written, parts) = packet_parts(&stdout);
    assert_eq!(written, parts.iter().map(|p| p.0).sum::<u64>(), "{stdout}");
    let part = |words: &str| {
        let found = parts.iter().find(|p| p.1.starts_with(words));
        found.map_or(0, |p| p.0)
    };
    assert_eq!(part("in 1 SIGUSR1 snapshots"), snapped, "{stdout}");
    let final_packets = part("in the final snapshot");
    let overwritten_column: u64 = stdout
        .lines()
        .skip_while(|l| !l.starts_with("cpu "))
        .skip(1)
        .map_while(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    assert_eq!(part("overwritten"), overwritten_column, "{stdout}");
    assert!(
        stdout.contains("written after the last SIGUSR1 snapshot"),
        "{stdout}"
    );
    if let (Some(mid), Some(end)) = (babeltrace_counts(&snap), babeltrace_counts(&out)) {
        assert_eq!((mid.packets, end.packets), (snapped, final_packets));
        assert!(mid.events > 0 && end.events > 0, "{mid:?} {end:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recover_turns_a_killed_recorders_buffers_into_a_trace() {
    let dir = temp_dir("recover");
    let mut record = record_in_background(&dir, &["--duration", "30", "--rate", "300000"]);
    let channel = channel_of(&dir, record.id());
    std::thread::sleep(Duration::from_millis(400));
    record.kill().unwrap(); // SIGKILL
    record.wait().unwrap();
    let trace = dir.join("trace");
    let stdout = ok(&ringbuf(&[
        "recover",
        "--path",
        channel.to_str().unwrap(),
        "--output",
        trace.to_str().unwrap(),
    ]));
    assert!(stdout.contains("recovered"), "{stdout}");
    if let Some((events, _)) = babeltrace_count(&trace) {
        assert!(events > 0, "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_clear_errors_and_help_documents_every_flag() {
    // The trace goes only where asked (it was ./ringbuf-trace-PID, hundreds of MB).
    let out = ringbuf(&["record"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--output DIR is required"), "{stderr}");
    let out = ringbuf(&["record", "--threads", "many"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads: invalid value \"many\""));
    let out = ringbuf(&["record", "--subbuf-size", "1000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a power of two"));
    let out = ringbuf(&["record", "--mode", "sideways"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mode must be discard or overwrite"));
    let out = ringbuf(&["consume"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--path is required"));
    let out = ringbuf(&[
        "recover",
        "--path",
        "/nonexistent/x",
        "--output",
        "/tmp/never",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = ringbuf(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let help = ok(&ringbuf(&["--help"]));
    for command in ["record", "consume", "snapshot", "recover", "stat"] {
        assert!(help.contains(command));
        let sub = ok(&ringbuf(&[command, "--help"]));
        assert!(
            sub.contains("--path") || sub.contains("--threads"),
            "{command}: {sub}"
        );
    }
    let record_help = ok(&ringbuf(&["record", "--help"]));
    for flag in [
        "--threads",
        "--rate",
        "--duration",
        "--payload",
        "--mode",
        "--subbuf-size",
        "--subbuf-count",
        "--output",
        "--relayd",
        "--buffer-dir",
        "--live-ms",
        "--flight-recorder",
        "--no-export",
        "--keep-buffers",
    ] {
        assert!(record_help.contains(flag), "record --help lacks {flag}");
    }
}

#[test]
fn record_paces_writers_at_the_requested_rate() {
    let dir = temp_dir("rate");
    let out = dir.join("trace");
    let stdout = ok(&ringbuf(&[
        "record",
        "--threads",
        "1",
        "--rate",
        "20000",
        "--duration",
        "0.5",
        "--output",
        out.to_str().unwrap(),
    ]));
    let (attempted, committed, _) = counts(&stdout);
    // 10,000 expected; sleeping may only make it fewer, never more.
    assert!((5_000..=12_000).contains(&attempted), "{stdout}");
    assert_eq!(attempted, committed, "a slow rate loses nothing");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A per-thread channel file (local flavour) of the CLI's record format, written
/// by the calling thread.
mod per_thread {
    use std::path::Path;

    use ringbuf_core::ctf::{Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
    use ringbuf_core::{Config, Mode, Switch};
    use ringbuf_mmap::clock::Monotonic;
    use ringbuf_mmap::{Backing, ChannelOptions, PerThreadChannel, ThreadWriter};

    /// The format tag of the CLI's channels (`CTF_FORMAT` in the CLI).
    const CTF_FORMAT: u32 = 1;
    const UUID: [u8; 16] = *b"per-thread-test!";
    static EVENTS: [EventSchema; 1] = [EventSchema {
        id: 1,
        name: "tick",
        fields: &[FieldDef {
            name: "n",
            ty: FieldType::U64,
        }],
    }];

    pub type Channel = PerThreadChannel<Ctf, Monotonic>;

    /// Creates `dir/name`: two thread slots of 4 x 4 KiB, discard mode.
    pub fn create(dir: &Path, name: &str) -> Channel {
        let mut metadata = String::new();
        let trace = TraceDescription {
            uuid: UUID,
            clock: Monotonic.describe(),
            events: &EVENTS,
            tracer_name: "per-thread test",
            env: &[],
            event_context: &[],
        };
        ringbuf_core::ctf::write_metadata(&mut metadata, &trace).unwrap();
        let options = ChannelOptions {
            config: Config::new(4096, 4, Mode::Discard),
            buffers: 2,
            format: CTF_FORMAT,
            prefault: false,
            clock: trace.clock,
        };
        PerThreadChannel::create(
            Backing::File { dir, name },
            &options,
            &metadata,
            |slot| Ctf::new(UUID, slot),
            |_| Monotonic,
        )
        .unwrap()
    }

    /// Writes `n` events into the thread's open packet.
    pub fn write(writer: &ThreadWriter<'_, Ctf, Monotonic>, n: u64) {
        for i in 0..n {
            writer.write_event(&EVENTS[0], &[Value::U64(i)]).unwrap();
        }
    }

    /// Closes the thread's open packet (only the owning thread may).
    pub fn close(writer: &ThreadWriter<'_, Ctf, Monotonic>) {
        writer.switch(Switch::Active).unwrap();
    }
}

#[test]
fn stat_snapshot_and_consume_read_a_per_thread_channel() {
    let dir = temp_dir("per-thread");
    let channel = per_thread::create(&dir, "threads");
    let path = dir.join("threads");
    let path = path.to_str().unwrap();
    let writer = channel.writer().unwrap();
    per_thread::write(&writer, 100);
    per_thread::close(&writer);

    let stat = ok(&ringbuf(&["stat", "--path", path]));
    assert!(stat.contains("per-thread channel"), "{stat}");
    let row = |slot: &str| -> Vec<String> {
        let line = stat.lines().find(|l| l.trim_start().starts_with(slot));
        line.expect(&stat)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Slot 0: one packet written, none read; slot 1 unused.
    assert_eq!(row("0 ")[..5], ["0", "1", "pk", "0", "pk"], "{stat}");
    assert_eq!(row("1 ")[..5], ["1", "0", "pk", "0", "pk"], "{stat}");

    let snap = dir.join("snap");
    ok(&ringbuf(&[
        "snapshot",
        "--path",
        path,
        "--output",
        snap.to_str().unwrap(),
    ]));
    if let Some((events, _)) = babeltrace_count(&snap) {
        assert_eq!(events, 100, "the snapshot holds the closed packet");
    }

    // 50 events in a closed packet, then 7 in the open one: a consumer never
    // closes a per-thread packet (it would write to the buffer), so it exports
    // exactly the 50.
    per_thread::write(&writer, 50);
    per_thread::close(&writer);
    per_thread::write(&writer, 7);
    let trace = dir.join("trace");
    let out = ok(&ringbuf(&[
        "consume",
        "--path",
        path,
        "--output",
        trace.to_str().unwrap(),
        "--duration",
        "0.3",
    ]));
    assert!(out.contains("exported 1 packets"), "{out}");
    if let Some((events, _)) = babeltrace_count(&trace) {
        assert_eq!(events, 50, "the closed packet, not the open one");
    }
    // The open packet was left alone: its owner closes it and it is readable.
    per_thread::close(&writer);
    let last = dir.join("last");
    ok(&ringbuf(&[
        "snapshot",
        "--path",
        path,
        "--output",
        last.to_str().unwrap(),
    ]));
    if let Some((events, _)) = babeltrace_count(&last) {
        assert_eq!(events, 7);
    }
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs ringbuf with its stdout a pipe nobody reads any more (`ringbuf ... |
/// head -1` once head has exited).
fn ringbuf_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(RINGBUF)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_the_output_not_the_command() {
    let dir = temp_dir("pipe");
    let channel = per_thread::create(&dir, "threads");
    let trace = dir.join("trace");
    for args in [
        vec!["--help"],
        vec!["record", "--help"],
        vec!["stat", "--path", dir.join("threads").to_str().unwrap()],
        vec![
            "record",
            "--duration",
            "0.2",
            "--output",
            trace.to_str().unwrap(),
        ],
    ] {
        let out = ringbuf_into_closed_pipe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Quietly, and failing: the output was cut.
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The recording itself completed.
    if let Some((events, _)) = babeltrace_count(&trace) {
        assert!(events > 0);
    }
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `ringbuf record ARGS --output DIR/trace` and returns its stdout and how
/// long it took.
fn timed_record(dir: &Path, args: &[&str]) -> (String, Duration) {
    let begin = Instant::now();
    let out = Command::new(RINGBUF)
        .arg("record")
        .args(args)
        .arg("--output")
        .arg(dir.join("trace"))
        .output()
        .unwrap();
    let took = begin.elapsed();
    let stdout = ok(&out);
    std::fs::remove_dir_all(dir.join("trace")).unwrap();
    (stdout, took)
}

#[test]
fn record_ends_on_time_however_slow_or_many_the_writers() {
    let dir = temp_dir("on-time");
    // One event every 10 ms: the writers' stop check must not wait for the next
    // batch of events (it took 10 s).
    let (stdout, took) = timed_record(&dir, &["--rate", "100", "--duration", "0.5"]);
    assert!(took < Duration::from_secs(5), "{took:?}\n{stdout}");
    let (attempted, _, _) = counts(&stdout);
    assert!((1..=2 * 51).contains(&attempted), "{stdout}");
    // A thousand writers at full speed on a few cores: neither spawning them nor
    // stopping them may wait for each to run a time slice (it took 18 s).
    let (stdout, took) = timed_record(
        &dir,
        &["--rate", "0", "--threads", "1000", "--duration", "0.2"],
    );
    assert!(took < Duration::from_secs(5), "{took:?}\n{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_arguments_are_errors_that_name_the_value() {
    let error = |args: &[&str]| {
        let out = ringbuf(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        stderr
    };
    for bad in ["1e30", "0", "-1", "nan", "inf"] {
        let stderr = error(&["record", "--duration", bad]);
        assert!(
            stderr.contains(&format!("--duration: invalid value {bad:?}")),
            "{stderr}"
        );
        let stderr = error(&["consume", "--path", "x", "--output", "y", "--duration", bad]);
        assert!(stderr.contains("--duration: invalid value"), "{stderr}");
    }
    for bad in ["0", "100000"] {
        let stderr = error(&["record", "--threads", bad]);
        assert!(
            stderr.contains(&format!("--threads {bad}: between 1 and")),
            "{stderr}"
        );
    }
    // 4 PiB per CPU: refused with the total before anything is allocated (the
    // buffers are prefaulted: 4G sub-buffers ran the machine out of memory).
    let stderr = error(&["record", "--subbuf-size", "4G", "--subbuf-count", "1048576"]);
    assert!(
        stderr.contains("CPUs x 1048576 sub-buffers of 4.0 GiB")
            && stderr.contains("PiB")
            && stderr.contains("available memory"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_ends_a_recording_through_its_normal_end() {
    let dir = temp_dir("sigint");
    let trace = dir.join("trace");
    let child = Command::new(RINGBUF)
        .args(["record", "--duration", "60", "--rate", "20000", "--output"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let begin = Instant::now();
    // Recording for real: the exporter wrote packets.
    let deadline = begin + Duration::from_secs(30);
    let exported = || {
        let entries = std::fs::read_dir(&trace).into_iter().flatten().flatten();
        let stream = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().starts_with("stream_");
        entries
            .filter(stream)
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
    };
    while !exported() {
        assert!(Instant::now() < deadline, "no packet exported");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let stdout = ok(&child.wait_with_output().unwrap());
    assert!(begin.elapsed() < Duration::from_secs(30), "not stopped");
    let (attempted, committed, lost) = counts(&stdout);
    assert_eq!(attempted, committed + lost, "{stdout}");
    assert!(committed > 0, "{stdout}");
    if let Some(read) = babeltrace_counts(&trace) {
        // Flushed and exported whole: every committed event, every loss counted.
        assert_eq!(read.events, committed, "{stdout}");
        assert_eq!(read.discarded, lost, "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_error_names_its_path() {
    let dir = temp_dir("paths");
    let existing = dir.to_str().unwrap();
    let channel = per_thread::create(&dir, "threads");
    let file = dir.join("threads");
    let file = file.to_str().unwrap();
    let missing = dir.join("missing/x");
    let missing = missing.to_str().unwrap();
    let fresh = dir.join("fresh");
    let fresh = fresh.to_str().unwrap();
    let not_a_channel = dir.join("not-a-channel");
    std::fs::write(&not_a_channel, vec![7u8; 8192]).unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&not_a_channel, owner_only).unwrap();
    let not_a_channel = not_a_channel.to_str().unwrap();
    for (args, says) in [
        // Output directories that exist (they said "trace I/O: File exists" or
        // "reading the channel: File exists").
        (
            vec!["record", "--output", existing],
            format!("--output {existing}: already exists"),
        ),
        (
            vec!["consume", "--path", file, "--output", existing],
            format!("--output {existing}: already exists"),
        ),
        (
            vec!["snapshot", "--path", file, "--output", existing],
            format!("--output {existing}: already exists"),
        ),
        (
            vec!["recover", "--path", file, "--output", existing],
            format!("--output {existing}: already exists"),
        ),
        // A directory as a channel ("file too short").
        (
            vec!["recover", "--path", existing, "--output", fresh],
            format!("--path {existing}: a directory, not a file"),
        ),
        (
            vec!["stat", "--path", existing],
            format!("--path {existing}: a directory, not a file"),
        ),
        // Missing files and directories ("No such file or directory").
        (
            vec!["stat", "--path", missing],
            format!("--path {missing}: No such file"),
        ),
        (
            vec!["record", "--buffer-dir", missing, "--output", fresh],
            format!("--buffer-dir {missing}: No such file"),
        ),
        (
            vec!["record", "--buffer-dir", file, "--output", fresh],
            format!("--buffer-dir {file}: not a directory"),
        ),
        // A file that is not a channel: what was being done, and to which file.
        (
            vec!["snapshot", "--path", not_a_channel, "--output", fresh],
            format!("attaching to the channel {not_a_channel}: not a ringbuf channel"),
        ),
        (
            vec!["recover", "--path", not_a_channel, "--output", fresh],
            format!("recovering into {fresh}: {not_a_channel}: not a ringbuf channel"),
        ),
    ] {
        let out = ringbuf(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
        assert!(!Path::new(fresh).exists(), "{args:?} created {fresh}");
    }
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_clean_end_removes_the_buffer_files_unless_another_process_reads_them() {
    let dir = temp_dir("buffer-files");
    let buffers = dir.join("buffers");
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&buffers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    std::fs::create_dir(&buffers).unwrap();
    for (n, flags, kept) in [
        (0, &[][..], false),
        (1, &["--no-export"][..], true),
        (2, &["--keep-buffers"][..], true),
    ] {
        let trace = dir.join(format!("trace{n}"));
        let output = match flags {
            ["--no-export"] => vec![],
            _ => vec!["--output", trace.to_str().unwrap()],
        };
        let out = Command::new(RINGBUF)
            .args(["record", "--duration", "0.1", "--buffer-dir"])
            .arg(&buffers)
            .args(output)
            .args(flags)
            .output()
            .unwrap();
        let stdout = ok(&out);
        let pid = stdout
            .lines()
            .find_map(|l| l.strip_prefix("buffers kept in "))
            .map(|path| path.rsplit('-').next().unwrap().to_owned());
        match (kept, pid) {
            (true, Some(pid)) => {
                let channel = format!("ringbuf-{pid}");
                assert_eq!(files(), [format!(".{channel}.wake"), channel], "{stdout}");
            }
            (false, None) => assert!(files().is_empty(), "{:?}", files()),
            (_, pid) => panic!("{flags:?}: kept {pid:?}\n{stdout}"),
        }
        for file in files() {
            std::fs::remove_file(buffers.join(file)).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_default_run_loses_nothing_and_the_summary_explains_every_loss() {
    let dir = temp_dir("default");
    // The README's main job, shorter: the default rate is one two cores export
    // without loss (full speed lost two thirds of the events).
    let trace = dir.join("trace");
    let stdout = ok(&ringbuf(&[
        "record",
        "--duration",
        "0.5",
        "--output",
        trace.to_str().unwrap(),
    ]));
    let (attempted, committed, lost) = counts(&stdout);
    assert!(
        attempted > 0 && committed == attempted && lost == 0,
        "{stdout}"
    );
    assert!(stdout.contains("no event lost"), "{stdout}");
    // Paced at the documented default, 100,000 events/s for each of 2 threads.
    assert!(attempted <= 2 * 50_000, "{stdout}");
    if let Some(read) = babeltrace_counts(&trace) {
        assert_eq!((read.events, read.discarded), (committed, 0), "{stdout}");
    }
    // Nobody reads a buffer of two 4 KiB sub-buffers: events are dropped as
    // lost_full, and the summary says what that means (and nothing about the
    // counters that stayed at zero).
    let stdout = ok(&ringbuf(&[
        "record",
        "--no-export",
        "--threads",
        "1",
        "--rate",
        "0",
        "--subbuf-size",
        "4K",
        "--subbuf-count",
        "2",
        "--duration",
        "0.2",
    ]));
    let (_, _, lost) = counts(&stdout);
    assert!(
        stdout.contains(&format!(
            "  lost_full {lost}: events dropped because the buffer was full"
        )),
        "{stdout}"
    );
    let explained = |counter: &str| stdout.lines().any(|l| l.starts_with(counter));
    assert!(
        !explained("  lost_big") && !explained("no event lost"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_channel_with_a_corrupted_metadata_length_is_refused_by_every_reader() {
    use std::os::unix::fs::FileExt;
    let dir = temp_dir("bad-metadata");
    let mut record = record_in_background(&dir, &["--duration", "0.2", "--rate", "1000"]);
    let channel = channel_of(&dir, record.id());
    assert!(record.wait().unwrap().success());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&channel)
        .unwrap();
    let at = std::mem::offset_of!(ringbuf_mmap::ChannelHeader, metadata_len) as u64;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, at).unwrap();
    // Shorter, within the same page: the layout still matches, only the text tells.
    let cut = u64::from_ne_bytes(len) - 7;
    file.write_all_at(&cut.to_ne_bytes(), at).unwrap();
    let path = channel.to_str().unwrap();
    for (i, command) in ["stat", "snapshot", "consume", "recover"]
        .iter()
        .enumerate()
    {
        let out = dir.join(format!("out-{i}"));
        let mut args = vec![*command, "--path", path];
        if *command != "stat" {
            args.extend(["--output", out.to_str().unwrap()]);
        }
        let result = ringbuf(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("metadata"), "{command}: {stderr}");
        assert!(stderr.contains(path), "{command}: {stderr}");
        assert!(!out.exists(), "{command} wrote {}", out.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
