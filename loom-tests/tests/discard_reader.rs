//! Model 2: a writer against the reader in discard mode.
//!
//! Two sub-buffers of two records each. The writer writes six records (three
//! packets: the third needs the reader to have freed the first); the reader tries
//! twice to get, read and put a packet while it writes. Then the current packet is
//! closed and the rest drained.
//!
//! Asserts: the reader only ever gets complete packets (every payload checks, loom
//! sees no byte read that is not ordered after its write, content is whole); every
//! record written is read exactly once, in order; every failed write is `Full` and
//! counted once in `lost_full`; a write fails exactly when the reader is behind:
//! never in the first lap, never once the reader's put of packet 0 happens before
//! the attempt, and a record of the second lap is only written if the reader did
//! put packet 0 (else both are lost).
#![cfg(loom)]

use core::sync::atomic::Ordering::{Acquire, Release};

use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom_tests::{
    assert_packets_once, assert_slots_settled, check, drain, new_buffer, read_next, spawn, write,
};
use ringbuf_core::{Config, Mode, Nesting, ReserveError, Switch};

const S: u64 = 128;
const N: u64 = 2;
/// Payload bytes per record: 8 + 32 = 40 bytes, two records fill a packet.
const LEN: usize = 32;
const RECORDS: u32 = 6;
/// The first record of the second lap.
const LAP1: u32 = 4;

fn writer_vs_reader_discard() -> String {
    let buf = new_buffer(Config::new(S, N, Mode::Discard));
    let put0 = Arc::new(AtomicBool::new(false));

    let writer = {
        let (buf, put0) = (buf.clone(), put0.clone());
        spawn("writer", move || {
            let nest = Nesting::new();
            let mut results = Vec::new();
            for id in 0..RECORDS {
                // Acquire: pairs with the reader's Release below; if we see it, the
                // reader's put happens before this attempt, and the second lap's
                // first packet (records 4 and 5) has room.
                let freed = id >= LAP1 && put0.load(Acquire);
                let r = write(&buf, &nest, id, LEN);
                if freed {
                    assert_eq!(r, Ok(()), "lost_full although the reader had put packet 0");
                }
                results.push(r);
            }
            results
        })
    };
    let reader = {
        let (buf, put0) = (buf.clone(), put0.clone());
        spawn("reader", move || {
            let mut reader = buf.reader().unwrap();
            let mut got = Vec::new();
            for _ in 0..2 {
                let before = buf.stats().consumed;
                if let Some(p) = read_next(&mut reader) {
                    assert_eq!(p.content_size, S, "only complete packets are read");
                    assert_eq!(p.records.len(), 2);
                    if p.seq == 0 {
                        put0.store(true, Release);
                    }
                    got.push(p);
                }
                assert!(buf.stats().consumed >= before, "consumed went backwards");
            }
            got
        })
    };
    let results = writer.join().unwrap();
    let got = reader.join().unwrap();

    // Close the packet the writer may have left open, and read everything left.
    buf.switch(Switch::Active).unwrap();
    let rest = drain(&buf);

    let stats = buf.stats();
    let failed = results.iter().filter(|r| r.is_err()).count() as u64;
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(ReserveError::Full))));
    assert_eq!(stats.lost_full, failed, "each failed write counted once");
    assert!(
        results[..LAP1 as usize].iter().all(Result::is_ok),
        "the first lap always has room"
    );
    assert_eq!(stats.lost_wrap + stats.lost_big + stats.lost_nested, 0);

    let written: Vec<u32> = (0..RECORDS)
        .filter(|&i| results[i as usize].is_ok())
        .collect();
    let packets: Vec<_> = got.iter().chain(&rest).collect();
    let read: Vec<u32> = packets.iter().flat_map(|p| p.records.clone()).collect();
    assert_eq!(
        read, written,
        "every record written is read exactly once, in order"
    );
    assert_eq!(read.len() as u64 + stats.lost_full, RECORDS as u64);

    let seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    let opened = stats.write / S;
    assert_eq!(
        seqs,
        (0..opened).collect::<Vec<_>>(),
        "packets once, in order"
    );
    let mut last = 0;
    for p in &packets {
        assert!(p.events_discarded >= last && p.events_discarded <= stats.lost_full);
        last = p.events_discarded;
    }

    // A second-lap record exists only if the reader freed packet 0 in time.
    let lap1_written = written.iter().any(|&id| id >= LAP1);
    let reader_put0 = got.iter().any(|p| p.seq == 0);
    assert!(
        !lap1_written || reader_put0,
        "second lap written over an unread packet"
    );
    if !reader_put0 {
        assert_eq!(stats.lost_full, (RECORDS - LAP1) as u64);
    }

    assert_packets_once(&buf, opened, &[]);
    assert_slots_settled(&buf, &[]);
    assert_eq!(stats.consumed, stats.write);
    let in_flight: Vec<u64> = got.iter().map(|p| p.seq).collect();
    format!(
        "read in flight {in_flight:?}, lost_full {}",
        stats.lost_full
    )
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn writer_vs_reader_in_discard_mode() {
    check("2 writer vs reader, discard", writer_vs_reader_discard)
        .assert_reached("read in flight [], lost_full 2")
        .assert_reached("read in flight [0], lost_full 1")
        .assert_reached("read in flight [0], lost_full 0")
        .assert_reached("read in flight [0, 1], lost_full 0");
}
