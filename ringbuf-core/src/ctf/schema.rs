//! Event schemas: what a tracer declares, and how values are laid out in a record.
//!
//! All integers and floats are little-endian and byte-aligned (CTF `align = 8`),
//! so a record is exactly the concatenation of its fields.

/// The type of one event field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Unsigned integer of 8 bits.
    U8,
    /// Unsigned integer of 16 bits.
    U16,
    /// Unsigned integer of 32 bits.
    U32,
    /// Unsigned integer of 64 bits.
    U64,
    /// Signed integer of 8 bits.
    I8,
    /// Signed integer of 16 bits.
    I16,
    /// Signed integer of 32 bits.
    I32,
    /// Signed integer of 64 bits.
    I64,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
    /// One byte, 0 (false) or 1 (true); declared as an enumeration so readers print
    /// `"false"` or `"true"`.
    Bool,
    /// Exactly this many bytes.
    Bytes(usize),
    /// This many elements of an integer, float or bool type, back to back (arrays
    /// of bytes are [`FieldType::Bytes`]).
    Array(&'static FieldType, usize),
    /// A `u32` length then that many bytes.
    Sequence,
    /// A `u32` length then that many UTF-8 bytes (no terminator).
    String,
}

impl FieldType {
    /// Encoded size of a fixed-size type; `None` for sequences and strings (and
    /// arrays of them). An array too large to address saturates at `usize::MAX`
    /// (no buffer holds it: writing one fails as too big).
    pub const fn fixed_size(self) -> Option<usize> {
        Some(match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::Bytes(n) => n,
            Self::Array(element, n) => match element.fixed_size() {
                Some(size) => size.saturating_mul(n),
                None => return None,
            },
            Self::Sequence | Self::String => return None,
        })
    }

    /// Whether this is an integer, float or bool type: what an array may hold.
    pub const fn is_scalar(self) -> bool {
        !matches!(
            self,
            Self::Bytes(_) | Self::Array(..) | Self::Sequence | Self::String
        )
    }
}

/// One named field of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// A TSDL identifier: ASCII letters, digits and `_`, not starting with a digit.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
}

/// An event type: its id in the stream and its fields, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSchema {
    /// Event id. Ids below 31 get the 4-byte compact header; the ids
    /// [`super::PADDING_ID`] and [`super::PADDING_EMPTY_ID`] are reserved.
    pub id: u32,
    /// Event name (printable ASCII, no `"` or `\`).
    pub name: &'static str,
    /// The fields.
    pub fields: &'static [FieldDef],
}

impl EventSchema {
    /// The schema of the typed event `E` (see [`super::Event`]) under `id`.
    pub const fn of<E: super::Event>(id: u32) -> Self {
        Self {
            id,
            name: E::NAME,
            fields: E::FIELDS,
        }
    }
}

/// A field value to write.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Value<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// For [`FieldType::Bytes`] (exact length), [`FieldType::Sequence`], and
    /// [`FieldType::Array`] (its elements already encoded, little-endian: exactly
    /// the array's size).
    Bytes(&'a [u8]),
    /// For [`FieldType::String`].
    Str(&'a str),
}

/// Values that do not match their schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaMismatch {
    /// Not as many values as fields.
    Count {
        /// Fields in the schema.
        expected: usize,
        /// Values given.
        given: usize,
    },
    /// A value of the wrong type (or a fixed array of the wrong length).
    Type {
        /// Index of the field.
        field: usize,
    },
    /// A sequence or string longer than `u32::MAX` bytes.
    TooLong {
        /// Index of the field.
        field: usize,
    },
}

impl core::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Count { expected, given } => {
                write!(f, "{given} values for {expected} fields")
            }
            Self::Type { field } => write!(f, "value {field} does not have its field's type"),
            Self::TooLong { field } => {
                write!(f, "value {field} is longer than u32::MAX bytes")
            }
        }
    }
}

impl core::error::Error for SchemaMismatch {}

impl Value<'_> {
    /// Encoded size if the value fits `ty`.
    fn size_as(&self, ty: FieldType) -> Option<usize> {
        match (ty, self) {
            (FieldType::U8, Value::U8(_))
            | (FieldType::I8, Value::I8(_))
            | (FieldType::Bool, Value::Bool(_)) => Some(1),
            (FieldType::U16, Value::U16(_)) | (FieldType::I16, Value::I16(_)) => Some(2),
            (FieldType::U32, Value::U32(_))
            | (FieldType::I32, Value::I32(_))
            | (FieldType::F32, Value::F32(_)) => Some(4),
            (FieldType::U64, Value::U64(_))
            | (FieldType::I64, Value::I64(_))
            | (FieldType::F64, Value::F64(_)) => Some(8),
            (FieldType::Bytes(n), Value::Bytes(b)) if b.len() == n => Some(n),
            (FieldType::Array(..), Value::Bytes(b)) if Some(b.len()) == ty.fixed_size() => {
                Some(b.len())
            }
            (FieldType::Sequence, Value::Bytes(b)) => Some(4 + b.len()),
            (FieldType::String, Value::Str(s)) => Some(4 + s.len()),
            _ => None,
        }
    }

    /// Writes the value's encoding as field type `ty` through `put(offset, bytes)`,
    /// starting at `at`; returns the offset after it. The value must fit `ty`
    /// (checked by [`encoded_size`]).
    pub(crate) fn encode(
        &self,
        ty: FieldType,
        at: usize,
        put: &mut impl FnMut(usize, &[u8]),
    ) -> usize {
        let mut emit = |at: usize, bytes: &[u8]| {
            put(at, bytes);
            at + bytes.len()
        };
        match *self {
            Value::U8(v) => emit(at, &[v]),
            Value::U16(v) => emit(at, &v.to_le_bytes()),
            Value::U32(v) => emit(at, &v.to_le_bytes()),
            Value::U64(v) => emit(at, &v.to_le_bytes()),
            Value::I8(v) => emit(at, &v.to_le_bytes()),
            Value::I16(v) => emit(at, &v.to_le_bytes()),
            Value::I32(v) => emit(at, &v.to_le_bytes()),
            Value::I64(v) => emit(at, &v.to_le_bytes()),
            Value::F32(v) => emit(at, &v.to_le_bytes()),
            Value::F64(v) => emit(at, &v.to_le_bytes()),
            Value::Bool(v) => emit(at, &[v as u8]),
            Value::Bytes(b) if ty == FieldType::Sequence => {
                let at = emit(at, &(b.len() as u32).to_le_bytes());
                emit(at, b)
            }
            Value::Bytes(b) => emit(at, b),
            Value::Str(s) => {
                let at = emit(at, &(s.len() as u32).to_le_bytes());
                emit(at, s.as_bytes())
            }
        }
    }
}

/// Checks `values` against `schema` and returns their encoded size.
pub fn encoded_size(schema: &EventSchema, values: &[Value<'_>]) -> Result<usize, SchemaMismatch> {
    if values.len() != schema.fields.len() {
        return Err(SchemaMismatch::Count {
            expected: schema.fields.len(),
            given: values.len(),
        });
    }
    let mut size = 0usize;
    for (i, (field, value)) in schema.fields.iter().zip(values).enumerate() {
        let n = value
            .size_as(field.ty)
            .ok_or(SchemaMismatch::Type { field: i })?;
        if n - field.ty.fixed_size().map_or(4, |_| 0) > u32::MAX as usize {
            return Err(SchemaMismatch::TooLong { field: i });
        }
        size = size.saturating_add(n);
    }
    Ok(size)
}
