//! A producer process and a consumer process: every event attempted is read once
//! or counted lost, in both modes, through a file and through a memfd passed over
//! a Unix socket.

use std::collections::HashSet;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringbuf_core::{NoClock, RawPacket, RawRecords, Switch};
use ringbuf_mmap::{recv_fd, PerCpuConsumer};

const PRODUCER: &str = env!("CARGO_BIN_EXE_synthetic_producer");

fn check(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0xdead_beef
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-proc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// What the producer reported at its end.
#[derive(Debug, Default)]
struct Report {
    attempted: u64,
    committed: u64,
    lost: u64,
    overrun_packets: u64,
}

fn report(stdout: &str) -> Report {
    let mut r = Report::default();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["attempted", n] => r.attempted = n.parse().unwrap(),
            ["committed", n] => r.committed = n.parse().unwrap(),
            ["buffer", _, "write", _, rest @ ..] => {
                let v: Vec<u64> = rest
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|x| x.parse().unwrap())
                    .collect();
                r.lost += v[0] + v[1] + v[2] + v[3];
                r.overrun_packets += v[4];
            }
            _ => {}
        }
    }
    r
}

/// Reads every packet of every buffer until the producer exits, then once more.
/// Returns (events by seq, packets read per buffer).
fn consume(
    consumer: &PerCpuConsumer<RawRecords, NoClock>,
    producer: &mut Child,
) -> (HashSet<u64>, u64) {
    let mut seen = HashSet::new();
    let mut packets = 0;
    let mut scratch = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let exited = producer.try_wait().unwrap().is_some();
        for cpu in 0..consumer.buffer_count() {
            packets += consumer
                .drain(cpu, &mut scratch, |bytes| {
                    let packet = RawPacket::parse(bytes).expect("valid packet");
                    for record in packet.records() {
                        let (thread, payload) = record.expect("valid record");
                        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
                        let sum = u64::from_le_bytes(payload[8..16].try_into().unwrap());
                        assert_eq!(sum, check(seq), "corrupt record {seq:#x}");
                        assert_eq!(seq >> 32, thread as u64);
                        assert!(seen.insert(seq), "event {seq:#x} read twice");
                    }
                })
                .unwrap() as u64;
        }
        if exited {
            return (seen, packets);
        }
        assert!(Instant::now() < deadline, "producer did not finish");
        consumer.wait(Duration::from_millis(5));
    }
}

fn run_file(mode: &str) {
    let dir = temp_dir(mode);
    let path = dir.join("chan");
    let mut producer = Command::new(PRODUCER)
        .args([
            &format!("file:{}", path.display()),
            mode,
            "200000",
            "2",
            "--count",
            "16",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let consumer = attach_when_ready(&path);
    let (seen, packets) = consume(&consumer, &mut producer);
    let out = producer.wait_with_output().unwrap();
    assert!(out.status.success());
    let r = report(&String::from_utf8(out.stdout).unwrap());
    account(mode, &r, &seen, packets, &consumer);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn attach_when_ready(path: &Path) -> PerCpuConsumer<RawRecords, NoClock> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PerCpuConsumer::attach_path(path, 0, |_| RawRecords, |_| NoClock) {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot attach: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn account(
    mode: &str,
    r: &Report,
    seen: &HashSet<u64>,
    packets: u64,
    consumer: &PerCpuConsumer<RawRecords, NoClock>,
) {
    assert_eq!(r.attempted, 400_000);
    assert!(seen.len() as u64 <= r.committed);
    // Every attempt is committed or counted lost.
    assert_eq!(r.committed + r.lost, r.attempted, "{r:?}");
    let total_packets: u64 = (0..consumer.buffer_count())
        .map(|cpu| consumer.stats(cpu).unwrap().write / 4096)
        .sum();
    match mode {
        "discard" => {
            // Nothing committed is lost: read once each.
            assert_eq!(seen.len() as u64, r.committed, "{r:?}");
            assert_eq!(r.overrun_packets, 0);
            assert_eq!(packets, total_packets);
        }
        _ => {
            // Each packet read once or overrun once.
            assert_eq!(packets + r.overrun_packets, total_packets, "{r:?}");
        }
    }
    eprintln!(
        "{mode}: {r:?}, read {} events in {packets} packets",
        seen.len()
    );
}

#[test]
fn a_producer_and_a_consumer_process_account_for_every_event_in_discard_mode() {
    run_file("discard");
}

#[test]
fn a_producer_and_a_consumer_process_account_for_every_event_in_overwrite_mode() {
    run_file("overwrite");
}

#[test]
fn a_memfd_and_its_eventfd_pass_over_a_unix_socket() {
    let dir = temp_dir("memfd");
    let socket = dir.join("sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut producer = Command::new(PRODUCER)
        .args([
            &format!("memfd:{}", socket.display()),
            "discard",
            "200000",
            "2",
            "--count",
            "16",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    let memfd = recv_fd(&stream).unwrap();
    let eventfd = recv_fd(&stream).unwrap();
    let consumer =
        PerCpuConsumer::attach_fd(memfd, Some(eventfd), 0, |_| RawRecords, |_| NoClock).unwrap();
    let (seen, packets) = consume(&consumer, &mut producer);
    let out = producer.wait_with_output().unwrap();
    assert!(out.status.success());
    let r = report(&String::from_utf8(out.stdout).unwrap());
    account("discard", &r, &seen, packets, &consumer);
    // The consumer may switch a shared-flavour channel itself (live mode).
    consumer.switch_all(Switch::Active);
    std::fs::remove_dir_all(&dir).unwrap();
}
