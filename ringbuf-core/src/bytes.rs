//! Little-endian reads from byte slices, for the packet parsers.

/// The `u64` at `at` (the caller checked the bounds).
#[inline]
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The `u32` at `at` (the caller checked the bounds).
#[inline]
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}
