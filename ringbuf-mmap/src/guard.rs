//! Surviving a truncated file under a mapping.
//!
//! Reading a page of a `MAP_SHARED` mapping past the end of its file raises
//! SIGBUS. A consumer must survive a producer (or anyone) truncating the file. While
//! a consumer reads, its mapping is registered here; a SIGBUS inside a registered
//! mapping maps an anonymous zero page over the faulting page (async-signal-safe:
//! one `mmap` call), flags the mapping as truncated, and returns, so the read
//! completes with zeros and the consumer reports an error. A SIGBUS anywhere else
//! is re-raised with the default action.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use crate::backing::Shm;

const SLOTS: usize = 64;

/// Registered mappings: (start, end, truncated flag). Lock-free so that the signal
/// handler can read them.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    truncated: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    truncated: AtomicBool::new(false),
};

static SLOTS_TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS_TABLE {
        // Acquire: pairs with the Release in `watch`, so a registered range is whole.
        let start = slot.start.load(Ordering::Acquire);
        if start != 0 && (start..slot.end.load(Ordering::Acquire)).contains(&addr) {
            let page = addr & !4095;
            // SAFETY: replaces one page inside a mapping we own with anonymous zeros;
            // mmap is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                // Release: pairs with `Watch::truncated`'s Acquire (the zero page is
                // in place before anyone sees the flag).
                slot.truncated.store(true, Ordering::Release);
                return;
            }
        }
    }
    // Not ours: die as SIGBUS would have killed us.
    // SAFETY: resetting to the default action and re-raising is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        libc::raise(libc::SIGBUS);
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid SA_SIGINFO handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// A registration of one mapping while it is read; unregisters on drop.
pub struct Watch {
    slot: Option<&'static Slot>,
}

/// Registers `shm` for the duration of the returned guard. If all slots are taken,
/// the guard watches nothing (a truncation then kills the process, as without it).
pub fn watch(shm: &Shm) -> Watch {
    install();
    let start = shm.as_ptr() as usize;
    for slot in &SLOTS_TABLE {
        // AcqRel: claims the slot exclusively.
        if slot
            .start
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // Relaxed/Release: the slot is ours (claimed above); `start` is stored
            // last with Release so a handler that sees it sees `end` and the flag.
            slot.truncated.store(false, Ordering::Relaxed);
            slot.end.store(start + shm.len(), Ordering::Release);
            slot.start.store(start, Ordering::Release);
            return Watch { slot: Some(slot) };
        }
    }
    Watch { slot: None }
}

impl Watch {
    /// Whether a SIGBUS hit the mapping since the guard was made.
    pub fn truncated(&self) -> bool {
        self.slot
            .is_some_and(|s| s.truncated.load(Ordering::Acquire))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            // Release: the slot is free for another registration.
            slot.start.store(0, Ordering::Release);
        }
    }
}
