//! Crash recovery: a producer process killed with SIGKILL at random moments; each
//! time, the recovered trace is valid (babeltrace2 reads it without error) and
//! contains every event the producer had logged as committed before the kill.
//!
//! The moment is random in events, not in time: the producer writes until killed,
//! and the kill comes once it has logged a random number of committed events, so
//! that every kill lands mid-run (with the buffer filling or full) whatever the
//! speed of the machine or the build profile. The number may be more than the
//! buffers the writers ran on can hold (with every thread on one CPU, one buffer);
//! then the kill comes when the producer reports its first lost event instead.
//!
//! `RINGBUF_KILLS` sets the number of kills (default 50).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ringbuf_mmap::recover_to_dir;

const PRODUCER: &str = env!("CARGO_BIN_EXE_synthetic_producer");
/// Bytes of the smallest synthetic event (compact header and two u64 fields).
const MIN_EVENT: u64 = 4 + 16;
/// The producer's sub-buffers: 16 of 8 KiB per CPU. Their payload (8 KiB less the
/// 76-byte packet header) is no multiple of the event size, so a full buffer's last
/// packet stays open (partial at a kill) instead of closing on an exact fit.
const SUBBUFS: u64 = 16;
const SUBBUF: u64 = 8192;

fn check(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0xdead_beef
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The (seq, check) of every event babeltrace2 decodes; `None` if it is missing
/// (allowed outside CI).
fn decoded(trace: &std::path::Path) -> Option<Vec<(u64, u64)>> {
    let out = match Command::new("babeltrace2").arg(trace).output() {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED babeltrace2 check: {e}");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("ERROR"),
        "babeltrace2: {stderr}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            // Discarded reservations are padding events.
            .filter(|line| !line.contains("ringbuf_padding"))
            .map(|line| {
                let fields = line.split_once("{ seq = ").expect(line).1;
                let (seq, rest) = fields.split_once(", check = ").expect(line);
                let check = rest.trim_end_matches(" }");
                (seq.parse().expect(line), check.parse().expect(line))
            })
            .collect(),
    )
}

#[test]
fn a_killed_producer_leaves_a_recoverable_trace_with_every_committed_event() {
    kill_and_recover(false);
}

/// On the rseq path (where the machine has it) nothing is cut: everything behind
/// `write` is committed, so every event logged before the kill is recovered, the
/// open packet whole.
#[test]
fn a_killed_rseq_producer_leaves_every_committed_event_recoverable() {
    kill_and_recover(true);
}

/// Kills a producer (on the rseq path if `rseq` and the machine has it) again and
/// again, each time once it has logged a random number of committed events, and
/// checks what recovery gives back.
fn kill_and_recover(rseq: bool) {
    let kills: u64 = std::env::var("RINGBUF_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let root = std::env::temp_dir().join(format!("ringbuf-crash-{}-{rseq}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let (mut with_events, mut partial_packets, mut events_checked, mut events_cut) = (0, 0, 0, 0);
    for kill in 0..kills {
        let dir = root.join(kill.to_string());
        std::fs::create_dir(&dir).unwrap();
        let channel = dir.join("chan");
        let mut producer = Command::new(PRODUCER)
            .args([&format!("file:{}", channel.display()), "discard", "0", "2"])
            .args(["--ctf", "--log", "--count", &SUBBUFS.to_string()])
            .args(["--subbuf", &SUBBUF.to_string()])
            .args(rseq.then_some("--rseq"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Kill after this many logged events, or once a buffer is full: up to a
        // little more than one CPU's buffer holds, so some kills land while it fills
        // and some once it is full.
        let kill_after = 1 + xorshift(&mut rng) % (SUBBUFS * SUBBUF / MIN_EVENT * 5 / 4);
        let stdout = producer.stdout.take().unwrap();
        let (reached, wait_reached) = mpsc::channel();
        let log = std::thread::spawn(move || {
            // Whole lines only: a line cut by the kill was not logged. Reading goes
            // on after the signal, so the producer never blocks on a full pipe.
            let (mut logged, mut sequences) = (HashSet::new(), false);
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                sequences |= line == b"writers rseq";
                if line == b"full" {
                    let _ = reached.send(());
                }
                let seq = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| l.strip_prefix("seq "))
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(seq) = seq {
                    logged.insert(seq);
                    if logged.len() as u64 == kill_after {
                        let _ = reached.send(());
                    }
                }
            }
            (logged, sequences)
        });
        wait_reached
            .recv_timeout(Duration::from_secs(60))
            .expect("the producer logs events until killed");
        producer.kill().unwrap();
        producer.wait().unwrap();
        let (logged, sequences) = log.join().unwrap();
        assert!(rseq || !sequences, "kill {kill}: rseq writers unasked");

        let trace = dir.join("trace");
        match recover_to_dir(&channel, &trace) {
            Ok(report) => {
                assert_eq!(report.rejected, 0, "kill {kill}: {report:?}");
                partial_packets += report.partial;
                with_events += !logged.is_empty() as u32;
                let Some(events) = decoded(&trace) else {
                    continue;
                };
                let seqs: HashSet<u64> = events.iter().map(|e| e.0).collect();
                assert_eq!(seqs.len(), events.len(), "kill {kill}: an event twice");
                for (seq, sum) in &events {
                    assert_eq!(*sum, check(*seq), "kill {kill}: corrupt event {seq:#x}");
                }
                let missing: Vec<_> = logged.difference(&seqs).collect();
                // Every committed event is recovered, except those committed behind a
                // reservation still open at the kill, in the same packet (the
                // committed-prefix rule): each takes at least 20 of the bytes cut.
                assert!(
                    missing.len() as u64 * MIN_EVENT <= report.committed_bytes_cut,
                    "kill {kill}: {} committed events missing, only {} bytes cut ({report:?})",
                    missing.len(),
                    report.committed_bytes_cut
                );
                if sequences {
                    assert_eq!(report.committed_bytes_cut, 0, "kill {kill}: {report:?}");
                    assert!(missing.is_empty(), "kill {kill}: {missing:?} missing");
                }
                events_checked += logged.len();
                events_cut += missing.len();
            }
            Err(e) => panic!("kill {kill}: recovery failed: {e}"),
        }
    }
    eprintln!(
        "{kills} kills: {with_events} with committed events, {events_checked} committed events checked, \
         {events_cut} of them behind a reservation open at the kill, {partial_packets} partial packets recovered"
    );
    assert_eq!(with_events as u64, kills, "every kill lands mid-run");
    // Every kill leaves at least the open packet partial, unless it landed in the
    // few instructions between closing one packet and committing into the next.
    assert!(
        partial_packets as u64 >= kills / 2,
        "{partial_packets} partial packets in {kills} kills"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// The open packet of a dead producer is closed with a time no earlier than its
/// last committed event, whatever the writers' `last_timestamp` word says: it may
/// be stale (a writer preempted between its reservation and its store of the word
/// stores an older time after later events) or, before discarding became padding,
/// zeroed by a discarded reservation. Either way babeltrace2 refused the trace.
#[test]
fn the_open_packet_is_stamped_from_what_was_committed() {
    use ringbuf_core::ctf::{self, Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
    use ringbuf_core::{Config, Control, Mode, Nesting};
    use ringbuf_mmap::clock::Monotonic;
    use ringbuf_mmap::{Backing, ChannelOptions, PerCpuChannel};
    use std::sync::atomic::Ordering::Relaxed;

    static EVENT: [EventSchema; 1] = [EventSchema {
        id: 1,
        name: "synthetic",
        fields: &[
            FieldDef {
                name: "seq",
                ty: FieldType::U64,
            },
            FieldDef {
                name: "check",
                ty: FieldType::U64,
            },
        ],
    }];
    let root = std::env::temp_dir().join(format!("ringbuf-stamp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    for case in ["a discarded reservation", "a late last_timestamp store"] {
        let dir = root.join(case.replace(' ', "-"));
        std::fs::create_dir(&dir).unwrap();
        let mut metadata = String::new();
        let trace = TraceDescription {
            uuid: *b"stamp-test-uuid!",
            clock: Monotonic.describe(),
            events: &EVENT,
            tracer_name: "test",
            env: &[],
            event_context: &[],
        };
        ctf::write_metadata(&mut metadata, &trace).unwrap();
        let options = ChannelOptions {
            config: Config::new(4096, 4, Mode::Discard),
            buffers: 1,
            format: 1,
            prefault: false,
            clock: trace.clock,
        };
        let channel = PerCpuChannel::create(
            Backing::File {
                dir: &dir,
                name: "chan",
            },
            &options,
            &metadata,
            |cpu| Ctf::new(*b"stamp-test-uuid!", cpu),
            |_| Monotonic,
        )
        .unwrap();
        let buffer = &channel.buffers()[0];
        let nest = Nesting::new();
        let event = |seq: u64| {
            ctf::write_event(
                buffer,
                &nest,
                &EVENT[0],
                &[Value::U64(seq), Value::U64(check(seq))],
            )
            .unwrap()
        };
        (0..10).for_each(event);
        let first_time = buffer.control().writer().last_timestamp.load(Relaxed);
        (10..20).for_each(event);
        if case == "a discarded reservation" {
            buffer.reserve(&nest, 1, 16).unwrap().discard();
        } else {
            buffer
                .control()
                .writer()
                .last_timestamp
                .store(first_time, Relaxed);
        }
        // The producer "dies" here: recovery reads the file as it is.
        let out = dir.join("trace");
        let report = recover_to_dir(&dir.join("chan"), &out).unwrap();
        assert_eq!(
            (report.complete, report.partial),
            (0, 1),
            "{case}: {report:?}"
        );
        let Some(events) = decoded(&out) else {
            continue;
        };
        let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "{case}");
        drop(channel);
    }
    std::fs::remove_dir_all(&root).unwrap();
}
