//! The thread-slot table of a channel file: who owns each buffer of a per-thread
//! channel, and the consumer's requests to its owner.
//!
//! ```text
//! threads_offset   TableHead (64 bytes): channel-level loss counters
//!                  buffers × SlotWords (64 bytes each, one cache line per slot)
//! ```
//!
//! Each slot has one state word, `generation << 3 | request << 2 | tag`:
//!
//! ```text
//!            claim (a thread's first event)        retire (its exit, after a flush)
//! FREE(g) ─────────────────────────────► OWNED(g+1) ──────────────────────► RETIRING(g+1)
//!    ▲                                                                             │
//!    └──────────────── free (a consumer, once it read everything) ─────────────────┘
//! ```
//!
//! Every transition is a CAS from the exact value its maker loaded, and the
//! generation moves on every claim, so a stale CAS (a consumer that loaded
//! `RETIRING(g)` and was overtaken by a whole later owner) fails instead of freeing
//! an undrained slot (ABA). The request bit is set by a consumer on an owned slot
//! and cleared by the owner, which then closes its open packet: the consumer never
//! writes the buffer itself (the local flavour's one-CPU contract).
//!
//! The words are shared with other processes: a value may be anything. The consumer
//! side decodes without trusting (an unknown tag is [`SlotState::Invalid`]) and
//! makes one CAS attempt per call; the producer side scans each slot once per claim
//! and retries a retire a bounded number of times. Nothing here can panic or spin.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};

const TAG: u64 = 0b11;
const FREE: u64 = 0;
const OWNED: u64 = 1;
const RETIRING: u64 = 2;
const REQUEST: u64 = 0b100;
const GENERATION: u64 = !0b111;
const ONE_GENERATION: u64 = 0b1000;
/// How often the owner retries its retire CAS when the word keeps changing under
/// it (only a request can change it legitimately, and only once).
const RETIRE_TRIES: u32 = 64;
/// Bytes of the table head and of each slot's words.
const LINE: u64 = 64;

/// Channel-level counters of events that found no buffer to go to.
#[repr(C, align(64))]
struct TableHead {
    lost_unregistered: AtomicU64,
    lost_no_slot: AtomicU64,
}

/// One slot's words.
#[repr(C, align(64))]
struct SlotWords {
    state: AtomicU64,
    /// The owner's thread id, for observers (the last owner's once retired).
    tid: AtomicU32,
}

const _: () = assert!(size_of::<TableHead>() == LINE as usize);
const _: () = assert!(size_of::<SlotWords>() == LINE as usize);

/// Bytes of the table of `buffers` slots, in whole pages.
pub(crate) fn table_size(buffers: u32) -> u64 {
    (LINE * (1 + buffers as u64)).next_multiple_of(4096)
}

/// What a slot's state word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// No thread owns it: the next thread's first event may claim it.
    Free,
    /// A live thread writes it.
    Owned {
        /// The owner's thread id.
        tid: u32,
        /// A consumer asked the owner to close its open packet.
        switch_requested: bool,
    },
    /// Its thread exited after closing its last packet; a consumer frees it once it
    /// has read every packet.
    Retiring {
        /// The thread that owned it.
        tid: u32,
    },
    /// Not a state this code writes (a corrupt or hostile file).
    Invalid(u64),
}

/// Events a per-thread channel dropped because the writing thread had no buffer.
/// (Events a buffer refused are counted in that buffer's [`ringbuf_core::Stats`].)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotLosses {
    /// The thread had no slot and could not take one there: from a signal handler
    /// (registration is not async-signal-safe), or after its exit hook ran.
    pub unregistered: u64,
    /// Every slot was taken (their threads live, or their last packets were not
    /// read yet), or the thread already wrote to too many per-thread channels.
    pub no_slot: u64,
}

/// The table in a mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotTable {
    base: *const u8,
    slots: u32,
}

// SAFETY: the table is atomics in shared memory; sharing the pointer between
// threads shares only atomic accesses.
unsafe impl Send for SlotTable {}
// SAFETY: as above.
unsafe impl Sync for SlotTable {}

impl SlotTable {
    /// The table of `slots` slots at `base`.
    ///
    /// # Safety
    ///
    /// `base` is 64-byte aligned and [`table_size`]`(slots)` bytes there stay mapped
    /// for as long as the table is used.
    pub(crate) unsafe fn new(base: *const u8, slots: u32) -> Self {
        Self { base, slots }
    }

    fn head(&self) -> &TableHead {
        // SAFETY: the head is the first line of the mapped table (`new`'s contract);
        // it is only ever accessed atomically.
        unsafe { &*self.base.cast::<TableHead>() }
    }

    fn words(&self, slot: u32) -> Option<&SlotWords> {
        (slot < self.slots).then(|| {
            // SAFETY: slot `slot` lies inside the mapped table (`new`'s contract and
            // the check above); only accessed atomically.
            unsafe {
                &*self
                    .base
                    .add((LINE * (1 + slot as u64)) as usize)
                    .cast::<SlotWords>()
            }
        })
    }

    /// The state word of `slot` (in range: the caller's own slot).
    pub(crate) fn state_word(&self, slot: u32) -> Option<&AtomicU64> {
        self.words(slot).map(|w| &w.state)
    }

    /// Producer: claims a free slot for thread `tid`; returns it and its owned
    /// state value. Each slot is tried once, lowest first (a thread claims once in
    /// its life: contention on the first slots does not matter, and low slots in
    /// use read well).
    pub(crate) fn claim(&self, tid: u32) -> Option<(u32, u64)> {
        (0..self.slots).find_map(|slot| {
            let words = self.words(slot)?;
            // Relaxed: a hint; the CAS below decides.
            let old = words.state.load(Relaxed);
            if old & TAG != FREE {
                return None;
            }
            let owned = (old & GENERATION).wrapping_add(ONE_GENERATION) | OWNED;
            // Acquire: pairs with the Release of `free` (and through it of
            // `retire`): the previous owner's writes to the buffer and the
            // consumer's reads of it happen before this thread writes it.
            words
                .state
                .compare_exchange(old, owned, Acquire, Relaxed)
                .ok()?;
            // Relaxed: for observers only.
            words.tid.store(tid, Relaxed);
            Some((slot, owned))
        })
    }

    /// Owner, on its next event: whether a consumer asked for a switch (the word is
    /// `owned` with the request bit); clears the request. Call only when the word
    /// differed from `owned`.
    #[cold]
    pub(crate) fn take_request(state: &AtomicU64, seen: u64, owned: u64) -> bool {
        // Relaxed: the request carries no data; the switch that honours it
        // publishes the packet through the engine's own orderings. Cleared before
        // the switch: a request made after this still finds the packet open and is
        // honoured by that switch or the next event's.
        seen == owned | REQUEST
            && state
                .compare_exchange(seen, owned, Relaxed, Relaxed)
                .is_ok()
    }

    /// Owner, at thread exit, after its last packet was closed: marks the slot
    /// retiring. False if the word no longer says `owned` (another process changed
    /// it): the slot is then left as it is.
    pub(crate) fn retire(&self, slot: u32, owned: u64) -> bool {
        let Some(words) = self.words(slot) else {
            return false;
        };
        let retiring = (owned & GENERATION) | RETIRING;
        for _ in 0..RETIRE_TRIES {
            // Relaxed: the CAS below decides.
            let old = words.state.load(Relaxed);
            if old & !REQUEST != owned {
                return false;
            }
            // Release: the flush and every earlier write of this thread to the
            // buffer happen before a consumer that sees `RETIRING` (`retiring`'s
            // Acquire) drains it.
            if words
                .state
                .compare_exchange(old, retiring, Release, Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Consumer: the state word of `slot` if it is retiring, to be passed to
    /// [`SlotTable::free`] once everything in the buffer was read. Load it
    /// *before* reading.
    pub(crate) fn retiring(&self, slot: u32) -> Option<u64> {
        // Acquire: pairs with `retire`'s Release: the owner's last packet is
        // delivered before the reads that follow.
        let state = self.words(slot)?.state.load(Acquire);
        (state & (TAG | REQUEST) == RETIRING).then_some(state)
    }

    /// Consumer: frees `slot`, which was `retiring` (from [`SlotTable::retiring`])
    /// and has been read to the end since. One attempt: false if the word changed
    /// meanwhile (another consumer freed it, or it is not this generation's).
    pub(crate) fn free(&self, slot: u32, retiring: u64) -> bool {
        let Some(words) = self.words(slot) else {
            return false;
        };
        // Release: this consumer's reads of the buffer happen before the next
        // owner (whose claim is Acquire) writes it.
        words
            .state
            .compare_exchange(retiring, (retiring & GENERATION) | FREE, Release, Relaxed)
            .is_ok()
    }

    /// Consumer: asks the owner of `slot`, if any, to close its open packet on its
    /// next event. One attempt: a word that changes meanwhile is left alone.
    pub(crate) fn request_switch(&self, slot: u32) {
        let Some(words) = self.words(slot) else {
            return;
        };
        // Relaxed: the request carries no data (see `take_request`).
        let old = words.state.load(Relaxed);
        if old & (TAG | REQUEST) == OWNED {
            let _ = words
                .state
                .compare_exchange(old, old | REQUEST, Relaxed, Relaxed);
        }
    }

    /// What `slot`'s words say (untrusted).
    pub(crate) fn state(&self, slot: u32) -> Option<SlotState> {
        let words = self.words(slot)?;
        // Relaxed: a statistic.
        let (state, tid) = (words.state.load(Relaxed), words.tid.load(Relaxed));
        Some(match state & TAG {
            FREE => SlotState::Free,
            OWNED => SlotState::Owned {
                tid,
                switch_requested: state & REQUEST != 0,
            },
            RETIRING if state & REQUEST == 0 => SlotState::Retiring { tid },
            _ => SlotState::Invalid(state),
        })
    }

    /// Counts one event dropped for want of a slot.
    pub(crate) fn count(&self, losses: Loss) {
        let head = self.head();
        let counter = match losses {
            Loss::Unregistered => &head.lost_unregistered,
            Loss::NoSlot => &head.lost_no_slot,
        };
        // Relaxed: a statistic.
        counter.fetch_add(1, Relaxed);
    }

    /// The channel-level loss counters (untrusted on the consumer side).
    pub(crate) fn losses(&self) -> SlotLosses {
        let head = self.head();
        // Relaxed: statistics.
        SlotLosses {
            unregistered: head.lost_unregistered.load(Relaxed),
            no_slot: head.lost_no_slot.load(Relaxed),
        }
    }
}

/// Which channel-level counter an event goes to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loss {
    /// [`SlotLosses::unregistered`].
    Unregistered,
    /// [`SlotLosses::no_slot`].
    NoSlot,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in private memory.
    fn table(slots: u32) -> (Vec<SlotWords>, SlotTable) {
        let words: Vec<SlotWords> = (0..=slots)
            .map(|_| SlotWords {
                state: AtomicU64::new(0),
                tid: AtomicU32::new(0),
            })
            .collect();
        // SAFETY: `words` holds the head line and `slots` slot lines, 64-byte
        // aligned, and outlives the table in each test.
        let table = unsafe { SlotTable::new(words.as_ptr().cast(), slots) };
        (words, table)
    }

    #[test]
    fn a_slot_goes_round_claim_retire_free_and_stale_words_change_nothing() {
        let (_words, t) = table(2);
        let (a, owned_a) = t.claim(7).unwrap();
        assert_eq!(a, 0, "lowest first");
        let (b, _) = t.claim(7).unwrap();
        assert_eq!(b, 1);
        assert_eq!(t.claim(7), None, "both taken");
        assert_eq!(t.retiring(a), None, "owned, not retiring");
        // A request, then the owner takes it (once).
        t.request_switch(a);
        let word = t.state_word(a).unwrap();
        let seen = word.load(Relaxed);
        assert_eq!(
            t.state(a),
            Some(SlotState::Owned {
                tid: 7,
                switch_requested: true
            })
        );
        assert!(SlotTable::take_request(word, seen, owned_a));
        assert!(!SlotTable::take_request(word, word.load(Relaxed), owned_a));
        // A request still pending at exit does not stop the retire.
        t.request_switch(a);
        assert!(t.retire(a, owned_a));
        assert_eq!(t.state(a), Some(SlotState::Retiring { tid: 7 }));
        assert!(!t.retire(a, owned_a), "not owned any more");
        let retiring = t.retiring(a).unwrap();
        assert!(t.free(a, retiring));
        assert!(!t.free(a, retiring), "freed once");
        // The next owner's generation differs: a consumer's stale word cannot
        // free it when it retires in turn.
        let (again, owned_again) = t.claim(7).unwrap();
        assert_eq!(again, a);
        assert_ne!(owned_again, owned_a);
        assert!(t.retire(a, owned_again));
        assert!(!t.free(a, retiring), "the previous generation's word");
        assert!(t.free(a, t.retiring(a).unwrap()));
    }

    #[test]
    fn hostile_words_are_decoded_without_trust() {
        let (words, t) = table(1);
        for bad in [u64::MAX, 3, RETIRING | REQUEST, OWNED | REQUEST | (5 << 3)] {
            words[1].state.store(bad, Relaxed);
            let state = t.state(0).unwrap();
            assert!(
                matches!(state, SlotState::Invalid(_) | SlotState::Owned { .. }),
                "{bad:#x}: {state:?}"
            );
            assert_eq!(t.retiring(0), None, "{bad:#x}");
            assert_eq!(t.claim(1), None, "{bad:#x}: not free");
        }
        assert_eq!(t.state(1), None, "out of range");
        assert!(!t.retire(1, OWNED));
        assert!(!t.free(1, RETIRING));
        t.request_switch(1);
    }
}
