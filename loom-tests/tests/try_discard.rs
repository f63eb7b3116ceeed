//! Model 6: `try_discard` racing a second writer.
//!
//! Writer A reserves a record behind an existing one, writes it and discards it;
//! writer B writes a record meanwhile. A second model has A's reservation open the
//! sub-buffer (such a reservation can never be undone).
//!
//! Asserts: the discard is `Undone` exactly when nothing was reserved after it (the
//! record then vanishes from the stream, `write` moved back) and `Padded` exactly
//! when B reserved after it (a padding record the reader skips sits before B's);
//! the discarded record is never read; the others are read exactly once; content
//! sizes and commit counts add up exactly; nothing is counted lost.
#![cfg(loom)]

use loom_tests::{
    assert_packets_once, assert_slots_settled, check, drain, new_buffer, pattern, spawn, write,
};
use ringbuf_core::{Config, Discarded, Mode, Nesting, Switch};

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
            let done = r.try_discard();
            assert_eq!(nest.depth(), 0);
            done
        })
    };
    let b = {
        let buf = buf.clone();
        spawn("b", move || write(&buf, &Nesting::new(), 2, 8).unwrap())
    };
    let done = a.join().unwrap();
    b.join().unwrap();
    buf.switch(Switch::Active).unwrap();

    let packets = drain(&buf);
    assert_eq!(packets.len(), 1);
    let p = &packets[0];
    // Undone: A's record vanished. Padded: a padding record (A's) sits before B's,
    // because B reserved after A or A opened the packet; Padded with B before A
    // would mean a failed undo although A was the last reservation.
    let mut expected: Vec<Option<u32>> = Vec::new();
    if setup {
        expected.push(Some(0));
    }
    if done == Discarded::Padded {
        expected.push(None);
    }
    expected.push(Some(2));
    assert_eq!(p.layout, expected, "discard outcome {done:?}");
    let paddings = u32::from(done == Discarded::Padded);
    assert_eq!(buf.client().paddings(), paddings);
    assert_eq!(p.records, if setup { vec![0, 2] } else { vec![2] });
    let padding = if done == Discarded::Padded { 16 } else { 0 };
    let records = 16 * (1 + u64::from(setup));
    assert_eq!(p.content_size, 48 + records + padding, "content adds up");
    let stats = buf.stats();
    assert_eq!(stats.write, S);
    assert_eq!(stats.events_discarded(), 0);
    assert_packets_once(&buf, 1, &[]);
    assert_slots_settled(&buf, &[]);
    format!("{done:?} {:?}", p.layout)
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn try_discard_racing_a_writer() {
    check("6a try_discard vs writer", || run(true))
        .assert_reached("Undone [Some(0), Some(2)]")
        .assert_reached("Padded [Some(0), None, Some(2)]");
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn try_discard_of_a_packet_opener_racing_a_writer() {
    check("6b try_discard (packet opener) vs writer", || run(false))
        .assert_reached("Undone [Some(2)]")
        .assert_reached("Padded [None, Some(2)]");
}
