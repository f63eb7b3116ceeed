//! A synthetic producer process: threads write checksummed events into a per-CPU
//! channel in shared memory. The cross-process tests drive it; it is also a demo.
//!
//! ```text
//! synthetic_producer <file:DIR/NAME | memfd:SOCKET> <discard|overwrite> <events per thread>
//!                    <threads> [--ctf] [--log] [--subbuf BYTES] [--count N] [--rseq]
//! ```
//!
//! `events per thread` 0 means until killed. Each event's payload is `seq: u64`
//! (`thread << 32 | i`) and `check: u64`
//! ([`check`] of seq). With `--log`, every committed seq is printed on stdout (in
//! batches) as it happens, after a first line `writers rseq|shared`: a side channel
//! telling a test what was committed before a kill. A thread whose write fails
//! prints its pending seqs at once, and the first failure prints a line `full`: in
//! discard mode with no consumer the writers stop committing once the buffers they
//! run on are full, which may be a single CPU's buffer (the scheduler decides), so a
//! test waiting for a number of logged events learns when no more will come. At the
//! end it flushes the channel and prints `attempted`, `committed` and the buffers'
//! counters. With `memfd:SOCKET` it connects to the Unix socket and
//! sends the memfd and the wakeup eventfd. With `--rseq` the writers use restartable
//! sequences where the machine allows (`PerCpuChannel::create_rseq`).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringbuf_core::ctf::{
    ClockDescription, Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value,
};
use ringbuf_core::{Client, Config, Mode, RawRecords, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{possible_cpus, send_fd, Backing, ChannelOptions, PerCpuChannel, WritePath};

/// The checksum of an event: a test recomputes it to prove the record intact.
fn check(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0xdead_beef
}

/// The schema of the events (CTF format).
static EVENTS: [EventSchema; 1] = [EventSchema {
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

/// Record format tags in the channel header.
const RAW: u32 = 0;
const CTF: u32 = 1;
const UUID: [u8; 16] = *b"synthetic-ringbf";

struct Args {
    backing: String,
    mode: Mode,
    events: u64,
    threads: u64,
    ctf: bool,
    log: bool,
    subbuf: u64,
    count: u64,
    rseq: bool,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut next = |what: &str| it.next().ok_or(format!("missing {what}"));
    let backing = next("backing")?;
    let mode = match next("mode")?.as_str() {
        "discard" => Mode::Discard,
        "overwrite" => Mode::Overwrite,
        m => return Err(format!("mode must be discard or overwrite, not {m}")),
    };
    let number = |s: String| s.parse::<u64>().map_err(|_| format!("not a number: {s}"));
    let events = number(next("events")?)?;
    let threads = number(next("threads")?)?.max(1);
    let mut args = Args {
        backing,
        mode,
        events,
        threads,
        ctf: false,
        log: false,
        subbuf: 4096,
        count: 8,
        rseq: false,
    };
    let rest: Vec<String> = std::env::args().skip(5).collect();
    let mut rest = rest.into_iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--ctf" => args.ctf = true,
            "--log" => args.log = true,
            "--rseq" => args.rseq = true,
            "--subbuf" => args.subbuf = number(rest.next().ok_or("--subbuf needs a value")?)?,
            "--count" => args.count = number(rest.next().ok_or("--count needs a value")?)?,
            f => return Err(format!("unknown flag {f}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // One description for the metadata and the channel header alike.
    let clock = Monotonic.describe();
    let mut metadata = String::new();
    let trace = TraceDescription {
        uuid: UUID,
        clock,
        events: &EVENTS,
        tracer_name: "synthetic_producer",
        env: &[],
        event_context: &[],
    };
    ringbuf_core::ctf::write_metadata(&mut metadata, &trace).expect("valid metadata");
    if args.ctf {
        run(&args, &metadata, clock, CTF, |cpu| Ctf::new(UUID, cpu));
    } else {
        run(&args, "", clock, RAW, |_| RawRecords);
    }
}

fn run<K: Client>(
    args: &Args,
    metadata: &str,
    clock: ClockDescription<'_>,
    format: u32,
    client: impl FnMut(u32) -> K,
) {
    let options = ChannelOptions {
        config: Config::new(args.subbuf, args.count, args.mode),
        buffers: possible_cpus(),
        format,
        prefault: true,
        clock,
    };
    let (backing, socket) = match args.backing.split_once(':') {
        Some(("file", path)) => {
            let path = Path::new(path);
            let dir = path.parent().expect("file:DIR/NAME");
            let name = path
                .file_name()
                .expect("file:DIR/NAME")
                .to_str()
                .expect("UTF-8 name");
            (Backing::File { dir, name }, None)
        }
        Some(("memfd", socket)) => (Backing::Memfd { name: "synthetic" }, Some(socket)),
        _ => {
            eprintln!("error: backing must be file:DIR/NAME or memfd:SOCKET");
            std::process::exit(2);
        }
    };
    let create = if args.rseq {
        PerCpuChannel::create_rseq
    } else {
        PerCpuChannel::create
    };
    let channel = create(backing, &options, metadata, client, |_| Monotonic).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    if let Some(socket) = socket {
        let stream = UnixStream::connect(socket).expect("connect to the consumer");
        send_fd(&stream, channel.shm().file().as_raw_fd()).expect("send memfd");
        send_fd(&stream, channel.wakeup().fd()).expect("send eventfd");
    }
    if args.log {
        // First line of the log: how the writers update the buffers.
        let path = match channel.write_path() {
            WritePath::Rseq => "rseq",
            WritePath::Shared => "shared",
        };
        println!("writers {path}");
    }
    let committed = AtomicU64::new(0);
    let full = AtomicBool::new(false);
    let stdout = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for thread in 0..args.threads {
            let (channel, committed, full, stdout) = (&channel, &committed, &full, &stdout);
            s.spawn(move || {
                let mut log = Vec::with_capacity(64);
                let mut ok = 0;
                let events = if args.events == 0 {
                    u64::MAX
                } else {
                    args.events
                };
                for i in 0..events {
                    let seq = thread << 32 | i;
                    let written = if format == CTF {
                        channel
                            .write_event(&EVENTS[0], &[Value::U64(seq), Value::U64(check(seq))])
                            .is_ok()
                    } else {
                        let payload = [seq.to_le_bytes(), check(seq).to_le_bytes()].concat();
                        channel.write(thread as u32, &payload).is_ok()
                    };
                    if written {
                        ok += 1;
                        if args.log {
                            log.push(seq);
                            if log.len() == 64 {
                                flush_log(stdout, &mut log);
                            }
                        }
                    } else if args.log {
                        flush_log(stdout, &mut log);
                        // Relaxed: only one thread must print the line; the order
                        // on stdout comes from its mutex.
                        if !full.swap(true, Ordering::Relaxed) {
                            writeln!(stdout.lock().unwrap(), "full").unwrap();
                        }
                    }
                }
                flush_log(stdout, &mut log);
                committed.fetch_add(ok, Ordering::Relaxed);
            });
        }
    });
    let flushed = channel.switch_all(Switch::Flush);
    let mut out = stdout.lock().unwrap();
    writeln!(out, "attempted {}", args.events * args.threads).unwrap();
    writeln!(out, "committed {}", committed.load(Ordering::Relaxed)).unwrap();
    writeln!(out, "flushed {}", flushed.is_ok()).unwrap();
    for (cpu, s) in channel.stats().iter().enumerate() {
        writeln!(
            out,
            "buffer {cpu} write {} lost_full {} lost_wrap {} lost_big {} lost_nested {} overrun {}",
            s.write, s.lost_full, s.lost_wrap, s.lost_big, s.lost_nested, s.overrun
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn flush_log(stdout: &std::sync::Mutex<std::io::Stdout>, log: &mut Vec<u64>) {
    if log.is_empty() {
        return;
    }
    let text: String = log.iter().map(|s| format!("seq {s}\n")).collect();
    let mut out = stdout.lock().unwrap();
    out.write_all(text.as_bytes()).unwrap();
    out.flush().unwrap();
    log.clear();
}
