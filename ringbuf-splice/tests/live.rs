//! Live export: every packet reaches a socket or pipe exactly as the writers
//! committed it, however slow the receiver and wherever it moves the pages;
//! export into files never touches payload bytes and never leaves a partial
//! packet. (Streaming to a relayd, and a receiver that goes away: `relayd.rs`.)

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ringbuf_core::ctf::{PacketInfo, PACKET_HEADER_SIZE};
use ringbuf_core::Switch;
use ringbuf_mmap::ExportError;
use ringbuf_splice::export::Splicer;
use ringbuf_splice::export_loop::{export_all, ExportStats, LoopError, Outputs};
use ringbuf_splice::TraceDir;

mod common;

use common::numbered::{assert_exactly, channel, decode_trace, write, Channel};
use common::{babeltrace_count, temp_dir};

/// Small sub-buffers, so that a test's data fits in a socket's or pipe's buffers
/// while its receiver reads nothing.
const SMALL: u64 = 4096;
/// How long a slow receiver sleeps before each read.
const PAUSE: Duration = Duration::from_micros(200);

fn lost(channel: &Channel) -> u64 {
    channel.stats().iter().map(|s| s.events_discarded()).sum()
}

/// Closes every open packet and sends until nothing is left (writers are done).
fn flush_and_send_all(channel: &Channel, send: &mut impl FnMut() -> u64) {
    while channel.switch_all(Switch::Flush).is_err() {
        send();
    }
    while send() > 0 {}
}

/// The release rule's test, on a channel of one buffer. The writers' first packets
/// are sent (and their sub-buffers released) while the receiver reads nothing; the
/// writers then rewrite every sub-buffer they can; only then does `open` let the
/// receiver read (slowly), while writers and sending go on together. A receiver
/// still holding the first packets' pages would read the writers' new bytes.
/// Returns the numbers committed and how many were written.
fn overwrite_then_stream(
    channel: &Channel,
    mut send: impl FnMut() -> u64,
    open: impl FnOnce(),
) -> (Vec<u64>, u64) {
    // A few packets, less than the buffer holds.
    let mut committed = write(channel, 0..200);
    assert_eq!(committed.len(), 200, "the first packets lose nothing");
    flush_and_send_all(channel, &mut send);
    // Writes until the buffer is full: every sub-buffer but the reader's spare is
    // rewritten, so the first packets' pages hold new bytes now.
    let mut next = 200;
    while write(channel, next..next + 1).len() == 1 {
        committed.push(next);
        next += 1;
        assert!(next < 1_000_000, "a buffer nobody reads fills up");
    }
    next += 1;
    open();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let c = write(channel, next..next + 20_000);
            // Release: pairs with the Acquire below; nothing else is published.
            done.store(true, Ordering::Release);
            c
        });
        while !done.load(Ordering::Acquire) {
            if send() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        committed.extend(writer.join().unwrap());
    });
    flush_and_send_all(channel, &mut send);
    (committed, next + 20_000)
}

/// Checks the received trace at `dir` byte for byte against the events committed,
/// and that the loss counters account for every other one.
fn assert_received(dir: &Path, channel: &Channel, committed: &[u64], written: u64) {
    let streams = decode_trace(dir);
    assert_exactly(&streams, committed);
    let lost = lost(channel);
    assert_eq!(committed.len() as u64 + lost, written, "committed or lost");
    assert_eq!(
        streams.iter().map(|s| s.discarded).sum::<u64>(),
        lost,
        "the last packets count every loss"
    );
    if let Some((events, _)) = babeltrace_count(dir) {
        assert_eq!(events, committed.len() as u64);
    }
}

/// Reads whole packets from `packets` (each says its size and buffer in its
/// header) into a trace at `out`, waiting for `gate` first and sleeping before
/// every read, until the sender closes it; returns how many.
fn receive_slowly(
    mut packets: impl Read + Send + 'static,
    out: PathBuf,
    metadata: String,
    gate: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        let mut trace = TraceDir::with_metadata(&out, &metadata).unwrap();
        // An error means the test is over: read on.
        let _ = gate.recv();
        let mut received = 0;
        loop {
            std::thread::sleep(PAUSE);
            let mut packet = vec![0u8; PACKET_HEADER_SIZE];
            match packets.read_exact(&mut packet) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(received),
                Err(e) => return Err(e.to_string()),
            }
            let info = PacketInfo::parse_header(&packet, SMALL)
                .map_err(|e| format!("packet {received}: {e:?}"))?;
            packet.resize(info.packet_size as usize, 0);
            std::thread::sleep(PAUSE);
            packets
                .read_exact(&mut packet[PACKET_HEADER_SIZE..])
                .map_err(|e| e.to_string())?;
            trace
                .write_packet(info.cpu_id, &packet)
                .map_err(|e| e.to_string())?;
            received += 1;
        }
    })
}

#[test]
fn a_slow_receiver_gets_every_packet_as_the_writers_committed_it() {
    let dir = temp_dir("slow");
    let (channel, consumer) = channel("live", SMALL, 8, 1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (open, gate) = mpsc::channel();
    let out = dir.join("received");
    let receiver = receive_slowly(
        listener.accept().unwrap().0,
        out.clone(),
        consumer.metadata().to_owned(),
        gate,
    );
    let mut splicer = Splicer::new(SMALL as usize).unwrap();
    let mut sent = 0;
    let (committed, written) = overwrite_then_stream(
        &channel,
        || {
            let n = consumer
                .export(0, |p| {
                    let len = p.info.packet_size as usize;
                    splicer.export(consumer.shm(), p.offset, len, socket.as_fd())
                })
                .unwrap() as u64;
            sent += n;
            n
        },
        || open.send(()).unwrap(),
    );
    drop(socket);
    let received = receiver.join().unwrap().expect("receiving");
    assert_eq!(received, sent);
    assert_received(&out, &channel, &committed, written);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_receiver_that_splices_onward_gets_every_packet_as_the_writers_committed_it() {
    let dir = temp_dir("onward");
    let (channel, consumer) = channel("live", SMALL, 8, 1);
    // Packets go into pipe A; a thread splices whatever arrives on into pipe B at
    // once (A is empty again, but the pages live on in B); the receiver reads B.
    let (a_read, a_write) = std::io::pipe().unwrap();
    let (b_read, b_write) = std::io::pipe().unwrap();
    let onward = std::thread::spawn(move || loop {
        // SAFETY: two valid pipe descriptors, null offsets.
        let n = unsafe {
            libc::splice(
                a_read.as_raw_fd(),
                std::ptr::null_mut(),
                b_write.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 16,
                0,
            )
        };
        match n {
            0 => return Ok(()), // A closed: closing B ends the receiver.
            n if n < 0 => return Err(io::Error::last_os_error()),
            _ => {}
        }
    });
    let out = dir.join("received");
    let (open, gate) = mpsc::channel::<()>();
    let receiver = receive_slowly(b_read, out.clone(), consumer.metadata().to_owned(), gate);
    let mut splicer = Splicer::new(SMALL as usize).unwrap();
    let mut sent = 0;
    let (committed, written) = overwrite_then_stream(
        &channel,
        || {
            let n = consumer
                .export(0, |p| {
                    let len = p.info.packet_size as usize;
                    splicer.export(consumer.shm(), p.offset, len, a_write.as_fd())
                })
                .unwrap() as u64;
            sent += n;
            n
        },
        || open.send(()).unwrap(),
    );
    drop(a_write);
    onward.join().unwrap().expect("splicing onward");
    let received = receiver.join().unwrap().expect("receiving");
    assert_eq!(received, sent);
    assert_received(&out, &channel, &committed, written);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_never_touches_payload_bytes() {
    const SUBBUF: u64 = 64 * 1024;
    let dir = temp_dir("zerocopy");
    let (channel, consumer) = channel("live", SUBBUF, 8, ringbuf_mmap::possible_cpus());
    // Less than the buffer holds: nothing is lost, and the flush finds room.
    let committed = write(&channel, 0..5_000);
    assert_eq!(committed.len(), 5_000);
    channel.switch_all(Switch::Flush).unwrap();
    // Make every page of every sub-buffer but the first (which holds the packet
    // header the consumer reads) inaccessible in the consumer's mapping: any user
    // space touch of payload bytes would now fault.
    let base = consumer.shm().as_ptr();
    let physical = 8; // discard mode: N physical sub-buffers
    for cpu in 0..consumer.buffer_count() {
        for phys in 0..physical {
            let offset = consumer.subbuf_offset(cpu, phys).unwrap() as usize;
            // SAFETY: a page-aligned range inside the consumer's own mapping.
            let r = unsafe {
                libc::mprotect(
                    base.add(offset + 4096).cast(),
                    SUBBUF as usize - 4096,
                    libc::PROT_NONE,
                )
            };
            assert_eq!(r, 0);
        }
    }
    let trace_dir = dir.join("trace");
    let trace = TraceDir::with_metadata(&trace_dir, consumer.metadata()).unwrap();
    let mut splicer = Splicer::new(SUBBUF as usize).unwrap();
    let mut stats = ExportStats::default();
    export_all(
        &consumer,
        &mut Outputs::trace(trace),
        &mut splicer,
        &mut stats,
    )
    .unwrap();
    assert!(
        stats.bytes > 4 * SUBBUF,
        "payload pages were exported: {stats:?}"
    );
    assert_received(&trace_dir, &channel, &committed, 5_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Set in the child process of the size-limit test: where it writes its trace.
const SIZE_LIMIT_CHILD: &str = "RINGBUF_TEST_SIZE_LIMIT_DIR";

#[test]
fn an_export_stopped_mid_packet_leaves_only_whole_packets_in_the_file() {
    const NAME: &str = "an_export_stopped_mid_packet_leaves_only_whole_packets_in_the_file";
    if let Some(dir) = std::env::var_os(SIZE_LIMIT_CHILD) {
        return export_under_a_size_limit(Path::new(&dir));
    }
    // A file size limit is per process: the export runs in a child, this test
    // binary running this test alone.
    let dir = temp_dir("size-limit");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
        .env(SIZE_LIMIT_CHILD, &dir)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the exporting child: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let trace = dir.join("trace");
    // Panics at a cut packet.
    let streams = decode_trace(&trace);
    assert_eq!(streams.len(), 1);
    assert_eq!(
        (streams[0].packets, streams[0].len),
        (2, 2 * SMALL),
        "the two packets under the limit, nothing of the third"
    );
    let numbers = &streams[0].numbers;
    assert_eq!(*numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
    if let Some((events, _)) = babeltrace_count(&trace) {
        assert_eq!(events, numbers.len() as u64);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child: exports packets of `SMALL` bytes into a trace at `dir` while files
/// may not grow past two and a half packets, so the third stops mid-packet.
fn export_under_a_size_limit(dir: &Path) {
    let (channel, consumer) = channel("live", SMALL, 8, 1);
    assert_eq!(write(&channel, 0..300).len(), 300, "five packets, no loss");
    channel.switch_all(Switch::Flush).unwrap();
    let trace = TraceDir::with_metadata(&dir.join("trace"), consumer.metadata()).unwrap();
    let mut outputs = Outputs::trace(trace);
    let mut splicer = Splicer::new(SMALL as usize).unwrap();
    let limit = 2 * SMALL + SMALL / 2;
    // SAFETY: plain calls with valid arguments. Ignoring SIGXFSZ makes a write past
    // the limit fail with EFBIG instead of killing the process.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut rl), 0);
        rl.rlim_cur = limit;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rl), 0);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let mut stats = ExportStats::default();
    match export_all(&consumer, &mut outputs, &mut splicer, &mut stats) {
        Err(LoopError::Export(ExportError::Io(e))) => {
            assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}")
        }
        other => panic!("the export went past the limit: {other:?}"),
    }
    assert_eq!(stats.packets, 2);
}
