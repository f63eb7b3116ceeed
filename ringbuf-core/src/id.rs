//! Sub-buffer ids for overwrite mode: one word per logical slot mapping it to a
//! physical sub-buffer (docs/ARCHITECTURE.md, design §5).
//!
//! `| lap tag (31 bits) | noref (1 bit) | physical index (32 bits) |`
//!
//! * `noref` set: the slot's content is a delivered packet of lap `tag` that no writer
//!   references; the reader may swap its spare in and take the packet out.
//! * `noref` clear: writers may be writing into the physical sub-buffer (or it is a
//!   spare that holds nothing readable); the reader must not take it.
//!
//! The tag is the lap truncated to 31 bits: a reader would have to be lapped 2^31
//! times between its load and its CAS to be fooled.

const PHYS_BITS: u32 = 32;
const NOREF: u64 = 1 << PHYS_BITS;
const TAG_SHIFT: u32 = PHYS_BITS + 1;

/// A decoded sub-buffer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubbufId(u64);

impl SubbufId {
    /// The id of physical sub-buffer `phys` holding a delivered packet of lap `lap`
    /// (noref set).
    #[inline]
    pub const fn delivered(lap: u64, phys: u64) -> Self {
        Self((lap << TAG_SHIFT) | NOREF | (phys & (NOREF - 1)))
    }
    /// The id of physical sub-buffer `phys` that must not be taken (noref clear).
    #[inline]
    pub const fn referenced(lap: u64, phys: u64) -> Self {
        Self((lap << TAG_SHIFT) | (phys & (NOREF - 1)))
    }
    /// Wraps a raw word.
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw word.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// The physical sub-buffer index.
    #[inline]
    pub const fn phys(self) -> u64 {
        self.0 & (NOREF - 1)
    }
    /// Whether no writer references the sub-buffer and it holds a delivered packet.
    #[inline]
    pub const fn noref(self) -> bool {
        self.0 & NOREF != 0
    }
    /// Whether the tag matches `lap` (compared on the tag's 31 bits).
    #[inline]
    pub const fn is_lap(self, lap: u64) -> bool {
        (self.0 >> TAG_SHIFT) == (lap << TAG_SHIFT) >> TAG_SHIFT
    }
    /// The same id with noref cleared.
    #[inline]
    pub const fn without_noref(self) -> Self {
        Self(self.0 & !NOREF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let id = SubbufId::delivered(7, 3);
        assert!(id.noref() && id.is_lap(7) && !id.is_lap(8));
        assert_eq!(id.phys(), 3);
        let r = id.without_noref();
        assert!(!r.noref() && r.is_lap(7));
        assert_eq!(r.phys(), 3);
        assert_eq!(SubbufId::referenced(7, 3), r);
        // The tag wraps at 31 bits.
        let big = (1u64 << 31) + 5;
        assert!(SubbufId::delivered(big, 1).is_lap(5));
    }
}
