//! A channel: one shared file holding a header, the trace's metadata, and one
//! buffer region per CPU (or per thread).
//!
//! ```text
//! 0        ChannelHeader (one page)
//! 4096     metadata text (TSDL), metadata_len bytes
//! regions  buffers × region_stride, page-aligned; each a ringbuf_core::Region
//! ```
//!
//! Everything a consumer or a crash tool needs is in the file: it validates the
//! header, copies the metadata, and attaches each region (which validates itself).

use std::mem::size_of;

use ringbuf_core::{Config, ConfigError, Mode, Region, RegionError, Word};

use crate::backing::{BackingError, Shm};

/// Magic at the start of a channel file.
pub const CHANNEL_MAGIC: [u8; 8] = *b"RBCHAN\0\x01";
/// Channel layout version.
pub const CHANNEL_VERSION: u32 = 1;
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
        }
    }
}

impl std::error::Error for ChannelError {}

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
        let regions_offset = (PAGE + metadata_len).next_multiple_of(PAGE);
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
        layout.regions_offset,
        layout.region_stride,
        layout.region_size,
    );
    if (
        h.metadata_offset,
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
    Ok((*h, config, layout))
}

/// Writes a new channel into `shm` (which must be `layout.size` bytes) and returns
/// a pointer to each region for the caller to initialise.
pub(crate) fn write_header(
    shm: &Shm,
    config: &Config,
    layout: &ChannelLayout,
    buffers: u32,
    format: u32,
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
