//! Model 6: `discard` racing other writers.
//!
//! 6a/6b: writer A reserves a record (behind an existing one, or opening the
//! sub-buffer), writes it and discards it; writer B writes a record meanwhile.
//! Asserts: the discarded record becomes one padding record, before or after B's
//! depending on who reserved first, and is never read; the others are read exactly
//! once; content sizes and commit counts add up exactly; nothing is counted lost.
//!
//! 6c: time along the stream. Writer X writes a record; writer Q reserves a record,
//! discards it, then writes one of the same size. Timestamps come from a clock
//! every read of which is later than the reads that happen before it. Asserts:
//! timestamps never decrease along the packet and the packet's end is no earlier
//! than its last record. The mutant `undo_discard` (moving `write` back when the
//! discarded reservation is the last one) fails it: X loads the position Q's
//! reservation ended at and reads the clock, Q undoes and re-reserves the same
//! bytes with a later time, and X's CAS from the restored position succeeds (ABA).
#![cfg(loom)]

use loom_tests::{
    assert_packets_once, assert_slots_settled, check, drain, new_buffer, new_clocked_buffer,
    pattern, spawn, write,
};
use ringbuf_core::{Config, Mode, Nesting, Switch};

const S: u64 = 128;

fn run(setup: bool) -> String {
    let buf = new_buffer(Config::new(S, 2, Mode::Discard));
    if setup {
        write(&buf, &Nesting::new(), 0, 8).unwrap();
    }
    let a = {
        let buf = buf.clone();
        spawn("a", move || {
            let nest = Nesting::new();
            let mut r = buf.reserve(&nest, 1, 8).unwrap();
            assert!(r.write_at(0, &pattern(1, 8)));
            r.discard();
            assert_eq!(nest.depth(), 0);
        })
    };
    let b = {
        let buf = buf.clone();
        spawn("b", move || write(&buf, &Nesting::new(), 2, 8).unwrap())
    };
    a.join().unwrap();
    b.join().unwrap();
    buf.switch(Switch::Active).unwrap();

    let packets = drain(&buf);
    assert_eq!(packets.len(), 1);
    let p = &packets[0];
    // A's padding record sits where A reserved: before or after B's record.
    let mut layout = p.layout.clone();
    if setup {
        assert_eq!(layout.remove(0), Some(0));
    }
    layout.sort();
    assert_eq!(layout, [None, Some(2)], "one padding record and B's");
    assert_eq!(buf.client().paddings(), 1);
    assert_eq!(p.records, if setup { vec![0, 2] } else { vec![2] });
    let records = 16 * (2 + u64::from(setup));
    assert_eq!(p.content_size, 48 + records, "content adds up");
    let stats = buf.stats();
    assert_eq!(stats.write, S);
    assert_eq!(stats.events_discarded(), 0);
    assert_packets_once(&buf, 1, &[]);
    assert_slots_settled(&buf, &[]);
    format!("{:?}", p.layout)
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn discard_racing_a_writer() {
    check("6a discard vs writer", || run(true))
        .assert_reached("[Some(0), None, Some(2)]")
        .assert_reached("[Some(0), Some(2), None]");
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn discard_of_a_packet_opener_racing_a_writer() {
    check("6b discard (packet opener) vs writer", || run(false))
        .assert_reached("[None, Some(2)]")
        .assert_reached("[Some(2), None]");
}

/// 6c (see the module documentation).
fn time_along_the_stream() -> String {
    let buf = new_clocked_buffer(Config::new(S, 2, Mode::Discard));
    write(&buf, &Nesting::new(), 0, 8).unwrap(); // so that no reservation opens it
    let x = {
        let buf = buf.clone();
        spawn("x", move || {
            let nest = Nesting::new();
            let mut r = buf.reserve(&nest, 1, 8).unwrap();
            assert!(r.write_at(0, &pattern(1, 8)));
            let at = (r.position(), r.timestamp());
            r.commit();
            at
        })
    };
    let q = {
        let buf = buf.clone();
        spawn("q", move || {
            let nest = Nesting::new();
            buf.reserve(&nest, 2, 8).unwrap().discard();
            let mut r = buf.reserve(&nest, 3, 8).unwrap();
            assert!(r.write_at(0, &pattern(3, 8)));
            let at = (r.position(), r.timestamp());
            r.commit();
            at
        })
    };
    let mut times = vec![x.join().unwrap(), q.join().unwrap()];
    buf.switch(Switch::Active).unwrap();
    times.sort();
    assert!(
        times[0].1 <= times[1].1,
        "a later record has an earlier time: {times:?}"
    );
    let packets = drain(&buf);
    assert_eq!(packets.len(), 1);
    let p = &packets[0];
    assert!(
        p.timestamp_end >= times[1].1,
        "packet ends before its last record"
    );
    assert!(p.timestamp_begin <= times[0].1);
    let mut ids = p.records.clone();
    ids.sort();
    assert_eq!(ids, [0, 1, 3]);
    format!("{:?}", p.layout)
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn time_never_goes_back_along_the_stream() {
    check("6c time along the stream", time_along_the_stream)
        .assert_reached("[Some(0), Some(1), None, Some(3)]")
        .assert_reached("[Some(0), None, Some(3), Some(1)]");
}

/// Moving `write` back on discard: a stale writer's CAS succeeds after another
/// reservation took the same bytes with a later time (ABA).
#[test]
#[cfg(ringbuf_mutant = "undo_discard")]
#[should_panic(expected = "a later record has an earlier time")]
fn mutant_undo_discard_is_caught() {
    check("mutant undo_discard vs 6c", time_along_the_stream);
}
