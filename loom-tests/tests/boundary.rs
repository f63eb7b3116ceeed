//! Model 1: two writers racing across a sub-buffer boundary.
//!
//! The race happens in lap 1 (commit counts accumulate across laps). Writer A
//! writes a small record (8 bytes: the sub-buffer it lands in then has 8 bytes left)
//! and a 16-byte one; writer B writes a 16-byte one. Whatever the interleaving,
//! exactly one 16-byte record does not fit behind the small one: it pads that
//! sub-buffer and opens the next. Padding, packet headers and deliveries must each
//! happen exactly once per packet, concurrent commits of one sub-buffer must deliver
//! it exactly once, and every record must be read exactly once.
#![cfg(loom)]

use loom_tests::{
    assert_ids_permutation, assert_packets_once, assert_slots_settled, check, drain, new_buffer,
    spawn, write, ModelBuffer,
};
use ringbuf_core::{Config, Mode, Nesting};

const S: u64 = 64;
const N: u64 = 4;
/// Every write of the model must succeed: the buffer has room for all of them.
const ROOM: &str = "no loss: the buffer has room";

/// Fills and reads one whole lap so that the race runs in lap 1.
fn one_lap(buf: &ModelBuffer) {
    let nest = Nesting::new();
    for id in 100..100 + N as u32 {
        write(buf, &nest, id, 8).unwrap();
    }
    let packets = drain(buf);
    assert_eq!(packets.len(), N as usize);
}

/// The model body, in either mode.
pub fn two_writers_across_boundary(mode: Mode) -> String {
    let buf = new_buffer(Config::new(S, N, mode));
    one_lap(&buf);

    let a = {
        let buf = buf.clone();
        spawn("a", move || {
            let nest = Nesting::new();
            write(&buf, &nest, 1, 0).expect(ROOM);
            write(&buf, &nest, 2, 8).expect(ROOM);
        })
    };
    let b = {
        let buf = buf.clone();
        spawn("b", move || {
            let nest = Nesting::new();
            write(&buf, &nest, 3, 8).expect(ROOM);
        })
    };
    a.join().unwrap();
    b.join().unwrap();

    // Three packets, all complete and delivered: 48 + 8 bytes (+ 8 padding), and
    // two exactly full ones.
    let stats = buf.stats();
    assert_eq!(stats.write, (N + 3) * S, "write position");
    assert_eq!(stats.events_discarded() + stats.overrun, 0, "no losses");
    let packets = drain(&buf);
    let seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [N, N + 1, N + 2], "packets in order, none twice");
    let order: Vec<u32> = packets.iter().flat_map(|p| p.records.clone()).collect();
    let pos = |id| order.iter().position(|&x| x == id).unwrap();
    assert!(pos(1) < pos(2), "one writer's records stay in its order");
    let mut ids = order.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "every record read exactly once");
    let padded: Vec<_> = packets.iter().filter(|p| p.content_size < S).collect();
    assert_eq!(padded.len(), 1, "exactly one packet padded");
    assert_eq!(padded[0].records, [1]);
    assert_eq!(padded[0].content_size, 56);
    let padded_seq = padded[0].seq;
    for p in &packets {
        if p.content_size == S {
            assert_eq!(p.records.len(), 1, "a full packet holds one 16-byte record");
        }
        assert_eq!(p.events_discarded, 0);
        assert_eq!(p.layout.len(), p.records.len(), "no padding record");
    }
    assert_eq!(buf.client().paddings(), 0);
    assert_packets_once(&buf, N + 3, &[]);
    assert_slots_settled(&buf, &[]);
    assert_ids_permutation(&buf);
    assert_eq!(buf.stats().consumed, (N + 3) * S);
    let padded_by = buf.client().delivered_by(padded_seq).unwrap();
    format!("stream {order:?}, padded packet delivered by {padded_by}")
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn two_writers_racing_across_a_boundary_discard() {
    check("1a two writers across a boundary, discard", || {
        two_writers_across_boundary(Mode::Discard)
    })
    .assert_reached("stream [1, 2, 3], padded packet delivered by a")
    .assert_reached("stream [1, 3, 2], padded packet delivered by a")
    .assert_reached("stream [1, 3, 2], padded packet delivered by b")
    .assert_reached("stream [3, 1, 2], padded packet delivered by a");
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn two_writers_racing_across_a_boundary_overwrite() {
    check("1b two writers across a boundary, overwrite", || {
        two_writers_across_boundary(Mode::Overwrite)
    })
    .assert_reached("stream [1, 2, 3], padded packet delivered by a")
    .assert_reached("stream [1, 3, 2], padded packet delivered by a")
    .assert_reached("stream [1, 3, 2], padded packet delivered by b")
    .assert_reached("stream [3, 1, 2], padded packet delivered by a");
}

/// The Acquire-only delivery claim (before the fix in `deliver`) makes a writer with
/// a stale view count a spurious `lost_wrap`.
#[test]
#[cfg(ringbuf_mutant = "acquire_claim")]
#[should_panic(expected = "no loss: the buffer has room: Wrap")]
fn mutant_acquire_claim_is_caught() {
    check("mutant acquire_claim vs 1a", || {
        two_writers_across_boundary(Mode::Discard)
    });
}

/// Clearing noref on any lap's packet (before the fix in `prepare_open`) lets a
/// writer with a stale view make a delivered packet untakeable.
#[test]
#[cfg(ringbuf_mutant = "any_lap_noref")]
#[should_panic(expected = "corrupt sub-buffer id")]
fn mutant_any_lap_noref_is_caught() {
    check("mutant any_lap_noref vs 1b", || {
        two_writers_across_boundary(Mode::Overwrite)
    });
}
