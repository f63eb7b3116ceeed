//! The event path (reserve, write, commit, including sub-buffer switches, losses
//! and delivery) never allocates: counted with a global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{buffer, Memory};
use ringbuf_core::{Config, Mode, Nesting, Switch};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn reserve_and_commit_never_allocate() {
    for mode in [Mode::Discard, Mode::Overwrite] {
        let config = Config::new(1024, 4, mode);
        let mut mem = Memory::for_config(&config);
        let buf = buffer(&mut mem, config);
        let nest = Nesting::new();
        let payload = [7u8; 40];
        let before = allocations();
        let mut committed = 0u64;
        for i in 0..10_000u32 {
            // Switches, deliveries, full/overrun losses, undo and padding all happen.
            if let Ok(mut r) = buf.reserve(&nest, i, payload.len()) {
                r.payload_mut().copy_from_slice(&payload);
                if i % 97 == 0 {
                    r.discard();
                } else {
                    r.commit();
                    committed += 1;
                }
            }
            if i % 1000 == 0 {
                let _ = buf.switch(Switch::Active);
            }
        }
        let after = allocations();
        assert_eq!(after - before, 0, "{mode:?}: the event path allocated");
        assert!(committed > 0);
        let stats = buf.stats();
        match mode {
            Mode::Discard => assert!(stats.lost_full > 0),
            Mode::Overwrite => assert!(stats.overrun > 0),
        }
        // The counter works: an allocation is seen.
        let v = std::hint::black_box(vec![1u8; 8]);
        assert!(allocations() > after);
        drop(v);
    }
}
