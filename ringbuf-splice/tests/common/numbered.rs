//! Numbered events, whose every byte follows from their number, and a decoder that
//! checks a trace directory against them byte for byte: the proof that what a
//! receiver got is what the writers committed.

use std::ops::Range;
use std::path::Path;

use ringbuf_core::ctf::{
    Ctf, EventHeader, EventSchema, FieldDef, FieldType, PacketInfo, TraceDescription, Value,
    PACKET_HEADER_SIZE, PADDING_EMPTY_ID, PADDING_ID,
};
use ringbuf_core::{Config, Mode};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{Backing, ChannelOptions, PerCpuChannel, PerCpuConsumer};

/// A channel of numbered events (CTF, `CLOCK_MONOTONIC`).
pub type Channel = PerCpuChannel<Ctf, Monotonic>;
/// A consumer of such a channel.
pub type Consumer = PerCpuConsumer<Ctf, Monotonic>;

/// The trace uuid of [`channel`]s.
pub const UUID: [u8; 16] = *b"numbered-events!";

/// A channel of `buffers` buffers of `count` sub-buffers of `subbuf` bytes, discard
/// mode, in a memfd named `name`; and a consumer attached to it as another
/// process would be.
pub fn channel(name: &str, subbuf: u64, count: u64, buffers: u32) -> (Channel, Consumer) {
    let mut metadata = String::new();
    let trace = TraceDescription {
        uuid: UUID,
        clock: Monotonic.describe(),
        events: &NUMBERED,
        tracer_name: "test",
        env: &[],
        event_context: &[],
    };
    ringbuf_core::ctf::write_metadata(&mut metadata, &trace).unwrap();
    let options = ChannelOptions {
        config: Config::new(subbuf, count, Mode::Discard),
        buffers,
        format: 1,
        prefault: false,
        clock: trace.clock,
    };
    let backing = Backing::Memfd { name };
    let client = |c| Ctf::new(UUID, c);
    let channel = PerCpuChannel::create(backing, &options, &metadata, client, |_| Monotonic);
    let channel = channel.unwrap();
    let memfd = channel.shm().try_clone_fd().unwrap();
    let wake = channel.wakeup().try_clone_fd().unwrap();
    let consumer = PerCpuConsumer::attach_fd(memfd, Some(wake), 1, client, |_| Monotonic).unwrap();
    (channel, consumer)
}

/// Writes the events numbered `numbers`; returns those committed.
pub fn write(channel: &Channel, numbers: Range<u64>) -> Vec<u64> {
    numbers
        .filter(|&n| {
            write_numbered(n, |schema, values| {
                channel.write_event(schema, values).is_ok()
            })
        })
        .collect()
}

/// Payload bytes of an event.
pub const PAYLOAD: usize = 48;

/// The one event type: its number `n`, then [`payload`]`(n)`.
pub static NUMBERED: [EventSchema; 1] = [EventSchema {
    id: 1,
    name: "numbered",
    fields: &[
        FieldDef {
            name: "n",
            ty: FieldType::U64,
        },
        FieldDef {
            name: "payload",
            ty: FieldType::Bytes(PAYLOAD),
        },
    ],
}];

/// Event `n`'s payload: every byte depends on `n` and its place.
pub fn payload(n: u64) -> [u8; PAYLOAD] {
    let mut out = [0u8; PAYLOAD];
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    for chunk in out.chunks_mut(8) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Writes event `n` with `write` (a channel's `write_event`); true if committed.
pub fn write_numbered(n: u64, write: impl FnOnce(&EventSchema, &[Value<'_>]) -> bool) -> bool {
    let bytes = payload(n);
    write(&NUMBERED[0], &[Value::U64(n), Value::Bytes(&bytes)])
}

/// What one stream file held, every byte checked.
#[derive(Debug, Default)]
pub struct Stream {
    /// The file's name.
    pub name: String,
    /// Event numbers, in file order.
    pub numbers: Vec<u64>,
    /// Whole packets.
    pub packets: u64,
    /// The last packet's `events_discarded` (the stream's total when it was closed).
    pub discarded: u64,
    /// Bytes.
    pub len: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decodes every `stream_*` file of the trace at `dir`, panicking (with the file
/// and offset) at anything but whole packets with consecutive sequence numbers,
/// zero padding, and numbered or padding events whose every byte is right.
pub fn decode_trace(dir: &Path) -> Vec<Stream> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("stream_"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| decode_stream(name.clone(), &std::fs::read(dir.join(&name)).unwrap()))
        .collect()
}

fn decode_stream(name: String, bytes: &[u8]) -> Stream {
    let mut stream = Stream {
        len: bytes.len() as u64,
        ..Stream::default()
    };
    let mut at = 0;
    let mut last_seq = None;
    while at < bytes.len() {
        let info = PacketInfo::parse(&bytes[at..])
            .unwrap_or_else(|e| panic!("{name}: packet at {at}: {e:?} (a cut packet?)"));
        if let Some(last) = last_seq {
            assert_eq!(info.seq, last + 1, "{name}: packet at {at}: sequence gap");
        }
        last_seq = Some(info.seq);
        let (content, end) = (
            at + info.content_size as usize,
            at + info.packet_size as usize,
        );
        let mut p = at + PACKET_HEADER_SIZE;
        while p < content {
            let where_ = format!("{name}: event at {p} (packet at {at})");
            let header = EventHeader::parse(&bytes[p..content], 0)
                .unwrap_or_else(|| panic!("{where_}: cut header"));
            p += header.size;
            match header.id {
                1 => {
                    assert!(p + 8 + PAYLOAD <= content, "{where_}: cut event");
                    let n = le_u64(bytes, p);
                    assert_eq!(
                        bytes[p + 8..p + 8 + PAYLOAD],
                        payload(n),
                        "{where_}: event {n}'s payload is not what was written"
                    );
                    stream.numbers.push(n);
                    p += 8 + PAYLOAD;
                }
                PADDING_ID => {
                    let size = bytes[p] as usize;
                    assert!(p + 1 + size <= content, "{where_}: cut padding");
                    assert!(
                        bytes[p + 1..p + 1 + size].iter().all(|&b| b == 0),
                        "{where_}: padding not zero"
                    );
                    p += 1 + size;
                }
                PADDING_EMPTY_ID => {}
                other => panic!("{where_}: unknown event id {other}"),
            }
        }
        assert_eq!(p, content, "{name}: packet at {at}: events overrun content");
        assert!(
            bytes[content..end].iter().all(|&b| b == 0),
            "{name}: packet at {at}: padding not zero"
        );
        stream.packets += 1;
        stream.discarded = info.events_discarded;
        at = end;
    }
    stream.name = name;
    stream
}

/// Checks that `streams` hold exactly the events numbered `committed`, each once,
/// in increasing order within each stream (one thread at a time wrote, counting up).
pub fn assert_exactly(streams: &[Stream], committed: &[u64]) {
    for s in streams {
        assert!(
            s.numbers.windows(2).all(|w| w[0] < w[1]),
            "{}: events out of order",
            s.name
        );
    }
    let mut got: Vec<u64> = streams.iter().flat_map(|s| s.numbers.clone()).collect();
    got.sort_unstable();
    let mut want = committed.to_vec();
    want.sort_unstable();
    assert_eq!(got.len(), want.len(), "events received vs committed");
    assert!(
        got == want,
        "the received events are not the committed ones"
    );
}
