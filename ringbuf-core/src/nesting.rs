//! The nesting counter that caps how deeply writers nest (docs/ARCHITECTURE.md, design §3).

use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};

/// Depth of in-flight reservations of one thread (or one CPU, for pinned writers).
///
/// Keep one per thread, e.g. `thread_local!(static NEST: Nesting = const {
/// Nesting::new() })`: it needs no lazy initialisation, so a signal handler can use
/// it. A handler that interrupts a probe between reserve and commit and writes to a
/// buffer is one level deeper; beyond the buffer's limit the event is dropped and
/// counted in `lost_nested`.
///
/// Entering and leaving are a plain load and store, not a read-modify-write: a
/// handler that interrupts between them leaves the counter as it found it before
/// returning, so the counter stays exact without a LOCK prefix.
#[derive(Debug, Default)]
pub struct Nesting {
    depth: AtomicU32,
}

impl Nesting {
    /// A counter at depth 0.
    pub const fn new() -> Self {
        Self {
            depth: AtomicU32::new(0),
        }
    }

    /// The current depth.
    pub fn depth(&self) -> u32 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Goes one level deeper unless already at `limit`.
    #[inline(always)]
    pub(crate) fn enter(&self, limit: u32) -> bool {
        // Relaxed: only this thread and its own signal handlers touch the counter, and
        // they see its accesses in program order; the fences stop the compiler from
        // moving them across the reservation.
        let depth = self.depth.load(Ordering::Relaxed);
        if depth >= limit {
            return false;
        }
        self.depth.store(depth + 1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        true
    }

    /// Goes one level up. A decrement rather than a restore of the entry depth, so
    /// a thread may commit its own reservations in any order.
    #[inline(always)]
    pub(crate) fn exit(&self) {
        compiler_fence(Ordering::SeqCst);
        let depth = self.depth.load(Ordering::Relaxed);
        self.depth.store(depth.saturating_sub(1), Ordering::Relaxed);
    }
}
