//! The event path (reserve, write, commit, including sub-buffer switches, losses
//! and delivery; typed events through a `BufferSink`, context and padding
//! included) never allocates: counted with a global allocator.

mod common;

use common::{buffer, Counter, Memory};
use ringbuf_core::ctf::{BufferSink, Ctf, EmitError, Event};
use ringbuf_core::{Buffer, Config, Mode, Nesting, Region, Switch};

ringbuf_core::event! {
    /// Fixed and variable fields.
    struct Request { status: u16, path: &str, body: &[u8], tag: [u8; 4], ok: bool, t: [u32; 2] }
}

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

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

#[test]
fn typed_events_never_allocate() {
    Request::id().set(3);
    for mode in [Mode::Discard, Mode::Overwrite] {
        let config = Config::new(1024, 4, mode);
        let mut mem = Memory::for_config(&config);
        let region = Region::init(mem.bytes(), config, 1).unwrap();
        let ctf = Ctf::new([0; 16], 0).with_event_context(4);
        let buf = Buffer::new(region, ctf, Counter(0.into())).unwrap();
        let nest = Nesting::new();
        let sink = BufferSink::new(&buf, &nest).with_context([1, 2, 3, 4]);
        let body = [7u8; 40];
        let before = allocations();
        let (mut written, mut refused) = (0u64, 0u64);
        for i in 0..10_000u32 {
            // Switches, deliveries, losses and padding (discarded reservations
            // carrying the context) all happen.
            let path = if i % 2 == 0 { "/index.html" } else { "/" };
            match Request::write(
                &sink,
                i as u16,
                path,
                &body[..i as usize % 41],
                *b"abcd",
                true,
                [i, 1],
            ) {
                Ok(()) => written += 1,
                Err(EmitError::Reserve(_)) => refused += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
            if i % 97 == 0 {
                match buf.reserve(&nest, 3, 20) {
                    Ok(r) => r.discard(),
                    Err(_) => refused += 1,
                }
            }
            if i % 1000 == 0 {
                let _ = buf.switch(Switch::Active);
            }
        }
        let after = allocations();
        assert_eq!(after - before, 0, "{mode:?}: typed events allocated");
        assert!(written > 0);
        match mode {
            Mode::Discard => assert!(refused > 0 && buf.stats().lost_full == refused),
            Mode::Overwrite => assert!(buf.stats().overrun > 0),
        }
    }
}
