//! The rseq write path (records, sub-buffer switches in a sequence, helped
//! deliveries, fenced switches) never allocates: counted with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringbuf_core::{Config, Mode, RawRecords, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{possible_cpus, Backing, ChannelOptions, PerCpuChannel, WritePath};

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
fn the_rseq_write_path_never_allocates() {
    for mode in [Mode::Discard, Mode::Overwrite] {
        let channel = PerCpuChannel::create_rseq(
            Backing::Memfd {
                name: "rseq-no-alloc",
            },
            &ChannelOptions {
                config: Config::new(4096, 4, mode),
                buffers: possible_cpus(),
                format: 0,
                prefault: true,
                clock: Monotonic.describe(),
            },
            "",
            |_| RawRecords,
            |_| Monotonic,
        )
        .unwrap();
        if channel.write_path() != WritePath::Rseq {
            eprintln!("rseq unavailable: skipped");
            return;
        }
        let payload = [7u8; 40];
        let before = allocations();
        for i in 0..10_000u32 {
            let _ = channel.write(i, &payload);
            if i % 1000 == 0 {
                let _ = channel.switch_all(Switch::Active);
            }
        }
        let _ = channel.switch_all(Switch::Flush);
        let after = allocations();
        assert_eq!(after - before, 0, "{mode:?}: the rseq event path allocated");
        let written: u64 = channel.stats().iter().map(|s| s.write).sum();
        assert!(written > 4 * 4096, "{mode:?}: the run crossed sub-buffers");
    }
}
