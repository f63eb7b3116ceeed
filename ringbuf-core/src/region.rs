//! A buffer laid out in a caller-provided memory region (docs/ARCHITECTURE.md, design §6).
//!
//! The region holds no pointer, only offsets, so another process can map the same
//! bytes at another address. It starts with a self-describing [`RegionHeader`];
//! hot words sit on their own cache lines; sub-buffers are page-aligned when the
//! region is page-aligned and the sub-buffer size is a multiple of the page size.
//!
//! ```text
//! 0      header (256 bytes)
//! 256    writer words       (write, last_timestamp)          one cache line
//! 320    loss counters                                         one cache line
//! 384    reader words       (consumed, spare, attached)       one cache line
//! 448    slot words × N     (commit, prefix, id, ...)         two cache lines each
//! data   physical sub-buffers × P, page-aligned start, stride S
//! ```
//!
//! Attaching treats the whole region as untrusted: every header field is checked,
//! the layout must be exactly the one this code computes for the header's
//! configuration, and the id table must be a permutation. Values that change
//! afterwards (a hostile writer) are bounds-checked where they are used.

use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::config::{Config, ConfigError, Mode};
use crate::control::{Control, LossWords, Mapped, ReaderWords, SlotWords, WriterWords};
use crate::id::SubbufId;
use crate::word::{Flavour, LocalWord, SharedWord, Word};

/// Magic at the start of every region.
pub const REGION_MAGIC: [u8; 8] = *b"RINGBUF\0";
/// Version of the layout described here.
pub const REGION_VERSION: u32 = 3;
/// Written in native byte order; reads back differently on the other endianness.
pub const ENDIAN_TAG: u32 = 0x0102_0304;
/// Bytes reserved for the header.
pub const HEADER_SIZE: usize = 256;
/// Cache line size the layout separates hot words by.
pub const CACHE_LINE: usize = 64;
/// Alignment of the data area.
pub const PAGE_SIZE: usize = 4096;

/// Offsets (in bytes, inside their group) of every word, for tools that read the
/// region without this crate: indexed by [`Field`].
pub type FieldTable = [u16; Field::COUNT];

/// The words a tool may need, in [`RegionHeader::fields`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Field {
    Write,
    LastTimestamp,
    LostFull,
    LostWrap,
    LostBig,
    LostNested,
    Overrun,
    Consumed,
    Spare,
    Attached,
    Commit,
    Delivered,
    Prefix,
    PrefixStampPre,
    PrefixStampPost,
    EndTimestamp,
    ContentSize,
    Discarded,
    Id,
    LastAt,
    Fence,
    LostFenced,
}

impl Field {
    /// Number of fields.
    pub const COUNT: usize = 22;
}

type W = SharedWord;
const FIELDS: FieldTable = [
    offset_of!(WriterWords<W>, write) as u16,
    offset_of!(WriterWords<W>, last_timestamp) as u16,
    offset_of!(LossWords<W>, full) as u16,
    offset_of!(LossWords<W>, wrap) as u16,
    offset_of!(LossWords<W>, big) as u16,
    offset_of!(LossWords<W>, nested) as u16,
    offset_of!(LossWords<W>, overrun) as u16,
    offset_of!(ReaderWords<W>, consumed) as u16,
    offset_of!(ReaderWords<W>, spare) as u16,
    offset_of!(ReaderWords<W>, attached) as u16,
    offset_of!(SlotWords<W, W>, commit) as u16,
    offset_of!(SlotWords<W, W>, delivered) as u16,
    offset_of!(SlotWords<W, W>, prefix) as u16,
    offset_of!(SlotWords<W, W>, prefix_stamp_pre) as u16,
    offset_of!(SlotWords<W, W>, prefix_stamp_post) as u16,
    offset_of!(SlotWords<W, W>, end_ts) as u16,
    offset_of!(SlotWords<W, W>, content) as u16,
    offset_of!(SlotWords<W, W>, discarded) as u16,
    offset_of!(SlotWords<W, W>, id) as u16,
    offset_of!(WriterWords<W>, last_at) as u16,
    offset_of!(ReaderWords<W>, fence) as u16,
    offset_of!(LossWords<W>, fenced) as u16,
];

/// The self-describing region header, in native byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionHeader {
    /// [`REGION_MAGIC`].
    pub magic: [u8; 8],
    /// [`REGION_VERSION`].
    pub version: u32,
    /// [`ENDIAN_TAG`] in the writer's byte order.
    pub endian: u32,
    /// Bytes per word (8).
    pub word_size: u32,
    /// [`Flavour`] of the writer words.
    pub flavour: u32,
    /// [`Mode`].
    pub mode: u32,
    /// Nesting limit.
    pub nesting_limit: u32,
    /// Record format tag chosen by the creator (e.g. raw or CTF).
    pub format: u32,
    /// Size of this header ([`HEADER_SIZE`]).
    pub header_size: u32,
    /// `S`.
    pub subbuf_size: u64,
    /// `N`.
    pub subbuf_count: u64,
    /// Physical sub-buffers (`N`, or `N + 1` in overwrite mode).
    pub physical_count: u64,
    /// Bytes of the whole region.
    pub region_size: u64,
    /// Offset of the writer words.
    pub writer_offset: u64,
    /// Offset of the loss counters.
    pub losses_offset: u64,
    /// Offset of the reader words.
    pub reader_offset: u64,
    /// Offset of slot 0's words.
    pub slots_offset: u64,
    /// Bytes between two slots' words.
    pub slot_stride: u64,
    /// Offset of physical sub-buffer 0.
    pub data_offset: u64,
    /// Bytes between two physical sub-buffers.
    pub data_stride: u64,
    /// Offset of each word inside its group, indexed by [`Field`].
    pub fields: FieldTable,
}

const _: () = assert!(size_of::<RegionHeader>() <= HEADER_SIZE);
const _: () = assert!(size_of::<WriterWords<W>>() <= CACHE_LINE);
const _: () = assert!(size_of::<LossWords<W>>() <= CACHE_LINE);
const _: () = assert!(size_of::<ReaderWords<W>>() <= CACHE_LINE);

/// Why a region cannot be initialised or attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// The memory is smaller than the layout needs.
    TooSmall {
        /// Bytes needed.
        need: u64,
        /// Bytes provided.
        have: u64,
    },
    /// The memory is not 8-byte aligned.
    Misaligned,
    /// No region magic.
    BadMagic,
    /// A layout version this code does not read.
    UnsupportedVersion(u32),
    /// Written by a machine of the other endianness.
    WrongEndianness,
    /// Written with another word size.
    WrongWordSize(u32),
    /// Unknown flavour value.
    UnknownFlavour(u32),
    /// The region's flavour is not the one asked for.
    FlavourMismatch {
        /// The region's flavour.
        region: Flavour,
    },
    /// Unknown mode value.
    UnknownMode(u32),
    /// The format tag is not the one asked for.
    FormatMismatch {
        /// The region's tag.
        region: u32,
    },
    /// Offsets, strides or sizes differ from the layout of the header's configuration.
    LayoutMismatch,
    /// The id table or reader spare is not a permutation of the physical sub-buffers,
    /// or positions are inconsistent.
    CorruptState,
}

impl From<ConfigError> for RegionError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::TooSmall { need, have } => {
                write!(f, "region of {have} bytes, {need} needed")
            }
            Self::Misaligned => f.write_str("region is not 8-byte aligned"),
            Self::BadMagic => f.write_str("not a ringbuf region (bad magic)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported region version {v}"),
            Self::WrongEndianness => f.write_str("region written with the other endianness"),
            Self::WrongWordSize(w) => write!(f, "region word size {w}, expected 8"),
            Self::UnknownFlavour(v) => write!(f, "unknown flavour {v}"),
            Self::FlavourMismatch { region } => {
                write!(f, "region flavour is {region:?}, not the one requested")
            }
            Self::UnknownMode(v) => write!(f, "unknown mode {v}"),
            Self::FormatMismatch { region } => write!(f, "region format tag {region:#x} differs"),
            Self::LayoutMismatch => f.write_str("region layout differs from its configuration"),
            Self::CorruptState => f.write_str("region state is inconsistent"),
        }
    }
}

impl core::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            _ => None,
        }
    }
}

/// Where everything lives for a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the writer words.
    pub writer: usize,
    /// Offset of the loss counters.
    pub losses: usize,
    /// Offset of the reader words.
    pub reader: usize,
    /// Offset of slot 0's words.
    pub slots: usize,
    /// Stride of slot words.
    pub slot_stride: usize,
    /// Offset of physical sub-buffer 0.
    pub data: usize,
    /// Stride of physical sub-buffers.
    pub data_stride: usize,
    /// Total bytes.
    pub size: usize,
}

const WRITER_OFFSET: usize = HEADER_SIZE;
const LOSSES_OFFSET: usize = HEADER_SIZE + CACHE_LINE;
const READER_OFFSET: usize = HEADER_SIZE + 2 * CACHE_LINE;
const SLOTS_OFFSET: usize = HEADER_SIZE + 3 * CACHE_LINE;
const SLOT_STRIDE: usize = size_of::<SlotWords<W, W>>();
const _: () = assert!(SLOT_STRIDE == 2 * CACHE_LINE);

impl Layout {
    /// The layout of a buffer with `config`.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let control_end = SLOTS_OFFSET + config.subbuf_count as usize * SLOT_STRIDE;
        let data = control_end.next_multiple_of(PAGE_SIZE);
        let data_stride = config.subbuf_size as usize;
        Ok(Self {
            writer: WRITER_OFFSET,
            losses: LOSSES_OFFSET,
            reader: READER_OFFSET,
            slots: SLOTS_OFFSET,
            slot_stride: SLOT_STRIDE,
            data,
            data_stride,
            size: data + data_stride * config.physical_count() as usize,
        })
    }
}

/// A buffer's control block and sub-buffers inside one memory region.
///
/// `W` is the flavour of the writer words: [`SharedWord`] (safe) or [`LocalWord`]
/// (only through `unsafe` constructors).
pub struct Region<'a, W: Word> {
    base: NonNull<u8>,
    /// Start of physical sub-buffer 0 (cached: on every event's path).
    data: NonNull<u8>,
    slot_mask: usize,
    subbuf_shift: u32,
    config: Config,
    layout: Layout,
    format: u32,
    _memory: PhantomData<(&'a [u8], W)>,
}

// SAFETY: the region is only accessed through atomics and through byte copies the
// algorithm makes exclusive; a `Region` is a view like `&[AtomicU64]`.
unsafe impl<W: Word> Send for Region<'_, W> {}
// SAFETY: as above.
unsafe impl<W: Word> Sync for Region<'_, W> {}

impl<'a> Region<'a, SharedWord> {
    /// Lays out a new buffer in `mem`, which must be 8-byte aligned and at least
    /// [`Region::size_for`] bytes. `format` tags the record format for readers.
    pub fn init(mem: &'a mut [u8], config: Config, format: u32) -> Result<Self, RegionError> {
        // SAFETY: `mem` is exclusively borrowed for 'a.
        unsafe { Self::init_raw(mem.as_mut_ptr(), mem.len(), config, format) }
    }

    /// Attaches to a buffer already laid out in `mem`, validating it.
    pub fn attach(mem: &'a mut [u8], format: u32) -> Result<Self, RegionError> {
        // SAFETY: `mem` is exclusively borrowed for 'a.
        unsafe { Self::attach_raw(mem.as_mut_ptr(), mem.len(), format) }
    }
}

impl<'a> Region<'a, LocalWord> {
    /// Lays out a new local-flavour buffer in `mem`.
    ///
    /// # Safety
    ///
    /// Every writer of the buffer runs on one CPU at a time (the writers are one
    /// thread and its signal handlers, or are pinned): local read-modify-writes are
    /// not atomic across CPUs.
    pub unsafe fn init_local(
        mem: &'a mut [u8],
        config: Config,
        format: u32,
    ) -> Result<Self, RegionError> {
        // SAFETY: `mem` is exclusively borrowed; the flavour contract is the caller's.
        unsafe { Self::init_raw(mem.as_mut_ptr(), mem.len(), config, format) }
    }
}

impl<'a, W: Word> Region<'a, W> {
    /// Bytes a region for `config` needs.
    pub fn size_for(config: &Config) -> Result<usize, ConfigError> {
        Ok(Layout::new(config)?.size)
    }

    /// Lays out a new buffer at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` is valid for reads and writes for `'a`, and only accessed
    /// through regions (in any process) while `'a` lasts; for [`LocalWord`], the
    /// contract of [`Region::init_local`] holds.
    pub unsafe fn init_raw(
        ptr: *mut u8,
        len: usize,
        config: Config,
        format: u32,
    ) -> Result<Self, RegionError> {
        let layout = Layout::new(&config)?;
        check_memory(ptr, len, layout.size)?;
        let header = RegionHeader {
            magic: [0; 8], // written last
            version: REGION_VERSION,
            endian: ENDIAN_TAG,
            word_size: 8,
            flavour: W::FLAVOUR as u32,
            mode: config.mode as u32,
            nesting_limit: config.nesting_limit,
            format,
            header_size: HEADER_SIZE as u32,
            subbuf_size: config.subbuf_size,
            subbuf_count: config.subbuf_count,
            physical_count: config.physical_count(),
            region_size: layout.size as u64,
            writer_offset: layout.writer as u64,
            losses_offset: layout.losses as u64,
            reader_offset: layout.reader as u64,
            slots_offset: layout.slots as u64,
            slot_stride: layout.slot_stride as u64,
            data_offset: layout.data as u64,
            data_stride: layout.data_stride as u64,
            fields: FIELDS,
        };
        // SAFETY: the control area lies inside the memory (checked above) and nobody
        // else uses it yet; the header is plain data and fits (const-asserted).
        unsafe {
            core::ptr::write_bytes(ptr, 0, layout.data);
            core::ptr::write_unaligned(ptr.cast::<RegionHeader>(), header);
        }
        // SAFETY: the memory was checked to hold the layout.
        let region = unsafe { Self::new_unchecked(ptr, config, layout, format) };
        for i in 0..config.subbuf_count as usize {
            let id = SubbufId::referenced(0, i as u64);
            region.slot(i).id.store(id.raw(), Relaxed);
        }
        region.reader().spare.store(config.subbuf_count, Relaxed);
        // Release: a process that sees the magic sees the whole initialised header.
        core::sync::atomic::fence(Release);
        // SAFETY: inside the header, which we own.
        unsafe { core::ptr::copy_nonoverlapping(REGION_MAGIC.as_ptr(), ptr, 8) };
        Ok(region)
    }

    /// Attaches to a buffer at `ptr`, validating its header and state.
    ///
    /// # Safety
    ///
    /// As for [`Region::init_raw`]; for [`LocalWord`], the caller also guarantees the
    /// flavour contract for any writing it does through the region.
    pub unsafe fn attach_raw(ptr: *mut u8, len: usize, format: u32) -> Result<Self, RegionError> {
        check_memory(ptr, len, HEADER_SIZE)?;
        // SAFETY: at least HEADER_SIZE readable bytes (checked); a plain-data copy, so
        // no value read from the region is trusted before validation.
        let header = unsafe { core::ptr::read_volatile(ptr.cast::<RegionHeader>()) };
        core::sync::atomic::fence(Acquire);
        let config = validate_header::<W>(&header, len, format)?;
        // SAFETY: `validate_header` checked that the memory holds the layout.
        let region = unsafe { Self::new_unchecked(ptr, config, Layout::new(&config)?, format) };
        region.validate_state()?;
        Ok(region)
    }

    /// # Safety
    ///
    /// `ptr` is non-null, 8-byte aligned and valid for `layout.size` bytes.
    unsafe fn new_unchecked(ptr: *mut u8, config: Config, layout: Layout, format: u32) -> Self {
        Self {
            // SAFETY: non-null by the contract.
            base: unsafe { NonNull::new_unchecked(ptr) },
            // SAFETY: inside the memory by the contract, hence non-null.
            data: unsafe { NonNull::new_unchecked(ptr.add(layout.data)) },
            slot_mask: config.subbuf_count as usize - 1,
            subbuf_shift: config.subbuf_size.trailing_zeros(),
            config,
            layout,
            format,
            _memory: PhantomData,
        }
    }

    /// The id table and the reader's spare must be a permutation of the physical
    /// sub-buffers (overwrite mode), and `consumed` must not pass `write`.
    fn validate_state(&self) -> Result<(), RegionError> {
        let write = self.writer().write.load(Acquire);
        let consumed = self.reader().consumed.load(Acquire);
        // Checked: a corrupt `write` in the last sub-buffer before 2^64 would overflow
        // (a panic in debug builds); no `consumed` is past the end of the positions.
        let end = write.checked_next_multiple_of(self.config.subbuf_size);
        if end.is_some_and(|end| consumed > end) {
            return Err(RegionError::CorruptState);
        }
        if self.config.mode == Mode::Overwrite {
            let physical = self.config.physical_count();
            let mut seen = 0u64;
            let mut mark = |phys: u64| -> Result<(), RegionError> {
                // Without allocation, uniqueness is checked by a sum of p^2 + 1 over
                // the table: it refuses garbage, not a crafted collision. That is
                // enough: a hostile process can rewrite the table after attach
                // anyway, so every use of an id bounds-checks it again.
                if phys >= physical {
                    return Err(RegionError::CorruptState);
                }
                seen = seen.wrapping_add(phys.wrapping_mul(phys).wrapping_add(1));
                Ok(())
            };
            for i in 0..self.config.subbuf_count as usize {
                mark(SubbufId::from_raw(self.slot(i).id.load(Acquire)).phys())?;
            }
            mark(self.reader().spare.load(Acquire))?;
            let expected = (0..physical).fold(0u64, |a, p| a.wrapping_add(p * p + 1));
            if seen != expected {
                return Err(RegionError::CorruptState);
            }
        }
        Ok(())
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The record format tag.
    pub fn format(&self) -> u32 {
        self.format
    }

    #[inline(always)]
    fn word_group<G>(&self, offset: usize) -> &G {
        // SAFETY: `offset` comes from the validated layout: in bounds, 8-aligned, and
        // the group consists of 8-byte atomic words valid for any bit pattern.
        unsafe { &*self.base.as_ptr().add(offset).cast::<G>() }
    }

    #[inline(always)]
    fn data_ptr(&self, phys: usize, offset: usize) -> *mut u8 {
        debug_assert!((phys as u64) < self.config.physical_count());
        // SAFETY: callers pass `phys < physical_count` and `offset <= S` (Control's
        // contract), so the address is inside the data area.
        unsafe { self.data.as_ptr().add((phys << self.subbuf_shift) + offset) }
    }
}

fn check_memory(ptr: *mut u8, len: usize, need: usize) -> Result<(), RegionError> {
    if ptr.is_null() || !(ptr as usize).is_multiple_of(8) {
        return Err(RegionError::Misaligned);
    }
    if len < need {
        return Err(RegionError::TooSmall {
            need: need as u64,
            have: len as u64,
        });
    }
    Ok(())
}

fn validate_header<W: Word>(
    h: &RegionHeader,
    len: usize,
    format: u32,
) -> Result<Config, RegionError> {
    if h.magic != REGION_MAGIC {
        return Err(RegionError::BadMagic);
    }
    if h.endian != ENDIAN_TAG {
        return Err(if h.endian == ENDIAN_TAG.swap_bytes() {
            RegionError::WrongEndianness
        } else {
            RegionError::CorruptState
        });
    }
    if h.version != REGION_VERSION {
        return Err(RegionError::UnsupportedVersion(h.version));
    }
    if h.word_size != 8 {
        return Err(RegionError::WrongWordSize(h.word_size));
    }
    let flavour = Flavour::from_u32(h.flavour).ok_or(RegionError::UnknownFlavour(h.flavour))?;
    if flavour != W::FLAVOUR {
        return Err(RegionError::FlavourMismatch { region: flavour });
    }
    let mode = Mode::from_u32(h.mode).ok_or(RegionError::UnknownMode(h.mode))?;
    if h.format != format {
        return Err(RegionError::FormatMismatch { region: h.format });
    }
    let config = Config {
        subbuf_size: h.subbuf_size,
        subbuf_count: h.subbuf_count,
        mode,
        nesting_limit: h.nesting_limit,
    };
    let layout = Layout::new(&config)?;
    let expected = [
        (h.header_size as u64, HEADER_SIZE as u64),
        (h.physical_count, config.physical_count()),
        (h.region_size, layout.size as u64),
        (h.writer_offset, layout.writer as u64),
        (h.losses_offset, layout.losses as u64),
        (h.reader_offset, layout.reader as u64),
        (h.slots_offset, layout.slots as u64),
        (h.slot_stride, layout.slot_stride as u64),
        (h.data_offset, layout.data as u64),
        (h.data_stride, layout.data_stride as u64),
    ];
    if expected.iter().any(|(a, b)| a != b) || h.fields != FIELDS {
        return Err(RegionError::LayoutMismatch);
    }
    if (len as u64) < h.region_size {
        return Err(RegionError::TooSmall {
            need: h.region_size,
            have: len as u64,
        });
    }
    Ok(config)
}

// SAFETY: every accessor stays inside the validated layout; slot indices are masked
// by callers (`i < subbuf_count`, asserted in debug builds); the data area is after
// the control area, sub-buffers are disjoint (stride = S).
unsafe impl<W: Word> Control for Region<'_, W> {
    type Word = W;
    type Shared = SharedWord;

    #[inline(always)]
    fn config(&self) -> Config {
        self.config
    }
    #[inline(always)]
    fn writer(&self) -> &WriterWords<W> {
        self.word_group(WRITER_OFFSET)
    }
    #[inline(always)]
    fn losses(&self) -> &LossWords<W> {
        self.word_group(LOSSES_OFFSET)
    }
    #[inline(always)]
    fn reader(&self) -> &ReaderWords<SharedWord> {
        self.word_group(READER_OFFSET)
    }
    #[inline(always)]
    fn slot(&self, i: usize) -> &SlotWords<W, SharedWord> {
        debug_assert!((i as u64) < self.config.subbuf_count);
        self.word_group(SLOTS_OFFSET + (i & self.slot_mask) * SLOT_STRIDE)
    }
    #[inline(always)]
    unsafe fn write_bytes(&self, phys: usize, offset: usize, src: &[u8]) {
        // SAFETY: in range and exclusive by the caller's contract.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.data_ptr(phys, offset), src.len())
        }
    }
    unsafe fn zero_bytes(&self, phys: usize, offset: usize, len: usize) {
        // SAFETY: as in write_bytes.
        unsafe { core::ptr::write_bytes(self.data_ptr(phys, offset), 0, len) }
    }
    unsafe fn read_bytes(&self, phys: usize, offset: usize, dst: &mut [u8]) {
        // SAFETY: in range and not concurrently written by the caller's contract.
        unsafe {
            core::ptr::copy_nonoverlapping(self.data_ptr(phys, offset), dst.as_mut_ptr(), dst.len())
        }
    }
}

// SAFETY: `data_ptr(phys, 0)` is the start of the bytes the Control methods access.
unsafe impl<W: Word> Mapped for Region<'_, W> {
    #[inline(always)]
    fn subbuf_ptr(&self, phys: usize) -> *mut u8 {
        self.data_ptr(phys, 0)
    }
}
