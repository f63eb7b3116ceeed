//! Live streaming over loopback TCP, a receiver that disconnects, and the proof
//! that export never touches payload bytes.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringbuf_core::ctf::{Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
use ringbuf_core::{Config, Mode, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{Backing, ChannelOptions, PerCpuChannel, PerCpuConsumer};
use ringbuf_splice::export::Splicer;
use ringbuf_splice::session::{export_all, SessionStats};
use ringbuf_splice::stream::{receive, LiveSender};
use ringbuf_splice::TraceDir;

mod common;

use common::{babeltrace_count, temp_dir};

const UUID: [u8; 16] = *b"live-test-stream";
static EVENTS: [EventSchema; 1] = [EventSchema {
    id: 1,
    name: "tick",
    fields: &[
        FieldDef {
            name: "n",
            ty: FieldType::U64,
        },
        FieldDef {
            name: "pad",
            ty: FieldType::Bytes(48),
        },
    ],
}];

type Channel = PerCpuChannel<Ctf, Monotonic>;
type Consumer = PerCpuConsumer<Ctf, Monotonic>;

fn channel(subbuf: u64, count: u64) -> (Channel, Consumer) {
    let mut metadata = String::new();
    let trace = TraceDescription {
        uuid: UUID,
        clock: Monotonic.describe(),
        events: &EVENTS,
        tracer_name: "test",
    };
    ringbuf_core::ctf::write_metadata(&mut metadata, &trace).unwrap();
    let options = ChannelOptions {
        config: Config::new(subbuf, count, Mode::Discard),
        buffers: ringbuf_mmap::possible_cpus(),
        format: 1,
        prefault: false,
    };
    let channel = PerCpuChannel::create(
        Backing::Memfd { name: "live" },
        &options,
        &metadata,
        |c| Ctf::new(UUID, c),
        |_| Monotonic,
    )
    .unwrap();
    let memfd = channel.shm().try_clone_fd().unwrap();
    let wake = channel.wakeup().try_clone_fd().unwrap();
    let consumer =
        PerCpuConsumer::attach_fd(memfd, Some(wake), 1, |c| Ctf::new(UUID, c), |_| Monotonic)
            .unwrap();
    (channel, consumer)
}

/// Writes `n` events; returns how many were committed.
fn write(channel: &Channel, n: u64) -> u64 {
    (0..n)
        .filter(|&i| {
            channel
                .write_event(&EVENTS[0], &[Value::U64(i), Value::Bytes(&[7; 48])])
                .is_ok()
        })
        .count() as u64
}

#[test]
fn packets_stream_live_to_a_receiver_that_writes_a_valid_trace() {
    let dir = temp_dir("stream");
    let (channel, consumer) = channel(16 * 1024, 16);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let out = dir.join("received");
    let receiver = {
        let out = out.clone();
        std::thread::spawn(move || receive(listener.accept().unwrap().0, &out).unwrap())
    };
    let mut sender = LiveSender::new(
        TcpStream::connect(addr).unwrap(),
        consumer.metadata(),
        16 * 1024,
        Duration::from_secs(5),
    )
    .unwrap();
    let done = AtomicBool::new(false);
    let (committed, sent) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let n = write(&channel, 200_000);
            done.store(true, Ordering::Release);
            n
        });
        let mut sent = 0;
        while !done.load(Ordering::Acquire) {
            sent += sender.send_all(&consumer).unwrap();
            consumer.wait(Duration::from_millis(5));
        }
        let committed = writer.join().unwrap();
        while channel.switch_all(Switch::Flush).is_err() {
            sent += sender.send_all(&consumer).unwrap();
        }
        sent += sender.send_all(&consumer).unwrap();
        (committed, sent)
    });
    drop(sender);
    let received = receiver.join().unwrap();
    assert_eq!(received, sent);
    if let Some((events, _)) = babeltrace_count(&out) {
        assert_eq!(events, committed, "every committed event streamed once");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_disconnected_receiver_never_stalls_the_writers() {
    let (channel, consumer) = channel(16 * 1024, 4);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The receiver reads the metadata frame header and hangs up.
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut h = [0u8; 16];
        std::io::Read::read_exact(&mut s, &mut h).unwrap();
    });
    let mut sender = LiveSender::new(
        TcpStream::connect(addr).unwrap(),
        consumer.metadata(),
        16 * 1024,
        Duration::from_secs(2),
    )
    .unwrap();
    receiver.join().unwrap();
    let start = Instant::now();
    let (committed, send_failed) = std::thread::scope(|s| {
        let writer = s.spawn(|| write(&channel, 500_000));
        let mut failed = false;
        while !writer.is_finished() {
            if !failed && sender.send_all(&consumer).is_err() {
                failed = true; // the consumer drops the connection; writers go on
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (writer.join().unwrap(), failed)
    });
    assert!(send_failed, "sending to a closed connection fails");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "writers finished without waiting for anyone"
    );
    let lost: u64 = channel.stats().iter().map(|s| s.events_discarded()).sum();
    assert_eq!(
        committed + lost,
        500_000,
        "every event committed or counted lost"
    );
}

#[test]
fn export_never_touches_payload_bytes() {
    const SUBBUF: u64 = 64 * 1024;
    let dir = temp_dir("zerocopy");
    let (channel, consumer) = channel(SUBBUF, 8);
    // Less than the buffer holds: nothing is lost, and the flush finds room.
    let committed = write(&channel, 5_000);
    assert_eq!(committed, 5_000);
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
    let mut trace = TraceDir::with_metadata(&trace_dir, consumer.metadata()).unwrap();
    let mut splicer = Splicer::new(SUBBUF as usize).unwrap();
    let mut stats = SessionStats::default();
    export_all(&consumer, &mut trace, &mut splicer, &mut stats).unwrap();
    assert!(
        stats.bytes > 4 * SUBBUF,
        "payload pages were exported: {stats:?}"
    );
    if let Some((events, _)) = babeltrace_count(&trace_dir) {
        assert_eq!(events, committed);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
