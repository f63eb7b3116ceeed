//! CTF pieces that need no babeltrace2: schema checks, header choice and packet
//! parsing. (Metadata: `metadata.rs`; typed events: `events.rs`.)

use ringbuf_core::ctf::{
    encoded_size, Ctf, EventSchema, FieldDef, FieldType, PacketError, PacketInfo, SchemaMismatch,
    Value, COMPACT_HEADER, EXTENDED_HEADER,
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

#[test]
fn the_extended_header_is_chosen_for_big_ids_and_big_gaps_only() {
    let ctf = Ctf::new([0; 16], 0);
    let rec = |id, ts, prev| RecordInfo {
        event_id: id,
        payload_len: 0,
        timestamp: ts,
        prev_timestamp: prev,
    };
    let limit = 1 << 27;
    assert_eq!(ctf.record_header_size(&rec(30, 10, 10)), COMPACT_HEADER);
    assert_eq!(ctf.record_header_size(&rec(31, 10, 10)), EXTENDED_HEADER);
    assert_eq!(
        ctf.record_header_size(&rec(0, limit - 1, 0)),
        COMPACT_HEADER
    );
    assert_eq!(ctf.record_header_size(&rec(0, limit, 0)), EXTENDED_HEADER);
    // An unknown previous timestamp (0) forces the extended header.
    assert_eq!(ctf.record_header_size(&rec(0, 1 << 40, 0)), EXTENDED_HEADER);
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
