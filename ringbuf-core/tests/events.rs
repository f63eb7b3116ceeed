//! Typed events (`event!`, `Field`, `BufferSink`): encodings, ids, the event
//! context and its padding, and traces babeltrace2 reads back.

mod common;

use std::sync::atomic::AtomicU64;

use common::trace::{babeltrace, trace_dir, write_trace};
use common::{Counter, Memory};
use ringbuf_core::ctf::{
    write_event, write_metadata, BufferSink, ClockDescription, Ctf, EmitError, EnvValue, Event,
    EventHeader, EventId, EventSchema, Field, FieldDef, FieldType, TraceDescription, Value,
    COMPACT_HEADER, EXTENDED_HEADER, MAX_EVENT_CONTEXT, PADDING_EMPTY_ID, PADDING_ID,
};
use ringbuf_core::{
    Buffer, Client, Config, Mode, Nesting, RawPacket, RawRecords, RecordInfo, Region, ReserveError,
    SharedWord,
};

ringbuf_core::event! {
    /// Every field type.
    pub struct AllTypes {
        a_u8: u8,
        a_u16: u16,
        a_u32: u32,
        a_u64: u64,
        a_i8: i8,
        a_i16: i16,
        a_i32: i32,
        a_i64: i64,
        a_f32: f32,
        a_f64: f64,
        flag: bool,
        text: &str,
        blob: &[u8],
        tag: [u8; 3],
        words: [u16; 2],
        flags: [bool; 2],
        reals: [f64; 2],
    }
    /// No fields.
    pub struct Tick {}
    /// Never given an id.
    struct Undeclared { n: u32 }
    /// A string, for padding and length tests.
    struct Message { msg: &str }
}

const ALL_TYPES_ID: u32 = 1;
const TICK_ID: u32 = 40; // extended header
const MESSAGE_ID: u32 = 2;

/// Every test that writes these sets the same ids, so tests running in parallel
/// never disagree.
fn declare() {
    AllTypes::id().set(ALL_TYPES_ID);
    Tick::id().set(TICK_ID);
    Message::id().set(MESSAGE_ID);
}

type RawBuffer<'a> = Buffer<Region<'a, SharedWord>, RawRecords, Counter>;
type CtfBuffer<'a> = Buffer<Region<'a, SharedWord>, Ctf, Counter>;

fn raw_buffer(mem: &mut Memory, config: Config) -> RawBuffer<'_> {
    let region = Region::init(mem.bytes(), config, 0).unwrap();
    Buffer::new(region, RawRecords, Counter(AtomicU64::new(0))).unwrap()
}

fn ctf_buffer(mem: &mut Memory, config: Config, ctf: Ctf) -> CtfBuffer<'_> {
    let region = Region::init(mem.bytes(), config, 1).unwrap();
    Buffer::new(region, ctf, Counter(AtomicU64::new(0))).unwrap()
}

/// The records of a raw buffer, after a flush.
fn raw_records(buf: &RawBuffer<'_>) -> Vec<(u32, Vec<u8>)> {
    buf.switch(ringbuf_core::Switch::Flush).unwrap();
    let mut reader = buf.reader().unwrap();
    let mut out = Vec::new();
    while let Ok(sub) = reader.get_next_subbuf() {
        let packet = RawPacket::parse(reader.bytes(&sub).unwrap()).unwrap();
        out.extend(packet.records().map(|r| {
            let (id, payload) = r.unwrap();
            (id, payload.to_vec())
        }));
        reader.put_next_subbuf(sub);
    }
    out
}

/// One `AllTypes` event's arguments, derived from `n`.
struct Args {
    n: u64,
    text: String,
    blob: Vec<u8>,
}

impl Args {
    fn new(n: u64) -> Self {
        Self {
            n,
            text: format!("event {n} \"quoted\""),
            blob: (0..n % 5).map(|i| (i * 3 + n) as u8).collect(),
        }
    }

    fn write(&self, sink: &impl ringbuf_core::ctf::Sink) -> Result<(), EmitError> {
        let n = self.n;
        AllTypes::write(
            sink,
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
            n % 2 == 1,
            &self.text,
            &self.blob,
            [n as u8, 2, 3],
            [n as u16, 65535],
            [n.is_multiple_of(3), true],
            [n as f64 * 2.0, -1.5],
        )
    }

    /// The same event through the dynamic path's encodings.
    fn encoded_as_values(&self) -> Vec<u8> {
        let n = self.n;
        let mut words = Vec::new();
        words.extend((n as u16).to_le_bytes());
        words.extend(65535u16.to_le_bytes());
        let mut reals = Vec::new();
        reals.extend((n as f64 * 2.0).to_le_bytes());
        reals.extend((-1.5f64).to_le_bytes());
        let flags = [(n.is_multiple_of(3)) as u8, 1];
        let values = [
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
            Value::Bool(n % 2 == 1),
            Value::Str(&self.text),
            Value::Bytes(&self.blob),
            Value::Bytes(&[n as u8, 2, 3]),
            Value::Bytes(&words),
            Value::Bytes(&flags),
            Value::Bytes(&reals),
        ];
        let config = Config::new(4096, 2, Mode::Discard);
        let mut mem = Memory::for_config(&config);
        let buf = raw_buffer(&mut mem, config);
        let schema = EventSchema::of::<AllTypes>(ALL_TYPES_ID);
        write_event(&buf, &Nesting::new(), &schema, &values).unwrap();
        raw_records(&buf).remove(0).1
    }

    /// What babeltrace2 prints for the fields.
    fn decoded(&self) -> String {
        let n = self.n;
        let boolean = |b: bool| format!("( \"{b}\" : container = {} )", b as u8);
        let array = |items: Vec<String>| {
            if items.is_empty() {
                return "[ ]".to_owned();
            }
            let items: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, v)| format!("[{i}] = {v}"))
                .collect();
            format!("[ {} ]", items.join(", "))
        };
        let blob = array(self.blob.iter().map(u8::to_string).collect());
        format!(
            "{{ a_u8 = {}, a_u16 = {}, a_u32 = {}, a_u64 = {}, a_i8 = {}, a_i16 = {}, \
             a_i32 = {}, a_i64 = {}, a_f32 = {}, a_f64 = {}, flag = {}, text_length = {}, \
             text = \"{}\", blob_length = {}, blob = {blob}, tag = {}, words = {}, flags = {}, \
             reals = {} }}",
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
            boolean(n % 2 == 1),
            self.text.len(),
            self.text.replace('"', "\\\""),
            self.blob.len(),
            array(vec![n.to_string(), "2".into(), "3".into()]),
            array(vec![(n as u16).to_string(), "65535".into()]),
            array(vec![boolean(n.is_multiple_of(3)), boolean(true)]),
            array(vec![(n as f64 * 2.0).to_string(), "-1.5".into()]),
        )
    }
}

#[test]
fn the_schema_follows_the_declaration() {
    assert_eq!(AllTypes::NAME, "AllTypes");
    let types: Vec<(&str, FieldType)> = AllTypes::FIELDS.iter().map(|f| (f.name, f.ty)).collect();
    assert_eq!(
        types,
        [
            ("a_u8", FieldType::U8),
            ("a_u16", FieldType::U16),
            ("a_u32", FieldType::U32),
            ("a_u64", FieldType::U64),
            ("a_i8", FieldType::I8),
            ("a_i16", FieldType::I16),
            ("a_i32", FieldType::I32),
            ("a_i64", FieldType::I64),
            ("a_f32", FieldType::F32),
            ("a_f64", FieldType::F64),
            ("flag", FieldType::Bool),
            ("text", FieldType::String),
            ("blob", FieldType::Sequence),
            ("tag", FieldType::Bytes(3)),
            ("words", FieldType::Array(&FieldType::U16, 2)),
            ("flags", FieldType::Array(&FieldType::Bool, 2)),
            ("reals", FieldType::Array(&FieldType::F64, 2)),
        ]
    );
    assert!(Tick::FIELDS.is_empty());
    assert_eq!(
        EventSchema::of::<Message>(9),
        EventSchema {
            id: 9,
            name: "Message",
            fields: &[FieldDef {
                name: "msg",
                ty: FieldType::String
            }],
        }
    );
    // Fixed sizes are known from the type alone.
    assert_eq!(<[f64; 2] as Field>::TYPE.fixed_size(), Some(16));
    assert_eq!(<[bool; 5] as Field>::TYPE.fixed_size(), Some(5));
    assert_eq!(<&str as Field>::TYPE.fixed_size(), None);
}

#[test]
fn typed_fields_are_encoded_as_values_are() {
    declare();
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = raw_buffer(&mut mem, config);
    let nest = Nesting::new();
    let sink = BufferSink::new(&buf, &nest);
    let args: Vec<Args> = (0..20).map(Args::new).collect();
    for a in &args {
        a.write(&sink).unwrap();
    }
    let records = raw_records(&buf);
    assert_eq!(records.len(), args.len());
    for (a, (id, payload)) in args.iter().zip(records) {
        assert_eq!(id, ALL_TYPES_ID);
        assert_eq!(payload, a.encoded_as_values(), "event {}", a.n);
    }
}

#[test]
fn fields_encode_little_endian_with_u32_lengths() {
    let mut out = [0xffu8; 16];
    assert_eq!(0x0102_0304u32.encode(&mut out), 4);
    assert_eq!(out[..4], [4, 3, 2, 1]);
    assert_eq!(true.encode(&mut out), 1);
    assert_eq!(false.encode(&mut out[1..]), 1);
    assert_eq!(out[..2], [1, 0]);
    assert_eq!("héllo".size(), 4 + 6);
    assert_eq!("héllo".encode(&mut out), 10);
    assert_eq!(out[..10], *b"\x06\0\0\0h\xc3\xa9llo");
    let bytes: &[u8] = &[9, 8];
    assert_eq!(bytes.encode(&mut out), 6);
    assert_eq!(out[..6], [2, 0, 0, 0, 9, 8]);
    assert_eq!([-1i16, 2].encode(&mut out), 4);
    assert_eq!(out[..4], [0xff, 0xff, 2, 0]);
}

#[test]
fn an_event_without_an_id_is_refused_and_nothing_is_written() {
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = raw_buffer(&mut mem, config);
    let nest = Nesting::new();
    let sink = BufferSink::new(&buf, &nest);
    assert_eq!(
        Undeclared::write(&sink, 7),
        Err(EmitError::Undeclared {
            event: "Undeclared"
        })
    );
    let stats = buf.stats();
    assert_eq!((stats.write, stats.events_discarded()), (0, 0));
    assert_eq!(nest.depth(), 0);
    let message = EmitError::Undeclared {
        event: "Undeclared",
    }
    .to_string();
    assert!(message.contains("`Undeclared`"), "{message}");
}

#[test]
fn event_ids_are_set_and_cleared() {
    let id = EventId::unassigned();
    assert_eq!(id.get(), None);
    id.set(0);
    assert_eq!(id.get(), Some(0));
    id.set(123_456);
    assert_eq!(id.get(), Some(123_456));
    id.clear();
    assert_eq!(id.get(), None);
    assert_eq!(EventId::default().get(), None);
}

#[test]
fn a_refused_reservation_is_an_error_and_counted() {
    declare();
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = raw_buffer(&mut mem, config);
    let nest = Nesting::new();
    let sink = BufferSink::new(&buf, &nest);
    let big = "x".repeat(5000);
    assert_eq!(
        Message::write(&sink, &big),
        Err(EmitError::Reserve(ReserveError::TooBig))
    );
    assert_eq!(buf.stats().lost_big, 1);
}

#[test]
fn the_context_comes_before_the_fields() {
    declare();
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = raw_buffer(&mut mem, config);
    let nest = Nesting::new();
    let sink = BufferSink::new(&buf, &nest).with_context([0xaa, 0xbb, 0xcc, 0xdd]);
    Message::write(&sink, "hi").unwrap();
    Tick::write(&sink).unwrap();
    assert_eq!(
        raw_records(&buf),
        [
            (MESSAGE_ID, b"\xaa\xbb\xcc\xdd\x02\0\0\0hi".to_vec()),
            (TICK_ID, b"\xaa\xbb\xcc\xdd".to_vec()),
        ]
    );
}

/// A byte vector as a client's window (bounds-checked by `[u8]`'s `Out`).
struct Bytes<'a>(&'a mut Vec<u8>);

impl ringbuf_core::Out for Bytes<'_> {
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        self.0[..].put(offset, bytes);
    }
    fn zero(&mut self, offset: usize, len: usize) {
        self.0[..].zero(offset, len);
    }
}

/// Parses the padding events `write_padding_record` wrote over `bytes` (whose
/// first header is `header` bytes), checking each; returns how many.
fn check_padding(bytes: &[u8], header: usize, context: usize) -> usize {
    let (mut at, mut count) = (0, 0);
    let mut header = header;
    while at < bytes.len() {
        let decoded = EventHeader::parse(&bytes[at..], 0).expect("a whole header");
        assert_eq!(decoded.size, header, "header shape at {at}");
        let id = decoded.id;
        let fields = at + header + context;
        assert!(
            bytes[at + header..fields].iter().all(|&b| b == 0),
            "context at {at}"
        );
        at = match id {
            PADDING_EMPTY_ID => fields,
            PADDING_ID => {
                let size = bytes[fields] as usize;
                assert!(bytes[fields + 1..fields + 1 + size].iter().all(|&b| b == 0));
                fields + 1 + size
            }
            _ => panic!("event {id} at {at} is not padding"),
        };
        header = COMPACT_HEADER;
        count += 1;
    }
    assert_eq!(at, bytes.len(), "padding overran the record");
    count
}

#[test]
fn padding_events_tile_any_record_and_carry_the_context() {
    for context in [0, 1, 4, 100, MAX_EVENT_CONTEXT] {
        let ctf = Ctf::new([0; 16], 0).with_event_context(context);
        assert_eq!(ctf.event_context(), context);
        for header in [COMPACT_HEADER, EXTENDED_HEADER] {
            for payload in (context..context + 1100).chain([context + 70_000]) {
                let total = header + payload;
                let mut bytes = vec![0x5au8; total];
                let rec = RecordInfo {
                    event_id: 3,
                    payload_len: payload,
                    timestamp: 77,
                    prev_timestamp: 0,
                };
                ctf.write_padding_record(&mut Bytes(&mut bytes), &rec, header, total);
                let events = check_padding(&bytes, header, context);
                assert!(events >= 1 && events <= 1 + payload / 200);
            }
        }
    }
}

#[test]
#[should_panic(expected = "MAX_EVENT_CONTEXT")]
fn a_context_larger_than_the_maximum_is_refused() {
    let _ = Ctf::new([0; 16], 0).with_event_context(MAX_EVENT_CONTEXT + 1);
}

static VTID: [FieldDef; 2] = [
    FieldDef {
        name: "vtid",
        ty: FieldType::I32,
    },
    FieldDef {
        name: "busy",
        ty: FieldType::Bool,
    },
];

fn description<'a>(
    events: &'a [EventSchema],
    context: &'a [FieldDef],
    env: &'a [(&'static str, EnvValue<'a>)],
) -> TraceDescription<'a> {
    TraceDescription {
        uuid: [0; 16],
        clock: ClockDescription {
            name: "counter",
            description: "test counter",
            freq: 1_000_000_000,
            offset_s: 0,
            offset: 0,
        },
        events,
        tracer_name: "ringbuf-core tests",
        env,
        event_context: context,
    }
}

/// Writes typed events (and discarded reservations, which become padding) into a
/// CTF buffer with or without a context, and reads them back with babeltrace2.
/// `shown` is how babeltrace2 prints the context (after `{ cpu_id = 0 }`), and
/// `zeros` how it prints a context of zeros (that of padding events).
fn decode_typed_events<const N: usize>(
    name: &str,
    context: &[FieldDef],
    context_bytes: [u8; N],
    shown: &str,
    zeros: &str,
) {
    declare();
    let config = Config::new(4096, 8, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let ctf = Ctf::new([0; 16], 0).with_event_context(N);
    let buf = ctf_buffer(&mut mem, config, ctf);
    let nest = Nesting::new();
    let sink = BufferSink::new(&buf, &nest).with_context(context_bytes);
    let mut expected = Vec::new();
    for n in 0..12 {
        let a = Args::new(n);
        a.write(&sink).unwrap();
        expected.push(("AllTypes", a.decoded()));
        if n.is_multiple_of(3) {
            Tick::write(&sink).unwrap();
            expected.push(("Tick", String::new()));
        }
        if n % 4 == 1 {
            // A reservation dropped after the context: it becomes padding events
            // (more than one when larger than 256 bytes), context included.
            let r = buf.reserve(&nest, MESSAGE_ID, N + 300 * n as usize);
            drop(r.unwrap());
            expected.push(("ringbuf_padding", String::new()));
        }
    }
    let events = [
        EventSchema::of::<AllTypes>(ALL_TYPES_ID),
        EventSchema::of::<Tick>(TICK_ID),
        EventSchema::of::<Message>(MESSAGE_ID),
    ];
    let env = [
        ("hostname", EnvValue::Str("test-host")),
        ("vpid", EnvValue::Int(-42)),
    ];
    let mut metadata = String::new();
    write_metadata(&mut metadata, &description(&events, context, &env)).unwrap();
    let dir = trace_dir(name);
    write_trace(&dir, &metadata, &buf);
    let Some(lines) = babeltrace(&dir) else {
        return;
    };
    let mut got = lines.iter().peekable();
    for (event, fields) in expected {
        let line = got.next().expect("fewer events than written");
        assert!(line.contains("] test-host:(-42) "), "{line}");
        let (_, rest) = line.split_once("test-host:(-42) ").expect(line);
        let rest = rest.strip_prefix(&format!("{event}: ")).expect(line);
        if event == "ringbuf_padding" {
            // One or more, each with a context of zeros.
            let padding = format!("ringbuf_padding: {{ cpu_id = 0 }}{zeros}, {{ size = ");
            assert!(line.contains(&padding), "{line}");
            while got.peek().is_some_and(|l| l.contains(" ringbuf_padding: ")) {
                let next = got.next().unwrap();
                assert!(next.contains(&padding), "{next}");
            }
            continue;
        }
        let rest = rest
            .strip_prefix(&format!("{{ cpu_id = 0 }}{shown}"))
            .expect(line);
        if fields.is_empty() {
            assert_eq!(rest, "", "{line}");
        } else {
            assert_eq!(rest, format!(", {fields}"), "{line}");
        }
    }
    assert_eq!(got.next(), None, "more events than written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn babeltrace2_reads_every_field_type() {
    decode_typed_events("typed", &[], [], "", "");
}

#[test]
fn babeltrace2_reads_every_field_type_after_a_context() {
    let [a, b, c, d] = (-7i32).to_le_bytes();
    decode_typed_events(
        "typed-context",
        &VTID,
        [a, b, c, d, 1],
        ", { vtid = -7, busy = ( \"true\" : container = 1 ) }",
        ", { vtid = 0, busy = ( \"false\" : container = 0 ) }",
    );
}
