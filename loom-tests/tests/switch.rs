//! Model 5: `switch(Active)` and `switch(Flush)` racing a writer.
//!
//! The writer writes two records (together they fill a packet exactly); a timer
//! thread calls `switch(Active)` then `switch(Flush)`. Then the current packet is
//! closed and everything drained.
//!
//! Asserts: every record read exactly once, in order; packets are contiguous and
//! each written and delivered exactly once; `Active` never closes an empty packet
//! and a `Flush` that finds no open packet emits exactly one header-only packet
//! (content = the 48-byte header), so there is at most one; every switch succeeds;
//! nothing lost.
#![cfg(loom)]

use loom_tests::{
    assert_packets_once, assert_slots_settled, check, drain, new_buffer, spawn, write,
};
use ringbuf_core::{Config, Mode, Nesting, RawRecords, Switch};

const S: u64 = 128;
/// Payload bytes per record: 8 + 32 = 40 bytes, two records fill a packet.
const LEN: usize = 32;

/// The model body, shared with the mutant checks.
pub fn switch_racing_a_writer() -> String {
    let buf = new_buffer(Config::new(S, 4, Mode::Discard));
    let writer = {
        let buf = buf.clone();
        spawn("writer", move || {
            let nest = Nesting::new();
            write(&buf, &nest, 1, LEN).unwrap();
            write(&buf, &nest, 2, LEN).unwrap();
        })
    };
    let timer = {
        let buf = buf.clone();
        spawn("timer", move || {
            buf.switch(Switch::Active).unwrap();
            buf.switch(Switch::Flush).unwrap();
        })
    };
    writer.join().unwrap();
    timer.join().unwrap();
    buf.switch(Switch::Active).unwrap();

    let packets = drain(&buf);
    let ids: Vec<u32> = packets.iter().flat_map(|p| p.records.clone()).collect();
    assert_eq!(ids, [1, 2], "every record read exactly once, in order");
    let stats = buf.stats();
    let opened = stats.write / S;
    assert_eq!(stats.write % S, 0, "no packet left open");
    let seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    assert_eq!(
        seqs,
        (0..opened).collect::<Vec<_>>(),
        "packets once, in order"
    );
    let empty: Vec<_> = packets.iter().filter(|p| p.records.is_empty()).collect();
    assert!(
        empty.len() <= 1,
        "only the one Flush may emit an empty packet"
    );
    for p in &empty {
        assert_eq!(p.content_size, RawRecords::PACKET_HEADER as u64);
    }
    for p in &packets {
        assert_eq!(p.layout.len(), p.records.len(), "no padding record");
        assert_eq!(p.events_discarded, 0);
    }
    assert!((1..=3).contains(&opened));
    assert_eq!(stats.events_discarded(), 0);
    assert_packets_once(&buf, opened, &[]);
    assert_slots_settled(&buf, &[]);
    let shape: Vec<Vec<u32>> = packets.iter().map(|p| p.records.clone()).collect();
    format!("packets {shape:?}")
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn switch_active_and_flush_racing_a_writer() {
    check(
        "5 switch(Active)/switch(Flush) vs writer",
        switch_racing_a_writer,
    )
    .assert_reached("packets [[], [1, 2]]")
    .assert_reached("packets [[1], [2]]")
    .assert_reached("packets [[1, 2], []]");
}
