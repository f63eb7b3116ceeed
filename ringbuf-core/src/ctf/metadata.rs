//! TSDL metadata generated from the event schemas, the clock, the environment and
//! the packet layout.

use core::fmt::{self, Write};

use super::schema::{EventSchema, FieldDef, FieldType};
use super::validate::{validate, MetadataError};
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

/// A value of the trace environment (CTF's `env` block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvValue<'a> {
    /// Any text (quotes, backslashes and control characters are escaped).
    Str(&'a str),
    /// An integer.
    Int(i64),
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
    /// Name of the tracer, for the `env` block (any text).
    pub tracer_name: &'a str,
    /// More entries of the `env` block, after `tracer_name` and `domain`: e.g.
    /// `hostname` (babeltrace2 prints it with every event), `vpid`, `procname`,
    /// `trace_name`. Keys are TSDL identifiers, unique.
    pub env: &'a [(&'static str, EnvValue<'a>)],
    /// The fields of the per-event context (e.g. an `I32` named `vtid`), between
    /// each event's header and its fields; empty for none. Fixed-size types only,
    /// at most [`super::MAX_EVENT_CONTEXT`] bytes, and every stream's
    /// [`super::Ctf`] must say as many ([`super::Ctf::with_event_context`]).
    pub event_context: &'a [FieldDef],
}

impl From<fmt::Error> for MetadataError {
    fn from(_: fmt::Error) -> Self {
        Self::Fmt
    }
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

/// A TSDL string literal: `"`, `\` and control characters escaped (control
/// characters in octal, which, unlike `\x`, cannot swallow a following digit).
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                c if c.is_ascii_control() => write!(f, "\\{:03o}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
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

/// The type names [`PRELUDE`] and the clock mappings declare: a field with one of
/// these names does not parse.
pub(crate) const TYPE_NAMES: [&str; 13] = [
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
    "uint32_clock_t",
    "uint64_clock_t",
];

/// Writes the TSDL metadata of `trace` to `w`, after checking it (see
/// [`MetadataError`] for what is refused).
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
    tracer_name = {tracer};
    domain = "ust";
"#,
        tracer = Quoted(trace.tracer_name),
    )?;
    for (key, value) in trace.env {
        match value {
            EnvValue::Str(v) => writeln!(w, "    {key} = {};", Quoted(v))?,
            EnvValue::Int(v) => writeln!(w, "    {key} = {v};")?,
        }
    }
    write!(
        w,
        r#"}};

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
typealias integer {{ size = 32; align = 8; signed = false; map = clock.{name}.value; }} := uint32_clock_t;
typealias integer {{ size = 64; align = 8; signed = false; map = clock.{name}.value; }} := uint64_clock_t;

struct event_header {{
    enum : uint5_t {{ compact = 0 ... 29, medium = 30, extended = 31 }} id;
    variant <id> {{
        struct {{ uint27_clock_t timestamp; }} compact;
        struct {{ uint16_t id; uint32_clock_t timestamp; }} medium;
        struct {{ uint32_t id; uint64_clock_t timestamp; }} extended;
    }} v;
}};

stream {{
    id = 0;
    event.header := struct event_header;
"#,
        name = clock.name,
        description = clock.description,
        freq = clock.freq,
        offset_s = clock.offset_s,
        offset = clock.offset,
    )?;
    if !trace.event_context.is_empty() {
        w.write_str("    event.context := struct {\n")?;
        write_fields(w, trace.event_context)?;
        w.write_str("    };\n")?;
    }
    write!(
        w,
        r#"    packet.context := struct {{
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
"#
    )?;
    for event in trace.events {
        write_event(w, event)?;
    }
    Ok(())
}

fn write_event<W: Write>(w: &mut W, event: &EventSchema) -> fmt::Result {
    write!(
        w,
        "\nevent {{\n    name = \"{}\";\n    id = {};\n    stream_id = 0;\n",
        event.name, event.id
    )?;
    if !event.fields.is_empty() {
        w.write_str("    fields := struct {\n")?;
        write_fields(w, event.fields)?;
        w.write_str("    };\n")?;
    }
    w.write_str("};\n")
}

/// One declaration per field; two for strings and sequences (their generated
/// length `_<name>_length` first).
fn write_fields<W: Write>(w: &mut W, fields: &[FieldDef]) -> fmt::Result {
    for &FieldDef { name, ty } in fields {
        match ty {
            FieldType::Bytes(n) => writeln!(w, "        uint8_t {name}[{n}];")?,
            FieldType::Array(element, n) => {
                writeln!(w, "        {} {name}[{n}];", scalar(*element))?
            }
            FieldType::Sequence => {
                writeln!(w, "        uint32_t _{name}_length;")?;
                writeln!(w, "        uint8_t {name}[_{name}_length];")?;
            }
            FieldType::String => {
                writeln!(w, "        uint32_t _{name}_length;")?;
                writeln!(w, "        utf8_t {name}[_{name}_length];")?;
            }
            ty => writeln!(w, "        {} {name};", scalar(ty))?,
        }
    }
    Ok(())
}

/// The TSDL type of a scalar (validation refuses arrays of anything else).
fn scalar(ty: FieldType) -> &'static str {
    match ty {
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
        // Readers print "false" and "true".
        FieldType::Bool => r#"enum : uint8_t { "false" = 0, "true" = 1 }"#,
        FieldType::Bytes(_) | FieldType::Array(..) | FieldType::Sequence | FieldType::String => {
            "uint8_t"
        }
    }
}
