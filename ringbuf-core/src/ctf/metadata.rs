//! TSDL metadata generated from the event schemas, the clock and the packet layout.

use core::fmt::{self, Write};

use super::schema::{EventSchema, FieldType};
use super::{PADDING_EMPTY_ID, PADDING_ID};

/// How trace timestamps map to time: CTF's `clock` block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockDescription<'a> {
    /// Clock name (a TSDL identifier), e.g. `monotonic` or `tsc`.
    pub name: &'a str,
    /// Free text (no `"` or `\`).
    pub description: &'a str,
    /// Ticks per second.
    pub freq: u64,
    /// Seconds from the Unix epoch to tick 0 (with `offset`).
    pub offset_s: i64,
    /// Further ticks from `offset_s` to tick 0 (`< freq`).
    pub offset: u64,
}

/// Everything the metadata describes.
#[derive(Clone, Copy, Debug)]
pub struct TraceDescription<'a> {
    /// The trace uuid (also written in every packet header).
    pub uuid: [u8; 16],
    /// The clock.
    pub clock: ClockDescription<'a>,
    /// The event types (ids unique; [`PADDING_ID`] and [`PADDING_EMPTY_ID`] are
    /// declared automatically and must not be used).
    pub events: &'a [EventSchema],
    /// Name of the tracer, for the `env` block.
    pub tracer_name: &'a str,
}

/// Why metadata could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// The writer failed.
    Fmt,
    /// A name that is not a TSDL identifier (fields, clock) or not a plain string
    /// (event names, descriptions).
    InvalidName(&'static str),
    /// An event uses a reserved id.
    ReservedId(u32),
    /// Two events share an id.
    DuplicateId(u32),
    /// The clock frequency is zero.
    ZeroFrequency,
}

impl From<fmt::Error> for MetadataError {
    fn from(_: fmt::Error) -> Self {
        Self::Fmt
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_plain_string(s: &str) -> bool {
    s.chars()
        .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
}

/// A uuid in its canonical 8-4-4-4-12 text form.
pub struct Uuid<'a>(pub &'a [u8; 16]);

impl fmt::Display for Uuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_char('-')?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

const PRELUDE: &str = r#"/* CTF 1.8 */

typealias integer { size = 8; align = 8; signed = false; } := uint8_t;
typealias integer { size = 16; align = 8; signed = false; } := uint16_t;
typealias integer { size = 32; align = 8; signed = false; } := uint32_t;
typealias integer { size = 64; align = 8; signed = false; } := uint64_t;
typealias integer { size = 8; align = 8; signed = true; } := int8_t;
typealias integer { size = 16; align = 8; signed = true; } := int16_t;
typealias integer { size = 32; align = 8; signed = true; } := int32_t;
typealias integer { size = 64; align = 8; signed = true; } := int64_t;
typealias integer { size = 8; align = 8; signed = false; encoding = UTF8; } := utf8_t;
typealias integer { size = 5; align = 1; signed = false; } := uint5_t;
typealias floating_point { exp_dig = 8; mant_dig = 24; align = 8; } := float;
typealias floating_point { exp_dig = 11; mant_dig = 53; align = 8; } := double;
"#;

/// Writes the TSDL metadata of `trace` to `w`.
pub fn write_metadata<W: Write>(
    w: &mut W,
    trace: &TraceDescription<'_>,
) -> Result<(), MetadataError> {
    validate(trace)?;
    let uuid = Uuid(&trace.uuid);
    let clock = &trace.clock;
    w.write_str(PRELUDE)?;
    write!(
        w,
        r#"
trace {{
    major = 1;
    minor = 8;
    uuid = "{uuid}";
    byte_order = le;
    packet.header := struct {{
        uint32_t magic;
        uint8_t uuid[16];
        uint32_t stream_id;
    }};
}};

env {{
    tracer_name = "{tracer}";
    domain = "ust";
}};

clock {{
    name = {name};
    description = "{description}";
    freq = {freq};
    precision = 1;
    offset_s = {offset_s};
    offset = {offset};
    absolute = FALSE;
}};

typealias integer {{ size = 27; align = 1; signed = false; map = clock.{name}.value; }} := uint27_clock_t;
typealias integer {{ size = 64; align = 8; signed = false; map = clock.{name}.value; }} := uint64_clock_t;

struct event_header {{
    enum : uint5_t {{ compact = 0 ... 30, extended = 31 }} id;
    variant <id> {{
        struct {{ uint27_clock_t timestamp; }} compact;
        struct {{ uint32_t id; uint64_clock_t timestamp; }} extended;
    }} v;
}};

stream {{
    id = 0;
    event.header := struct event_header;
    packet.context := struct {{
        uint64_clock_t timestamp_begin;
        uint64_clock_t timestamp_end;
        uint64_t content_size;
        uint64_t packet_size;
        uint64_t packet_seq_num;
        uint64_t events_discarded;
        uint32_t cpu_id;
    }};
}};

event {{
    name = "ringbuf_padding";
    id = {PADDING_ID};
    stream_id = 0;
    fields := struct {{ uint8_t size; uint8_t pad[size]; }};
}};

event {{
    name = "ringbuf_padding_empty";
    id = {PADDING_EMPTY_ID};
    stream_id = 0;
}};
"#,
        tracer = trace.tracer_name,
        name = clock.name,
        description = clock.description,
        freq = clock.freq,
        offset_s = clock.offset_s,
        offset = clock.offset,
    )?;
    for event in trace.events {
        write_event(w, event)?;
    }
    Ok(())
}

fn validate(trace: &TraceDescription<'_>) -> Result<(), MetadataError> {
    let clock = &trace.clock;
    if !is_identifier(clock.name) {
        return Err(MetadataError::InvalidName("clock name"));
    }
    if !is_plain_string(clock.description) || !is_plain_string(trace.tracer_name) {
        return Err(MetadataError::InvalidName(
            "clock description or tracer name",
        ));
    }
    if clock.freq == 0 {
        return Err(MetadataError::ZeroFrequency);
    }
    for (i, event) in trace.events.iter().enumerate() {
        if event.id == PADDING_ID || event.id == PADDING_EMPTY_ID {
            return Err(MetadataError::ReservedId(event.id));
        }
        if trace.events[..i].iter().any(|e| e.id == event.id) {
            return Err(MetadataError::DuplicateId(event.id));
        }
        if event.name.is_empty() || !is_plain_string(event.name) {
            return Err(MetadataError::InvalidName("event name"));
        }
        if !event.fields.iter().all(|f| is_identifier(f.name)) {
            return Err(MetadataError::InvalidName("field name"));
        }
    }
    Ok(())
}

fn write_event<W: Write>(w: &mut W, event: &EventSchema) -> Result<(), MetadataError> {
    write!(
        w,
        "\nevent {{\n    name = \"{}\";\n    id = {};\n    stream_id = 0;\n",
        event.name, event.id
    )?;
    if !event.fields.is_empty() {
        w.write_str("    fields := struct {\n")?;
        for field in event.fields {
            let name = field.name;
            let scalar = match field.ty {
                FieldType::U8 => "uint8_t",
                FieldType::U16 => "uint16_t",
                FieldType::U32 => "uint32_t",
                FieldType::U64 => "uint64_t",
                FieldType::I8 => "int8_t",
                FieldType::I16 => "int16_t",
                FieldType::I32 => "int32_t",
                FieldType::I64 => "int64_t",
                FieldType::F32 => "float",
                FieldType::F64 => "double",
                FieldType::Bytes(n) => {
                    writeln!(w, "        uint8_t {name}[{n}];")?;
                    continue;
                }
                FieldType::Sequence => {
                    writeln!(w, "        uint32_t _{name}_length;")?;
                    writeln!(w, "        uint8_t {name}[_{name}_length];")?;
                    continue;
                }
                FieldType::String => {
                    writeln!(w, "        uint32_t _{name}_length;")?;
                    writeln!(w, "        utf8_t {name}[_{name}_length];")?;
                    continue;
                }
            };
            writeln!(w, "        {scalar} {name};")?;
        }
        w.write_str("    };\n")?;
    }
    w.write_str("};\n")?;
    Ok(())
}
