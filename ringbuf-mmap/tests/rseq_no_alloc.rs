//! The rseq write path (records, sub-buffer switches in a sequence, helped
//! deliveries, fenced switches) never allocates: counted with a global allocator.

mod common;
#[path = "../../ringbuf-core/tests/common/counting_alloc.rs"]
mod counting_alloc;

use common::rseq_channel;
use counting_alloc::{allocations, Counting};
use ringbuf_core::{Config, Mode, Switch};
use ringbuf_mmap::WritePath;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_rseq_write_path_never_allocates() {
    for mode in [Mode::Discard, Mode::Overwrite] {
        let channel = rseq_channel("rseq-no-alloc", Config::new(4096, 4, mode));
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
