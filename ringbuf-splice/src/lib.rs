//! `ringbuf-splice`: tracing sessions, and getting trace data out of buffers.
//!
//! * [`Session`] and [`event!`]: what a tracer author needs, in one dependency
//!   (declare events, start a session, emit, finish);
//! * [`export`]: packet export (zero-copy splice into files, one copy into
//!   sockets and pipes) and why a sub-buffer may be released when it returns;
//! * [`TraceDir`]: CTF trace directories that babeltrace2 reads;
//! * [`export_loop`]: the consumer loop of a whole channel (wakeups, live
//!   switching, export into a trace directory, a relayd, or both);
//! * [`relayd`]: streaming to an unmodified `lttng-relayd`, which writes the
//!   trace and serves live viewers;
//! * [`snapshot`]: flight-recorder snapshots while writers run;
//! * `tracing` (feature `tracing`): a `tracing-subscriber` Layer that records a
//!   program instrumented with `tracing` into the running session;
//! * the `ringbuf` CLI (`src/main.rs`).

pub mod export;
pub mod export_loop;
pub mod relayd;
pub mod session;
pub mod snapshot;
mod trace_dir;
#[cfg(feature = "tracing")]
pub mod tracing;

pub use trace_dir::{TraceDir, TraceError};

pub use ringbuf_core::ctf::{EmitError, Event, Field, FieldType};
pub use ringbuf_core::Mode;
pub use session::{
    Builder, Class, ClassSpec, Counters, Current, CurrentInHandler, RegisterError, Session,
    SessionError,
};

/// Declares typed event classes that a [`Session`] records.
///
/// The grammar is [`ringbuf_core::event!`]'s; each struct also gets
/// `$vis fn emit($($field: $Type),*) -> Result<(), EmitError>`, which writes one
/// event into the running session ([`EmitError::NoSession`] if none is running,
/// [`EmitError::Undeclared`] if it does not record this class), and
/// `emit_in_handler`, the same for signal handlers (per-thread buffers must not
/// register a thread from a handler: see [`CurrentInHandler`]).
///
/// ```
/// ringbuf_splice::event! {
///     /// A tick of the main loop.
///     pub struct Tick { n: u64, late: bool }
/// }
/// // No session is running: the event is refused, not lost silently.
/// assert_eq!(Tick::emit(1, false), Err(ringbuf_splice::EmitError::NoSession));
/// ```
///
/// A wrong argument type does not compile:
///
/// ```compile_fail,E0308
/// ringbuf_splice::event! { pub struct Tick { n: u64 } }
/// Tick::emit("one").unwrap();
/// ```
#[macro_export]
macro_rules! event {
    ($(
        $(#[$attr:meta])*
        $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? }
    )*) => {
        $crate::core::event! {$(
            $(#[$attr])*
            $vis struct $name { $($field: $ty),* }
        )*}
        $(
            impl $name {
                /// Writes one event into the running session.
                #[inline]
                #[allow(clippy::too_many_arguments, dead_code)]
                $vis fn emit($($field: $ty),*)
                    -> ::core::result::Result<(), $crate::EmitError>
                {
                    Self::write(&$crate::Current, $($field),*)
                }

                /// Writes one event into the running session from a signal
                /// handler (see [`CurrentInHandler`]($crate::CurrentInHandler)).
                #[inline]
                #[allow(clippy::too_many_arguments, dead_code)]
                $vis fn emit_in_handler($($field: $ty),*)
                    -> ::core::result::Result<(), $crate::EmitError>
                {
                    Self::write(&$crate::CurrentInHandler, $($field),*)
                }
            }
        )*
    };
}

pub use ringbuf_core as core;

/// The README's examples, compiled and run as doctests (here, where both the
/// session and the core are in reach).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
