//! Buffer configuration and the position arithmetic it implies.

/// What writers do when the buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Mode {
    /// Keep the oldest data: new events are dropped and counted in `lost_full`.
    Discard = 1,
    /// Flight recorder: keep the newest data, overwriting the oldest sub-buffer
    /// (counted in `overrun`). The buffer has one extra physical sub-buffer that the
    /// reader owns, so it can read a complete packet while writers go on.
    Overwrite = 2,
}

impl Mode {
    /// Decodes the header field; `None` for an unknown value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Discard),
            2 => Some(Self::Overwrite),
            _ => None,
        }
    }
}

/// The default cap on nested reservations (a signal handler interrupting a probe
/// between reserve and commit, and so on).
pub const DEFAULT_NESTING_LIMIT: u32 = 4;

/// The smallest sub-buffer: it must hold a packet header and some records.
pub const MIN_SUBBUF_SIZE: u64 = 64;

/// The largest sub-buffer size and count: positions keep 2^63 bytes of headroom and
/// physical indices fit in the 32 bits the sub-buffer id reserves for them.
pub const MAX_SUBBUF_SIZE: u64 = 1 << 32;
/// See [`MAX_SUBBUF_SIZE`].
pub const MAX_SUBBUF_COUNT: u64 = 1 << 20;

/// A buffer's configuration. Build with [`Config::new`] and validate with
/// [`Config::validate`] (every constructor validates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes per sub-buffer (one packet): a power of two, at least [`MIN_SUBBUF_SIZE`].
    pub subbuf_size: u64,
    /// Number of sub-buffers: a power of two, at least 2.
    pub subbuf_count: u64,
    /// Discard or overwrite.
    pub mode: Mode,
    /// Nested reservations beyond this depth are dropped (counted in `lost_nested`).
    /// At least 1.
    pub nesting_limit: u32,
}

/// Why a [`Config`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The sub-buffer size is not a power of two.
    SubbufSizeNotPowerOfTwo(u64),
    /// The sub-buffer size is outside `MIN_SUBBUF_SIZE..=MAX_SUBBUF_SIZE`.
    SubbufSizeOutOfRange(u64),
    /// The sub-buffer count is not a power of two.
    SubbufCountNotPowerOfTwo(u64),
    /// The sub-buffer count is outside `2..=MAX_SUBBUF_COUNT`.
    SubbufCountOutOfRange(u64),
    /// The nesting limit is zero.
    ZeroNestingLimit,
    /// The packet header of the record format does not leave room for a record.
    PacketHeaderTooLarge {
        /// Bytes the format's packet header needs.
        header: u64,
        /// The sub-buffer size.
        subbuf_size: u64,
    },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::SubbufSizeNotPowerOfTwo(v) => {
                write!(f, "sub-buffer size {v} is not a power of two")
            }
            Self::SubbufSizeOutOfRange(v) => write!(
                f,
                "sub-buffer size {v} is outside {MIN_SUBBUF_SIZE}..={MAX_SUBBUF_SIZE}"
            ),
            Self::SubbufCountNotPowerOfTwo(v) => {
                write!(f, "sub-buffer count {v} is not a power of two")
            }
            Self::SubbufCountOutOfRange(v) => {
                write!(f, "sub-buffer count {v} is outside 2..={MAX_SUBBUF_COUNT}")
            }
            Self::ZeroNestingLimit => write!(f, "nesting limit must be at least 1"),
            Self::PacketHeaderTooLarge {
                header,
                subbuf_size,
            } => write!(
                f,
                "packet header of {header} bytes leaves no room in a {subbuf_size}-byte sub-buffer"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

impl Config {
    /// A configuration with the default nesting limit.
    pub const fn new(subbuf_size: u64, subbuf_count: u64, mode: Mode) -> Self {
        Self {
            subbuf_size,
            subbuf_count,
            mode,
            nesting_limit: DEFAULT_NESTING_LIMIT,
        }
    }

    /// The same configuration with another nesting limit.
    pub const fn with_nesting_limit(mut self, limit: u32) -> Self {
        self.nesting_limit = limit;
        self
    }

    /// Checks every field; returns the position arithmetic on success.
    pub fn validate(&self) -> Result<Geometry, ConfigError> {
        let (s, n) = (self.subbuf_size, self.subbuf_count);
        if !s.is_power_of_two() {
            return Err(ConfigError::SubbufSizeNotPowerOfTwo(s));
        }
        if !(MIN_SUBBUF_SIZE..=MAX_SUBBUF_SIZE).contains(&s) {
            return Err(ConfigError::SubbufSizeOutOfRange(s));
        }
        if !n.is_power_of_two() {
            return Err(ConfigError::SubbufCountNotPowerOfTwo(n));
        }
        if !(2..=MAX_SUBBUF_COUNT).contains(&n) {
            return Err(ConfigError::SubbufCountOutOfRange(n));
        }
        if self.nesting_limit == 0 {
            return Err(ConfigError::ZeroNestingLimit);
        }
        Ok(Geometry::new(s.trailing_zeros(), n.trailing_zeros()))
    }

    /// Physical sub-buffers: one more than logical in overwrite mode (the reader's
    /// spare).
    pub const fn physical_count(&self) -> u64 {
        match self.mode {
            Mode::Discard => self.subbuf_count,
            Mode::Overwrite => self.subbuf_count + 1,
        }
    }
}

/// Position arithmetic for `N` sub-buffers of `S` bytes (both powers of two).
///
/// Positions are free-running byte counters, never reduced modulo the buffer size:
/// `| lap | sub-buffer index | offset |`. The masks are precomputed: this is on
/// every event's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    subbuf_shift: u32,
    lap_shift: u32,
    offset_mask: u64,
    slot_mask: u64,
}

impl Geometry {
    const fn new(subbuf_shift: u32, count_shift: u32) -> Self {
        Self {
            subbuf_shift,
            lap_shift: subbuf_shift + count_shift,
            offset_mask: (1 << subbuf_shift) - 1,
            slot_mask: (1 << count_shift) - 1,
        }
    }
    /// Bytes per sub-buffer (`S`).
    #[inline(always)]
    pub const fn subbuf_size(self) -> u64 {
        self.offset_mask + 1
    }
    /// log2 of the sub-buffer size.
    #[inline(always)]
    pub const fn subbuf_shift(self) -> u32 {
        self.subbuf_shift
    }
    /// Logical sub-buffers (`N`).
    #[inline(always)]
    pub const fn subbuf_count(self) -> u64 {
        self.slot_mask + 1
    }
    /// Bytes in one lap (`N * S`).
    #[inline(always)]
    pub const fn buffer_size(self) -> u64 {
        1 << self.lap_shift
    }
    /// Offset of `pos` inside its sub-buffer.
    #[inline(always)]
    pub const fn offset(self, pos: u64) -> u64 {
        pos & self.offset_mask
    }
    /// Start of the sub-buffer containing `pos`.
    #[inline(always)]
    pub const fn subbuf_start(self, pos: u64) -> u64 {
        pos & !self.offset_mask
    }
    /// Logical slot (sub-buffer index) of `pos`.
    #[inline(always)]
    pub const fn slot(self, pos: u64) -> usize {
        ((pos >> self.subbuf_shift) & self.slot_mask) as usize
    }
    /// Lap of `pos`: how many times the buffer was filled before it.
    #[inline(always)]
    pub const fn lap(self, pos: u64) -> u64 {
        pos >> self.lap_shift
    }
    /// Global index of the sub-buffer containing `pos` since the buffer was created:
    /// the packet sequence number.
    #[inline(always)]
    pub const fn packet_seq(self, pos: u64) -> u64 {
        pos >> self.subbuf_shift
    }
    /// The commit count slot `slot(pos)` holds once every lap up to and including
    /// `lap(pos)` is complete (commit counts accumulate across laps).
    #[inline(always)]
    pub const fn full_commit(self, pos: u64) -> u64 {
        (self.lap(pos) + 1) << self.subbuf_shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configurations_are_typed_errors() {
        let ok = Config::new(4096, 4, Mode::Discard);
        assert!(ok.validate().is_ok());
        let cases = [
            (
                Config::new(1000, 4, Mode::Discard),
                ConfigError::SubbufSizeNotPowerOfTwo(1000),
            ),
            (
                Config::new(32, 4, Mode::Discard),
                ConfigError::SubbufSizeOutOfRange(32),
            ),
            (
                Config::new(1 << 33, 4, Mode::Discard),
                ConfigError::SubbufSizeOutOfRange(1 << 33),
            ),
            (
                Config::new(4096, 3, Mode::Overwrite),
                ConfigError::SubbufCountNotPowerOfTwo(3),
            ),
            (
                Config::new(4096, 1, Mode::Overwrite),
                ConfigError::SubbufCountOutOfRange(1),
            ),
            (
                Config::new(4096, 0, Mode::Overwrite),
                ConfigError::SubbufCountNotPowerOfTwo(0),
            ),
            (
                Config::new(4096, 4, Mode::Discard).with_nesting_limit(0),
                ConfigError::ZeroNestingLimit,
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), Err(expected), "{config:?}");
        }
    }

    #[test]
    fn position_arithmetic() {
        let g = Config::new(256, 4, Mode::Discard).validate().unwrap();
        assert_eq!(g.buffer_size(), 1024);
        let p = 3 * 1024 + 2 * 256 + 17;
        assert_eq!(g.offset(p), 17);
        assert_eq!(g.slot(p), 2);
        assert_eq!(g.lap(p), 3);
        assert_eq!(g.subbuf_start(p), p - 17);
        assert_eq!(g.packet_seq(p), 3 * 4 + 2);
        assert_eq!(g.full_commit(p), 4 * 256);
    }
}
