//! CTF pieces that need no babeltrace2: schema checks, header choice and packet
//! parsing. (Metadata: `metadata.rs`; typed events: `events.rs`.)

use ringbuf_core::ctf::{
    encoded_size, Ctf, EventHeader, EventSchema, FieldDef, FieldType, PacketError, PacketInfo,
    SchemaMismatch, Value, COMPACT_HEADER, COMPACT_IDS, COMPACT_TS_BITS, EXTENDED_HEADER,
    MEDIUM_HEADER, MEDIUM_IDS, MEDIUM_TS_BITS,
};
use ringbuf_core::{Client, RecordInfo};

static FIELDS: [FieldDef; 3] = [
    FieldDef {
        name: "a",
        ty: FieldType::U16,
    },
    FieldDef {
        name: "b",
        ty: FieldType::Bytes(2),
    },
    FieldDef {
        name: "s",
        ty: FieldType::String,
    },
];
static EVENT: EventSchema = EventSchema {
    id: 2,
    name: "e",
    fields: &FIELDS,
};

#[test]
fn values_are_checked_against_the_schema() {
    let ok = [Value::U16(1), Value::Bytes(&[1, 2]), Value::Str("abc")];
    assert_eq!(encoded_size(&EVENT, &ok), Ok(2 + 2 + 4 + 3));
    assert_eq!(
        encoded_size(&EVENT, &ok[..2]),
        Err(SchemaMismatch::Count {
            expected: 3,
            given: 2
        })
    );
    let wrong_type = [Value::U32(1), Value::Bytes(&[1, 2]), Value::Str("")];
    assert_eq!(
        encoded_size(&EVENT, &wrong_type),
        Err(SchemaMismatch::Type { field: 0 })
    );
    let wrong_len = [Value::U16(1), Value::Bytes(&[1]), Value::Str("")];
    assert_eq!(
        encoded_size(&EVENT, &wrong_len),
        Err(SchemaMismatch::Type { field: 1 })
    );
}

/// A header-sized window for the client to write into.
struct Bytes([u8; EXTENDED_HEADER]);

impl ringbuf_core::Out for Bytes {
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        self.0[..].put(offset, bytes);
    }
    fn zero(&mut self, offset: usize, len: usize) {
        self.0[..].zero(offset, len);
    }
}

#[test]
fn each_event_gets_the_smallest_header_that_holds_its_id_and_time() {
    let ctf = Ctf::new([0; 16], 0);
    let rec = |id, ts, prev| RecordInfo {
        event_id: id,
        payload_len: 0,
        timestamp: ts,
        prev_timestamp: prev,
    };
    let (compact, medium) = (1u64 << COMPACT_TS_BITS, 1u64 << MEDIUM_TS_BITS);
    let cases = [
        // (id, time moved, header)
        (0, 0, COMPACT_HEADER),
        (COMPACT_IDS - 1, compact - 1, COMPACT_HEADER),
        (COMPACT_IDS, 0, MEDIUM_HEADER),
        (0, compact, MEDIUM_HEADER),
        (MEDIUM_IDS - 1, medium - 1, MEDIUM_HEADER),
        (MEDIUM_IDS, 0, EXTENDED_HEADER),
        (0, medium, EXTENDED_HEADER),
        // An unknown previous timestamp (0) with a late time: extended.
        (0, 1 << 40, EXTENDED_HEADER),
    ];
    for (id, moved, header) in cases {
        let r = rec(id, 1000 + moved, 1000);
        assert_eq!(ctf.record_header_size(&r), header, "id {id}, moved {moved}");
        // And a reader decodes what was written back to the id and the time.
        let mut bytes = Bytes([0u8; EXTENDED_HEADER]);
        ctf.write_record_header(&mut bytes, &r);
        let decoded = EventHeader::parse(&bytes.0, 1000).unwrap();
        assert_eq!(
            (decoded.id, decoded.timestamp, decoded.size),
            (id, 1000 + moved, header)
        );
    }
}

#[test]
fn packet_parsing_refuses_inconsistent_sizes() {
    let mut bytes = vec![0u8; 256];
    assert_eq!(PacketInfo::parse(&bytes[..10]), Err(PacketError::Truncated));
    assert_eq!(PacketInfo::parse(&bytes), Err(PacketError::BadMagic(0)));
    bytes[..4].copy_from_slice(&0xC1FC1FC1u32.to_le_bytes());
    let set = |b: &mut Vec<u8>, content: u64, packet: u64| {
        b[40..48].copy_from_slice(&content.to_le_bytes());
        b[48..56].copy_from_slice(&packet.to_le_bytes());
    };
    for (content, packet) in [(800, 700), (8 * 76 + 3, 2048), (8 * 80, 8 * 300), (8, 2048)] {
        set(&mut bytes, content, packet);
        assert!(matches!(
            PacketInfo::parse(&bytes),
            Err(PacketError::BadSizes { .. })
        ));
    }
    set(&mut bytes, 8 * 100, 8 * 256);
    let info = PacketInfo::parse(&bytes).unwrap();
    assert_eq!((info.content_size, info.packet_size), (100, 256));
}
