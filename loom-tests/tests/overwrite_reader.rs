//! Model 3: a writer against the reader in overwrite mode (the spare swap).
//!
//! Two sub-buffers (three physical: the reader owns a spare) of one record each.
//! The writer writes four records, lapping the buffer; the reader tries twice to
//! get, read (twice) and put a packet meanwhile. Then the rest is drained.
//!
//! Asserts: every payload the reader sees checks and does not change while held
//! (and loom sees every byte read ordered after its write, never concurrent with a
//! writer); packets come in increasing order, each read at most once; every packet
//! is either read or counted in `overrun`, exactly (a lapped reader sees the gap);
//! `consumed` never goes backwards; the id table plus spare stays a permutation.
#![cfg(loom)]

use loom_tests::{
    assert_ids_permutation, assert_packets_once, assert_slots_settled, check, drain, new_buffer,
    read_packet, spawn, write,
};
use ringbuf_core::{Config, Mode, Nesting, ReadError};

const S: u64 = 64;
const N: u64 = 2;
const RECORDS: u32 = 4;

/// The model body, shared with the mutant checks.
pub fn writer_vs_reader_overwrite() -> String {
    let buf = new_buffer(Config::new(S, N, Mode::Overwrite));

    let writer = {
        let buf = buf.clone();
        spawn("writer", move || {
            let nest = Nesting::new();
            let mut consumed = 0;
            for id in 0..RECORDS {
                write(&buf, &nest, id, 8).expect("overwrite mode never drops here");
                let now = buf.stats().consumed;
                assert!(now >= consumed, "consumed went backwards");
                consumed = now;
            }
        })
    };
    let reader = {
        let buf = buf.clone();
        spawn("reader", move || {
            let mut reader = buf.reader().unwrap();
            let mut got = Vec::new();
            let mut consumed = 0;
            for _ in 0..2 {
                match reader.get_next_subbuf() {
                    Ok(sub) => {
                        let first = read_packet(&reader, &sub);
                        let again = read_packet(&reader, &sub);
                        assert_eq!(first, again, "a held packet changed");
                        reader.put_next_subbuf(sub);
                        got.push(first);
                    }
                    Err(ReadError::NoData) => {}
                    Err(e) => panic!("get_next_subbuf: {e}"),
                }
                let now = buf.stats().consumed;
                assert!(now >= consumed, "consumed went backwards");
                consumed = now;
            }
            got
        })
    };
    writer.join().unwrap();
    let got = reader.join().unwrap();
    let rest = drain(&buf);

    let stats = buf.stats();
    assert_eq!(stats.write, RECORDS as u64 * S);
    assert_eq!(stats.events_discarded(), 0);
    let packets: Vec<_> = got.iter().chain(&rest).collect();
    for p in &packets {
        assert_eq!(p.records, [p.seq as u32], "packet holds its own record");
        assert_eq!(p.content_size, S);
    }
    let seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {seqs:?}"
    );
    assert_eq!(
        seqs.len() as u64 + stats.overrun,
        RECORDS as u64,
        "each packet read or counted overrun: read {seqs:?}, overrun {}",
        stats.overrun
    );
    assert_eq!(
        seqs.last(),
        Some(&(RECORDS as u64 - 1)),
        "the newest is kept"
    );
    assert_eq!(stats.consumed, stats.write);
    assert_packets_once(&buf, RECORDS as u64, &[]);
    assert_slots_settled(&buf, &[]);
    assert_ids_permutation(&buf);
    let in_flight: Vec<u64> = got.iter().map(|p| p.seq).collect();
    format!("read in flight {in_flight:?}, overrun {}", stats.overrun)
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn writer_vs_reader_in_overwrite_mode() {
    check("3 writer vs reader, overwrite", writer_vs_reader_overwrite)
        .assert_reached("read in flight [], overrun 2")
        .assert_reached("read in flight [0, 1], overrun 0")
        .assert_reached("read in flight [1, 2], overrun 1")
        .assert_reached("read in flight [0, 2], overrun 1")
        .assert_reached("read in flight [2, 3], overrun 2");
}

/// The reader swapping out a sub-buffer without checking noref takes one a writer
/// has entered.
#[test]
#[cfg(ringbuf_mutant = "skip_noref")]
#[should_panic(expected = "corrupt sub-buffer id")]
fn mutant_skip_noref_is_caught() {
    check("mutant skip_noref vs 3", writer_vs_reader_overwrite);
}
