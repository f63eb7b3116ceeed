//! CTF 1.8: every sub-buffer a packet, every record an event, and the TSDL metadata
//! that lets babeltrace2 read them (docs/ARCHITECTURE.md, design §7).
//!
//! A tracer declares event classes, creates one [`Ctf`] client per buffer (per
//! CPU), writes events, and writes [`write_metadata`] next to the stream files.
//! Event classes are declared either typed, with [`crate::event!`] (written with a
//! typed call into a [`Sink`], the fields encoded in place with no runtime type
//! dispatch), or dynamically as [`EventSchema`]s written with [`write_event`] and
//! a slice of [`Value`]s (checked against the schema on every call). Neither
//! allocates.

mod client;
mod event;
mod field;
mod metadata;
mod schema;
mod validate;

pub use client::{
    close_packet, Ctf, EventHeader, PacketError, PacketInfo, COMPACT_HEADER, COMPACT_IDS,
    COMPACT_TS_BITS, CTF_MAGIC, EXTENDED_HEADER, MAX_EVENT_CONTEXT, MEDIUM_HEADER, MEDIUM_IDS,
    MEDIUM_TS_BITS, PACKET_HEADER_SIZE,
};
pub use event::{fill_reservation, BufferSink, EmitError, Event, EventId, Sink};
pub use field::{Element, Field};
pub use metadata::{write_metadata, ClockDescription, EnvValue, TraceDescription, Uuid};
pub use schema::{encoded_size, EventSchema, FieldDef, FieldType, SchemaMismatch, Value};
pub use validate::MetadataError;

use crate::{Buffer, Client, Clock, Control, Nesting, ReserveError};

/// Event id of `ringbuf_padding` (a discarded reservation).
pub const PADDING_ID: u32 = 29;
/// Event id of `ringbuf_padding_empty` (the same, for a record without payload).
pub const PADDING_EMPTY_ID: u32 = 28;

/// Why [`write_event`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// The values do not match the schema (nothing reserved, nothing counted).
    Schema(SchemaMismatch),
    /// The buffer refused the event (counted in its loss counter).
    Reserve(ReserveError),
}

impl core::fmt::Display for EventError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Schema(e) => write!(f, "values do not match the event's schema: {e}"),
            Self::Reserve(e) => write!(f, "the buffer refused the event: {e}"),
        }
    }
}

impl core::error::Error for EventError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Schema(e) => Some(e),
            Self::Reserve(e) => Some(e),
        }
    }
}

/// Writes one event: checks `values` against `schema`, reserves, encodes the fields
/// in place and commits. No allocation. (Any client works; [`Ctf`], or a wrapper
/// around it, makes the result a CTF event.)
///
/// It writes no event context: on a stream that has one, write typed events into
/// a [`Sink`] that writes it (e.g. [`BufferSink::with_context`]).
pub fn write_event<C: Control, K: Client, T: Clock>(
    buf: &Buffer<C, K, T>,
    nest: &Nesting,
    schema: &EventSchema,
    values: &[Value<'_>],
) -> Result<(), EventError> {
    let size = encoded_size(schema, values).map_err(EventError::Schema)?;
    let mut r = buf
        .reserve(nest, schema.id, size)
        .map_err(EventError::Reserve)?;
    encode_fields(schema, values, &mut |offset, bytes| {
        let written = r.write_at(offset, bytes);
        debug_assert!(written, "encoded size checked above");
    });
    r.commit();
    Ok(())
}

/// Encodes `values` (checked against `schema`) into `out`, as [`write_event`]
/// would into a reservation; the encoded length, or `None` if it exceeds
/// `out.len()` (nothing written). For write paths that stage an event first.
pub fn encode_event(
    schema: &EventSchema,
    values: &[Value<'_>],
    out: &mut [u8],
) -> Result<Option<usize>, SchemaMismatch> {
    let size = encoded_size(schema, values)?;
    let Some(out) = out.get_mut(..size) else {
        return Ok(None);
    };
    encode_fields(schema, values, &mut |offset, bytes| {
        out[offset..offset + bytes.len()].copy_from_slice(bytes);
    });
    Ok(Some(size))
}

/// Encodes each field through `put(offset, bytes)`.
fn encode_fields(schema: &EventSchema, values: &[Value<'_>], put: &mut impl FnMut(usize, &[u8])) {
    let mut at = 0;
    for (field, value) in schema.fields.iter().zip(values) {
        at = value.encode(field.ty, at, put);
    }
}
