//! The TSDL metadata: what it declares, and every validation error (each naming
//! its event and field), with babeltrace2 showing that what is refused would
//! really make an unreadable trace.

mod common;

use std::sync::atomic::AtomicU64;

use common::trace::{babeltrace, babeltrace_accepts, babeltrace_details, trace_dir, write_trace};
use common::{Counter, Memory};
use ringbuf_core::ctf::{
    write_metadata, ClockDescription, Ctf, EnvValue, EventSchema, FieldDef, FieldType,
    MetadataError, TraceDescription, MAX_EVENT_CONTEXT, PADDING_EMPTY_ID, PADDING_ID,
};
use ringbuf_core::{Buffer, Config, Mode, Nesting, Region};

/// The keywords of the CTF 1.8 grammar (specification, section 6).
const KEYWORDS: [&str; 28] = [
    "align",
    "callsite",
    "const",
    "char",
    "clock",
    "double",
    "enum",
    "env",
    "event",
    "floating_point",
    "float",
    "integer",
    "int",
    "long",
    "short",
    "signed",
    "stream",
    "string",
    "struct",
    "trace",
    "typealias",
    "typedef",
    "unsigned",
    "variant",
    "void",
    "_Bool",
    "_Complex",
    "_Imaginary",
];

/// The type names the metadata declares.
const TYPE_NAMES: [&str; 12] = [
    "uint8_t",
    "uint16_t",
    "uint32_t",
    "uint64_t",
    "int8_t",
    "int16_t",
    "int32_t",
    "int64_t",
    "utf8_t",
    "uint5_t",
    "uint27_clock_t",
    "uint64_clock_t",
];

fn field(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef { name, ty }
}

fn leak(fields: Vec<FieldDef>) -> &'static [FieldDef] {
    Box::leak(fields.into_boxed_slice())
}

fn event(name: &'static str, id: u32, fields: Vec<FieldDef>) -> EventSchema {
    EventSchema {
        id,
        name,
        fields: leak(fields),
    }
}

fn description<'a>(
    events: &'a [EventSchema],
    context: &'a [FieldDef],
    env: &'a [(&'static str, EnvValue<'a>)],
) -> TraceDescription<'a> {
    TraceDescription {
        uuid: [0xab; 16],
        clock: ClockDescription {
            name: "mono",
            description: "d",
            freq: 1_000_000_000,
            offset_s: 5,
            offset: 6,
        },
        events,
        tracer_name: "t",
        env,
        event_context: context,
    }
}

fn metadata(trace: &TraceDescription<'_>) -> Result<String, MetadataError> {
    let mut out = String::new();
    write_metadata(&mut out, trace).map(|()| out)
}

/// The names a refusal must mention in its message.
fn names(e: &MetadataError) -> Vec<&'static str> {
    use MetadataError::*;
    let scope = |event: Option<&'static str>| event.into_iter().collect::<Vec<_>>();
    match *e {
        ReservedId { event, .. } | DuplicateEvent { event } | InvalidEventName { event } => {
            vec![event]
        }
        DuplicateId { event, other, .. } => vec![event, other],
        InvalidField { event, field }
        | ReservedField { event, field }
        | UnsupportedType { event, field } => [scope(event), vec![field]].concat(),
        DuplicateField {
            event,
            field,
            other,
        } => [scope(event), vec![field, other]].concat(),
        LengthCollision { event, field, of } => vec![event, field, of],
        ContextCollision { event, field } => vec![event, field],
        VariableContext { field } => vec![field],
        InvalidEnvKey { key } | DuplicateEnvKey { key } => vec![key],
        InvalidName(what) => vec![what],
        _ => vec![],
    }
}

/// Checks that `trace` is refused with `expected`, whose message names what it
/// is about.
#[track_caller]
fn refused(trace: &TraceDescription<'_>, expected: MetadataError) {
    assert_eq!(metadata(trace), Err(expected));
    let message = expected.to_string();
    for name in names(&expected) {
        assert!(
            message.contains(&format!("`{name}`")) || message.contains(name),
            "{message}"
        );
    }
    if matches!(
        expected,
        MetadataError::InvalidField { event: None, .. }
            | MetadataError::ReservedField { event: None, .. }
            | MetadataError::DuplicateField { event: None, .. }
            | MetadataError::UnsupportedType { event: None, .. }
    ) {
        assert!(message.contains("event context"), "{message}");
    }
}

/// One event `e` (id 1) with these fields.
fn with_fields(fields: Vec<FieldDef>) -> Vec<EventSchema> {
    vec![event("e", 1, fields)]
}

#[test]
fn the_metadata_declares_every_part() {
    static WORDS: FieldType = FieldType::U16;
    let events = with_fields(vec![
        field("s", FieldType::String),
        field("flag", FieldType::Bool),
        field("words", FieldType::Array(&WORDS, 3)),
        field("flags", FieldType::Array(&FieldType::Bool, 2)),
        field("tag", FieldType::Bytes(4)),
    ]);
    let context = [field("vtid", FieldType::I32)];
    let env = [
        ("hostname", EnvValue::Str("h\"o\\s\tt")),
        ("vpid", EnvValue::Int(-3)),
    ];
    let out = metadata(&description(&events, &context, &env)).unwrap();
    assert!(out.starts_with("/* CTF 1.8 */\n"));
    assert!(out.contains("uuid = \"abababab-abab-abab-abab-abababababab\";"));
    assert!(out.contains("uint32_t _s_length;\n        utf8_t s[_s_length];"));
    assert!(out.contains("offset_s = 5;") && out.contains("offset = 6;"));
    assert!(out.contains(
        "    tracer_name = \"t\";\n    domain = \"ust\";\n    hostname = \"h\\\"o\\\\s\\011t\";\n    vpid = -3;\n};"
    ));
    assert!(out.contains("    event.context := struct {\n        int32_t vtid;\n    };\n"));
    assert!(out.contains("        enum : uint8_t { \"false\" = 0, \"true\" = 1 } flag;\n"));
    assert!(out.contains("        uint16_t words[3];\n"));
    assert!(out.contains("        enum : uint8_t { \"false\" = 0, \"true\" = 1 } flags[2];\n"));
    assert!(out.contains("        uint8_t tag[4];\n"));
    // No context, no declaration.
    let plain = metadata(&description(&events, &[], &[])).unwrap();
    assert!(!plain.contains("event.context"));
}

#[test]
fn the_environment_reads_back_with_any_text() {
    let hostname = "host \"with\" \\ back\tslash é";
    let env = [
        ("hostname", EnvValue::Str(hostname)),
        ("vpid", EnvValue::Int(-3)),
        ("procname", EnvValue::Str("proc")),
    ];
    let events = with_fields(vec![field("x", FieldType::U8)]);
    let Some(details) = read_back("env", &description(&events, &[], &env), &[5]) else {
        return;
    };
    assert!(
        details.contains(&format!("  Trace `{hostname}`:")),
        "{details}"
    );
    assert!(
        details.contains(&format!("      hostname: {hostname}\n")),
        "{details}"
    );
    assert!(details.contains("      vpid: -3\n"), "{details}");
    assert!(details.contains("      procname: proc\n"), "{details}");
    assert!(details.contains("      tracer_name: t\n"), "{details}");
}

/// Writes a trace of `trace`'s metadata and one event (id 1, `payload`), and
/// returns babeltrace2's details of it (`None`: babeltrace2 missing, skipped).
fn read_back(name: &str, trace: &TraceDescription<'_>, payload: &[u8]) -> Option<String> {
    let text = metadata(trace).unwrap();
    let dir = trace_dir(name);
    write_one_event(&dir, &text, payload);
    let details = babeltrace_details(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    details
}

fn write_one_event(dir: &std::path::Path, metadata: &str, payload: &[u8]) {
    let config = Config::new(4096, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let region = Region::init(mem.bytes(), config, 1).unwrap();
    let buf = Buffer::new(region, Ctf::new([0xab; 16], 0), Counter(AtomicU64::new(0))).unwrap();
    buf.write(&Nesting::new(), 1, payload).unwrap();
    write_trace(dir, metadata, &buf);
}

#[test]
fn every_keyword_and_type_name_is_refused_as_a_name() {
    for name in KEYWORDS.into_iter().chain(TYPE_NAMES) {
        let events = with_fields(vec![field("ok", FieldType::U8), field(name, FieldType::U8)]);
        refused(
            &description(&events, &[], &[]),
            MetadataError::ReservedField {
                event: Some("e"),
                field: name,
            },
        );
        let context = [field(name, FieldType::U8)];
        refused(
            &description(&[], &context, &[]),
            MetadataError::ReservedField {
                event: None,
                field: name,
            },
        );
        let mut trace = description(&[], &[], &[]);
        trace.clock.name = name;
        refused(&trace, MetadataError::InvalidName("clock name"));
    }
    for key in KEYWORDS {
        let env = [(key, EnvValue::Int(1))];
        refused(
            &description(&[], &[], &env),
            MetadataError::InvalidEnvKey { key },
        );
    }
}

/// babeltrace2 refuses a trace whose field has a refused name: the validation is
/// not stricter than the reader. (The metadata is written with a placeholder
/// name, then the name is put in its place.)
#[test]
fn babeltrace2_cannot_read_the_names_that_are_refused() {
    let placeholder = "placeholder_name";
    let events = with_fields(vec![field(placeholder, FieldType::U8)]);
    let text = metadata(&description(&events, &[], &[])).unwrap();
    let dir = trace_dir("placeholder");
    write_one_event(&dir, &text, &[5]);
    let Some(lines) = babeltrace(&dir) else {
        return;
    };
    assert!(lines[0].ends_with("e: { cpu_id = 0 }, { placeholder_name = 5 }"));
    std::fs::remove_dir_all(&dir).unwrap();
    for name in KEYWORDS.into_iter().chain(TYPE_NAMES) {
        let dir = trace_dir(&format!("keyword-{name}"));
        write_one_event(&dir, &text.replace(placeholder, name), &[5]);
        assert_eq!(babeltrace_accepts(&dir), Some(false), "field named {name}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // The collisions too: `_x` next to `x`, `_x` after `__x`, `msg_length` next to
    // a string `msg`.
    let collisions = [
        (
            "uint8_t placeholder_name;",
            "uint8_t _x;\n        uint8_t x;",
            vec![1, 2],
        ),
        (
            "uint8_t placeholder_name;",
            "uint8_t __x;\n        uint8_t _x;",
            vec![1, 2],
        ),
        (
            "uint8_t placeholder_name;",
            "uint32_t _msg_length;\n        utf8_t msg[_msg_length];\n        uint8_t msg_length;",
            vec![1, 0, 0, 0, b'a', 2],
        ),
    ];
    for (i, (from, to, payload)) in collisions.into_iter().enumerate() {
        let dir = trace_dir(&format!("collision-{i}"));
        assert!(text.contains(from));
        write_one_event(&dir, &text.replace(from, to), &payload);
        assert_eq!(babeltrace_accepts(&dir), Some(false), "{to}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn names_that_only_look_reserved_are_accepted_and_read() {
    let names = [
        "_int",
        "TRUE",
        "bool",
        "Int",
        "event_header",
        "compact",
        "size",
    ];
    let events = with_fields(names.iter().map(|&n| field(n, FieldType::U8)).collect());
    let trace = description(&events, &[], &[]);
    let text = metadata(&trace).unwrap();
    let dir = trace_dir("look-reserved");
    write_one_event(&dir, &text, &[1, 2, 3, 4, 5, 6, 7]);
    let Some(lines) = babeltrace(&dir) else {
        return;
    };
    // The reader strips one leading underscore.
    assert!(
        lines[0].ends_with(
            "{ int = 1, TRUE = 2, bool = 3, Int = 4, event_header = 5, compact = 6, size = 7 }"
        ),
        "{}",
        lines[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn field_names_must_be_identifiers() {
    for name in ["", "1x", "a-b", "a b", "é", "x.y", "r#type"] {
        let events = with_fields(vec![field(name, FieldType::U8)]);
        refused(
            &description(&events, &[], &[]),
            MetadataError::InvalidField {
                event: Some("e"),
                field: name,
            },
        );
        let context = [field(name, FieldType::U8)];
        refused(
            &description(&[], &context, &[]),
            MetadataError::InvalidField {
                event: None,
                field: name,
            },
        );
    }
}

#[test]
fn names_equal_once_an_underscore_is_stripped_collide() {
    for (earlier, later) in [
        ("x", "_x"),
        ("_x", "x"),
        ("__x", "_x"),
        ("_x", "__x"),
        ("x", "x"),
    ] {
        let events = with_fields(vec![
            field(earlier, FieldType::U8),
            field("y", FieldType::U8),
            field(later, FieldType::U32),
        ]);
        refused(
            &description(&events, &[], &[]),
            MetadataError::DuplicateField {
                event: Some("e"),
                field: later,
                other: earlier,
            },
        );
        let context = [field(earlier, FieldType::U8), field(later, FieldType::U8)];
        refused(
            &description(&[], &context, &[]),
            MetadataError::DuplicateField {
                event: None,
                field: later,
                other: earlier,
            },
        );
    }
    // Two underscores are one underscore to a reader: `_x`, not `x`.
    for (a, b) in [("__x", "x"), ("x", "__x"), ("___x", "_x")] {
        let events = with_fields(vec![field(a, FieldType::U8), field(b, FieldType::U8)]);
        metadata(&description(&events, &[], &[])).unwrap();
    }
}

#[test]
fn fields_named_like_a_generated_length_collide() {
    for ty in [FieldType::String, FieldType::Sequence] {
        for user in ["msg_length", "_msg_length", "__msg_length"] {
            for user_first in [false, true] {
                let mut fields = vec![field("msg", ty), field(user, FieldType::U32)];
                if user_first {
                    fields.reverse();
                }
                refused(
                    &description(&with_fields(fields), &[], &[]),
                    MetadataError::LengthCollision {
                        event: "e",
                        field: user,
                        of: "msg",
                    },
                );
            }
        }
    }
    // Lengths of strings with different names never collide.
    let events = with_fields(vec![
        field("a", FieldType::String),
        field("_b", FieldType::Sequence),
        field("b_length", FieldType::U8),
    ]);
    metadata(&description(&events, &[], &[])).unwrap();
}

#[test]
fn event_fields_must_not_repeat_context_names() {
    let context = [
        field("vtid", FieldType::I32),
        field("msg_length", FieldType::U8),
    ];
    for (name, ty) in [
        ("vtid", FieldType::U8),
        ("_vtid", FieldType::U8),
        ("msg", FieldType::String),
    ] {
        let events = with_fields(vec![field("ok", FieldType::U8), field(name, ty)]);
        refused(
            &description(&events, &context, &[]),
            MetadataError::ContextCollision {
                event: "e",
                field: name,
            },
        );
    }
}

#[test]
fn arrays_hold_scalars_only() {
    static STRING: FieldType = FieldType::String;
    static BYTES: FieldType = FieldType::Bytes(2);
    static BOOLS: FieldType = FieldType::Array(&FieldType::Bool, 2);
    for element in [&STRING, &BYTES, &BOOLS, &FieldType::Sequence] {
        let events = with_fields(vec![field("a", FieldType::Array(element, 2))]);
        refused(
            &description(&events, &[], &[]),
            MetadataError::UnsupportedType {
                event: Some("e"),
                field: "a",
            },
        );
        let context = [field("a", FieldType::Array(element, 2))];
        refused(
            &description(&[], &context, &[]),
            MetadataError::UnsupportedType {
                event: None,
                field: "a",
            },
        );
    }
}

#[test]
fn the_context_has_a_bounded_fixed_size() {
    for ty in [FieldType::String, FieldType::Sequence] {
        let context = [field("c", ty)];
        refused(
            &description(&[], &context, &[]),
            MetadataError::VariableContext { field: "c" },
        );
    }
    let most = [field("c", FieldType::Bytes(MAX_EVENT_CONTEXT))];
    metadata(&description(&[], &most, &[])).unwrap();
    let too_many = [
        field("c", FieldType::Bytes(MAX_EVENT_CONTEXT)),
        field("d", FieldType::Bool),
    ];
    refused(
        &description(&[], &too_many, &[]),
        MetadataError::ContextTooLarge {
            size: MAX_EVENT_CONTEXT + 1,
        },
    );
}

#[test]
fn event_names_and_ids_are_unique_and_not_reserved() {
    let e1 = event("e", 1, vec![]);
    for id in [PADDING_ID, PADDING_EMPTY_ID, u32::MAX] {
        refused(
            &description(&[e1, event("r", id, vec![])], &[], &[]),
            MetadataError::ReservedId { event: "r", id },
        );
    }
    refused(
        &description(&[e1, event("f", 1, vec![])], &[], &[]),
        MetadataError::DuplicateId {
            event: "f",
            other: "e",
            id: 1,
        },
    );
    for name in ["e", "ringbuf_padding", "ringbuf_padding_empty"] {
        refused(
            &description(&[e1, event(name, 2, vec![])], &[], &[]),
            MetadataError::DuplicateEvent { event: name },
        );
    }
    for name in ["", "a\"b", "a\\b", "tab\t", "é"] {
        refused(
            &description(&[event(name, 2, vec![])], &[], &[]),
            MetadataError::InvalidEventName { event: name },
        );
    }
    // Names need not be identifiers.
    metadata(&description(
        &[event("http:request 2", 2, vec![])],
        &[],
        &[],
    ))
    .unwrap();
}

#[test]
fn env_keys_are_unique_identifiers() {
    for key in ["", "1a", "a-b", "host name"] {
        let env = [(key, EnvValue::Int(1))];
        refused(
            &description(&[], &[], &env),
            MetadataError::InvalidEnvKey { key },
        );
    }
    for key in ["tracer_name", "domain"] {
        let env = [(key, EnvValue::Str("x"))];
        refused(
            &description(&[], &[], &env),
            MetadataError::DuplicateEnvKey { key },
        );
    }
    let env = [
        ("hostname", EnvValue::Str("a")),
        ("vpid", EnvValue::Int(1)),
        ("hostname", EnvValue::Str("b")),
    ];
    refused(
        &description(&[], &[], &env),
        MetadataError::DuplicateEnvKey { key: "hostname" },
    );
}

#[test]
fn the_clock_is_checked() {
    for name in ["a b", "", "1c"] {
        let mut trace = description(&[], &[], &[]);
        trace.clock.name = name;
        refused(&trace, MetadataError::InvalidName("clock name"));
    }
    let mut trace = description(&[], &[], &[]);
    trace.clock.description = "a\"b";
    refused(&trace, MetadataError::InvalidName("clock description"));
    let mut trace = description(&[], &[], &[]);
    trace.clock.freq = 0;
    refused(&trace, MetadataError::ZeroFrequency);
}
