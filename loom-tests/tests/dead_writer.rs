//! Model 7: a writer that reserves and never commits (it died).
//!
//! Writer D reserves a record (one whole packet) and forgets the reservation; writer
//! W writes three records (one packet each) around it, lapping the two
//! sub-buffers. Then a reader reads every packet it can, skipping the dead one. In
//! overwrite mode (7a) D always gets its reservation; in discard mode (7b) with no
//! reader yet, D may find the buffer full, and W's writes fail with `Full` or
//! `Wrap` depending on which comes first.
//!
//! Asserts: D's packet is never delivered nor read, and its slot is never entered
//! again (its commit count stops at the previous lap); W's writes that come round
//! to it fail with `Wrap`, counted once in `lost_wrap`; each of W's records is read
//! exactly once, or its packet counted in `overrun`, or its write counted in
//! `lost_wrap` or `lost_full`: exactly; every packet read checks; nothing blocks
//! (the reader gets `NoData` for the dead packet, and every call returns).
#![cfg(loom)]

use core::sync::atomic::Ordering::Relaxed;

use loom_tests::{
    assert_ids_permutation, assert_packets_once, assert_slots_settled, check, new_buffer,
    read_packet, spawn, write,
};
use ringbuf_core::{Config, Control, Mode, Nesting, ReadError, ReserveError, Word};

const S: u64 = 64;
const N: u64 = 2;
const RECORDS: u32 = 3;
const DEAD: u32 = 9;

fn dead_writer(mode: Mode) -> String {
    let buf = new_buffer(Config::new(S, N, mode));
    let dead = {
        let buf = buf.clone();
        spawn("dead", move || {
            let nest = Nesting::new();
            let pos = match buf.reserve(&nest, DEAD, 8) {
                Ok(r) => {
                    let pos = r.position();
                    core::mem::forget(r);
                    Some(pos)
                }
                Err(e) => {
                    assert_eq!((mode, e), (Mode::Discard, ReserveError::Full));
                    None
                }
            };
            pos
        })
    };
    let writer = {
        let buf = buf.clone();
        spawn("writer", move || {
            let nest = Nesting::new();
            (0..RECORDS)
                .map(|id| write(&buf, &nest, id, 8))
                .collect::<Vec<_>>()
        })
    };
    let dead_seq = dead.join().unwrap().map(|pos| pos / S);
    let results = writer.join().unwrap();

    let stats = buf.stats();
    let count = |e| results.iter().filter(|&&r| r == Err(e)).count() as u64;
    let (full, wrapped) = (count(ReserveError::Full), count(ReserveError::Wrap));
    assert_eq!(
        full + wrapped,
        results.iter().filter(|r| r.is_err()).count() as u64
    );
    assert_eq!(stats.lost_wrap, wrapped, "each wrapped write counted once");
    let dead_full = u64::from(dead_seq.is_none());
    assert_eq!(
        stats.lost_full,
        full + dead_full,
        "each full write counted once"
    );
    assert_eq!(stats.lost_big + stats.lost_nested, 0);
    if mode == Mode::Overwrite {
        assert_eq!(stats.lost_full, 0);
    } else {
        assert_eq!(stats.overrun, 0);
    }

    // Read every packet from `consumed` on, skipping the dead one.
    let mut reader = buf.reader().unwrap();
    let mut read = Vec::new();
    let mut stuck = Vec::new();
    let mut pos = stats.consumed;
    while pos < stats.write {
        match reader.get_subbuf(pos) {
            Ok(sub) => {
                read.push(read_packet(&reader, &sub));
                reader.put_next_subbuf(sub);
            }
            Err(ReadError::NoData) => stuck.push(pos / S),
            Err(e) => panic!("get_subbuf({pos}): {e}"),
        }
        pos += S;
    }
    drop(reader);

    assert_eq!(
        stuck,
        Vec::from_iter(dead_seq),
        "only the dead packet is stuck"
    );
    let ids: Vec<u32> = read.iter().flat_map(|p| p.records.clone()).collect();
    assert!(!ids.contains(&DEAD), "the uncommitted record is never read");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    assert_eq!(
        ids.len() as u64 + stats.overrun + wrapped + full,
        RECORDS as u64,
        "read {ids:?}, overrun {}, lost_wrap {wrapped}, lost_full {full}",
        stats.overrun,
    );
    let mut stuck_slots = Vec::new();
    if let Some(seq) = dead_seq {
        // The dead slot's commit count stops at its previous lap.
        let slot = (seq % N) as usize;
        let commit = buf.control().slot(slot).commit.load(Relaxed);
        assert_eq!(commit, (seq / N) * S, "dead slot commit count");
        stuck_slots.push(slot);
    }
    assert_packets_once(&buf, stats.write / S, &stuck);
    assert_slots_settled(&buf, &stuck_slots);
    assert_ids_permutation(&buf);
    let dead = dead_seq.map_or_else(|| "none (full)".to_owned(), |s| s.to_string());
    format!(
        "dead packet {dead}, read {ids:?}, overrun {}, lost_wrap {}, lost_full {}",
        stats.overrun, stats.lost_wrap, stats.lost_full
    )
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn dead_writer_overwrite() {
    check("7a dead writer, overwrite", || dead_writer(Mode::Overwrite))
        .assert_reached("dead packet 0, read [0], overrun 0, lost_wrap 2, lost_full 0")
        .assert_reached("dead packet 1, read [1], overrun 1, lost_wrap 1, lost_full 0")
        .assert_reached("dead packet 2, read [2], overrun 2, lost_wrap 0, lost_full 0");
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn dead_writer_discard() {
    check("7b dead writer, discard", || dead_writer(Mode::Discard))
        .assert_reached("dead packet 0, read [0], overrun 0, lost_wrap 2, lost_full 0")
        .assert_reached("dead packet 1, read [0], overrun 0, lost_wrap 0, lost_full 2")
        .assert_reached(
            "dead packet none (full), read [0, 1], overrun 0, lost_wrap 0, lost_full 2",
        );
}
