//! A channel: one shared file holding a header, the trace's metadata, and one
//! buffer region per CPU (or per thread).
//!
//! ```text
//! 0        ChannelHeader (one page), with the trace clock
//! 4096     metadata area: metadata_capacity bytes, of which the first
//!          metadata_len are TSDL text
//! threads  the thread-slot table (crate::slots), page-aligned, whole pages
//! regions  buffers × region_stride, page-aligned; each a ringbuf_core::Region
//! ```
//!
//! Everything a consumer or a crash tool needs is in the file: it validates the
//! header (the clock included, so no reader parses TSDL to find it), copies the
//! metadata, and attaches each region (which validates itself).
//!
//! The metadata grows while the producer runs (event classes registered after the
//! start, e.g. one per `tracing` callsite): [`append_metadata`] writes text after
//! the current text, then publishes the new length; a reader loads the length and
//! reads up to it only (see [`MetadataCursor`]). Text is never changed once
//! published, only appended, so what a reader copied stays true.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ringbuf_core::ctf::ClockDescription;
use ringbuf_core::{Config, ConfigError, Mode, Region, RegionError, Word};

use crate::backing::{BackingError, Shm};
use crate::slots::{self, SlotTable};

/// Magic at the start of a channel file.
pub const CHANNEL_MAGIC: [u8; 8] = *b"RBCHAN\0\x01";
/// Channel layout version (2: the clock and the thread-slot table; 3: a metadata
/// area with a capacity, whose text grows).
pub const CHANNEL_VERSION: u32 = 3;
const PAGE: u64 = 4096;
const MAX_BUFFERS: u32 = 4096;
/// The largest metadata area.
pub const MAX_METADATA: u64 = 64 << 20;
/// The room a new channel's metadata area keeps for text appended while it runs,
/// at least: as much again as the initial text, and never less than this (1 MiB,
/// some thousands of event classes).
pub const METADATA_ROOM: u64 = 1 << 20;

/// The channel header at offset 0, in native byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelHeader {
    /// [`CHANNEL_MAGIC`].
    pub magic: [u8; 8],
    /// [`CHANNEL_VERSION`].
    pub version: u32,
    /// Number of buffers (regions).
    pub buffers: u32,
    /// Record format tag of every region.
    pub format: u32,
    /// Non-zero once the producer finished creating the channel.
    pub ready: u32,
    /// Offset of the metadata area.
    pub metadata_offset: u64,
    /// Bytes of metadata text at the start of the area. It grows while the
    /// producer runs: stored (Release) after the text it covers, and loaded
    /// (Acquire) by readers before they read that text.
    pub metadata_len: u64,
    /// Bytes of the metadata area (fixed at creation).
    pub metadata_capacity: u64,
    /// Offset of region 0.
    pub regions_offset: u64,
    /// Bytes between regions.
    pub region_stride: u64,
    /// Bytes of each region.
    pub region_size: u64,
    /// Sub-buffer size of every region.
    pub subbuf_size: u64,
    /// Sub-buffer count of every region.
    pub subbuf_count: u64,
    /// [`Mode`] of every region.
    pub mode: u32,
    /// Nesting limit of every region.
    pub nesting_limit: u32,
    /// Process id of the producer that created the channel.
    pub producer_pid: u32,
    /// How the writers update the buffers: a [`WritePath`] (0, `Shared`, in files
    /// from before it existed, where this word was reserved and zero).
    pub writers: u32,
    /// Offset of the thread-slot table.
    pub threads_offset: u64,
    /// The clock of every timestamp in the channel.
    pub clock: ChannelClock,
}

/// Bytes of [`ChannelClock::name`] (a name has at most one less).
pub const CLOCK_NAME_BYTES: usize = 32;
/// Bytes of [`ChannelClock::description`] (a description has at most one less).
pub const CLOCK_DESCRIPTION_BYTES: usize = 64;

/// The trace clock as the channel header records it: a [`ClockDescription`] with
/// its text in fixed, NUL-padded fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelClock {
    /// The name (a TSDL identifier, at most 31 bytes), NUL-padded.
    pub name: [u8; CLOCK_NAME_BYTES],
    /// The description (printable ASCII but `"` and `\`, at most 63 bytes),
    /// NUL-padded.
    pub description: [u8; CLOCK_DESCRIPTION_BYTES],
    /// Ticks per second (non-zero).
    pub freq: u64,
    /// Seconds from the Unix epoch to tick 0 (with `offset`).
    pub offset_s: i64,
    /// Further ticks from `offset_s` to tick 0 (less than `freq`).
    pub offset: u64,
}

/// Why a clock cannot be recorded in (or read from) a channel header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClockError {
    /// The name is empty, longer than 31 bytes, not a TSDL identifier, or not
    /// NUL-padded.
    Name(String),
    /// The description is longer than 63 bytes, holds something other than
    /// printable ASCII (or `"`, `\`), or is not NUL-padded.
    Description(String),
    /// Zero ticks per second.
    ZeroFrequency,
    /// `offset` is not less than `freq` (whole seconds belong in `offset_s`).
    Offset {
        /// The offset in ticks.
        offset: u64,
        /// Ticks per second.
        freq: u64,
    },
}

impl std::fmt::Display for ClockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(name) => write!(
                f,
                "clock name {name:?}: not a TSDL identifier of 1 to {} bytes",
                CLOCK_NAME_BYTES - 1
            ),
            Self::Description(text) => write!(
                f,
                "clock description {text:?}: not printable ASCII without '\"' and '\\' of at most {} bytes",
                CLOCK_DESCRIPTION_BYTES - 1
            ),
            Self::ZeroFrequency => f.write_str("clock frequency 0"),
            Self::Offset { offset, freq } => write!(
                f,
                "clock offset {offset} ticks is not less than its frequency {freq} Hz"
            ),
        }
    }
}

impl std::error::Error for ClockError {}

/// The same rule as the metadata writer's: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The same rule as the metadata writer's for free text.
fn is_plain_string(s: &str) -> bool {
    s.chars()
        .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
}

/// `text` NUL-padded into `N` bytes, if it fits with at least one NUL.
fn pad<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    (text.len() < N).then(|| {
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    })
}

/// The text before the first NUL of `field`, if every byte after it is NUL too
/// and it is UTF-8.
fn unpad(field: &[u8]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0)?;
    field[len..]
        .iter()
        .all(|&b| b == 0)
        .then(|| std::str::from_utf8(&field[..len]).ok())
        .flatten()
}

impl ChannelClock {
    /// Checks `clock` (the rules of TSDL, and of a header field's size) and
    /// records it.
    pub fn new(clock: &ClockDescription<'_>) -> Result<Self, ClockError> {
        let name = pad(clock.name)
            .filter(|_| is_identifier(clock.name))
            .ok_or_else(|| ClockError::Name(clock.name.to_owned()))?;
        let description = pad(clock.description)
            .filter(|_| is_plain_string(clock.description))
            .ok_or_else(|| ClockError::Description(clock.description.to_owned()))?;
        let recorded = Self {
            name,
            description,
            freq: clock.freq,
            offset_s: clock.offset_s,
            offset: clock.offset,
        };
        recorded.describe()?;
        Ok(recorded)
    }

    /// The description recorded, checked as [`ChannelClock::new`] checks it (a
    /// header read from a file may hold anything).
    pub fn describe(&self) -> Result<ClockDescription<'_>, ClockError> {
        let lossy = |field: &[u8]| String::from_utf8_lossy(field).into_owned();
        let name = unpad(&self.name)
            .filter(|n| is_identifier(n))
            .ok_or_else(|| ClockError::Name(lossy(&self.name)))?;
        let description = unpad(&self.description)
            .filter(|d| is_plain_string(d))
            .ok_or_else(|| ClockError::Description(lossy(&self.description)))?;
        if self.freq == 0 {
            return Err(ClockError::ZeroFrequency);
        }
        if self.offset >= self.freq {
            return Err(ClockError::Offset {
                offset: self.offset,
                freq: self.freq,
            });
        }
        Ok(ClockDescription {
            name,
            description,
            freq: self.freq,
            offset_s: self.offset_s,
            offset: self.offset,
        })
    }
}

/// Why a channel could not be created or attached.
#[derive(Debug)]
pub enum ChannelError {
    /// The shared memory failed.
    Backing(BackingError),
    /// The configuration is invalid.
    Config(ConfigError),
    /// A region failed validation.
    Region {
        /// Which buffer.
        index: u32,
        /// Why.
        error: RegionError,
    },
    /// Not a channel file (bad magic, version or not finished).
    BadHeader(&'static str),
    /// The header's geometry does not fit the file.
    BadLayout(&'static str),
    /// The metadata is not plausible TSDL text: not UTF-8, or cut or extended
    /// (see [`check_metadata`]), or its length lies outside the metadata area or
    /// went back.
    BadMetadata(&'static str),
    /// The metadata area has no room for the text to append.
    MetadataFull {
        /// Bytes of the area.
        capacity: u64,
        /// Bytes the text would need in all.
        needed: u64,
    },
    /// Zero buffers, or more than the limit.
    BufferCount(u32),
    /// The clock cannot be recorded (creating), or the header's is invalid
    /// (attaching).
    Clock(ClockError),
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backing(e) => write!(f, "shared memory: {e}"),
            Self::Config(e) => write!(f, "configuration: {e}"),
            Self::Region { index, error } => write!(f, "buffer {index}: {error}"),
            Self::BadHeader(why) => write!(f, "not a ringbuf channel: {why}"),
            Self::BadLayout(why) => write!(f, "inconsistent channel layout: {why}"),
            Self::BadMetadata(why) => write!(f, "invalid trace metadata: {why}"),
            Self::MetadataFull { capacity, needed } => write!(
                f,
                "the channel's metadata area holds {capacity} bytes, {needed} are needed"
            ),
            Self::BufferCount(n) => write!(f, "{n} buffers (1..={MAX_BUFFERS} allowed)"),
            Self::Clock(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Backing(e) => Some(e),
            Self::Config(e) => Some(e),
            Self::Region { error, .. } => Some(error),
            Self::Clock(e) => Some(e),
            Self::BadHeader(_)
            | Self::BadLayout(_)
            | Self::BadMetadata(_)
            | Self::MetadataFull { .. }
            | Self::BufferCount(_) => None,
        }
    }
}

impl From<BackingError> for ChannelError {
    fn from(e: BackingError) -> Self {
        Self::Backing(e)
    }
}

impl From<ConfigError> for ChannelError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Where the parts of a channel go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    /// Bytes of the metadata area (the text, and room for text appended later).
    pub metadata_capacity: u64,
    /// Offset of the thread-slot table.
    pub threads_offset: u64,
    /// Offset of region 0.
    pub regions_offset: u64,
    /// Bytes between regions.
    pub region_stride: u64,
    /// Bytes of each region.
    pub region_size: u64,
    /// Total bytes.
    pub size: u64,
}

impl ChannelLayout {
    /// Offset of buffer `index`'s region in the channel.
    pub fn region_offset(&self, index: u32) -> u64 {
        self.regions_offset + self.region_stride * index as u64
    }

    /// The layout of a new channel of `buffers` buffers of `config` whose metadata
    /// text starts with `metadata_len` bytes: its metadata area keeps room for as
    /// much text again, and at least [`METADATA_ROOM`] bytes more, within
    /// [`MAX_METADATA`].
    pub fn new(config: &Config, buffers: u32, metadata_len: u64) -> Result<Self, ChannelError> {
        if metadata_len > MAX_METADATA {
            return Err(ChannelError::BadLayout("metadata too large"));
        }
        let capacity = metadata_len
            .saturating_add(metadata_len.max(METADATA_ROOM))
            .next_multiple_of(PAGE)
            .min(MAX_METADATA);
        Self::with_metadata_capacity(config, buffers, capacity)
    }

    /// The layout of `buffers` buffers of `config` with a metadata area of
    /// `capacity` bytes (what a channel header records).
    pub fn with_metadata_capacity(
        config: &Config,
        buffers: u32,
        capacity: u64,
    ) -> Result<Self, ChannelError> {
        if buffers == 0 || buffers > MAX_BUFFERS {
            return Err(ChannelError::BufferCount(buffers));
        }
        if capacity > MAX_METADATA {
            return Err(ChannelError::BadLayout("metadata area too large"));
        }
        let region_size = Region::<ringbuf_core::SharedWord>::size_for(config)? as u64;
        let threads_offset = (PAGE + capacity).next_multiple_of(PAGE);
        let regions_offset = threads_offset + slots::table_size(buffers);
        let region_stride = region_size.next_multiple_of(PAGE);
        // Checked: a hostile header may ask for 4096 regions of 2^52 bytes each. A
        // wrapped total could pass the file-length check in `header_config` while
        // regions lie far outside the mapping (a panic in debug builds, wild reads
        // in release ones).
        let size = region_stride
            .checked_mul(buffers as u64)
            .and_then(|all| all.checked_add(regions_offset))
            .ok_or(ChannelError::BadLayout("larger than the address space"))?;
        Ok(Self {
            metadata_capacity: capacity,
            threads_offset,
            regions_offset,
            region_stride,
            region_size,
            size,
        })
    }
}

/// Reads and checks the channel header of `shm`; returns it with its configuration.
pub(crate) fn read_header(
    shm: &Shm,
) -> Result<(ChannelHeader, Config, ChannelLayout), ChannelError> {
    if (shm.len() as u64) < PAGE {
        return Err(ChannelError::BadLayout("file smaller than its header"));
    }
    // SAFETY: the mapping holds at least a page; the header is plain data copied out
    // before any field is trusted.
    let h = unsafe { std::ptr::read_volatile(shm.as_ptr().cast::<ChannelHeader>()) };
    header_config(&h, shm.len() as u64)
}

/// Checks a header copy against the file length.
pub(crate) fn header_config(
    h: &ChannelHeader,
    file_len: u64,
) -> Result<(ChannelHeader, Config, ChannelLayout), ChannelError> {
    if h.magic != CHANNEL_MAGIC {
        return Err(ChannelError::BadHeader("bad magic"));
    }
    if h.version != CHANNEL_VERSION {
        return Err(ChannelError::BadHeader("unsupported version"));
    }
    if h.ready == 0 {
        return Err(ChannelError::BadHeader(
            "producer has not finished creating it",
        ));
    }
    let mode = Mode::from_u32(h.mode).ok_or(ChannelError::BadHeader("unknown mode"))?;
    let config = Config {
        subbuf_size: h.subbuf_size,
        subbuf_count: h.subbuf_count,
        mode,
        nesting_limit: h.nesting_limit,
    };
    let layout = ChannelLayout::with_metadata_capacity(&config, h.buffers, h.metadata_capacity)?;
    let expected = (
        PAGE,
        layout.threads_offset,
        layout.regions_offset,
        layout.region_stride,
        layout.region_size,
    );
    if (
        h.metadata_offset,
        h.threads_offset,
        h.regions_offset,
        h.region_stride,
        h.region_size,
    ) != expected
    {
        return Err(ChannelError::BadLayout(
            "offsets differ from the configuration's",
        ));
    }
    if h.metadata_len > h.metadata_capacity {
        return Err(ChannelError::BadLayout("metadata longer than its area"));
    }
    if layout.size > file_len {
        return Err(ChannelError::BadLayout("file shorter than its buffers"));
    }
    h.clock.describe().map_err(ChannelError::Clock)?;
    Ok((*h, config, layout))
}

/// How a channel's writers update its buffers (recorded in [`ChannelHeader`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum WritePath {
    /// Reserve and commit with full atomics (LOCK CAS), or local ones on
    /// per-thread buffers: any writer may close a packet, commit counters count.
    Shared = 0,
    /// Per-CPU restartable sequences (docs/ARCHITECTURE.md §10): everything behind
    /// `write` is committed, only delivery may be missing; only the producer's
    /// process may switch the buffers (fence and `membarrier`).
    Rseq = 1,
}

impl WritePath {
    /// Decodes the header word; `None` for an unknown value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Shared),
            1 => Some(Self::Rseq),
            _ => None,
        }
    }
}

impl std::fmt::Display for WritePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Shared => "shared (LOCK CAS reserve/commit)",
            Self::Rseq => "rseq (per-CPU restartable sequences)",
        })
    }
}

/// Writes a new channel's header and metadata into `shm` (which must be
/// `layout.size` bytes); the regions are the caller's to initialise, and the
/// thread-slot table starts zeroed (every slot free) in a new file.
pub(crate) fn write_header(
    shm: &Shm,
    options: &crate::ChannelOptions<'_>,
    layout: &ChannelLayout,
    clock: ChannelClock,
    metadata: &str,
    writers: WritePath,
) {
    let (config, buffers, format) = (&options.config, options.buffers, options.format);
    let header = ChannelHeader {
        magic: CHANNEL_MAGIC,
        version: CHANNEL_VERSION,
        buffers,
        format,
        ready: 0,
        metadata_offset: PAGE,
        metadata_len: metadata.len() as u64,
        metadata_capacity: layout.metadata_capacity,
        regions_offset: layout.regions_offset,
        region_stride: layout.region_stride,
        region_size: layout.region_size,
        subbuf_size: config.subbuf_size,
        subbuf_count: config.subbuf_count,
        mode: config.mode as u32,
        nesting_limit: config.nesting_limit,
        // SAFETY: getpid has no preconditions.
        producer_pid: unsafe { libc::getpid() } as u32,
        writers: writers as u32,
        threads_offset: layout.threads_offset,
        clock,
    };
    const _: () = assert!(size_of::<ChannelHeader>() <= PAGE as usize);
    // `layout` was made for this text (`ChannelLayout::new`); checked, as a wrong
    // caller would otherwise write past the area.
    assert!(metadata.len() as u64 <= layout.metadata_capacity);
    // SAFETY: the mapping is `layout.size` bytes (checked by the caller), which holds
    // the header page and the metadata; nobody else uses it yet.
    unsafe {
        std::ptr::write_unaligned(shm.as_ptr().cast::<ChannelHeader>(), header);
        std::ptr::copy_nonoverlapping(
            metadata.as_ptr(),
            shm.as_ptr().add(PAGE as usize),
            metadata.len(),
        );
    }
}

/// Marks the channel complete (after every region is initialised).
pub(crate) fn mark_ready(shm: &Shm) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    let ready = std::mem::offset_of!(ChannelHeader, ready);
    // SAFETY: inside the header page, 4-byte aligned (repr(C) at a page start).
    unsafe { std::ptr::write_volatile(shm.as_ptr().add(ready).cast::<u32>(), 1) };
}

/// The metadata length word of a channel whose header was checked (or written by
/// this process): the producer stores it after the text it covers, readers load
/// it before reading that text.
fn metadata_len_word(shm: &Shm) -> &AtomicU64 {
    const AT: usize = offset_of!(ChannelHeader, metadata_len);
    const _: () = assert!(AT.is_multiple_of(8));
    // SAFETY: the mapping starts page-aligned and holds the header page (checked
    // before any header is trusted), so the word is in it and 8-byte aligned; it
    // lives as long as `shm`. After creation the word is only accessed atomically
    // by this crate (header copies read it as part of a plain copy, an aligned
    // 8-byte load that cannot tear on the 64-bit targets this crate supports).
    unsafe { AtomicU64::from_ptr(shm.as_ptr().add(AT).cast()) }
}

/// Serialises [`append_metadata`] calls in this process: two appenders would write
/// the same bytes.
static APPENDING: Mutex<()> = Mutex::new(());

/// Appends `text` (whole TSDL declarations, e.g. `event { ... };` blocks) to the
/// metadata of the channel in `shm`, which this process created: copies it after
/// the current text, then publishes the new length, so that a reader that loads
/// the length reads whole text. Refused with nothing written when the area has no
/// room ([`ChannelError::MetadataFull`]).
pub fn append_metadata(shm: &Shm, text: &str) -> Result<(), ChannelError> {
    let _one = APPENDING.lock().unwrap_or_else(|p| p.into_inner());
    // The header again: its capacity bounds the write, and its layout was checked
    // against the mapping.
    let (header, _, _) = read_header(shm)?;
    let word = metadata_len_word(shm);
    // Relaxed: only appenders store the length, and they are serialised by
    // `APPENDING` (whose lock orders the previous store before this load).
    let len = word.load(Ordering::Relaxed);
    let needed = len.saturating_add(text.len() as u64);
    if len > header.metadata_capacity || needed > header.metadata_capacity {
        return Err(ChannelError::MetadataFull {
            capacity: header.metadata_capacity,
            needed,
        });
    }
    // SAFETY: `[len, needed)` lies in the metadata area, which lies in the mapping
    // (the layout was checked against it); readers read only below the published
    // length and appenders are serialised, so nobody else accesses these bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            text.as_ptr(),
            shm.as_ptr().add((header.metadata_offset + len) as usize),
            text.len(),
        )
    };
    // Release: the text is written before the length that covers it (pairs with
    // `MetadataCursor::read`'s Acquire).
    word.store(needed, Ordering::Release);
    Ok(())
}

/// How far a reader has read the metadata of a channel: reads the text appended
/// since, up to the published length, bounds-checked against the area (which the
/// checked header copy fixes: a hostile length cannot make it read elsewhere).
#[derive(Debug)]
pub(crate) struct MetadataCursor {
    read: u64,
}

impl MetadataCursor {
    /// At the start of the text.
    pub(crate) fn new() -> Self {
        Self { read: 0 }
    }

    /// Copies the text published since the last call (all of it on the first) out
    /// of the channel; `None` when there is none. A length beyond the area or
    /// lower than what was read already is an error; so is text that is not
    /// UTF-8 or, after the first call, not whole declarations (see
    /// [`check_metadata_update`]). A file truncated under the mapping raises
    /// SIGBUS: the caller watches it ([`crate::guard`]).
    pub(crate) fn read(
        &mut self,
        shm: &Shm,
        header: &ChannelHeader,
    ) -> Result<Option<String>, ChannelError> {
        // Acquire: pairs with `append_metadata`'s Release: the text up to `len` is
        // written.
        let len = metadata_len_word(shm).load(Ordering::Acquire);
        if len > header.metadata_capacity {
            return Err(ChannelError::BadMetadata("its length exceeds its area"));
        }
        if len < self.read {
            return Err(ChannelError::BadMetadata("its length went back"));
        }
        if len == self.read && self.read > 0 {
            return Ok(None);
        }
        let mut bytes = vec![0u8; (len - self.read) as usize];
        // SAFETY: `header_config` checked that the mapping holds the whole area;
        // `[read, len)` lies in it. The bytes are copied before they are checked,
        // so a concurrent rewrite only yields an error.
        unsafe {
            std::ptr::copy_nonoverlapping(
                shm.as_ptr()
                    .add((header.metadata_offset + self.read) as usize),
                bytes.as_mut_ptr(),
                bytes.len(),
            )
        };
        let text = String::from_utf8(bytes).map_err(|_| ChannelError::BadMetadata("not UTF-8"))?;
        if self.read > 0 {
            check_metadata_update(&text).map_err(ChannelError::BadMetadata)?;
        }
        self.read = len;
        Ok(Some(text))
    }
}

/// Checks that `text` is plausibly whole TSDL metadata, so that a CTF channel
/// whose metadata length was corrupted is refused instead of yielding a trace no
/// reader opens (the channel itself is format-agnostic: CTF readers call this): it starts with the `/* CTF 1.8 */` line readers require, holds no NUL or
/// other control character (what lies past the real text: a longer length), and
/// ends with a complete top-level declaration (its braces balance and the last
/// character is `;`: a shorter length cuts a declaration).
pub fn check_metadata(text: &str) -> Result<(), &'static str> {
    if !text.starts_with("/* CTF 1.8 */") {
        return Err("does not start with /* CTF 1.8 */");
    }
    check_declarations(text)
}

/// Checks that `text`, appended to whole metadata, is plausibly whole TSDL
/// declarations (the rules of [`check_metadata`] but the first line): what a
/// producer appends while it runs, so that a reader never forwards a cut one.
pub fn check_metadata_update(text: &str) -> Result<(), &'static str> {
    check_declarations(text)
}

/// No control characters, balanced braces, and a last declaration ended by `;`.
fn check_declarations(text: &str) -> Result<(), &'static str> {
    if text
        .bytes()
        .any(|b| b.is_ascii_control() && !matches!(b, b'\n' | b'\t' | b'\r'))
    {
        return Err("holds control characters (is its length too long?)");
    }
    let mut depth = 0i64;
    for b in text.bytes() {
        match b {
            b'{' => depth += 1,
            b'}' if depth == 0 => return Err("unbalanced braces"),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    if depth != 0 || !text.trim_end().ends_with(';') {
        return Err("ends inside a declaration (is its length too short?)");
    }
    Ok(())
}

/// The thread-slot table of a channel whose layout was checked.
///
/// # Safety
///
/// `shm` outlives the table, and `layout` was checked by `header_config` (or made
/// for `shm` by its creator).
pub(crate) unsafe fn slot_table(shm: &Shm, layout: &ChannelLayout, buffers: u32) -> SlotTable {
    // SAFETY: the table lies inside the mapping (the layout fits the file), at a
    // page-aligned offset; the caller keeps the mapping alive.
    unsafe { SlotTable::new(shm.as_ptr().add(layout.threads_offset as usize), buffers) }
}

/// Region `index` of the channel, attached (validated) with flavour `W`.
///
/// # Safety
///
/// `shm` outlives the region, and the layout was checked by `header_config`; for
/// `LocalWord` the flavour contract of `Region::init_local` holds for any writing.
pub(crate) unsafe fn attach_region<W: Word>(
    shm: &Shm,
    layout: &ChannelLayout,
    format: u32,
    index: u32,
) -> Result<Region<'static, W>, ChannelError> {
    let offset = layout.region_offset(index) as usize;
    // SAFETY: the region lies inside the mapping (layout checked against the file
    // length); the caller keeps the mapping alive.
    unsafe {
        Region::attach_raw(
            shm.as_ptr().add(offset),
            layout.region_size as usize,
            format,
        )
    }
    .map_err(|error| ChannelError::Region { index, error })
}

/// Region `index` of a channel being created, initialised.
///
/// # Safety
///
/// As for [`attach_region`].
pub(crate) unsafe fn init_region<W: Word>(
    shm: &Shm,
    layout: &ChannelLayout,
    config: Config,
    format: u32,
    index: u32,
) -> Result<Region<'static, W>, ChannelError> {
    let offset = layout.region_offset(index) as usize;
    // SAFETY: as in attach_region.
    unsafe {
        Region::init_raw(
            shm.as_ptr().add(offset),
            layout.region_size as usize,
            config,
            format,
        )
    }
    .map_err(|error| ChannelError::Region { index, error })
}
