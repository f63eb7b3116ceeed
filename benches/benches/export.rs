//! Export bandwidth: full packets moved from a channel's memfd into a tmpfs file
//! with splice (zero user-space copies), next to a consumer that copies each packet
//! out and writes it, and a plain `write()` of the same bytes from user memory, in
//! the same run; then into a loopback TCP socket drained by a receiver thread
//! (`Splicer::export` copies from the mapping with `send`), next to a plain `send()`
//! of the same bytes from user memory and, for reference, a splice into the socket
//! (what the export did before it copied).
//!
//! `cargo bench -p benches --bench export`

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};
use ringbuf_core::ctf::{ClockDescription, Ctf, TraceDescription};
use ringbuf_core::{Config, Mode, NoClock, Switch};
use ringbuf_mmap::{Backing, ChannelOptions, PerCpuChannel, PerCpuConsumer};
use ringbuf_splice::export::Splicer;

const SUBBUF: u64 = 1 << 20;
const COUNT: u64 = 16;

fn target() -> File {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let path = format!("{dir}/ringbuf-export-bench-{}", std::process::id());
    let file = File::options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

/// A loopback TCP connection whose receiving end a thread drains, counting bytes.
struct Drained {
    socket: TcpStream,
    received: Arc<AtomicU64>,
    sent: u64,
    receiver: JoinHandle<()>,
}

impl Drained {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut peer = listener.accept().unwrap().0;
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let receiver = std::thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 20];
            loop {
                match peer.read(&mut sink).unwrap() {
                    0 => return,
                    // Release: pairs with the Acquire in `wait`; only the count is
                    // published.
                    n => count.fetch_add(n as u64, Ordering::Release),
                };
            }
        });
        Self {
            socket,
            received,
            sent: 0,
            receiver,
        }
    }

    /// Waits until the receiver has read everything sent so far.
    fn wait(&self) {
        while self.received.load(Ordering::Acquire) < self.sent {
            std::thread::yield_now();
        }
    }

    fn close(self) {
        drop(self.socket);
        self.receiver.join().unwrap();
    }
}

/// Splices `len` bytes at `offset` of `file` through the pipe `(read, write)` into
/// `dst`.
fn splice_through(
    file: &File,
    offset: u64,
    len: usize,
    (read, write): &(std::io::PipeReader, std::io::PipeWriter),
    dst: &TcpStream,
) {
    let mut off_in = offset as libc::loff_t;
    let mut left = len;
    while left > 0 {
        // SAFETY: valid descriptors; `off_in` is a valid in/out offset.
        let n = unsafe {
            libc::splice(
                file.as_raw_fd(),
                &mut off_in,
                write.as_raw_fd(),
                std::ptr::null_mut(),
                left,
                libc::SPLICE_F_MOVE,
            )
        };
        assert!(n > 0, "splice in: {}", std::io::Error::last_os_error());
        let mut in_pipe = n as usize;
        while in_pipe > 0 {
            // SAFETY: valid descriptors, null offsets.
            let m = unsafe {
                libc::splice(
                    read.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    in_pipe,
                    libc::SPLICE_F_MOVE,
                )
            };
            assert!(m > 0, "splice out: {}", std::io::Error::last_os_error());
            in_pipe -= m as usize;
        }
        left -= n as usize;
    }
}

fn export(c: &mut Criterion) {
    let mut metadata = String::new();
    let clock = ClockDescription {
        name: "c",
        description: "bench",
        freq: 1_000_000_000,
        offset_s: 0,
        offset: 0,
    };
    let trace = TraceDescription {
        uuid: [1; 16],
        clock,
        events: &[],
        tracer_name: "bench",
        env: &[],
        event_context: &[],
    };
    ringbuf_core::ctf::write_metadata(&mut metadata, &trace).unwrap();
    let options = ChannelOptions {
        config: Config::new(SUBBUF, COUNT, Mode::Discard),
        buffers: 1,
        format: 1,
        prefault: true,
        clock,
    };
    let channel = PerCpuChannel::create(
        Backing::Memfd { name: "bench" },
        &options,
        &metadata,
        |c| Ctf::new([1; 16], c),
        |_| NoClock,
    )
    .unwrap();
    let consumer = PerCpuConsumer::attach_fd(
        channel.shm().try_clone_fd().unwrap(),
        None,
        1,
        |c| Ctf::new([1; 16], c),
        |_| NoClock,
    )
    .unwrap();
    let buffer = &channel.buffers()[0];
    let nest = ringbuf_core::Nesting::new();
    let payload = [0x5au8; 4000];
    // Fills every sub-buffer with full packets (not timed).
    let fill = || {
        while buffer.write(&nest, 1, &payload).is_ok() {}
        let _ = buffer.switch(Switch::Active);
    };
    let bytes_per_round = SUBBUF * COUNT;

    let mut group = c.benchmark_group("export_1MiB_packets_to_tmpfs");
    group.throughput(Throughput::Bytes(bytes_per_round));
    group.measurement_time(Duration::from_secs(3));
    let mut splicer = Splicer::new(SUBBUF as usize).unwrap();
    group.bench_function("splice_zero_copy", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                fill();
                let out = target();
                let start = Instant::now();
                consumer
                    .export(0, |p| {
                        let len = p.info.packet_size as usize;
                        splicer.export(consumer.shm(), p.offset, len, out.as_fd())
                    })
                    .unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    // What a consumer without page export does: copy each packet out of the
    // shared buffer, then write it.
    let mut scratch = Vec::new();
    group.bench_function("copy_out_then_write", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                fill();
                let mut out = target();
                let start = Instant::now();
                consumer
                    .drain(0, &mut scratch, |p| {
                        std::io::Write::write_all(&mut out, p).unwrap()
                    })
                    .unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    let user_copy = vec![0x5au8; bytes_per_round as usize];
    group.bench_function("plain_write", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                let mut out = target();
                let start = Instant::now();
                for chunk in user_copy.chunks(SUBBUF as usize) {
                    std::io::Write::write_all(&mut out, chunk).unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();

    // Into a socket: a copy from the mapping (splice would hand the sub-buffer
    // back while the receiver still references its pages), timed until the
    // receiver has read every byte.
    let mut group = c.benchmark_group("export_1MiB_packets_to_loopback_tcp");
    group.throughput(Throughput::Bytes(bytes_per_round));
    group.measurement_time(Duration::from_secs(3));
    let mut tcp = Drained::new();
    group.bench_function("copy_from_mapping", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                fill();
                let start = Instant::now();
                consumer
                    .export(0, |p| {
                        let len = p.info.packet_size as usize;
                        tcp.sent += len as u64;
                        splicer.export(consumer.shm(), p.offset, len, tcp.socket.as_fd())
                    })
                    .unwrap();
                tcp.wait();
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("plain_send", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                let start = Instant::now();
                for chunk in user_copy.chunks(SUBBUF as usize) {
                    tcp.socket.write_all(chunk).unwrap();
                    tcp.sent += chunk.len() as u64;
                }
                tcp.wait();
                total += start.elapsed();
            }
            total
        })
    });
    // For reference: what the export did before. Correct here only because each
    // round waits for the receiver to have read every byte before the writers
    // refill the buffer.
    let pipe = std::io::pipe().unwrap();
    // SAFETY: fcntl on a valid pipe descriptor; failing leaves a smaller pipe.
    unsafe {
        libc::fcntl(
            pipe.1.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            SUBBUF as libc::c_int,
        )
    };
    group.bench_function("splice_reference", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                fill();
                let start = Instant::now();
                consumer
                    .export(0, |p| {
                        let len = p.info.packet_size as usize;
                        tcp.sent += len as u64;
                        splice_through(p.file, p.offset, len, &pipe, &tcp.socket);
                        Ok(())
                    })
                    .unwrap();
                tcp.wait();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    tcp.close();
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::export);
}
criterion_main!(group::benches);
