//! Typed events: an event class declared once with [`crate::event!`], written
//! with a typed call into any [`Sink`].
//!
//! The declaration yields the schema (its [`Event::NAME`] and [`Event::FIELDS`]) and
//! a `write` function whose parameters are the fields. Ids are not part of the
//! declaration: whoever writes the metadata (a session) gives each event class an
//! id and stores it in the class's [`EventId`]; writing a class that has none is
//! [`EmitError::Undeclared`], never an event the metadata does not describe.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use super::schema::FieldDef;
use crate::{Buffer, Client, Clock, Mapped, Nesting, Reservation, ReserveError};

/// An event class declared with [`crate::event!`].
pub trait Event {
    /// The event class name (the struct name, e.g. `"Request"`).
    const NAME: &'static str;
    /// The fields, in order.
    const FIELDS: &'static [FieldDef];
    /// The id the running session gave this event class (see [`EventId`]).
    fn id() -> &'static EventId;
}

/// The id of an event class in the running session, or none: one static per event
/// class, filled by the session when it starts and cleared when it ends.
///
/// `u32::MAX` means "no id" (so it cannot be an event's id; the metadata refuses
/// it).
#[derive(Debug)]
pub struct EventId(AtomicU32);

const UNASSIGNED: u32 = u32::MAX;

impl EventId {
    /// No id yet.
    pub const fn unassigned() -> Self {
        Self(AtomicU32::new(UNASSIGNED))
    }

    /// The id, if the event class has one.
    #[inline(always)]
    pub fn get(&self) -> Option<u32> {
        // Acquire pairs with `set`'s Release: a writer that sees the id also sees
        // what the session prepared before assigning it (its buffers, its metadata).
        let id = self.0.load(Ordering::Acquire);
        (id != UNASSIGNED).then_some(id)
    }

    /// Gives the event class `id` (see [`EventId::get`] for the ordering).
    /// `u32::MAX` is the same as [`EventId::clear`].
    pub fn set(&self, id: u32) {
        self.0.store(id, Ordering::Release);
    }

    /// Takes the id away: writing the event class is [`EmitError::Undeclared`] again.
    pub fn clear(&self) {
        self.0.store(UNASSIGNED, Ordering::Release);
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::unassigned()
    }
}

/// Why a typed event was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmitError {
    /// The event class has no id ([`Event::id`]): the running session did not
    /// declare it, or no session assigned ids. Nothing reserved, nothing counted.
    Undeclared {
        /// [`Event::NAME`].
        event: &'static str,
    },
    /// The buffer refused the event (counted in its loss counter).
    Reserve(ReserveError),
    /// No session is running (a sink that writes into the current session).
    NoSession,
    /// The sink has no buffer for the calling thread or CPU (e.g. a per-thread
    /// channel with no free slot); the sink's owner counts it.
    NoBuffer,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undeclared { event } => {
                write!(f, "event `{event}` is not declared in the running session")
            }
            Self::Reserve(e) => write!(f, "the buffer refused the event: {e}"),
            Self::NoSession => f.write_str("no trace session is running"),
            Self::NoBuffer => f.write_str("no buffer for the calling thread or CPU"),
        }
    }
}

impl core::error::Error for EmitError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Reserve(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ReserveError> for EmitError {
    fn from(e: ReserveError) -> Self {
        Self::Reserve(e)
    }
}

/// Where typed events go: reserves room for one event, lets the caller fill it,
/// and commits.
pub trait Sink {
    /// Reserves room for a payload of `len` bytes of event class `E`
    /// ([`EmitError::Undeclared`] if [`Event::id`] has no id), lets `fill` write
    /// exactly those bytes (`fill` gets a slice of exactly `len` bytes), and commits.
    ///
    /// A sink whose stream has an event context writes the context first, so the
    /// record's payload is the context then the `len` bytes.
    fn emit<E: Event>(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), EmitError>;
}

/// A [`Sink`] into one core [`Buffer`], for the calling thread (whose [`Nesting`]
/// counter it holds): typed events with no session, e.g. in `no_std` tracers.
///
/// With an event context (see [`super::Ctf::with_event_context`]), give its bytes
/// with [`BufferSink::with_context`]: every event starts with them. They must be
/// exactly as many as the stream's [`super::Ctf`] declares. `CONTEXT` is their
/// number, so that writing them is a fixed-size store.
pub struct BufferSink<'a, C: Mapped, K: Client, T: Clock, const CONTEXT: usize = 0> {
    buffer: &'a Buffer<C, K, T>,
    nest: &'a Nesting,
    context: [u8; CONTEXT],
}

impl<'a, C: Mapped, K: Client, T: Clock> BufferSink<'a, C, K, T> {
    /// Events into `buffer`, written by the thread whose nesting counter is `nest`,
    /// without an event context.
    pub fn new(buffer: &'a Buffer<C, K, T>, nest: &'a Nesting) -> Self {
        Self {
            buffer,
            nest,
            context: [],
        }
    }
}

impl<'a, C: Mapped, K: Client, T: Clock, const CONTEXT: usize> BufferSink<'a, C, K, T, CONTEXT> {
    /// The same sink, writing `context` before every event's fields.
    pub fn with_context<const N: usize>(self, context: [u8; N]) -> BufferSink<'a, C, K, T, N> {
        BufferSink {
            buffer: self.buffer,
            nest: self.nest,
            context,
        }
    }

    /// The buffer.
    pub fn buffer(&self) -> &'a Buffer<C, K, T> {
        self.buffer
    }
}

impl<C: Mapped, K: Client, T: Clock, const CONTEXT: usize> Sink
    for BufferSink<'_, C, K, T, CONTEXT>
{
    #[inline(always)]
    fn emit<E: Event>(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), EmitError> {
        let Some(id) = E::id().get() else {
            return Err(EmitError::Undeclared { event: E::NAME });
        };
        // Saturating: an impossible size is refused (and counted) as too big.
        let total = CONTEXT.saturating_add(len);
        fill_reservation(
            self.buffer.reserve(self.nest, id, total),
            &self.context,
            len,
            fill,
        )
    }
}

/// The end of every typed emit, whatever holds the buffer: writes `context` then
/// lets `fill` write exactly `len` bytes into the reservation `reserved` (made for
/// `N + len` payload bytes), and commits it.
#[inline(always)]
pub fn fill_reservation<C: Mapped, K: Client, T: Clock, const N: usize>(
    reserved: Result<Reservation<'_, C, K, T>, ReserveError>,
    context: &[u8; N],
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<(), EmitError> {
    // `match` on the result in place, not `?`: the reservation then stays where
    // `reserve` wrote it (moving it out of the `Result` copies it with wide loads
    // that cannot be forwarded from `reserve`'s stores: about 12 ns per event).
    match reserved {
        Ok(mut r) => {
            let total = N + len;
            // The payload is exactly `total` bytes (the compiler does not know;
            // slicing tells it, which folds the fields' bounds checks).
            let (head, fields) = r.payload_mut()[..total].split_at_mut(N);
            head.copy_from_slice(context);
            fill(fields);
            r.commit();
            Ok(())
        }
        Err(e) => Err(EmitError::Reserve(e)),
    }
}

/// Declares typed event classes.
///
/// Grammar (any number of structs in one invocation):
///
/// ```text
/// event! {
///     $(#[attribute])*            // doc comments and other attributes, kept
///     $vis struct $Name {
///         $($field: $Type),*      // trailing comma allowed
///     }
///     ...
/// }
/// ```
///
/// Each `$Type` implements [`ctf::Field`](crate::ctf::Field): `u8` to `u64`, `i8`
/// to `i64`, `f32`, `f64`, `bool`, `&str`, `&[u8]`, and fixed arrays of the
/// integer, float and bool types. Each struct becomes:
///
/// * a unit struct `$vis struct $Name;`
/// * `impl ctf::Event for $Name`: `NAME` is `"$Name"`, `FIELDS` the fields in
///   order, `id()` a static [`EventId`] of its own (unassigned until a session, or
///   you, sets it);
/// * `$vis fn write<S: Sink + ?Sized>(sink: &S, $($field: $Type),*) -> Result<(),
///   EmitError>`: computes the payload size (a constant when every field has a
///   fixed size) and encodes each field in place into the sink's reservation. No
///   slice of values, no type dispatch, no allocation.
///
/// ```
/// use ringbuf_core::ctf::{BufferSink, Ctf, Event, EventSchema, Field};
/// use ringbuf_core::{Buffer, Config, Mode, Nesting, NoClock, Region, SharedWord};
///
/// ringbuf_core::event! {
///     /// An HTTP request was served.
///     pub struct Request {
///         status: u16,
///         path: &str,
///         body: &[u8],
///         tag: [u8; 4],
///         ok: bool,
///     }
///     /// A tick (no fields).
///     pub struct Tick {}
/// }
///
/// // The schema for the metadata:
/// assert_eq!(Request::NAME, "Request");
/// assert_eq!(Request::FIELDS[1].name, "path");
/// assert_eq!(Request::FIELDS[3].ty, <[u8; 4] as Field>::TYPE);
/// let schema = EventSchema::of::<Request>(1);
/// assert_eq!(schema.fields.len(), 5);
///
/// // A CTF buffer and a sink for this thread.
/// let config = Config::new(4096, 4, Mode::Discard);
/// let mut mem = vec![0u64; Region::<SharedWord>::size_for(&config).unwrap() / 8];
/// let bytes = unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast::<u8>(), mem.len() * 8) };
/// let buffer = Buffer::new(Region::init(bytes, config, 1).unwrap(), Ctf::new([0; 16], 0), NoClock).unwrap();
/// let nest = Nesting::new();
/// let sink = BufferSink::new(&buffer, &nest);
///
/// // Without an id the event is refused, not written.
/// assert!(Request::write(&sink, 200, "/", b"", *b"abcd", true).is_err());
/// Request::id().set(1);
/// Request::write(&sink, 200, "/index.html", b"hi", *b"abcd", true).unwrap();
/// ```
///
/// A wrong argument type does not compile:
///
/// ```compile_fail,E0308
/// # use ringbuf_core::ctf::{BufferSink, Ctf};
/// # use ringbuf_core::{NoClock, Region, SharedWord};
/// ringbuf_core::event! { struct Request { status: u16, path: &str } }
/// fn emit(sink: &BufferSink<'_, Region<'_, SharedWord>, Ctf, NoClock>) {
///     Request::write(sink, "200", "/").unwrap(); // `status` is a u16
/// }
/// ```
///
/// Neither does a wrong argument count:
///
/// ```compile_fail,E0061
/// # use ringbuf_core::ctf::{BufferSink, Ctf};
/// # use ringbuf_core::{NoClock, Region, SharedWord};
/// ringbuf_core::event! { struct Request { status: u16, path: &str } }
/// fn emit(sink: &BufferSink<'_, Region<'_, SharedWord>, Ctf, NoClock>) {
///     Request::write(sink, 200).unwrap(); // `path` is missing
/// }
/// ```
///
/// Nor does a field of a type that is not a [`ctf::Field`](crate::ctf::Field):
///
/// ```compile_fail,E0277
/// ringbuf_core::event! { struct Request { status: usize } }
/// ```
#[macro_export]
macro_rules! event {
    ($(
        $(#[$attr:meta])*
        $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? }
    )*) => {$(
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;

        impl $crate::ctf::Event for $name {
            const NAME: &'static str = ::core::stringify!($name);
            const FIELDS: &'static [$crate::ctf::FieldDef] = &[$(
                $crate::ctf::FieldDef {
                    name: ::core::stringify!($field),
                    ty: <$ty as $crate::ctf::Field>::TYPE,
                },
            )*];
            #[inline(always)]
            fn id() -> &'static $crate::ctf::EventId {
                static ID: $crate::ctf::EventId = $crate::ctf::EventId::unassigned();
                &ID
            }
        }

        impl $name {
            #[doc = ::core::concat!(
                "Writes one `", ::core::stringify!($name), "` event into `sink`."
            )]
            #[inline]
            #[allow(clippy::too_many_arguments)]
            $vis fn write<S: $crate::ctf::Sink + ?::core::marker::Sized>(
                sink: &S,
                $($field: $ty),*
            ) -> ::core::result::Result<(), $crate::ctf::EmitError> {
                let len = 0usize $(.saturating_add($crate::ctf::Field::size(&$field)))*;
                sink.emit::<Self>(len, |out: &mut [u8]| {
                    let at = 0usize;
                    $(let at = at + $crate::ctf::Field::encode(&$field, &mut out[at..]);)*
                    let _ = (at, out);
                })
            }
        }
    )*};
}
