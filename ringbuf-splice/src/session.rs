//! A tracing session: what a tracer author touches first.
//!
//! Declare event classes with [`crate::event!`], build a session with the events
//! it records, start it, emit from anywhere (any thread, signal handlers), and
//! finish it:
//!
//! ```
//! ringbuf_splice::event! {
//!     /// A request was served.
//!     pub struct Request { status: u16, micros: u64, path: &str }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("ringbuf-session-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let session = ringbuf_splice::Session::builder()
//!     .event::<Request>()
//!     .output(&dir)
//!     .start()?;
//! Request::emit(200, 1_500, "/index.html")?;
//! let counters = session.finish()?;
//! assert_eq!(counters.events_lost(), 0);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! One session runs at a time in a process: `Request::emit` writes into it, with no
//! handle to pass around (as a tracepoint writes into whatever session is on);
//! signal handlers use `Request::emit_in_handler` (see [`CurrentInHandler`]). A
//! session owns its channel (per-CPU buffers by default, or per-thread ones), a
//! consumer thread that exports packets live into the trace directory, and the
//! metadata: the events declared, the clock, the writing thread's id on every
//! event (`vtid`) and, once per trace, the process (hostname, `vpid`, `procname`,
//! the trace name). [`Session::finish`] (or dropping the session) closes every
//! stream and exports what is left, so a program that returns from `main` has a
//! complete trace; it returns the per-cause loss counters.
//!
//! A finished session's buffers stay mapped until the process exits: a probe on
//! another thread may have loaded the session just before it finished, and no
//! lock or counter on the event path tells when it is done. Such a probe's event
//! lands in a buffer nobody reads any more; every probe that starts after
//! `finish` gets [`EmitError::NoSession`].
//!
//! # Classes added while the session runs
//!
//! Front ends that learn their event classes as the program runs (the `tracing`
//! Layer: one class per callsite) describe each with a [`ClassSpec`] and register
//! it with [`Current::register`] (or [`Session::register`]), which checks it as
//! `start` checks the declared ones, gives it an id and appends its declaration to
//! the metadata before it returns the [`Class`]: an event of the class can only be
//! written after its metadata is where every reader gets it (the channel, from
//! which the session's exporter and `ringbuf consume` append it to their traces
//! before the packets that may use it).
//!
//! ```
//! use ringbuf_splice::session::{ClassSpec, Current};
//! use ringbuf_splice::{Field, FieldType};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("ringbuf-class-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let session = ringbuf_splice::Session::builder().output(&dir).start()?;
//! let class = Current.register(&ClassSpec {
//!     name: "http:request",
//!     fields: &[("status", FieldType::U16), ("path", FieldType::String)],
//!     log_level: Some(6), // info
//! })?;
//! // The payload is the fields, encoded as `Field` encodes them, in order.
//! let (status, path) = (200u16, "/index.html");
//! class.emit(status.size() + path.size(), |out| {
//!     let at = status.encode(out);
//!     path.encode(&mut out[at..]);
//! })?;
//! session.finish()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringbuf_core::ctf::{
    fill_reservation, write_metadata, ClockDescription, Ctf, EmitError, EnvValue, Event, EventId,
    EventSchema, FieldDef, FieldType, MetadataError, Sink, TraceDescription, PADDING_EMPTY_ID,
    PADDING_ID,
};
use ringbuf_core::{Client, Clock, Config, ConfigError, Mode, ReserveError, Stats, Switch, Word};
use ringbuf_mmap::clock::TraceClock;
use ringbuf_mmap::{
    current_tid, possible_cpus, with_nesting, Backing, ChannelError, ChannelOptions, Consumer,
    PerCpuChannel, PerThreadChannel, SlotError, Wakeup, WritePath, RSEQ_EVENT_STAGE,
};

use crate::export_loop::{self, ExportStats, LoopError, LoopOptions, Outputs};
use crate::relayd::{Relayd, RelaydAddress, RelaydError, RelaydOptions};
use crate::trace_dir::{TraceDir, TraceError};

/// The record format tag of session channels (CTF, as the CLI's).
const CTF_FORMAT: u32 = 1;

/// The per-event context every session writes: the writing thread's id.
const EVENT_CONTEXT: &[FieldDef] = &[FieldDef {
    name: "vtid",
    ty: FieldType::I32,
}];
/// Its bytes (what [`Shared::emit`] writes first).
const EVENT_CONTEXT_BYTES: usize = 4;

/// Why a session could not start or finish.
#[derive(Debug)]
pub enum SessionError {
    /// Another session is running in this process.
    AlreadyRunning,
    /// No output directory was given ([`Builder::output`]).
    NoOutput,
    /// The buffer configuration is invalid.
    Config(ConfigError),
    /// The events or the trace description are invalid (the error names the event
    /// and field).
    Metadata(MetadataError),
    /// The buffers could not be created.
    Channel(ChannelError),
    /// The trace directory could not be created or written.
    Trace {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: TraceError,
    },
    /// The consumer thread could not be started.
    Thread(std::io::Error),
    /// Exporting packets failed (the trace holds the packets exported before).
    Export(LoopError),
    /// The consumer thread panicked.
    ExporterPanicked,
    /// The relayd URL is invalid, or the relayd could not be reached or refused
    /// the session ([`Builder::relayd`]): nothing was started.
    RelaydConnect(RelaydError),
    /// The connection to the relayd was lost: the relayd's trace misses the
    /// packets counted in `counters.relayd_packets_unsent`; the trace directory
    /// is complete.
    RelaydLost {
        /// Why.
        error: RelaydError,
        /// The session's counters.
        counters: Box<Counters>,
    },
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyRunning => f.write_str("a session is already running in this process"),
            Self::NoOutput => f.write_str("no output directory (Builder::output)"),
            Self::Config(e) => write!(f, "buffer configuration: {e}"),
            Self::Metadata(e) => write!(f, "events: {e}"),
            Self::Channel(e) => write!(f, "creating the buffers: {e}"),
            Self::Trace { path, error } => write!(f, "trace {}: {error}", path.display()),
            Self::Thread(e) => write!(f, "starting the consumer thread: {e}"),
            Self::Export(e) => write!(f, "exporting: {e}"),
            Self::ExporterPanicked => f.write_str("the consumer thread panicked"),
            Self::RelaydConnect(e) => write!(f, "relayd: {e}"),
            Self::RelaydLost { error, counters } => write!(
                f,
                "relayd connection lost ({error}): {} packets sent, {} not sent; the trace \
                 directory is complete",
                counters.relayd_packets_sent, counters.relayd_packets_unsent
            ),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Metadata(e) => Some(e),
            Self::Channel(e) => Some(e),
            Self::Trace { error, .. } => Some(error),
            Self::Thread(e) => Some(e),
            Self::Export(e) => Some(e),
            Self::RelaydConnect(e) | Self::RelaydLost { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// The largest TSDL `loglevel` (LTTng's levels: 0 emergency, 1 alert, 2 critical,
/// 3 error, 4 warning, 5 notice, 6 info, 7 to 13 debug levels, 14 debug).
pub const MAX_LOG_LEVEL: u8 = 14;

/// An event class described while the session runs, for [`Current::register`].
#[derive(Clone, Copy, Debug)]
pub struct ClassSpec<'a> {
    /// The class name: printable ASCII without `"` or `\`, unique in the session.
    pub name: &'a str,
    /// The fields, in the order their values are encoded: TSDL identifiers, under
    /// the rules of the declared classes (see [`MetadataError`]).
    pub fields: &'a [(&'a str, FieldType)],
    /// The TSDL `loglevel` of the class (babeltrace2 shows it), at most
    /// [`MAX_LOG_LEVEL`]; `None` for none.
    pub log_level: Option<u8>,
}

/// An event class registered with the running session ([`Current::register`]):
/// write its events with [`Class::emit`]. It belongs to the session that
/// registered it: in another one its events are [`EmitError::Undeclared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    session: u64,
    id: u32,
    name: &'static str,
}

impl Class {
    /// Its id in the session's metadata.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its name in the session's metadata.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The number of the session that registered it (see
    /// [`Current::session_id`]).
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// Writes one event of the class into the running session: `fill` writes
    /// exactly `len` bytes, the fields encoded in the class's order as
    /// [`Field`](crate::Field) encodes them (the metadata describes them so).
    /// [`EmitError::NoSession`] if no session runs, [`EmitError::Undeclared`] if
    /// the running session is not the one that registered the class.
    #[inline]
    pub fn emit(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), EmitError> {
        self.shared()?.emit_id(false, self.id, len, fill)
    }

    /// [`Class::emit`] from a signal handler (see [`CurrentInHandler`]).
    #[inline]
    pub fn emit_in_handler(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EmitError> {
        self.shared()?.emit_id(true, self.id, len, fill)
    }

    /// The running session, if it is the one that registered the class.
    #[inline(always)]
    fn shared(&self) -> Result<&'static Shared, EmitError> {
        let shared = current()?;
        if shared.id != self.session {
            return Err(EmitError::Undeclared { event: self.name });
        }
        Ok(shared)
    }
}

/// Why a class could not be registered ([`Current::register`]).
#[derive(Debug)]
pub enum RegisterError {
    /// No session is running.
    NoSession,
    /// The class is invalid, or its name is taken
    /// ([`MetadataError::DuplicateEvent`]): the error names the class and field,
    /// under the rules of the classes declared at start.
    Metadata(MetadataError),
    /// The log level is above [`MAX_LOG_LEVEL`].
    LogLevel {
        /// The class.
        class: String,
        /// Its level.
        level: u8,
    },
    /// The channel refused the metadata text (its metadata area is full:
    /// [`ChannelError::MetadataFull`]).
    Channel(ChannelError),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSession => f.write_str("no trace session is running"),
            Self::Metadata(e) => write!(f, "{e}"),
            Self::LogLevel { class, level } => write!(
                f,
                "event `{class}`: log level {level} is above {MAX_LOG_LEVEL}"
            ),
            Self::Channel(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RegisterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Metadata(e) => Some(e),
            Self::Channel(e) => Some(e),
            Self::NoSession | Self::LogLevel { .. } => None,
        }
    }
}

/// The event classes of a running session, and what registering one more needs.
struct Registry {
    /// Every class's name, those declared at start included.
    names: HashSet<&'static str>,
    /// The next id to give.
    next_id: u32,
    /// What a class is checked and written against: the session's clock and
    /// event context (only they constrain a class), no class.
    clock: ClockDescription<'static>,
    /// The metadata of `clock` and no class: a class's declaration is what
    /// `write_metadata` writes after it.
    base: String,
    /// Names and field lists, leaked once each: schemas and the names in
    /// [`MetadataError`]s are `'static`, and a class lives as long as the
    /// process's sessions (whose memory is never freed).
    strings: HashSet<&'static str>,
    fields: HashMap<String, &'static [FieldDef]>,
}

/// The id after `id`, skipping those of the padding events.
fn next_id(id: u32) -> u32 {
    let mut next = id.saturating_add(1);
    while matches!(next, PADDING_ID | PADDING_EMPTY_ID) {
        next += 1;
    }
    next
}

impl Registry {
    fn new(clock: ClockDescription<'static>) -> Result<Self, MetadataError> {
        let mut base = String::new();
        write_metadata(&mut base, &Self::description(clock, &[]))?;
        Ok(Self {
            names: HashSet::new(),
            next_id: 0,
            clock,
            base,
            strings: HashSet::new(),
            fields: HashMap::new(),
        })
    }

    fn description<'a>(
        clock: ClockDescription<'static>,
        events: &'a [EventSchema],
    ) -> TraceDescription<'a> {
        TraceDescription {
            uuid: [0; 16],
            clock,
            events,
            tracer_name: "ringbuf",
            env: &[],
            event_context: EVENT_CONTEXT,
        }
    }

    /// An id for a class declared at start, whose name `start` checked.
    fn declare(&mut self, name: &'static str) -> u32 {
        let id = self.next_id;
        self.next_id = next_id(id);
        self.names.insert(name);
        id
    }

    fn intern(&mut self, s: &str) -> &'static str {
        match self.strings.get(s) {
            Some(interned) => interned,
            None => {
                let leaked: &'static str = Box::leak(s.into());
                self.strings.insert(leaked);
                leaked
            }
        }
    }

    fn intern_fields(&mut self, fields: &[(&str, FieldType)]) -> &'static [FieldDef] {
        let key = format!("{fields:?}");
        if let Some(interned) = self.fields.get(&key) {
            return interned;
        }
        let defs: Vec<FieldDef> = fields
            .iter()
            .map(|&(name, ty)| FieldDef {
                name: self.intern(name),
                ty,
            })
            .collect();
        let leaked: &'static [FieldDef] = defs.leak();
        self.fields.insert(key, leaked);
        leaked
    }

    /// Checks `spec` (as `start` checks the declared classes) and gives it the
    /// next id: its schema and the TSDL text that declares it. Nothing changes
    /// until [`Registry::commit`].
    fn prepare(&mut self, spec: &ClassSpec<'_>) -> Result<(EventSchema, String), RegisterError> {
        let name = self.intern(spec.name);
        if let Some(level) = spec.log_level.filter(|&l| l > MAX_LOG_LEVEL) {
            return Err(RegisterError::LogLevel {
                class: name.to_owned(),
                level,
            });
        }
        if self.names.contains(name) {
            return Err(RegisterError::Metadata(MetadataError::DuplicateEvent {
                event: name,
            }));
        }
        let schema = EventSchema {
            id: self.next_id,
            name,
            fields: self.intern_fields(spec.fields),
        };
        let mut text = String::new();
        write_metadata(&mut text, &Self::description(self.clock, &[schema]))
            .map_err(RegisterError::Metadata)?;
        // The declaration is what follows the text of no class; the log level
        // goes after its `stream_id` line.
        let declaration = text
            .strip_prefix(self.base.as_str())
            .ok_or(RegisterError::Metadata(MetadataError::Fmt))?;
        let mut out = String::with_capacity(declaration.len() + 24);
        match spec.log_level {
            Some(level) => {
                const AFTER: &str = "    stream_id = 0;\n";
                let at = declaration
                    .find(AFTER)
                    .ok_or(RegisterError::Metadata(MetadataError::Fmt))?
                    + AFTER.len();
                out.push_str(&declaration[..at]);
                out.push_str(&format!("    loglevel = {level};\n"));
                out.push_str(&declaration[at..]);
            }
            None => out.push_str(declaration),
        }
        Ok((schema, out))
    }

    /// Records the class `prepare` described, once its text is in the metadata.
    fn commit(&mut self, schema: &EventSchema) {
        self.names.insert(schema.name);
        self.next_id = next_id(schema.id);
    }
}

/// A declared event class: its name and fields, and where its id goes.
#[derive(Clone, Copy)]
struct Declared {
    name: &'static str,
    fields: &'static [FieldDef],
    id: &'static EventId,
}

/// Builds a [`Session`]; every setting has a default but the output directory.
#[derive(Clone)]
pub struct Builder {
    events: Vec<Declared>,
    output: Option<PathBuf>,
    buffer_dir: Option<PathBuf>,
    mode: Mode,
    subbuf_size: u64,
    subbuf_count: u64,
    live_period: Option<Duration>,
    name: Option<String>,
    /// Per-thread buffers with this many slots; `None`: per-CPU buffers.
    thread_slots: Option<u32>,
    /// A relayd to stream to, as well.
    relayd: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            output: None,
            buffer_dir: None,
            mode: Mode::Discard,
            subbuf_size: 256 << 10,
            subbuf_count: 8,
            live_period: Some(Duration::from_millis(500)),
            name: None,
            thread_slots: None,
            relayd: None,
        }
    }
}

impl Builder {
    /// Records event class `E` (declared with [`crate::event!`]). Emitting a class
    /// the running session did not declare is [`EmitError::Undeclared`].
    pub fn event<E: Event>(mut self) -> Self {
        self.events.push(Declared {
            name: E::NAME,
            fields: E::FIELDS,
            id: E::id(),
        });
        self
    }

    /// One buffer per CPU, shared by the threads running there (the default).
    pub fn per_cpu(mut self) -> Self {
        self.thread_slots = None;
        self
    }

    /// One buffer per thread, from `slots` slots: a thread takes a free slot on its
    /// first event and gives it back when it exits (once the consumer has read
    /// its last packet). A thread that finds no free slot, or whose first event
    /// comes from a signal handler, loses that event, counted
    /// ([`Counters::lost_no_slot`], [`Counters::lost_unregistered`]). Per-thread
    /// buffers are written without LOCK-prefixed atomics.
    pub fn per_thread(mut self, slots: u32) -> Self {
        self.thread_slots = Some(slots);
        self
    }

    /// The trace directory to create (it must not exist). Required.
    pub fn output(mut self, dir: impl AsRef<Path>) -> Self {
        self.output = Some(dir.as_ref().to_owned());
        self
    }

    /// Puts the buffers in a file in `dir` (`ringbuf-<pid>`, removed when the
    /// session finishes) instead of anonymous memory, so that `ringbuf recover`
    /// can make a trace of them if the process dies.
    pub fn buffer_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.buffer_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// What writers do when the buffer is full: [`Mode::Discard`] (the default:
    /// keep the oldest, count what is dropped) or [`Mode::Overwrite`] (flight
    /// recorder: keep the newest).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Bytes per sub-buffer (packet): a power of two (default 256 KiB).
    pub fn subbuf_size(mut self, bytes: u64) -> Self {
        self.subbuf_size = bytes;
        self
    }

    /// Sub-buffers per buffer: a power of two, at least 2 (default 8).
    pub fn subbuf_count(mut self, count: u64) -> Self {
        self.subbuf_count = count;
        self
    }

    /// How often the consumer closes idle packets so that they are exported
    /// (default 500 ms); `None` exports only full packets until the end.
    pub fn live_period(mut self, period: Option<Duration>) -> Self {
        self.live_period = period;
        self
    }

    /// The trace's name in its environment (default: the process name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Streams the trace to the lttng-relayd at `url` as well
    /// (`net://HOST[:CONTROL_PORT[:DATA_PORT]]`, see [`crate::relayd`]), as a
    /// relayd session named after the trace (see [`Builder::name`]) and the
    /// process id; live viewers may attach while the session runs when it has a
    /// [`Builder::live_period`]. A relayd that cannot be reached makes `start`
    /// fail; one lost later never stalls the writers or the trace directory (see
    /// [`SessionError::RelaydLost`]).
    pub fn relayd(mut self, url: &str) -> Self {
        self.relayd = Some(url.to_owned());
        self
    }

    /// Creates the buffers and the trace directory, starts the consumer thread and
    /// makes this the running session.
    pub fn start(self) -> Result<Session, SessionError> {
        Session::start(self)
    }
}

/// The process, once per trace.
struct Process {
    hostname: String,
    pid: i64,
    procname: String,
}

impl Process {
    fn current() -> Self {
        let mut host = [0u8; 256];
        // SAFETY: a valid buffer of its length; the name is NUL-terminated unless
        // truncated (handled below).
        let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
        let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
        let hostname = if ok {
            String::from_utf8_lossy(&host[..end]).into_owned()
        } else {
            String::from("unknown")
        };
        let procname = std::fs::read_to_string("/proc/self/comm")
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| String::from("unknown"));
        Self {
            hostname,
            pid: i64::from(std::process::id()),
            procname,
        }
    }
}

/// A random uuid (the kernel's generator; the time and pid if it fails), never
/// nil.
pub(crate) fn new_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    // SAFETY: a valid buffer of its length.
    let n = unsafe { libc::getrandom(uuid.as_mut_ptr().cast(), uuid.len(), 0) };
    if n != uuid.len() as isize {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        uuid[..8].copy_from_slice(&(now as u64).to_le_bytes());
        uuid[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    // RFC 4122 version 4, variant 1.
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// The running session's channel.
enum Channel {
    PerCpu(PerCpuChannel<Ctf, TraceClock>),
    PerThread(PerThreadChannel<Ctf, TraceClock>),
}

/// What the running session writes into.
struct Shared {
    channel: Channel,
    /// This session's number in the process (see [`Current::session_id`]).
    id: u64,
    /// Its classes; registering one more.
    registry: Mutex<Registry>,
    /// Events of classes a front end could not register
    /// ([`Current::count_lost_no_class`]).
    lost_no_class: AtomicU64,
}

/// Stack bytes an event staged for the rseq path takes in the common case; larger
/// events (up to [`RSEQ_EVENT_STAGE`]) take a separate, colder frame.
const SMALL_STAGE: usize = 256;

/// The rseq path writes whole records in one sequence: the event (its context,
/// then the fields `fill` writes) is staged on the stack first, then written.
#[inline(always)]
fn emit_staged<const STAGE: usize>(
    channel: &PerCpuChannel<Ctf, TraceClock>,
    id: u32,
    context: &[u8; EVENT_CONTEXT_BYTES],
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<(), EmitError> {
    let total = EVENT_CONTEXT_BYTES.saturating_add(len);
    let mut stage = [0u8; STAGE];
    let Some(event) = stage.get_mut(..total) else {
        return Err(EmitError::Reserve(
            channel.current().lose(ReserveError::TooBig),
        ));
    };
    let (head, fields) = event.split_at_mut(EVENT_CONTEXT_BYTES);
    head.copy_from_slice(context);
    fill(fields);
    channel.write(id, event).map_err(EmitError::Reserve)
}

/// [`emit_staged`] for events beyond [`SMALL_STAGE`] bytes (counted `lost_big`
/// beyond [`RSEQ_EVENT_STAGE`]).
#[cold]
#[inline(never)]
fn emit_staged_large(
    channel: &PerCpuChannel<Ctf, TraceClock>,
    id: u32,
    context: &[u8; EVENT_CONTEXT_BYTES],
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<(), EmitError> {
    emit_staged::<RSEQ_EVENT_STAGE>(channel, id, context, len, fill)
}

/// The next session's number, so that a [`Class`] knows its own.
static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

impl Shared {
    /// Writes one event of class `E` (see [`Shared::emit_id`]).
    #[inline(always)]
    fn emit<E: Event>(
        &self,
        in_handler: bool,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EmitError> {
        let Some(id) = E::id().get() else {
            return Err(EmitError::Undeclared { event: E::NAME });
        };
        self.emit_id(in_handler, id, len, fill)
    }

    /// Writes one event of class `id` with the calling thread's id as its
    /// context. `in_handler`: the caller may be a signal handler, so a per-thread
    /// channel must not register the thread (registration is not
    /// async-signal-safe).
    #[inline(always)]
    fn emit_id(
        &self,
        in_handler: bool,
        id: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EmitError> {
        let tid = current_tid().to_le_bytes();
        // Saturating: an impossible size is refused (and counted) as too big.
        let total = EVENT_CONTEXT_BYTES.saturating_add(len);
        match &self.channel {
            Channel::PerCpu(c) if c.write_path() == WritePath::Rseq => {
                if total <= SMALL_STAGE {
                    emit_staged::<SMALL_STAGE>(c, id, &tid, len, fill)
                } else {
                    emit_staged_large(c, id, &tid, len, fill)
                }
            }
            Channel::PerCpu(c) => with_nesting(|nest| {
                fill_reservation(c.current().reserve(nest, id, total), &tid, len, fill)
            }),
            Channel::PerThread(c) => {
                let writer = if in_handler {
                    c.signal_writer()
                } else {
                    c.writer()
                };
                // The channel counts what it refused (`SlotLosses`).
                let writer = writer.map_err(|_: SlotError| EmitError::NoBuffer)?;
                with_nesting(|nest| {
                    fill_reservation(writer.reserve(nest, id, total), &tid, len, fill)
                })
            }
        }
    }

    /// Registers a class (see [`Current::register`]).
    fn register(&self, spec: &ClassSpec<'_>) -> Result<Class, RegisterError> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let (schema, text) = registry.prepare(spec)?;
        let shm = match &self.channel {
            Channel::PerCpu(c) => c.shm(),
            Channel::PerThread(c) => c.shm(),
        };
        // The metadata first: the id is given out (and so usable) only once every
        // reader can get the class's declaration.
        ringbuf_mmap::append_metadata(shm, &text).map_err(RegisterError::Channel)?;
        registry.commit(&schema);
        Ok(Class {
            session: self.id,
            id: schema.id,
            name: schema.name,
        })
    }

    fn stats(&self) -> Vec<Stats> {
        match &self.channel {
            Channel::PerCpu(c) => c.stats(),
            Channel::PerThread(c) => c.stats(),
        }
    }

    fn path(&self) -> Option<&Path> {
        match &self.channel {
            Channel::PerCpu(c) => c.path(),
            Channel::PerThread(c) => c.path(),
        }
    }

    /// Ends every stream this thread may end with a packet carrying its final
    /// counts: every per-CPU buffer, or the calling thread's own per-thread one
    /// (other threads' end when they exit, or at their next event once the
    /// consumer asks). In discard mode a full buffer first needs the consumer
    /// (still running) to drain it.
    fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let retry = |switch: &dyn Fn() -> bool| {
            while !switch() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        match &self.channel {
            Channel::PerCpu(c) => {
                // The channel's own switch: fenced on the rseq path.
                for index in 0..c.buffers().len() {
                    retry(&|| c.switch(index, Switch::Flush).is_ok());
                }
            }
            Channel::PerThread(c) => {
                if let Some(writer) = c.registered_writer() {
                    retry(&|| writer.switch(Switch::Flush).is_ok());
                }
            }
        }
    }
}

/// The running session, if any. Set by [`Session::start`] (Release, after the
/// channel is ready), cleared by [`Session::finish`]; what it points to is never
/// freed (see the module documentation).
static CURRENT: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// The running session, for a sink.
#[inline(always)]
fn current() -> Result<&'static Shared, EmitError> {
    // Acquire: pairs with `start`'s Release, so the channel is seen initialised.
    let shared = CURRENT.load(Ordering::Acquire);
    // SAFETY: a published `Shared` is leaked by `start` and never freed.
    unsafe { shared.as_ref() }.ok_or(EmitError::NoSession)
}

/// The [`Sink`] of the running session: what `Event::emit` writes into. It also
/// registers classes with the running session, for front ends that describe them
/// at run time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Current;

impl Current {
    /// Whether a session is running (one load).
    #[inline]
    pub fn is_running(&self) -> bool {
        current().is_ok()
    }

    /// The running session's number in this process (sessions are numbered from
    /// 1 and never reuse a number), e.g. for a front end that keeps state per
    /// session; `None` if none runs.
    #[inline]
    pub fn session_id(&self) -> Option<u64> {
        current().ok().map(|s| s.id)
    }

    /// Registers an event class with the running session (see the module
    /// documentation): checks it as `start` checks the declared classes, gives it
    /// the next id and appends its declaration to the metadata, then returns it.
    /// Registering is not for signal handlers (it locks and allocates).
    pub fn register(&self, spec: &ClassSpec<'_>) -> Result<Class, RegisterError> {
        current()
            .map_err(|_| RegisterError::NoSession)?
            .register(spec)
    }

    /// Counts one event that a front end dropped because the running session
    /// could not register its class ([`Counters::lost_no_class`]); nothing if
    /// no session runs.
    pub fn count_lost_no_class(&self) {
        if let Ok(shared) = current() {
            // Relaxed: a counter read at the end (after `finish` joined).
            shared.lost_no_class.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Sink for Current {
    #[inline(always)]
    fn emit<E: Event>(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), EmitError> {
        current()?.emit::<E>(false, len, fill)
    }
}

/// The [`Sink`] of the running session for signal handlers: what
/// `Event::emit_in_handler` writes into. The same as [`Current`] with per-CPU
/// buffers; with per-thread buffers it never registers the thread (which is not
/// async-signal-safe): a handler whose thread has not emitted yet loses its
/// event, counted in [`Counters::lost_unregistered`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrentInHandler;

impl Sink for CurrentInHandler {
    #[inline(always)]
    fn emit<E: Event>(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), EmitError> {
        current()?.emit::<E>(true, len, fill)
    }
}

/// What a session lost and exported, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events dropped because the buffer was full (discard mode: the consumer fell
    /// behind).
    pub lost_full: u64,
    /// Events dropped because the next sub-buffer was still held by a writer
    /// (mostly one preempted between reserve and commit while the others went
    /// round the buffer).
    pub lost_wrap: u64,
    /// Events larger than a sub-buffer.
    pub lost_big: u64,
    /// Events beyond the nesting limit (signal handlers nested too deep).
    pub lost_nested: u64,
    /// rseq path only: events a signal handler wrote while its own thread held
    /// their buffer for a switch.
    pub lost_fenced: u64,
    /// Whether the writers used per-CPU restartable sequences (docs/ARCHITECTURE.md
    /// §10): per-CPU sessions do wherever glibc registered rseq (and
    /// `RINGBUF_RSEQ` is not `off`). There an event is staged on the stack and
    /// written whole: events over [`RSEQ_EVENT_STAGE`] bytes count as `lost_big`.
    pub rseq: bool,
    /// Packets overwritten before they were exported (overwrite mode).
    pub overrun: u64,
    /// Per-thread buffers: events of threads that found no free slot.
    pub lost_no_slot: u64,
    /// Per-thread buffers: events emitted from a signal handler before their
    /// thread's first ordinary event (or after its exit began).
    pub lost_unregistered: u64,
    /// Events a front end dropped because the session could not register their
    /// class (e.g. the metadata area was full; see
    /// [`Current::count_lost_no_class`]).
    pub lost_no_class: u64,
    /// Packets exported into the trace.
    pub packets: u64,
    /// Bytes exported into the trace.
    pub bytes: u64,
    /// Set by [`Session::finish`]: bytes written into the buffers (packet headers
    /// and padding included) that the trace did not get. Per-thread buffers of
    /// threads still running when the session finished: a thread closes its open
    /// packet only at its next event or its exit, which may come after the
    /// export ended (join such threads before `finish`). Zero otherwise.
    pub bytes_unexported: u64,
    /// Packets the relayd acknowledged ([`Builder::relayd`]).
    pub relayd_packets_sent: u64,
    /// Packets the relayd did not get (its connection was lost).
    pub relayd_packets_unsent: u64,
}

impl Counters {
    /// Events lost, every cause but overrun (which loses whole packets).
    pub fn events_lost(&self) -> u64 {
        self.lost_full
            + self.lost_wrap
            + self.lost_big
            + self.lost_nested
            + self.lost_fenced
            + self.lost_no_slot
            + self.lost_unregistered
            + self.lost_no_class
    }

    fn add(&mut self, s: &Stats) {
        self.lost_full += s.lost_full;
        self.lost_wrap += s.lost_wrap;
        self.lost_big += s.lost_big;
        self.lost_nested += s.lost_nested;
        self.lost_fenced += s.lost_fenced;
        self.overrun += s.overrun;
    }
}

/// A running session (see the module documentation). Dropping it finishes it.
pub struct Session {
    shared: &'static Shared,
    events: Vec<Declared>,
    output: PathBuf,
    stop: Arc<AtomicBool>,
    exporter: Option<JoinHandle<Result<(ExportStats, Outputs), LoopError>>>,
}

/// The consumer side of a session's channel, run by its export thread.
enum Exporter {
    PerCpu(Consumer<ringbuf_core::SharedWord, Ctf, TraceClock>),
    PerThread(Consumer<ringbuf_core::LocalWord, Ctf, TraceClock>),
}

impl Exporter {
    fn run(
        self,
        mut outputs: Outputs,
        options: &LoopOptions,
        stop: impl FnMut() -> bool,
    ) -> Result<(ExportStats, Outputs), LoopError> {
        fn run<W: Word>(
            consumer: &Consumer<W, Ctf, TraceClock>,
            outputs: &mut Outputs,
            options: &LoopOptions,
            stop: impl FnMut() -> bool,
        ) -> Result<ExportStats, LoopError> {
            let subbuf = consumer.subbuf_size() as usize;
            export_loop::run(consumer, outputs, options, stop, |_, _| {}, subbuf)
        }
        let stats = match &self {
            Self::PerCpu(c) => run(c, &mut outputs, options, stop),
            Self::PerThread(c) => run(c, &mut outputs, options, stop),
        }?;
        Ok((stats, outputs))
    }
}

/// A consumer of the channel in `shm`, attached by descriptor as another process
/// would (the consumer validates what it maps, whoever made it).
fn attach<W: Word, K: Client, T: Clock + Copy>(
    shm: &ringbuf_mmap::Shm,
    wakeup: &Wakeup,
    client: impl FnMut(u32) -> K,
    clock: T,
) -> Result<Consumer<W, K, T>, ChannelError> {
    let backing = |e: std::io::Error| ChannelError::Backing(e.into());
    let memfd = shm.file().try_clone().map_err(backing)?;
    let wake = wakeup.try_clone_fd().map_err(backing)?;
    Consumer::attach_fd(memfd.into(), Some(wake), CTF_FORMAT, client, |_| clock)
}

impl Session {
    /// A builder with the defaults: per-CPU buffers of 8 × 256 KiB in anonymous
    /// memory, discard mode, live export every 500 ms.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn start(b: Builder) -> Result<Self, SessionError> {
        let output = b.output.clone().ok_or(SessionError::NoOutput)?;
        let config = Config::new(b.subbuf_size, b.subbuf_count, b.mode);
        config.validate().map_err(SessionError::Config)?;
        let clock = TraceClock::best();
        // Described once: the monotonic clock's offset is measured at each call.
        let clock_description = clock.describe();
        let uuid = new_uuid();
        let process = Process::current();
        let mut registry = Registry::new(clock_description).map_err(SessionError::Metadata)?;
        let schemas: Vec<EventSchema> = b
            .events
            .iter()
            .map(|e| EventSchema {
                id: registry.declare(e.name),
                name: e.name,
                fields: e.fields,
            })
            .collect();
        let name = b.name.as_deref().unwrap_or(&process.procname);
        let env = [
            ("hostname", EnvValue::Str(&process.hostname)),
            ("vpid", EnvValue::Int(process.pid)),
            ("procname", EnvValue::Str(&process.procname)),
            ("trace_name", EnvValue::Str(name)),
        ];
        let mut metadata = String::new();
        write_metadata(
            &mut metadata,
            &TraceDescription {
                uuid,
                clock: clock_description,
                events: &schemas,
                tracer_name: "ringbuf",
                env: &env,
                event_context: EVENT_CONTEXT,
            },
        )
        .map_err(SessionError::Metadata)?;

        let file_name = format!("ringbuf-{}", std::process::id());
        let backing = match &b.buffer_dir {
            Some(dir) => Backing::File {
                dir,
                name: &file_name,
            },
            None => Backing::Memfd { name: &file_name },
        };
        let options = ChannelOptions {
            config,
            buffers: b.thread_slots.unwrap_or_else(possible_cpus),
            format: CTF_FORMAT,
            prefault: true,
            clock: clock_description,
        };
        let client = |cpu| Ctf::new(uuid, cpu).with_event_context(EVENT_CONTEXT_BYTES);
        let channel = match b.thread_slots {
            None => PerCpuChannel::create_rseq(backing, &options, &metadata, client, |_| clock)
                .map(Channel::PerCpu),
            Some(_) => PerThreadChannel::create(backing, &options, &metadata, client, |_| clock)
                .map(Channel::PerThread),
        }
        .map_err(SessionError::Channel)?;
        let trace_err = |error| SessionError::Trace {
            path: output.clone(),
            error,
        };
        let relayd = match &b.relayd {
            Some(url) => {
                let options = RelaydOptions {
                    hostname: process.hostname.clone(),
                    ..RelaydOptions::new(&format!("{name}-{}", process.pid), b.live_period)
                };
                let buffers = b.thread_slots.unwrap_or_else(possible_cpus);
                let relayd = url
                    .parse::<RelaydAddress>()
                    .and_then(|a| Relayd::connect(&a, &options, &metadata, buffers));
                Some(relayd.map_err(SessionError::RelaydConnect)?)
            }
            None => None,
        };
        let trace = TraceDir::with_metadata(&output, &metadata).map_err(trace_err)?;
        let outputs = Outputs {
            trace: Some(trace),
            relayd,
        };
        // The consumer attaches through the same interface another process would.
        let attached = match &channel {
            Channel::PerCpu(c) => attach(c.shm(), c.wakeup(), client, clock).map(Exporter::PerCpu),
            Channel::PerThread(c) => {
                attach(c.shm(), c.wakeup(), client, clock).map(Exporter::PerThread)
            }
        };
        let exporter = match attached {
            Ok(exporter) => exporter,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&output);
                return Err(SessionError::Channel(e));
            }
        };

        // The channel is ready: publish it. Only one session at a time.
        let shared = Box::into_raw(Box::new(Shared {
            channel,
            // Relaxed: only uniqueness matters.
            id: SESSION_IDS.fetch_add(1, Ordering::Relaxed),
            registry: Mutex::new(registry),
            lost_no_class: AtomicU64::new(0),
        }));
        // Release: a probe that loads the pointer sees the channel initialised.
        // (Relaxed on failure: nothing to see; the value is only compared.)
        let published = CURRENT.compare_exchange(
            std::ptr::null_mut(),
            shared,
            Ordering::Release,
            Ordering::Relaxed,
        );
        if published.is_err() {
            // SAFETY: never published, so no probe holds it: ours to free.
            drop(unsafe { Box::from_raw(shared) });
            let _ = std::fs::remove_dir_all(&output);
            return Err(SessionError::AlreadyRunning);
        }
        // SAFETY: published, so never freed from now on (see the module docs).
        let shared: &'static Shared = unsafe { &*shared };
        for (e, schema) in b.events.iter().zip(&schemas) {
            e.id.set(schema.id);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let options = LoopOptions {
            live_period: b.live_period,
            ..LoopOptions::default()
        };
        let stopping = stop.clone();
        let exporting = std::thread::Builder::new()
            .name("ringbuf-export".into())
            .spawn(move || {
                // Acquire: pairs with `end`'s Release, after the final flush.
                exporter.run(outputs, &options, || stopping.load(Ordering::Acquire))
            });
        let mut session = Self {
            shared,
            events: b.events,
            output,
            stop,
            exporter: None,
        };
        match exporting {
            Ok(handle) => {
                session.exporter = Some(handle);
                Ok(session)
            }
            Err(e) => {
                drop(session.end());
                Err(SessionError::Thread(e))
            }
        }
    }

    /// The trace directory.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The loss counters so far (the buffers' own; exported packets are counted
    /// by [`Session::finish`]).
    pub fn counters(&self) -> Counters {
        let mut counters = Counters::default();
        for s in self.shared.stats() {
            counters.add(&s);
        }
        if let Channel::PerCpu(c) = &self.shared.channel {
            counters.rseq = c.write_path() == ringbuf_mmap::WritePath::Rseq;
        }
        if let Channel::PerThread(c) = &self.shared.channel {
            let slots = c.losses();
            counters.lost_no_slot = slots.no_slot;
            counters.lost_unregistered = slots.unregistered;
        }
        // Relaxed: a counter; `finish` reads it after joining the exporter.
        counters.lost_no_class = self.shared.lost_no_class.load(Ordering::Relaxed);
        counters
    }

    /// Registers an event class with this session (see [`Current::register`],
    /// which registers with whichever session runs).
    pub fn register(&self, spec: &ClassSpec<'_>) -> Result<Class, RegisterError> {
        self.shared.register(spec)
    }

    /// Stops recording: no probe started after this writes into the session; every
    /// stream ends with a packet carrying its final counts; the consumer exports
    /// what is left. Returns the per-cause counters.
    pub fn finish(mut self) -> Result<Counters, SessionError> {
        self.end()
    }

    fn end(&mut self) -> Result<Counters, SessionError> {
        // Relaxed: unpublishing publishes nothing; a probe that still loads the old
        // pointer writes into memory that stays valid.
        let _ = CURRENT.compare_exchange(
            std::ptr::from_ref(self.shared).cast_mut(),
            std::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for e in &self.events {
            e.id.clear();
        }
        let mut counters = Counters::default();
        let Some(exporter) = self.exporter.take() else {
            return Ok(counters);
        };
        self.shared.flush();
        // Release: the final packets are delivered before the consumer's last pass.
        self.stop.store(true, Ordering::Release);
        let (exported, outputs) = exporter
            .join()
            .map_err(|_| SessionError::ExporterPanicked)?
            .map_err(SessionError::Export)?;
        counters = self.counters();
        counters.packets = exported.packets;
        counters.bytes = exported.bytes;
        // Wrapping: the positions are words of shared memory (design §6).
        counters.bytes_unexported = self
            .shared
            .stats()
            .iter()
            .map(|s| s.write.saturating_sub(s.consumed))
            .fold(0u64, u64::wrapping_add);
        if let Some(path) = self.shared.path() {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(ringbuf_mmap::wakeup_path(path));
        }
        let Some(relayd) = outputs.relayd else {
            return Ok(counters);
        };
        let sent = relayd.stats();
        counters.relayd_packets_sent = sent.packets_sent;
        counters.relayd_packets_unsent = sent.packets_unsent;
        match relayd.into_failure() {
            Some(error) => Err(SessionError::RelaydLost {
                error,
                counters: Box::new(counters),
            }),
            None => Ok(counters),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.exporter.is_some() {
            if let Err(e) = self.end() {
                eprintln!("ringbuf: finishing the session: {e}");
            }
        }
    }
}
