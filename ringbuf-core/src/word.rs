//! The 64-bit words the algorithm updates, in two flavours (docs/ARCHITECTURE.md, design §4).
//!
//! The engine is written once against [`Word`]. [`SharedWord`] is a plain
//! `AtomicU64` (LOCK-prefixed read-modify-writes on x86-64), correct when writers of
//! one buffer run on several CPUs at once. [`LocalWord`] performs its
//! read-modify-writes without the LOCK prefix: atomic with respect to interrupts and
//! signal handlers on the same CPU, but not with respect to other CPUs. Only words
//! that writers alone modify may be `LocalWord`s; words the reader modifies (its
//! position, the sub-buffer id table) are always full atomics. A buffer whose writer
//! words are `LocalWord`s can only be created through an `unsafe` constructor whose
//! contract is "every writer runs on one CPU at a time".

use core::sync::atomic::{AtomicU64, Ordering};

/// Which [`Word`] implementation a buffer's writer-only words use.
///
/// Recorded in the region header so that a process attaching to an existing buffer
/// cannot silently use the wrong flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Flavour {
    /// Full atomics: any number of writers on any CPUs.
    Shared = 1,
    /// Non-LOCK read-modify-writes: all writers on one CPU at a time.
    Local = 2,
    /// Model-checking words (loom); never stored in a real region.
    Model = 3,
}

impl Flavour {
    /// Decodes the header field; `None` for an unknown value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Shared),
            2 => Some(Self::Local),
            3 => Some(Self::Model),
            _ => None,
        }
    }
}

/// A 64-bit word with the atomic operations the engine needs.
///
/// # Safety
///
/// Implementations must make `load`, `store`, `fetch_add` and `compare_exchange`
/// single-copy atomic with at least the ordering guarantees requested, as far as the
/// flavour's contract reaches (all CPUs for [`Flavour::Shared`], the current CPU
/// for [`Flavour::Local`]).
pub unsafe trait Word: Sync {
    /// The flavour this word implements.
    const FLAVOUR: Flavour;
    /// Loads the value.
    fn load(&self, order: Ordering) -> u64;
    /// Stores `value`.
    fn store(&self, value: u64, order: Ordering);
    /// Adds `value`, returning the previous value (wrapping).
    fn fetch_add(&self, value: u64, order: Ordering) -> u64;
    /// Stores `new` if the value is `current`; returns the previous value either way.
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

/// The shared flavour: a full atomic.
pub type SharedWord = AtomicU64;

// SAFETY: `AtomicU64` is atomic across all CPUs with the requested orderings.
unsafe impl Word for AtomicU64 {
    const FLAVOUR: Flavour = Flavour::Shared;
    #[inline(always)]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline(always)]
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order)
    }
    #[inline(always)]
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_add(self, value, order)
    }
    #[inline(always)]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, current, new, success, failure)
    }
}

/// The local flavour: read-modify-writes without the LOCK prefix on x86-64.
///
/// Loads and stores are ordinary atomic loads and stores (plain `mov`s on x86-64), so a
/// reader on another CPU never sees a torn value. `fetch_add` and `compare_exchange`
/// are a single `xadd` / `cmpxchg` instruction: one instruction cannot be split by an
/// interrupt or a signal, so they are atomic with respect to everything that runs on
/// the same CPU. On x86-64 every instruction is ordered by TSO for other CPUs'
/// observers and by program order for the current CPU, so the requested `Ordering`s
/// hold as long as the compiler does not move memory accesses across the instruction:
/// the `asm!` blocks are not `nomem`, which makes them compiler barriers.
///
/// On other architectures `LocalWord` falls back to full atomics: correct, not faster.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct LocalWord(AtomicU64);

impl LocalWord {
    /// A word holding `value`.
    pub const fn new(value: u64) -> Self {
        Self(AtomicU64::new(value))
    }
}

// SAFETY: single instructions are atomic with respect to the current CPU (see the type
// docs); the ordering argument is given there. Cross-CPU atomicity is excluded by the
// flavour's contract, which the unsafe constructors of local buffers carry.
unsafe impl Word for LocalWord {
    const FLAVOUR: Flavour = Flavour::Local;
    #[inline(always)]
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    #[inline(always)]
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }
    #[inline(always)]
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            let _ = order;
            let mut v = value;
            // SAFETY: the pointer comes from a live `AtomicU64`, so it is valid and 8-byte
            // aligned; `xadd` reads and writes exactly those 8 bytes.
            unsafe {
                core::arch::asm!(
                    "xadd qword ptr [{p}], {v}",
                    p = in(reg) self.0.as_ptr(),
                    v = inout(reg) v,
                    options(nostack),
                );
            }
            v
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.0.fetch_add(value, order)
        }
    }
    #[inline(always)]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        #[cfg(target_arch = "x86_64")]
        {
            let _ = (success, failure);
            let previous: u64;
            // SAFETY: as in `fetch_add`; `cmpxchg` compares rax with the 8 bytes at `p`,
            // stores `new` there if equal, and leaves the previous value in rax.
            unsafe {
                core::arch::asm!(
                    "cmpxchg qword ptr [{p}], {new}",
                    p = in(reg) self.0.as_ptr(),
                    new = in(reg) new,
                    inout("rax") current => previous,
                    options(nostack),
                );
            }
            if previous == current {
                Ok(previous)
            } else {
                Err(previous)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.0.compare_exchange(current, new, success, failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<W: Word>(w: &W) {
        w.store(5, Ordering::Relaxed);
        assert_eq!(w.fetch_add(3, Ordering::AcqRel), 5);
        assert_eq!(w.load(Ordering::Acquire), 8);
        assert_eq!(
            w.compare_exchange(7, 1, Ordering::AcqRel, Ordering::Relaxed),
            Err(8)
        );
        assert_eq!(
            w.compare_exchange(8, 1, Ordering::AcqRel, Ordering::Relaxed),
            Ok(8)
        );
        assert_eq!(w.load(Ordering::Relaxed), 1);
        assert_eq!(w.fetch_add(u64::MAX, Ordering::Relaxed), 1);
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shared_and_local_words_agree() {
        exercise(&AtomicU64::new(0));
        exercise(&LocalWord::new(0));
    }
}
