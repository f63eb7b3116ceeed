//! CTF traces written by ringbuf, read back by babeltrace2: exact event counts,
//! field values, timestamps and loss warnings.
//!
//! babeltrace2 must be installed (`.ci/run` installs it). Without it these tests
//! fail under CI (`CI` set) and are skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use ringbuf_core::ctf::{
    write_event, ClockDescription, Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value,
    COMPACT_HEADER, COMPACT_TS_BITS, MEDIUM_TS_BITS,
};
use ringbuf_core::seq::{Op, Outcome, Sequencer};
use ringbuf_core::{
    Buffer, Client, Config, LocalWord, Mode, Nesting, Out, PacketBegin, PacketEnd, RecordInfo,
    Region, SharedWord, Switch,
};
use ringbuf_splice::TraceDir;

const UUID: [u8; 16] = *b"ringbuf-test-uid";

/// A clock the test sets by hand.
struct ManualClock(AtomicU64);

impl ringbuf_core::Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl ManualClock {
    fn set(&self, t: u64) {
        self.0.store(t, Ordering::Relaxed)
    }
}

/// 8-byte aligned memory for a region.
struct Memory(Vec<u64>);

impl Memory {
    fn new(config: &Config) -> Self {
        Self(vec![
            0;
            Region::<SharedWord>::size_for(config)
                .unwrap()
                .div_ceil(8)
        ])
    }
    fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: the Vec owns `len` initialised bytes, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) }
    }
}

fn buffer<K: Client>(
    mem: &mut Memory,
    config: Config,
    client: K,
) -> Buffer<Region<'_, SharedWord>, K, ManualClock> {
    let region = Region::init(mem.bytes(), config, 1).unwrap();
    Buffer::new(region, client, ManualClock(AtomicU64::new(0))).unwrap()
}

fn description(events: &[EventSchema]) -> TraceDescription<'_> {
    TraceDescription {
        uuid: UUID,
        clock: ClockDescription {
            name: "test",
            description: "set by the test",
            freq: 1_000_000_000,
            offset_s: 0,
            offset: 0,
        },
        events,
        tracer_name: "ringbuf-tests",
        env: &[],
        event_context: &[],
    }
}

fn trace_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-bt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One decoded event: timestamp in cycles, name, cpu, payload text.
#[derive(Debug, PartialEq)]
struct Decoded {
    ts: u64,
    name: String,
    cpu: u32,
    payload: String,
}

/// babeltrace2's text output, or `None` when it is missing and we may skip.
fn babeltrace(dir: &Path) -> Option<(Vec<Decoded>, String)> {
    let out = match Command::new("babeltrace2")
        .args(["--clock-cycles", "--no-delta"])
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: babeltrace2 not runnable ({e}); install it to run this test");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "babeltrace2 failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events = stdout.lines().map(parse_line).collect();
    Some((events, stderr))
}

/// `[00000000000000001000] ev: { cpu_id = 0 }, { a = 7 }`
fn parse_line(line: &str) -> Decoded {
    let (ts, rest) = line[1..].split_once("] ").expect(line);
    let (name, rest) = rest.split_once(": { cpu_id = ").expect(line);
    let (cpu, rest) = rest.split_once(" }").expect(line);
    Decoded {
        ts: ts.parse().expect(line),
        name: name.to_owned(),
        cpu: cpu.parse().expect(line),
        payload: rest.strip_prefix(", ").unwrap_or("").to_owned(),
    }
}

/// Sum of N over babeltrace2's "discarded N <what>" warnings.
fn discarded(stderr: &str, what: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split_once("Tracer discarded ")?.1.split_once(' '))
        .filter(|(_, rest)| rest.starts_with(what))
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .sum()
}

static ALL_FIELDS: [FieldDef; 13] = [
    FieldDef {
        name: "u8",
        ty: FieldType::U8,
    },
    FieldDef {
        name: "u16",
        ty: FieldType::U16,
    },
    FieldDef {
        name: "u32",
        ty: FieldType::U32,
    },
    FieldDef {
        name: "u64",
        ty: FieldType::U64,
    },
    FieldDef {
        name: "i8",
        ty: FieldType::I8,
    },
    FieldDef {
        name: "i16",
        ty: FieldType::I16,
    },
    FieldDef {
        name: "i32",
        ty: FieldType::I32,
    },
    FieldDef {
        name: "i64",
        ty: FieldType::I64,
    },
    FieldDef {
        name: "f32",
        ty: FieldType::F32,
    },
    FieldDef {
        name: "f64",
        ty: FieldType::F64,
    },
    FieldDef {
        name: "arr",
        ty: FieldType::Bytes(3),
    },
    FieldDef {
        name: "seq",
        ty: FieldType::Sequence,
    },
    FieldDef {
        name: "text",
        ty: FieldType::String,
    },
];

static EVENTS: [EventSchema; 4] = [
    EventSchema {
        id: 0,
        name: "all_types",
        fields: &ALL_FIELDS,
    },
    EventSchema {
        id: 7,
        name: "tick",
        fields: &[],
    },
    EventSchema {
        id: 30,
        name: "first_medium_id",
        fields: &[FieldDef {
            name: "n",
            ty: FieldType::U32,
        }],
    },
    EventSchema {
        id: 100_000,
        name: "big_id",
        fields: &[FieldDef {
            name: "n",
            ty: FieldType::U64,
        }],
    },
];

/// Timestamps with every kind of gap: none, small, just under and at the compact
/// and medium limits, far beyond them.
fn timestamps() -> Vec<u64> {
    let limit = 1u64 << COMPACT_TS_BITS;
    let medium = 1u64 << MEDIUM_TS_BITS;
    let mut t = 1_000;
    let mut out = Vec::new();
    for gap in [
        0,
        1,
        5,
        limit - 1,
        limit,
        3,
        limit + 1,
        1 << 40,
        2,
        limit * 5 + 7,
        medium - 1,
        4,
        medium,
        medium + 1,
    ] {
        t += gap;
        for _ in 0..3 {
            out.push(t);
            t += 1;
        }
    }
    out
}

#[test]
fn every_field_type_id_and_timestamp_reads_back_exactly() {
    let config = Config::new(512, 4, Mode::Discard);
    let mut mem = Memory::new(&config);
    let buf = buffer(&mut mem, config, Ctf::new(UUID, 3));
    let dir = trace_dir("fields");
    let mut trace = TraceDir::create(&dir, &description(&EVENTS)).unwrap();
    let mut reader = buf.reader().unwrap();
    let nest = Nesting::new();
    let mut expected = Vec::new();
    for (i, &ts) in timestamps().iter().enumerate() {
        buf.clock().set(ts);
        let n = i as u64;
        let (name, payload) = match i % 4 {
            0 => {
                let seq = vec![n as u8; i % 5];
                let text = format!("event {i}");
                write_event(
                    &buf,
                    &nest,
                    &EVENTS[0],
                    &[
                        Value::U8(n as u8),
                        Value::U16(n as u16 * 300),
                        Value::U32(n as u32 * 70_000),
                        Value::U64(u64::MAX - n),
                        Value::I8(-(n as i8)),
                        Value::I16(-300 * n as i16),
                        Value::I32(i32::MIN + n as i32),
                        Value::I64(-(n as i64) * 1_000_000_000_000),
                        Value::F32(n as f32 + 0.5),
                        Value::F64(-(n as f64) - 0.25),
                        Value::Bytes(&[n as u8, 2, 3]),
                        Value::Bytes(&seq),
                        Value::Str(&text),
                    ],
                )
                .unwrap();
                let seq_text = if seq.is_empty() {
                    "[ ]".to_owned()
                } else {
                    let items: Vec<String> = seq
                        .iter()
                        .enumerate()
                        .map(|(k, v)| format!("[{k}] = {v}"))
                        .collect();
                    format!("[ {} ]", items.join(", "))
                };
                (
                    "all_types",
                    format!(
                        "{{ u8 = {}, u16 = {}, u32 = {}, u64 = {}, i8 = {}, i16 = {}, i32 = {}, i64 = {}, f32 = {}, f64 = {}, arr = [ [0] = {}, [1] = 2, [2] = 3 ], seq_length = {}, seq = {seq_text}, text_length = {}, text = \"{text}\" }}",
                        n as u8,
                        n as u16 * 300,
                        n as u32 * 70_000,
                        u64::MAX - n,
                        -(n as i8),
                        -300 * n as i16,
                        i32::MIN + n as i32,
                        -(n as i64) * 1_000_000_000_000,
                        n as f32 + 0.5,
                        -(n as f64) - 0.25,
                        n as u8,
                        seq.len(),
                        text.len(),
                    ),
                )
            }
            1 => {
                write_event(&buf, &nest, &EVENTS[1], &[]).unwrap();
                ("tick", String::new())
            }
            2 => {
                write_event(&buf, &nest, &EVENTS[2], &[Value::U32(n as u32)]).unwrap();
                ("first_medium_id", format!("{{ n = {n} }}"))
            }
            _ => {
                write_event(&buf, &nest, &EVENTS[3], &[Value::U64(n << 40)]).unwrap();
                ("big_id", format!("{{ n = {} }}", n << 40))
            }
        };
        expected.push(Decoded {
            ts,
            name: name.to_owned(),
            cpu: 3,
            payload,
        });
        if i % 7 == 0 {
            trace.drain(&mut reader, 3).unwrap();
        }
    }
    trace.close_stream(&buf, &mut reader, 3).unwrap();
    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert_eq!(buf.stats().events_discarded(), 0);
    assert_eq!(decoded.len(), expected.len());
    for (d, e) in decoded.iter().zip(&expected) {
        assert_eq!(d, e);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `count` events of `payload` bytes; returns how many were accepted.
fn write_some<K: Client>(
    buf: &Buffer<Region<'_, SharedWord>, K, ManualClock>,
    nest: &Nesting,
    count: usize,
) -> usize {
    (0..count)
        .filter(|_| {
            let clock = buf.clock();
            clock.set(ringbuf_core::Clock::now(clock) + 10);
            write_event_raw(buf, nest)
        })
        .count()
}

static BLOB: [EventSchema; 1] = [EventSchema {
    id: 1,
    name: "blob",
    fields: &[FieldDef {
        name: "b",
        ty: FieldType::Bytes(40),
    }],
}];

fn write_event_raw<K: Client>(
    buf: &Buffer<Region<'_, SharedWord>, K, ManualClock>,
    nest: &Nesting,
) -> bool {
    match buf.reserve(nest, BLOB[0].id, 40) {
        Ok(mut r) => {
            r.payload_mut().copy_from_slice(&[0x5a; 40]);
            r.commit();
            true
        }
        Err(_) => false,
    }
}

#[test]
fn discarded_event_warnings_add_up_to_the_loss_counters() {
    let config = Config::new(256, 2, Mode::Discard);
    let mut mem = Memory::new(&config);
    let buf = buffer(&mut mem, config, Ctf::new(UUID, 0));
    let dir = trace_dir("discard");
    let mut trace = TraceDir::create(&dir, &description(&BLOB)).unwrap();
    let mut reader = buf.reader().unwrap();
    let nest = Nesting::new();
    // The first packet closes loss-free, so every later loss has a count
    // (a non-zero count in a stream's first packet is reported without a number).
    let mut written = write_some(&buf, &nest, 4);
    trace.drain(&mut reader, 0).unwrap();
    for round in 0..5 {
        written += write_some(&buf, &nest, 20 + round);
        trace.drain(&mut reader, 0).unwrap();
    }
    trace.close_stream(&buf, &mut reader, 0).unwrap();
    let lost = buf.stats().lost_full;
    assert!(lost > 0);
    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert_eq!(decoded.len(), written);
    assert!(decoded.iter().all(|d| d.name == "blob"));
    assert_eq!(discarded(&stderr, "events"), lost, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overwritten_packets_show_as_discarded_packets() {
    let config = Config::new(256, 2, Mode::Overwrite);
    let mut mem = Memory::new(&config);
    let buf = buffer(&mut mem, config, Ctf::new(UUID, 0));
    let dir = trace_dir("overwrite");
    let mut trace = TraceDir::create(&dir, &description(&BLOB)).unwrap();
    let mut reader = buf.reader().unwrap();
    let nest = Nesting::new();
    write_some(&buf, &nest, 5); // the 5th closes packet 0: read before any overwrite
    assert_eq!(trace.drain(&mut reader, 0).unwrap(), 1);
    write_some(&buf, &nest, 60);
    let read = 1 + trace.close_stream(&buf, &mut reader, 0).unwrap() as u64;
    let overrun = buf.stats().overrun;
    assert!(overrun > 0);
    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert_eq!(discarded(&stderr, "packets"), overrun, "{stderr}");
    assert_eq!(discarded(&stderr, "events"), 0, "{stderr}");
    // Every packet was read once or counted overrun once.
    let total_packets = buf.stats().write / 256;
    assert_eq!(read + overrun, total_packets);
    assert!(!decoded.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A broken format that never emits the extended header for small ids: what this
/// test must catch if the real one regressed.
struct AlwaysCompact(Ctf);

impl Client for AlwaysCompact {
    const RECORD_ALIGN: usize = Ctf::RECORD_ALIGN;
    const USES_PREV_TIMESTAMP: bool = true;
    fn packet_header_size(&self) -> usize {
        self.0.packet_header_size()
    }
    fn record_header_size(&self, rec: &RecordInfo) -> usize {
        if rec.event_id < 31 {
            COMPACT_HEADER
        } else {
            self.0.record_header_size(rec)
        }
    }
    fn write_record_header<O: Out>(&self, out: &mut O, rec: &RecordInfo) {
        let same = RecordInfo {
            prev_timestamp: rec.timestamp,
            ..*rec
        };
        match self.record_header_size(rec) {
            COMPACT_HEADER => self.0.write_record_header(out, &same),
            _ => self.0.write_record_header(out, rec),
        }
    }
    fn write_padding_record<O: Out>(&self, out: &mut O, rec: &RecordInfo, h: usize, total: usize) {
        self.0.write_padding_record(out, rec, h, total)
    }
    fn packet_begin<O: Out>(&self, out: &mut O, begin: &PacketBegin) {
        self.0.packet_begin(out, begin)
    }
    fn packet_end<O: Out>(&self, out: &mut O, end: &PacketEnd) {
        self.0.packet_end(out, end)
    }
}

/// Writes one `tick` per timestamp with `client` and returns the timestamps
/// babeltrace2 decodes.
fn decoded_timestamps<K: Client>(client: K, name: &str, stamps: &[u64]) -> Option<Vec<u64>> {
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::new(&config);
    let buf = buffer(&mut mem, config, client);
    let dir = trace_dir(name);
    let mut trace = TraceDir::create(&dir, &description(&EVENTS)).unwrap();
    let mut reader = buf.reader().unwrap();
    let nest = Nesting::new();
    for &ts in stamps {
        buf.clock().set(ts);
        let r = buf.reserve(&nest, EVENTS[1].id, 0).unwrap();
        r.commit();
    }
    close(&buf, &mut trace, &mut reader);
    let (decoded, _) = babeltrace(&dir)?;
    std::fs::remove_dir_all(&dir).unwrap();
    Some(decoded.iter().map(|d| d.ts).collect())
}

fn close<K: Client>(
    buf: &Buffer<Region<'_, SharedWord>, K, ManualClock>,
    trace: &mut TraceDir,
    reader: &mut ringbuf_core::Reader<'_, Region<'_, SharedWord>, K, ManualClock>,
) {
    buf.switch(ringbuf_core::Switch::Flush).unwrap();
    while let Ok(sub) = reader.get_next_subbuf() {
        trace.write_packet(0, reader.bytes(&sub).unwrap()).unwrap();
        reader.put_next_subbuf(sub);
    }
}

#[test]
fn a_missing_extended_header_would_be_caught() {
    let limit = 1u64 << COMPACT_TS_BITS;
    let stamps = [100, 200, 200 + limit, 300 + limit, 300 + 3 * limit + 9];
    let Some(good) = decoded_timestamps(Ctf::new(UUID, 0), "good", &stamps) else {
        return;
    };
    assert_eq!(good, stamps, "the real format decodes exactly");
    let broken = decoded_timestamps(AlwaysCompact(Ctf::new(UUID, 0)), "broken", &stamps).unwrap();
    assert_eq!(broken.len(), stamps.len());
    assert_ne!(
        broken, stamps,
        "the comparison detects a missing extended header"
    );
}

#[test]
fn several_cpu_streams_in_one_trace() {
    let config = Config::new(1024, 4, Mode::Discard);
    let (mut m0, mut m1) = (Memory::new(&config), Memory::new(&config));
    let b0 = buffer(&mut m0, config, Ctf::new(UUID, 0));
    let b1 = buffer(&mut m1, config, Ctf::new(UUID, 1));
    let dir = trace_dir("cpus");
    let mut trace = TraceDir::create(&dir, &description(&BLOB)).unwrap();
    let nest = Nesting::new();
    let (mut r0, mut r1) = (b0.reader().unwrap(), b1.reader().unwrap());
    b1.clock().set(5);
    let n0 = write_some(&b0, &nest, 30);
    let n1 = write_some(&b1, &nest, 50);
    trace.close_stream(&b0, &mut r0, 0).unwrap();
    trace.close_stream(&b1, &mut r1, 1).unwrap();
    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(decoded.iter().filter(|d| d.cpu == 0).count(), n0);
    assert_eq!(decoded.iter().filter(|d| d.cpu == 1).count(), n1);
    // Merged by time.
    assert!(decoded.windows(2).all(|w| w[0].ts <= w[1].ts));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_real_clock_maps_events_to_todays_date() {
    let clock = ringbuf_mmap::clock::Monotonic;
    let config = Config::new(1024, 2, Mode::Discard);
    let mut mem = Memory::new(&config);
    let region = Region::init(mem.bytes(), config, 1).unwrap();
    let buf = Buffer::new(region, Ctf::new(UUID, 0), clock).unwrap();
    let dir = trace_dir("real-clock");
    let mut desc = description(&BLOB);
    desc.clock = clock.describe();
    let mut trace = TraceDir::create(&dir, &desc).unwrap();
    let mut reader = buf.reader().unwrap();
    write_event(&buf, &Nesting::new(), &BLOB[0], &[Value::Bytes(&[1; 40])]).unwrap();
    trace.close_stream(&buf, &mut reader, 0).unwrap();
    let Ok(out) = Command::new("babeltrace2")
        .args(["--clock-date", "--clock-gmt"])
        .arg(&dir)
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "babeltrace2 is required under CI"
        );
        return;
    };
    let today = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    let today = String::from_utf8(today.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("[{}", today.trim())), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reservations_discarded_as_padding_decode_as_padding_events_of_every_size() {
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::new(&config);
    let buf = buffer(&mut mem, config, Ctf::new(UUID, 0));
    let dir = trace_dir("padding");
    let mut trace = TraceDir::create(&dir, &description(&EVENTS)).unwrap();
    let mut reader = buf.reader().unwrap();
    let nest = Nesting::new();
    let sizes = [
        0usize, 1, 2, 3, 4, 5, 255, 256, 257, 258, 259, 260, 261, 600,
    ];
    let limit = 1u64 << COMPACT_TS_BITS;
    let mut now = 1;
    for (i, &len) in sizes.iter().enumerate() {
        // Alternate compact and extended headers on the discarded record: time
        // moves on by a tick or by a whole compact range.
        now += if i % 2 == 0 { 1 } else { limit };
        buf.clock().set(now);
        let discarded = buf.reserve(&nest, EVENTS[1].id, len).unwrap();
        let kept = buf.reserve(&nest, EVENTS[1].id, 0).unwrap();
        discarded.discard();
        kept.commit();
    }
    trace.close_stream(&buf, &mut reader, 0).unwrap();
    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert!(stderr.is_empty(), "{stderr}");
    let ticks = decoded.iter().filter(|d| d.name == "tick").count();
    assert_eq!(ticks, sizes.len());
    assert!(decoded.iter().all(|d| matches!(
        d.name.as_str(),
        "tick" | "ringbuf_padding" | "ringbuf_padding_empty"
    )));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A clock shared by racing writers that sometimes jumps by more than the compact
/// header can express.
struct JumpyClock(AtomicU64);

impl ringbuf_core::Clock for JumpyClock {
    fn now(&self) -> u64 {
        let t = self.0.fetch_add(1, Ordering::Relaxed);
        if t.is_multiple_of(997) {
            self.0
                .fetch_add((1 << COMPACT_TS_BITS) + t % 13, Ordering::Relaxed)
        } else {
            t
        }
    }
}

static STAMPED: [EventSchema; 1] = [EventSchema {
    id: 2,
    name: "stamped",
    fields: &[
        FieldDef {
            name: "ts",
            ty: FieldType::U64,
        },
        FieldDef {
            name: "thread",
            ty: FieldType::U32,
        },
    ],
}];

#[test]
fn racing_writers_never_lose_a_needed_extended_header() {
    let config = Config::new(4096, 64, Mode::Discard);
    let mut mem = Memory::new(&config);
    let region = Region::init(mem.bytes(), config, 1).unwrap();
    let buf = Buffer::new(region, Ctf::new(UUID, 0), JumpyClock(AtomicU64::new(1))).unwrap();
    let dir = trace_dir("racing");
    let mut trace = TraceDir::create(&dir, &description(&STAMPED)).unwrap();
    let mut reader = buf.reader().unwrap();
    let written: usize = std::thread::scope(|s| {
        let writers: Vec<_> = (0..3u32)
            .map(|thread| {
                let buf = &buf;
                s.spawn(move || {
                    let nest = Nesting::new();
                    let mut ok = 0;
                    for _ in 0..3000 {
                        // The record's own timestamp goes in its payload.
                        if let Ok(mut r) = buf.reserve(&nest, STAMPED[0].id, 12) {
                            let ts = r.timestamp();
                            r.payload_mut()[..8].copy_from_slice(&ts.to_le_bytes());
                            r.payload_mut()[8..].copy_from_slice(&thread.to_le_bytes());
                            r.commit();
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    trace.close_stream(&buf, &mut reader, 0).unwrap();
    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(decoded.len() as u64 + buf.stats().events_discarded(), 9000);
    assert_eq!(decoded.len(), written);
    let mut jumps = 0;
    for (prev, d) in decoded.iter().zip(decoded.iter().skip(1)) {
        let stamped: u64 = d.payload["{ ts = ".len()..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            d.ts, stamped,
            "decoded timestamp differs from the written one"
        );
        jumps += (d.ts - prev.ts >= 1 << COMPACT_TS_BITS) as u32;
    }
    assert!(
        jumps > 5,
        "the clock jumped past the compact range {jumps} times"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A clock whose unordered read ([`Clock::now_unordered`]) returns, one time in
/// three, a time earlier than its latest read: what a bare `rdtsc` executed ahead
/// of the loads before it can do.
#[derive(Default)]
struct OutOfOrderClock {
    time: AtomicU64,
    reads: AtomicU64,
    backward: AtomicU64,
}

impl ringbuf_core::Clock for OutOfOrderClock {
    fn now(&self) -> u64 {
        self.time.fetch_add(10, Ordering::Relaxed) + 10
    }
    fn now_unordered(&self) -> u64 {
        if self.reads.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
            self.backward.fetch_add(1, Ordering::Relaxed);
            self.time.load(Ordering::Relaxed).saturating_sub(25)
        } else {
            self.now()
        }
    }
}

/// Runs sequences with nothing to interrupt them (one thread, no signals): each
/// one checks its words, copies, stores and commits.
struct Uninterrupted;

// SAFETY: on one thread with no signal handlers writing, nothing can run between
// a sequence's checks and its committing store; there is no other sequence to
// wait for.
unsafe impl Sequencer for Uninterrupted {
    fn cpu(&self) -> Option<u32> {
        Some(0)
    }
    unsafe fn run(&self, op: &Op) -> Outcome {
        // SAFETY: the caller's contract: every pointer of `op` is valid (its words
        // are 8-byte aligned atomics of the region).
        unsafe {
            let word = |at: *mut u64| &*(at as *const AtomicU64);
            if op
                .expect
                .iter()
                .any(|e| word(e.at).load(Ordering::Relaxed) != e.value)
            {
                return Outcome::Changed;
            }
            for s in &op.segments[..op.segment_count as usize] {
                std::ptr::copy_nonoverlapping(s.src, s.dst, s.len);
            }
            for s in op.stores.iter().chain([&op.commit]) {
                word(s.at).store(s.value, Ordering::Release);
            }
        }
        Outcome::Committed
    }
    fn barrier(&self) {}
    fn thread_id(&self) -> u64 {
        1
    }
    fn wait(&self) {}
}

/// The write paths that read the clock out of order (per-thread buffers: the
/// Local flavour; per-CPU rseq sequences) keep each stream's timestamps
/// non-decreasing by value, which babeltrace2 checks: without the rule, a third
/// of these events would go back in time.
#[test]
fn a_clock_read_out_of_order_never_takes_a_stream_back_in_time() {
    const EVENTS: u64 = 3000;
    let config = Config::new(4096, 8, Mode::Discard);
    let dir = trace_dir("out-of-order");
    let mut trace = TraceDir::create(&dir, &description(&STAMPED)).unwrap();
    let payload = |n: u64| {
        let mut p = [0u8; 12];
        p[..8].copy_from_slice(&n.to_le_bytes());
        p
    };

    // Stream 0: the Local flavour, one thread.
    let mut mem = Memory::new(&config);
    // SAFETY: the buffer is written by this thread only (its reader reads).
    let region = unsafe { Region::<LocalWord>::init_local(mem.bytes(), config, 1) }.unwrap();
    let local = Buffer::new(region, Ctf::new(UUID, 0), OutOfOrderClock::default()).unwrap();
    let mut reader = local.reader().unwrap();
    let nest = Nesting::new();
    let mut last = 0;
    for n in 0..EVENTS {
        let mut r = local.reserve(&nest, STAMPED[0].id, 12).unwrap();
        assert!(
            r.timestamp() >= last,
            "event {n}: {} < {last}",
            r.timestamp()
        );
        last = r.timestamp();
        r.payload_mut().copy_from_slice(&payload(n));
        r.commit();
        trace.drain(&mut reader, 0).unwrap();
    }
    trace.close_stream(&local, &mut reader, 0).unwrap();
    assert!(local.clock().backward.load(Ordering::Relaxed) > EVENTS / 4);

    // Stream 1: sequences (the per-CPU rseq path's engine side).
    let mut mem = Memory::new(&config);
    let region = Region::<SharedWord>::init(mem.bytes(), config, 1).unwrap();
    let seq = Buffer::new(region, Ctf::new(UUID, 1), OutOfOrderClock::default()).unwrap();
    let mut reader = seq.reader().unwrap();
    for n in 0..EVENTS {
        // SAFETY: only this thread writes `seq`, by `write_seq` on CPU 0.
        unsafe { seq.write_seq(&Uninterrupted, 0, STAMPED[0].id, &payload(n)) }.unwrap();
        trace.drain(&mut reader, 1).unwrap();
    }
    // SAFETY: as above; no sequence runs meanwhile.
    unsafe { seq.switch_fenced(&Uninterrupted, Switch::Flush) }.unwrap();
    trace.drain(&mut reader, 1).unwrap();
    assert!(seq.clock().backward.load(Ordering::Relaxed) > EVENTS / 4);

    let Some((decoded, stderr)) = babeltrace(&dir) else {
        return;
    };
    assert!(stderr.is_empty(), "{stderr}");
    for cpu in 0..2 {
        let stream: Vec<_> = decoded.iter().filter(|d| d.cpu == cpu).collect();
        assert_eq!(stream.len() as u64, EVENTS, "stream {cpu}");
        for (a, b) in stream.iter().zip(stream.iter().skip(1)) {
            assert!(b.ts >= a.ts, "stream {cpu}: {b:?} after {a:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
