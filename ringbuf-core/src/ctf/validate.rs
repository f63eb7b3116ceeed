//! What `write_metadata` refuses: anything that would make a trace babeltrace2
//! cannot read (or reads ambiguously), reported with the event and field it is in.

use core::fmt;

use super::client::MAX_EVENT_CONTEXT;
use super::metadata::{TraceDescription, TYPE_NAMES};
use super::schema::{FieldDef, FieldType};
use super::{PADDING_EMPTY_ID, PADDING_ID};

/// The keywords of the CTF 1.8 metadata grammar (TSDL): none can be an identifier.
pub(crate) const TSDL_KEYWORDS: [&str; 28] = [
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

/// The library's own event names (declared in every trace).
const PADDING_NAMES: [&str; 2] = ["ringbuf_padding", "ringbuf_padding_empty"];

/// Env keys the metadata writes itself.
const OWN_ENV_KEYS: [&str; 2] = ["tracer_name", "domain"];

/// Why metadata could not be written. Field errors name the event (`event: None`
/// is the stream's event context) and the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// The writer failed.
    Fmt,
    /// The clock's name is not a TSDL identifier (or is a keyword), or its
    /// description is not plain text (printable ASCII without `"` or `\`).
    InvalidName(&'static str),
    /// The clock frequency is zero.
    ZeroFrequency,
    /// An event uses an id the library reserves: [`PADDING_ID`],
    /// [`PADDING_EMPTY_ID`], or `u32::MAX` (which an [`super::EventId`] cannot hold).
    ReservedId {
        /// The event.
        event: &'static str,
        /// Its id.
        id: u32,
    },
    /// Two events share an id.
    DuplicateId {
        /// The later event.
        event: &'static str,
        /// The earlier event with the same id.
        other: &'static str,
        /// The id.
        id: u32,
    },
    /// Two events share a name, or an event is named like one of the library's
    /// own (`ringbuf_padding`, `ringbuf_padding_empty`).
    DuplicateEvent {
        /// The name.
        event: &'static str,
    },
    /// An event name is empty or not plain text (printable ASCII without `"` or
    /// `\`).
    InvalidEventName {
        /// The name.
        event: &'static str,
    },
    /// A field name is not a TSDL identifier (ASCII letters, digits and `_`, not
    /// starting with a digit).
    InvalidField {
        /// The event (`None`: the event context).
        event: Option<&'static str>,
        /// The field.
        field: &'static str,
    },
    /// A field name is a TSDL keyword (`event`, `string`, `int`, `align`, ...) or
    /// a type name the metadata declares (`uint8_t`, ...).
    ReservedField {
        /// The event (`None`: the event context).
        event: Option<&'static str>,
        /// The field.
        field: &'static str,
    },
    /// Two fields have the same name to a CTF reader, which strips one leading
    /// underscore: equal names, or equal once one leading underscore is stripped
    /// from either or both (`_x` and `x`; `__x` and `_x`).
    DuplicateField {
        /// The event (`None`: the event context).
        event: Option<&'static str>,
        /// The later field.
        field: &'static str,
        /// The earlier field.
        other: &'static str,
    },
    /// A field has the name of the length the metadata generates for a string or
    /// sequence field (by the same rule as [`MetadataError::DuplicateField`]):
    /// `msg_length`, `_msg_length` or `__msg_length` next to a string `msg`, whose
    /// length is `_msg_length`.
    LengthCollision {
        /// The event.
        event: &'static str,
        /// The field.
        field: &'static str,
        /// The string or sequence field whose length it collides with.
        of: &'static str,
    },
    /// An event field (or the generated length of one) has the name of an event
    /// context field (by the same rule as [`MetadataError::DuplicateField`]): a
    /// reader that flattens the event could not tell them apart.
    ContextCollision {
        /// The event.
        event: &'static str,
        /// The event's field.
        field: &'static str,
    },
    /// An array of something other than integers, floats or bools.
    UnsupportedType {
        /// The event (`None`: the event context).
        event: Option<&'static str>,
        /// The field.
        field: &'static str,
    },
    /// An event context field has no fixed size (a string or sequence).
    VariableContext {
        /// The field.
        field: &'static str,
    },
    /// The event context is larger than [`MAX_EVENT_CONTEXT`] bytes.
    ContextTooLarge {
        /// Its size in bytes (saturated).
        size: usize,
    },
    /// An env key is not a TSDL identifier, or is a keyword.
    InvalidEnvKey {
        /// The key.
        key: &'static str,
    },
    /// Two env entries share a key, or an entry has one of the keys the metadata
    /// writes itself (`tracer_name`, `domain`).
    DuplicateEnvKey {
        /// The key.
        key: &'static str,
    },
}

/// "event `x`" or "the event context", for messages.
struct Scope(Option<&'static str>);

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(event) => write!(f, "event `{event}`"),
            None => f.write_str("the event context"),
        }
    }
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fmt => f.write_str("the metadata writer failed"),
            Self::InvalidName(what) => write!(
                f,
                "the {what} is not valid (a name must be a TSDL identifier and not a \
                 keyword; a description printable ASCII without `\"` or `\\`)"
            ),
            Self::ZeroFrequency => f.write_str("the clock frequency is zero"),
            Self::ReservedId { event, id } => write!(
                f,
                "event `{event}` has id {id}, which is reserved \
                 ({PADDING_ID} and {PADDING_EMPTY_ID}: padding; {}: no id)",
                u32::MAX
            ),
            Self::DuplicateId { event, other, id } => {
                write!(f, "events `{other}` and `{event}` both have id {id}")
            }
            Self::DuplicateEvent { event } => write!(
                f,
                "two events are named `{event}` (ringbuf_padding and \
                 ringbuf_padding_empty are the library's own)"
            ),
            Self::InvalidEventName { event } => write!(
                f,
                "event name `{event}` is empty or not printable ASCII without `\"` or `\\`"
            ),
            Self::InvalidField { event, field } => write!(
                f,
                "{}: field name `{field}` is not a TSDL identifier (ASCII letters, \
                 digits and `_`, not starting with a digit)",
                Scope(event)
            ),
            Self::ReservedField { event, field } => write!(
                f,
                "{}: field name `{field}` is a TSDL keyword or type name",
                Scope(event)
            ),
            Self::DuplicateField {
                event,
                field,
                other,
            } => write!(
                f,
                "{}: fields `{other}` and `{field}` have the same name to a CTF reader \
                 (which strips one leading underscore)",
                Scope(event)
            ),
            Self::LengthCollision { event, field, of } => write!(
                f,
                "event `{event}`: field `{field}` has the name of `_{of}_length`, the \
                 generated length of `{of}` (a CTF reader strips one leading underscore)"
            ),
            Self::ContextCollision { event, field } => write!(
                f,
                "event `{event}`: field `{field}` has the name of an event context field"
            ),
            Self::UnsupportedType { event, field } => write!(
                f,
                "{}: field `{field}` is an array of something other than integers, \
                 floats or bools",
                Scope(event)
            ),
            Self::VariableContext { field } => write!(
                f,
                "event context field `{field}` has no fixed size (a string or sequence)"
            ),
            Self::ContextTooLarge { size } => write!(
                f,
                "the event context is {size} bytes, more than the {MAX_EVENT_CONTEXT} allowed"
            ),
            Self::InvalidEnvKey { key } => write!(
                f,
                "env key `{key}` is not a TSDL identifier or is a keyword"
            ),
            Self::DuplicateEnvKey { key } => write!(
                f,
                "env key `{key}` appears twice (tracer_name and domain are written \
                 by the library)"
            ),
        }
    }
}

impl core::error::Error for MetadataError {}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A TSDL identifier that is neither a keyword nor a declared type name.
fn is_free_identifier(s: &str) -> bool {
    is_identifier(s) && !TSDL_KEYWORDS.contains(&s) && !TYPE_NAMES.contains(&s)
}

fn is_plain_string(s: &str) -> bool {
    s.chars()
        .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
}

/// One spelling of a field name, `prefix + base + suffix`, compared without
/// building the string.
#[derive(Clone, Copy)]
struct Spelling {
    prefix: &'static str,
    base: &'static str,
    suffix: &'static str,
}

impl Spelling {
    fn same(self, other: Self) -> bool {
        let len = |s: Self| s.prefix.len() + s.base.len() + s.suffix.len();
        let bytes = |s: Self| {
            s.prefix
                .bytes()
                .chain(s.base.bytes())
                .chain(s.suffix.bytes())
        };
        len(self) == len(other) && bytes(self).eq(bytes(other))
    }
}

/// How a reader may know a field: as written, and with one leading underscore
/// stripped (CTF readers strip it). babeltrace2 refuses a field whose name, either
/// way, is one an earlier field has either way (`__x` then `_x`: refused; `_x`
/// then `__x`: read), and aborts on some (`x` then `_x`); refusing every such pair,
/// in either order, keeps the rule simple and safe.
#[derive(Clone, Copy)]
struct Names([Spelling; 2]);

impl Names {
    fn of(name: &'static str) -> Self {
        let written = Spelling {
            prefix: "",
            base: name,
            suffix: "",
        };
        let stripped = Spelling {
            base: name.strip_prefix('_').unwrap_or(name),
            ..written
        };
        Self([written, stripped])
    }

    /// The generated length `_<name>_length` of a string or sequence field.
    fn length_of(field: &FieldDef) -> Option<Self> {
        let written = Spelling {
            prefix: "_",
            base: field.name,
            suffix: "_length",
        };
        let stripped = Spelling {
            prefix: "",
            ..written
        };
        matches!(field.ty, FieldType::String | FieldType::Sequence)
            .then_some(Self([written, stripped]))
    }

    fn clash(self, other: Self) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.same(*b)))
    }
}

/// Checks one field on its own: name and type.
fn check_field(event: Option<&'static str>, field: &FieldDef) -> Result<(), MetadataError> {
    let name = field.name;
    if !is_identifier(name) {
        return Err(MetadataError::InvalidField { event, field: name });
    }
    if !is_free_identifier(name) {
        return Err(MetadataError::ReservedField { event, field: name });
    }
    if let FieldType::Array(element, _) = field.ty {
        if !element.is_scalar() {
            return Err(MetadataError::UnsupportedType { event, field: name });
        }
    }
    if event.is_none() && field.ty.fixed_size().is_none() {
        return Err(MetadataError::VariableContext { field: name });
    }
    Ok(())
}

/// Checks `fields[i]` against the fields before it: names as a reader shows them,
/// generated lengths included.
fn check_clashes(
    event: Option<&'static str>,
    fields: &[FieldDef],
    i: usize,
) -> Result<(), MetadataError> {
    let field = &fields[i];
    for other in &fields[..i] {
        if Names::of(field.name).clash(Names::of(other.name)) {
            return Err(MetadataError::DuplicateField {
                event,
                field: field.name,
                other: other.name,
            });
        }
        // A field named like the other's length, or the other way round. (Only in
        // events: context fields have no length, `check_field` refused them.)
        let Some(event) = event else { continue };
        for (user, string) in [(field, other), (other, field)] {
            if Names::length_of(string).is_some_and(|l| l.clash(Names::of(user.name))) {
                return Err(MetadataError::LengthCollision {
                    event,
                    field: user.name,
                    of: string.name,
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn validate(trace: &TraceDescription<'_>) -> Result<(), MetadataError> {
    let clock = &trace.clock;
    if !is_free_identifier(clock.name) {
        return Err(MetadataError::InvalidName("clock name"));
    }
    if !is_plain_string(clock.description) {
        return Err(MetadataError::InvalidName("clock description"));
    }
    if clock.freq == 0 {
        return Err(MetadataError::ZeroFrequency);
    }
    for (i, &(key, _)) in trace.env.iter().enumerate() {
        if !is_identifier(key) || TSDL_KEYWORDS.contains(&key) {
            return Err(MetadataError::InvalidEnvKey { key });
        }
        if OWN_ENV_KEYS.contains(&key) || trace.env[..i].iter().any(|&(k, _)| k == key) {
            return Err(MetadataError::DuplicateEnvKey { key });
        }
    }
    let context = trace.event_context;
    let mut context_size = 0usize;
    for (i, field) in context.iter().enumerate() {
        check_field(None, field)?;
        check_clashes(None, context, i)?;
        // Fixed (checked above).
        context_size = context_size.saturating_add(field.ty.fixed_size().unwrap_or(0));
    }
    if context_size > MAX_EVENT_CONTEXT {
        return Err(MetadataError::ContextTooLarge { size: context_size });
    }
    for (i, event) in trace.events.iter().enumerate() {
        let name = event.name;
        if name.is_empty() || !is_plain_string(name) {
            return Err(MetadataError::InvalidEventName { event: name });
        }
        if matches!(event.id, PADDING_ID | PADDING_EMPTY_ID | u32::MAX) {
            return Err(MetadataError::ReservedId {
                event: name,
                id: event.id,
            });
        }
        let earlier = &trace.events[..i];
        if let Some(other) = earlier.iter().find(|e| e.id == event.id) {
            return Err(MetadataError::DuplicateId {
                event: name,
                other: other.name,
                id: event.id,
            });
        }
        if PADDING_NAMES.contains(&name) || earlier.iter().any(|e| e.name == name) {
            return Err(MetadataError::DuplicateEvent { event: name });
        }
        for (j, field) in event.fields.iter().enumerate() {
            check_field(Some(name), field)?;
            check_clashes(Some(name), event.fields, j)?;
            let names = [Some(Names::of(field.name)), Names::length_of(field)];
            let clashes = |c: &FieldDef| names.iter().flatten().any(|n| n.clash(Names::of(c.name)));
            if context.iter().any(clashes) {
                return Err(MetadataError::ContextCollision {
                    event: name,
                    field: field.name,
                });
            }
        }
    }
    Ok(())
}
