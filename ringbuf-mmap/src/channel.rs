//! A channel: one shared file holding a header, the trace's metadata, and one
//! buffer region per CPU (or per thread).
//!
//! ```text
//! 0        ChannelHeader (one page), with the trace clock
//! 4096     metadata text (TSDL), metadata_len bytes
//! threads  the thread-slot table (crate::slots), page-aligned, whole pages
//! regions  buffers × region_stride, page-aligned; each a ringbuf_core::Region
//! ```
//!
//! Everything a consumer or a crash tool needs is in the file: it validates the
//! header (the clock included, so no reader parses TSDL to find it), copies the
//! metadata, and attaches each region (which validates itself).

use std::mem::size_of;

use ringbuf_core::ctf::ClockDescription;
use ringbuf_core::{Config, ConfigError, Mode, Region, RegionError, Word};

use crate::backing::{BackingError, Shm};
use crate::slots::{self, SlotTable};

/// Magic at the start of a channel file.
pub const CHANNEL_MAGIC: [u8; 8] = *b"RBCHAN\0\x01";
/// Channel layout version (2: the clock and the thread-slot table).
pub const CHANNEL_VERSION: u32 = 2;
const PAGE: u64 = 4096;
const MAX_BUFFERS: u32 = 4096;
const MAX_METADATA: u64 = 64 << 20;

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
    /// Offset of the metadata text.
    pub metadata_offset: u64,
    /// Bytes of metadata text.
    pub metadata_len: u64,
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
    /// Reserved, zero.
    pub reserved: u32,
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
    /// (see [`check_metadata`]).
    BadMetadata(&'static str),
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
    /// Bytes of metadata.
    pub metadata_len: u64,
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

    /// The layout of `buffers` buffers of `config` with `metadata_len` bytes of text.
    pub fn new(config: &Config, buffers: u32, metadata_len: u64) -> Result<Self, ChannelError> {
        if buffers == 0 || buffers > MAX_BUFFERS {
            return Err(ChannelError::BufferCount(buffers));
        }
        if metadata_len > MAX_METADATA {
            return Err(ChannelError::BadLayout("metadata too large"));
        }
        let region_size = Region::<ringbuf_core::SharedWord>::size_for(config)? as u64;
        let threads_offset = (PAGE + metadata_len).next_multiple_of(PAGE);
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
            metadata_len,
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
    let layout = ChannelLayout::new(&config, h.buffers, h.metadata_len)?;
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
    if layout.size > file_len {
        return Err(ChannelError::BadLayout("file shorter than its buffers"));
    }
    h.clock.describe().map_err(ChannelError::Clock)?;
    Ok((*h, config, layout))
}

/// Writes a new channel's header and metadata into `shm` (which must be
/// `layout.size` bytes); the regions are the caller's to initialise, and the
/// thread-slot table starts zeroed (every slot free) in a new file.
pub(crate) fn write_header(
    shm: &Shm,
    config: &Config,
    layout: &ChannelLayout,
    buffers: u32,
    format: u32,
    clock: ChannelClock,
    metadata: &str,
) {
    let header = ChannelHeader {
        magic: CHANNEL_MAGIC,
        version: CHANNEL_VERSION,
        buffers,
        format,
        ready: 0,
        metadata_offset: PAGE,
        metadata_len: metadata.len() as u64,
        regions_offset: layout.regions_offset,
        region_stride: layout.region_stride,
        region_size: layout.region_size,
        subbuf_size: config.subbuf_size,
        subbuf_count: config.subbuf_count,
        mode: config.mode as u32,
        nesting_limit: config.nesting_limit,
        // SAFETY: getpid has no preconditions.
        producer_pid: unsafe { libc::getpid() } as u32,
        reserved: 0,
        threads_offset: layout.threads_offset,
        clock,
    };
    const _: () = assert!(size_of::<ChannelHeader>() <= PAGE as usize);
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

/// Copies the metadata text out of the channel.
pub(crate) fn read_metadata(shm: &Shm, header: &ChannelHeader) -> Result<String, ChannelError> {
    let mut bytes = vec![0u8; header.metadata_len as usize];
    // SAFETY: `header_config` checked that the file holds the metadata; the bytes are
    // copied before they are checked, so a concurrent rewrite only yields an error.
    unsafe {
        std::ptr::copy_nonoverlapping(
            shm.as_ptr().add(header.metadata_offset as usize),
            bytes.as_mut_ptr(),
            bytes.len(),
        )
    };
    String::from_utf8(bytes).map_err(|_| ChannelError::BadMetadata("not UTF-8"))
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
