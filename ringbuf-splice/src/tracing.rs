//! A [`tracing_subscriber::Layer`] that records a program instrumented with
//! `tracing` into the running [`Session`](crate::Session) as CTF (feature
//! `tracing`).
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("ringbuf-layer-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let session = ringbuf_splice::Session::builder().output(&dir).start()?;
//! let subscriber = tracing_subscriber::registry().with(ringbuf_splice::tracing::Layer::new());
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("request", id = 7u64);
//!     let _entered = span.enter();
//!     tracing::info!(status = 200u16, ok = true, "served {}", "/index.html");
//! });
//! session.finish()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! # What the trace holds
//!
//! * **One event class per callsite** (per `info!`, `span!`... in the source), named
//!   `<target>:<name>` (`my_app::db:event src/db.rs:12`), registered with the
//!   session on the callsite's first event ([`Current::register`]), so the
//!   metadata grows as the program runs. Its fields keep their types: `u64`,
//!   `i64`, `f64`, `bool` and `str` values are CTF integers, doubles, booleans and
//!   strings, byte slices byte sequences; anything else (the message, `?x`, `%x`,
//!   errors, 128-bit integers) is formatted with `Debug` into a string. A callsite
//!   whose fields come with other types or presence (an `Option` that is `None`, a
//!   generic value) gets one class per combination, named with a `#2`, `#3`...
//!   suffix. The level is the class's TSDL `loglevel` (babeltrace2 shows it with
//!   `--fields=loglevel`): ERROR is 3 (`TRACE_ERR`), WARN 4, INFO 6, DEBUG 13
//!   (`TRACE_DEBUG_LINE`) and TRACE 14 (`TRACE_DEBUG`), which keeps their order.
//! * **Events** carry `span`, the id of the span they happened in (the explicit
//!   parent, or the innermost span the thread entered; 0 for none), then their
//!   fields.
//! * **Spans**: `<target>:<name>:new` with `span`, `parent` (0 for a root span)
//!   and the span's fields when it is created; `<target>:<name>:record` with `span`
//!   and the fields of each later `Span::record`; `tracing:span_enter`,
//!   `tracing:span_exit` and `tracing:span_close` with `span`;
//!   `tracing:span_follows_from` with `span` and `follows`. Span ids are the
//!   subscriber's (`tracing_subscriber::Registry` reuses an id once its span is
//!   closed: a `span_close` ends its life).
//! * Every event also carries the session's context (`vtid`) and time.
//!
//! Field names become TSDL identifiers: `r#` is dropped, any other character than
//! ASCII letters, digits and `_` becomes `_`, and a name the metadata refuses (a
//! TSDL keyword such as `event`, one that clashes with another once a reader strips
//! a leading underscore, `span`, `vtid`, a string's generated `_x_length`) gets a
//! `_` or a `_2`, `_3`... suffix. Class names keep printable ASCII.
//!
//! # Cost
//!
//! After a callsite's first event, an event allocates nothing (a test counts the
//! allocator's calls): its fields are encoded once into a buffer on the stack (a
//! payload beyond 1 KiB spills to the heap), its class is found in a lock-free
//! table keyed by the callsite and the fields' types, and the payload is copied
//! into the session's buffer. With no session running the Layer returns at once.
//! BENCHMARKS.md compares it with `tracing-chrome` and the `fmt` layer.
//!
//! Registering a class allocates and takes a lock, once per class and session
//! (and with per-thread buffers a thread's first event claims its buffer, which
//! allocates too). A class the session refuses (its metadata area full) loses
//! its events, counted in the session's
//! [`Counters::lost_no_class`](crate::Counters::lost_no_class). An event that
//! races a session's end (or the start of the next) may belong to neither: it
//! is dropped, as an event after `finish` is.

use std::fmt::{self, Write as _};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ::tracing::field::{Field as TracingField, Visit};
use ::tracing::span::{Attributes, Id, Record};
use ::tracing::{Event, Level, Metadata, Subscriber};
use ringbuf_core::ctf::{Field, FieldType, MetadataError};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::session::{Class, ClassSpec, Current, RegisterError};

/// Records `tracing` events and spans into the running session (see the module
/// documentation). One Layer serves any number of sessions, one after another.
pub struct Layer {
    /// The current class table (one of `state.tables`).
    table: AtomicPtr<Table>,
    state: Mutex<State>,
}

/// What the Layer owns; changed under its lock, on the slow path only. Readers
/// hold raw pointers to what it owns: each is behind an `Arc`, whose pointee stays
/// where it is (and may be shared) however the vectors grow.
struct State {
    /// Every entry (tables point at them).
    entries: Vec<Arc<Entry>>,
    /// Every table made: a reader may still probe an older one.
    tables: Vec<Arc<Table>>,
    /// Every class registered: an entry points at its latest.
    classes: Vec<Arc<Class>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer").finish_non_exhaustive()
    }
}

impl Layer {
    /// A Layer; it writes into whichever session runs (see [`Current`]).
    pub fn new() -> Self {
        let table = Arc::new(Table::with_slots(INITIAL_SLOTS));
        Self {
            table: AtomicPtr::new(Arc::as_ptr(&table).cast_mut()),
            state: Mutex::new(State {
                entries: Vec::new(),
                tables: vec![table],
                classes: Vec::new(),
            }),
        }
    }

    /// Writes one event of class `kind` (of callsite `meta`): the Layer's own
    /// `ids` first, then the fields `record` visits.
    #[inline]
    fn write(
        &self,
        kind: Kind,
        meta: Option<&'static Metadata<'static>>,
        ids: &[u64],
        record: impl FnOnce(&mut Encoder<'_>),
    ) {
        let Some(session) = Current.session_id() else {
            return;
        };
        // A local of its own: LLVM merges an uninitialised array next to zeroed
        // fields into one `memset` of both (1 KiB per event).
        let mut inline = [MaybeUninit::uninit(); INLINE];
        let mut encoder = Encoder::new(&mut inline);
        for &id in ids {
            encoder.payload.put(id);
        }
        record(&mut encoder);
        if encoder.too_many_fields {
            // No class can say which fields it holds (not reachable through
            // `tracing`'s macros, which allow 32).
            Current.count_lost_no_class();
            return;
        }
        let key = Key {
            meta: meta.map_or(0, |m| std::ptr::from_ref(m) as usize),
            kind,
            types: encoder.types,
        };
        let hash = key.hash();
        let entry = match self.find(&key, hash) {
            Some(entry) => entry,
            None => self.insert(key, hash, meta),
        };
        entry.emit(self, session, encoder.payload.bytes());
    }

    /// The entry of `key`, if the current table has it (lock-free).
    #[inline]
    fn find(&self, key: &Key, hash: u64) -> Option<&Entry> {
        // Acquire: pairs with `insert`'s Release store of a grown table: its
        // slots are filled.
        let table = self.table.load(Ordering::Acquire);
        // SAFETY: every table is kept (in an `Arc`) in `state.tables` until the
        // Layer drops, which needs `&mut self`.
        unsafe { &*table }.find(key, hash)
    }

    /// The entry of `key`, made if no table has it yet (slow path, once per
    /// callsite and types).
    #[cold]
    fn insert(&self, key: Key, hash: u64, meta: Option<&'static Metadata<'static>>) -> &Entry {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = self.find(&key, hash) {
            return entry;
        }
        let entry = Arc::new(Entry::new(key, hash, meta));
        let at = Arc::as_ptr(&entry);
        state.entries.push(entry);
        // SAFETY: the current table is one of `state.tables` (see `find`); only
        // the lock holder changes tables.
        let table = unsafe { &*self.table.load(Ordering::Relaxed) };
        if table.has_room(state.entries.len()) {
            table.insert(at, hash);
        } else {
            let grown = Arc::new(Table::with_slots(table.slots.len() * 2));
            for e in &state.entries {
                grown.insert(Arc::as_ptr(e), e.hash);
            }
            let current = Arc::as_ptr(&grown).cast_mut();
            state.tables.push(grown);
            // Release: the slots are filled before the table is seen (pairs with
            // `find`'s Acquire).
            self.table.store(current, Ordering::Release);
        }
        // SAFETY: entries are kept (in `Arc`s) until the Layer drops.
        unsafe { &*at }
    }
}

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let parent = match attrs.parent() {
            Some(parent) => parent.into_u64(),
            None if attrs.is_contextual() => spans::current(),
            None => 0,
        };
        let ids = [id.into_u64(), parent];
        self.write(Kind::SpanNew, Some(attrs.metadata()), &ids, |e| {
            attrs.record(e)
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(meta) = ctx.metadata(id) else {
            return;
        };
        self.write(Kind::SpanRecord, Some(meta), &[id.into_u64()], |e| {
            values.record(e)
        });
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _ctx: Context<'_, S>) {
        let ids = [id.into_u64(), follows.into_u64()];
        self.write(Kind::FollowsFrom, None, &ids, |_| {});
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let span = match event.parent() {
            Some(parent) => parent.into_u64(),
            None if event.is_contextual() => spans::current(),
            None => 0,
        };
        self.write(Kind::Event, Some(event.metadata()), &[span], |e| {
            event.record(e)
        });
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        spans::enter(id.into_u64());
        self.write(Kind::Enter, None, &[id.into_u64()], |_| {});
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        self.write(Kind::Exit, None, &[id.into_u64()], |_| {});
        spans::exit(id.into_u64());
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.write(Kind::Close, None, &[id.into_u64()], |_| {});
    }
}

/// What a class records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A `tracing` event: `span`, then its fields.
    Event,
    /// A span was created: `span`, `parent`, then its fields.
    SpanNew,
    /// Fields recorded into a span later: `span`, then the fields.
    SpanRecord,
    /// `span` entered.
    Enter,
    /// `span` exited.
    Exit,
    /// `span` closed.
    Close,
    /// `span` follows from `follows`.
    FollowsFrom,
}

impl Kind {
    /// The Layer's own fields, written first.
    fn own_fields(self) -> &'static [&'static str] {
        match self {
            Self::SpanNew => &["span", "parent"],
            Self::FollowsFrom => &["span", "follows"],
            _ => &["span"],
        }
    }

    /// The class name of a callsite (none for the span life-cycle classes).
    fn class_name(self, meta: Option<&'static Metadata<'static>>) -> String {
        let (target, name) = meta.map_or(("", ""), |m| (m.target(), m.name()));
        let name = match self {
            Self::Event => format!("{target}:{name}"),
            Self::SpanNew => format!("{target}:{name}:new"),
            Self::SpanRecord => format!("{target}:{name}:record"),
            Self::Enter => "tracing:span_enter".into(),
            Self::Exit => "tracing:span_exit".into(),
            Self::Close => "tracing:span_close".into(),
            Self::FollowsFrom => "tracing:span_follows_from".into(),
        };
        // Printable ASCII without `"` and `\`: what a CTF event name may hold.
        name.chars()
            .map(|c| match c {
                ' '..='~' if c != '"' && c != '\\' => c,
                _ => '_',
            })
            .collect()
    }
}

/// A field's type as the Layer encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Type {
    U64 = 1,
    I64 = 2,
    F64 = 3,
    Bool = 4,
    /// `str` values and whatever is formatted with `Debug`.
    String = 5,
    Bytes = 6,
}

impl Type {
    fn from_code(code: u16) -> Self {
        match code & 7 {
            1 => Self::U64,
            2 => Self::I64,
            3 => Self::F64,
            4 => Self::Bool,
            5 => Self::String,
            _ => Self::Bytes,
        }
    }

    fn ctf(self) -> FieldType {
        match self {
            Self::U64 => FieldType::U64,
            Self::I64 => FieldType::I64,
            Self::F64 => FieldType::F64,
            Self::Bool => FieldType::Bool,
            Self::String => FieldType::String,
            Self::Bytes => FieldType::Sequence,
        }
    }
}

/// Fields one event can carry (`tracing`'s macros allow 32).
const MAX_FIELDS: usize = 32;

/// The fields an event carried, in order: `index << 3 | type` each (0: none), where
/// `index` is the field's in its callsite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Types {
    len: u8,
    fields: [u16; MAX_FIELDS],
}

impl Types {
    fn iter(&self) -> impl Iterator<Item = (usize, Type)> + '_ {
        self.fields[..self.len as usize]
            .iter()
            .map(|&code| ((code >> 3) as usize, Type::from_code(code)))
    }
}

/// What identifies a class: the callsite, the kind, the fields' types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    /// The callsite's `Metadata` address (`tracing` keeps one static per
    /// callsite); 0 for the span life-cycle classes.
    meta: usize,
    kind: Kind,
    types: Types,
}

impl Key {
    /// FxHash-style mixing: fast, and good enough for addresses and small codes.
    fn hash(&self) -> u64 {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mix = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
        let mut h = mix(self.meta as u64, self.kind as u64);
        h = mix(h, u64::from(self.types.len));
        for chunk in self.types.fields[..self.types.len as usize].chunks(4) {
            let word = chunk
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &c)| w | u64::from(c) << (16 * i));
            h = mix(h, word);
        }
        // The table takes the low bits, which a product mixes least: fold the
        // high ones in.
        h ^ (h >> 32)
    }
}

/// One class of the Layer: its key, what to register, and its class in the
/// running session.
struct Entry {
    key: Key,
    hash: u64,
    /// The class name to register (a `#n` suffix is added if it is taken).
    name: String,
    /// Field names (TSDL identifiers) and types, the Layer's own first.
    fields: Vec<(String, FieldType)>,
    log_level: Option<u8>,
    /// The class registered last (in the running session or an earlier one);
    /// null before the first.
    class: AtomicPtr<Class>,
    /// The session that refused to register the class (0: none), so that its
    /// events are counted, not registered again one by one.
    refused: AtomicU64,
}

impl Entry {
    fn new(key: Key, hash: u64, meta: Option<&'static Metadata<'static>>) -> Self {
        let mut fields: Vec<(String, FieldType)> = key
            .kind
            .own_fields()
            .iter()
            .map(|&name| (name.to_owned(), FieldType::U64))
            .collect();
        let names = meta.map(|m| m.fields());
        for (index, ty) in key.types.iter() {
            let name = names
                .and_then(|n| n.iter().nth(index))
                .map_or("field", |f| f.name());
            fields.push((identifier(name), ty.ctf()));
        }
        Self {
            key,
            hash,
            name: key.kind.class_name(meta),
            fields,
            log_level: meta
                .filter(|_| matches!(key.kind, Kind::Event | Kind::SpanNew | Kind::SpanRecord))
                .map(|m| log_level(m.level())),
            class: AtomicPtr::new(std::ptr::null_mut()),
            refused: AtomicU64::new(0),
        }
    }

    /// Writes `payload` as an event of this class in session `session`,
    /// registering the class with it first if needed.
    #[inline]
    fn emit(&self, layer: &Layer, session: u64, payload: &[u8]) {
        // Acquire: pairs with `register`'s Release: the class (and so its
        // metadata, published before it was returned) is seen whole.
        let class = self.class.load(Ordering::Acquire);
        // SAFETY: classes are kept (in `Arc`s) until the Layer drops; none is
        // written through this pointer.
        if let Some(class) = unsafe { class.as_ref() } {
            if class.session_id() == session {
                // Losses are the session's to count; a session that ended since
                // `session` was read is no loss.
                let _ = class.emit(payload.len(), |out| out.copy_from_slice(payload));
                return;
            }
        }
        // Relaxed: a hint; the lock holder decides.
        if self.refused.load(Ordering::Relaxed) == session {
            Current.count_lost_no_class();
            return;
        }
        if let Some(class) = self.register(layer, session) {
            let _ = class.emit(payload.len(), |out| out.copy_from_slice(payload));
        }
    }

    /// The class in session `session`, registered now unless another thread did
    /// (slow path: once per class and session).
    #[cold]
    fn register<'l>(&self, layer: &'l Layer, session: u64) -> Option<&'l Class> {
        let mut state = layer.state.lock().unwrap_or_else(|p| p.into_inner());
        // Relaxed: stored under this lock.
        let class = self.class.load(Ordering::Relaxed);
        // SAFETY: as in `emit`.
        if let Some(class) = unsafe { class.as_ref() } {
            if class.session_id() == session {
                return Some(class);
            }
        }
        if self.refused.load(Ordering::Relaxed) == session {
            Current.count_lost_no_class();
            return None;
        }
        match self.register_renamed() {
            Ok(class) => {
                let class = Arc::new(class);
                let at = Arc::as_ptr(&class);
                state.classes.push(class);
                // Release: pairs with `emit`'s Acquire.
                self.class.store(at.cast_mut(), Ordering::Release);
                // SAFETY: kept (in an `Arc`) until the Layer drops.
                let class = unsafe { &*at };
                // Registered with a session started since the event: the event
                // belongs to neither.
                (class.session_id() == session).then_some(class)
            }
            Err(RegisterError::NoSession) => None,
            Err(e) => {
                eprintln!(
                    "ringbuf: tracing: events of `{}` are dropped (counted): {e}",
                    self.name
                );
                self.refused.store(session, Ordering::Relaxed);
                Current.count_lost_no_class();
                None
            }
        }
    }

    /// Registers the class, renaming what the session refuses: a taken class name
    /// gets a `#2`, `#3`... suffix; a field named like a TSDL keyword a `_`, and
    /// one that clashes with another a `_2`, `_3`... suffix.
    fn register_renamed(&self) -> Result<Class, RegisterError> {
        let mut name = self.name.clone();
        let mut fields = self.fields.clone();
        // Renames so far: of the class, of each field.
        let mut renamed = (1u32, vec![1u32; fields.len()]);
        for _ in 0..RENAMES {
            let spec: Vec<(&str, FieldType)> =
                fields.iter().map(|(n, ty)| (n.as_str(), *ty)).collect();
            let result = Current.register(&ClassSpec {
                name: &name,
                fields: &spec,
                log_level: self.log_level,
            });
            let Err(RegisterError::Metadata(e)) = &result else {
                return result;
            };
            let (field, keyword) = match *e {
                MetadataError::DuplicateEvent { .. } => {
                    renamed.0 += 1;
                    name = format!("{}#{}", self.name, renamed.0);
                    continue;
                }
                MetadataError::ReservedField { field, .. } => (field, true),
                MetadataError::InvalidField { field, .. }
                | MetadataError::DuplicateField { field, .. }
                | MetadataError::LengthCollision { field, .. }
                | MetadataError::ContextCollision { field, .. } => (field, false),
                _ => return result,
            };
            // The last field of that name: the later of two that clash.
            let Some(i) = fields.iter().rposition(|(n, _)| n == field) else {
                return result;
            };
            if keyword {
                fields[i].0.push('_');
            } else {
                let base = &self.fields[i].0;
                renamed.1[i] += 1;
                fields[i].0 = format!("{base}_{}", renamed.1[i]);
            }
        }
        Err(RegisterError::Metadata(MetadataError::DuplicateEvent {
            event: "(a tracing class renamed too often)",
        }))
    }
}

/// Renames tried before a class is given up (each fixes one refused name).
const RENAMES: u32 = 64;

/// A `tracing` field name as a TSDL identifier (see the module documentation).
fn identifier(name: &str) -> String {
    let name = name.strip_prefix("r#").unwrap_or(name);
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert_str(0, "f_");
    }
    out
}

/// A `tracing` level as a TSDL `loglevel` (LTTng's scale, most severe first).
fn log_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG => 13,
        Level::TRACE => 14,
    }
}

/// Initial slots of the class table.
const INITIAL_SLOTS: usize = 256;

/// An open-addressing table of entries, at most half full: readers probe it
/// without a lock; the lock holder inserts (a full table is replaced by one twice
/// as large).
struct Table {
    slots: Box<[AtomicPtr<Entry>]>,
}

impl Table {
    fn with_slots(n: usize) -> Self {
        Self {
            slots: (0..n)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }

    fn has_room(&self, entries: usize) -> bool {
        entries * 2 <= self.slots.len()
    }

    #[inline]
    fn find(&self, key: &Key, hash: u64) -> Option<&Entry> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            // Acquire: pairs with `insert`'s Release: the entry is whole.
            let entry = self.slots[i].load(Ordering::Acquire);
            // SAFETY: entries are kept (in `Arc`s) until the Layer drops. The
            // table is never full, so an empty slot ends the probe.
            let entry = unsafe { entry.as_ref() }?;
            if entry.hash == hash && entry.key == *key {
                return Some(entry);
            }
            i = (i + 1) & mask;
        }
    }

    /// Under the Layer's lock, with room (`has_room`).
    fn insert(&self, entry: *const Entry, hash: u64) {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        // Relaxed: only the lock holder stores.
        while !self.slots[i].load(Ordering::Relaxed).is_null() {
            i = (i + 1) & mask;
        }
        // Release: the entry is written before it is seen (pairs with `find`).
        self.slots[i].store(entry.cast_mut(), Ordering::Release);
    }
}

/// Visits an event's fields: encodes each into the payload and notes its type.
struct Encoder<'a> {
    payload: Payload<'a>,
    types: Types,
    too_many_fields: bool,
}

impl<'a> Encoder<'a> {
    fn new(inline: &'a mut [MaybeUninit<u8>; INLINE]) -> Self {
        Self {
            payload: Payload::new(inline),
            types: Types {
                len: 0,
                fields: [0; MAX_FIELDS],
            },
            too_many_fields: false,
        }
    }

    /// Notes that `field` comes next, of type `ty`; false if it cannot be noted.
    #[inline]
    fn field(&mut self, field: &TracingField, ty: Type) -> bool {
        let len = self.types.len as usize;
        let index = field.index();
        if len == MAX_FIELDS || index >= 1 << 13 {
            self.too_many_fields = true;
            return false;
        }
        self.types.fields[len] = (index as u16) << 3 | ty as u16;
        self.types.len += 1;
        true
    }
}

impl Visit for Encoder<'_> {
    fn record_u64(&mut self, field: &TracingField, value: u64) {
        if self.field(field, Type::U64) {
            self.payload.put(value);
        }
    }

    fn record_i64(&mut self, field: &TracingField, value: i64) {
        if self.field(field, Type::I64) {
            self.payload.put(value);
        }
    }

    fn record_f64(&mut self, field: &TracingField, value: f64) {
        if self.field(field, Type::F64) {
            self.payload.put(value);
        }
    }

    fn record_bool(&mut self, field: &TracingField, value: bool) {
        if self.field(field, Type::Bool) {
            self.payload.put(value);
        }
    }

    fn record_str(&mut self, field: &TracingField, value: &str) {
        if self.field(field, Type::String) {
            self.payload.put_prefixed(value.as_bytes());
        }
    }

    fn record_bytes(&mut self, field: &TracingField, value: &[u8]) {
        if self.field(field, Type::Bytes) {
            self.payload.put_prefixed(value);
        }
    }

    fn record_debug(&mut self, field: &TracingField, value: &dyn fmt::Debug) {
        if self.field(field, Type::String) {
            self.payload.put_debug(value);
        }
    }
}

/// Payload bytes kept on the stack.
const INLINE: usize = 1024;

/// An event's payload being encoded: on the stack, or on the heap beyond
/// [`INLINE`] bytes.
struct Payload<'a> {
    inline: &'a mut [MaybeUninit<u8>; INLINE],
    /// Bytes written (the first `len` of `inline`, or all of `heap`).
    len: usize,
    heap: Option<Vec<u8>>,
}

impl<'a> Payload<'a> {
    fn new(inline: &'a mut [MaybeUninit<u8>; INLINE]) -> Self {
        Self {
            inline,
            len: 0,
            heap: None,
        }
    }

    /// Appends `bytes` (copied, not zeroed first: a short payload costs its
    /// copies only; inlined, so that a fixed-size value is a store).
    #[inline(always)]
    fn extend(&mut self, bytes: &[u8]) {
        let (start, end) = (self.len, self.len + bytes.len());
        if self.heap.is_some() || end > INLINE {
            return self.spill(bytes);
        }
        // SAFETY: `start..end` lies in `inline` (checked); `MaybeUninit<u8>` has
        // `u8`'s layout; `bytes` is the caller's, not `inline`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.inline.as_mut_ptr().add(start).cast::<u8>(),
                bytes.len(),
            )
        };
        self.len = end;
    }

    /// [`Payload::extend`] beyond the inline bytes: on the heap.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, bytes: &[u8]) {
        let heap = match &mut self.heap {
            Some(heap) => heap,
            none => {
                // SAFETY: the first `len` bytes were written by `extend`.
                let written =
                    unsafe { &*(std::ptr::from_ref(&self.inline[..self.len]) as *const [u8]) };
                let mut heap = Vec::with_capacity((self.len + bytes.len()).max(2 * INLINE));
                heap.extend_from_slice(written);
                none.insert(heap)
            }
        };
        heap.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Overwrites the 4 bytes written at `at`.
    fn patch(&mut self, at: usize, bytes: [u8; 4]) {
        match &mut self.heap {
            Some(heap) => heap[at..at + 4].copy_from_slice(&bytes),
            None => self.inline[at..at + 4]
                .iter_mut()
                .zip(bytes)
                .for_each(|(b, v)| *b = MaybeUninit::new(v)),
        }
    }

    /// The bytes written.
    fn bytes(&self) -> &[u8] {
        match &self.heap {
            Some(heap) => heap,
            // SAFETY: the first `len` bytes were written by `extend`.
            None => unsafe { &*(std::ptr::from_ref(&self.inline[..self.len]) as *const [u8]) },
        }
    }

    /// Appends a fixed-size value (at most 8 bytes) in its CTF encoding.
    #[inline]
    fn put<F: Field>(&mut self, value: F) {
        let mut bytes = [0u8; 8];
        let n = value.encode(&mut bytes);
        self.extend(&bytes[..n]);
    }

    /// Appends a string or byte sequence as [`Field`] encodes `&str` and `&[u8]`:
    /// a `u32` length, then the bytes (cut to what the length can say).
    #[inline]
    fn put_prefixed(&mut self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
        self.extend(&(bytes.len() as u32).to_le_bytes());
        self.extend(bytes);
    }

    /// Appends a value formatted with `Debug`, as a string.
    fn put_debug(&mut self, value: &dyn fmt::Debug) {
        let at = self.len;
        self.extend(&[0; 4]);
        // Writing into memory cannot fail; a `Debug` that fails leaves what it
        // wrote.
        let _ = write!(self, "{value:?}");
        let len = u32::try_from(self.len - at - 4).unwrap_or(u32::MAX);
        self.patch(at, len.to_le_bytes());
    }
}

impl fmt::Write for Payload<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.extend(s.as_bytes());
        Ok(())
    }
}

/// The spans each thread entered, innermost last: the span an event happened in.
/// A `const` thread-local without a destructor (a load and a store per enter and
/// exit).
mod spans {
    use std::cell::Cell;

    /// Spans remembered per thread; deeper ones are counted, and events in them
    /// get span 0 (unknown).
    const DEPTH: usize = 64;

    struct Stack {
        ids: [Cell<u64>; DEPTH],
        depth: Cell<usize>,
    }

    thread_local! {
        static STACK: Stack = const {
            Stack {
                ids: [const { Cell::new(0) }; DEPTH],
                depth: Cell::new(0),
            }
        };
    }

    /// The calling thread entered span `id`.
    pub(super) fn enter(id: u64) {
        STACK.with(|s| {
            let depth = s.depth.get();
            if let Some(slot) = s.ids.get(depth) {
                slot.set(id);
            }
            s.depth.set(depth + 1);
        });
    }

    /// The calling thread exited span `id` (usually the innermost; spans may be
    /// exited in another order).
    pub(super) fn exit(id: u64) {
        STACK.with(|s| {
            let depth = s.depth.get();
            if depth == 0 {
                return;
            }
            if depth <= DEPTH {
                let ids = &s.ids[..depth];
                let Some(at) = ids.iter().rposition(|c| c.get() == id) else {
                    return;
                };
                for i in at..depth - 1 {
                    ids[i].set(ids[i + 1].get());
                }
            }
            s.depth.set(depth - 1);
        });
    }

    /// The innermost span the calling thread is in; 0 for none (or too deep).
    #[inline]
    pub(super) fn current() -> u64 {
        STACK.with(|s| match s.depth.get() {
            0 => 0,
            depth => s.ids.get(depth - 1).map_or(0, Cell::get),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn key(i: usize) -> Key {
        Key {
            // Addresses as a callsite's would be: aligned, close together.
            meta: 0x1000 + 64 * i,
            kind: Kind::Event,
            types: Types {
                len: 1,
                fields: [(i as u16 % 4) << 3 | Type::U64 as u16; MAX_FIELDS],
            },
        }
    }

    #[test]
    fn the_class_table_finds_every_entry_while_it_grows_under_readers() {
        const ENTRIES: usize = 3000;
        let layer = Layer::new();
        let published = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    // Acquire: pairs with the Release below: entries below `n`
                    // were inserted.
                    let n = published.load(Ordering::Acquire);
                    for i in (0..n).step_by(7) {
                        let k = key(i);
                        let found = layer.find(&k, k.hash()).expect("an inserted entry");
                        assert_eq!(found.key, k);
                    }
                    if n == ENTRIES {
                        break;
                    }
                });
            }
            for i in 0..ENTRIES {
                let k = key(i);
                let entry = layer.insert(k, k.hash(), None);
                assert_eq!(entry.key, k);
                published.store(i + 1, Ordering::Release);
            }
        });
        let state = layer.state.lock().unwrap();
        assert_eq!(state.entries.len(), ENTRIES);
        assert!(state.tables.len() > 1, "the table grew");
        drop(state);
        for i in 0..ENTRIES {
            let k = key(i);
            // Found, and never inserted twice.
            let found = layer.find(&k, k.hash()).unwrap();
            assert!(std::ptr::eq(found, layer.insert(k, k.hash(), None)));
        }
        let other = Key {
            kind: Kind::SpanNew,
            ..key(0)
        };
        assert!(layer.find(&other, other.hash()).is_none());
    }

    #[test]
    fn names_become_tsdl_identifiers() {
        for (name, want) in [
            ("plain", "plain"),
            ("r#type", "type"),
            ("http.status", "http_status"),
            ("héllo", "h_llo"),
            ("1st", "f_1st"),
            ("_x", "_x"),
        ] {
            assert_eq!(identifier(name), want);
        }
    }
}
