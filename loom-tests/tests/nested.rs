//! Model 4: a nested writer committing out of order.
//!
//! A signal handler interrupting a probe between its reserve and its commit makes an
//! inner reservation after the outer one and commits it first. Two models:
//!
//! * `strictly_nested`: one thread reserves (outer), writes a whole record (inner,
//!   same nesting counter, depth 2) and only then commits the outer one, while a
//!   second writer races both;
//! * `commits_in_any_order`: the outer writer reserves, then the inner writer
//!   (another loom thread, started after the reserve) reserves and commits while the
//!   outer one writes and commits: loom runs the two commits in every order, the
//!   handler's own (inner first) included, against a concurrent reader.
//!
//! Asserts: both records delivered and read exactly once, in reservation order; the
//! sub-buffer completes and is delivered exactly once; nothing lost; the nesting
//! depth is restored.
#![cfg(loom)]

use loom_tests::{
    assert_packets_once, assert_slots_settled, check, drain, new_buffer, pattern, read_next, spawn,
    write,
};
use ringbuf_core::{Config, Mode, Nesting, Switch};

const S: u64 = 128;
/// Payload bytes per record: 8 + 32 = 40 bytes, two records fill a packet.
const LEN: usize = 32;

fn strictly_nested() -> String {
    let buf = new_buffer(Config::new(S, 4, Mode::Discard));
    let t = {
        let buf = buf.clone();
        spawn("t", move || {
            let nest = Nesting::new();
            let mut outer = buf.reserve(&nest, 1, LEN).unwrap();
            assert_eq!(nest.depth(), 1);
            // The "signal handler": a whole record between reserve and commit.
            write(&buf, &nest, 2, LEN).unwrap();
            assert_eq!(nest.depth(), 1);
            assert!(outer.write_at(0, &pattern(1, LEN)));
            outer.commit();
            assert_eq!(nest.depth(), 0);
        })
    };
    let b = {
        let buf = buf.clone();
        spawn("b", move || write(&buf, &Nesting::new(), 3, LEN).unwrap())
    };
    t.join().unwrap();
    b.join().unwrap();
    buf.switch(Switch::Active).unwrap();

    let packets = drain(&buf);
    let order: Vec<u32> = packets.iter().flat_map(|p| p.records.clone()).collect();
    let pos = |id| order.iter().position(|&x| x == id).unwrap();
    assert!(pos(1) < pos(2), "the inner record follows the outer one");
    let mut ids = order.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "every record read exactly once");
    let stats = buf.stats();
    assert_eq!(stats.events_discarded(), 0);
    assert_eq!(stats.write, 2 * S, "three records take two packets");
    let seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [0, 1]);
    assert_packets_once(&buf, 2, &[]);
    assert_slots_settled(&buf, &[]);
    format!("stream {order:?}")
}

/// The model body, shared with the mutant checks.
pub fn commits_in_any_order() -> String {
    let buf = new_buffer(Config::new(S, 2, Mode::Discard));
    // A concurrent reader: it may get the packet only once both commits are in.
    let reader = {
        let buf = buf.clone();
        spawn("reader", move || {
            let mut reader = buf.reader().unwrap();
            read_next(&mut reader)
        })
    };
    // The main thread is the outer writer. The inner writer is spawned once the outer
    // one has reserved (a signal handler sees everything the code it interrupts did
    // before: spawning is a release/acquire handover), and reserves and commits while
    // the outer one writes and commits. Every thread is spawned by the main thread:
    // loom's DPOR drops backtrack points naming a thread that does not exist yet, so
    // a thread spawned by a model thread would be under-explored.
    let nest = Nesting::new();
    let mut outer = buf.reserve(&nest, 1, LEN).unwrap();
    let inner = {
        let buf = buf.clone();
        spawn("inner", move || {
            write(&buf, &Nesting::new(), 2, LEN).unwrap()
        })
    };
    assert!(outer.write_at(0, &pattern(1, LEN)));
    outer.commit();
    assert_eq!(nest.depth(), 0);
    inner.join().unwrap();
    let early = reader.join().unwrap();
    let rest = drain(&buf);

    let packets: Vec<_> = early.iter().chain(&rest).collect();
    assert_eq!(packets.len(), 1, "one packet, read once");
    assert_eq!(packets[0].seq, 0);
    assert_eq!(
        packets[0].records,
        [1, 2],
        "both records, in reservation order"
    );
    assert_eq!(packets[0].content_size, S);
    let stats = buf.stats();
    assert_eq!(stats.write, S);
    assert_eq!(stats.events_discarded(), 0);
    assert_packets_once(&buf, 1, &[]);
    assert_slots_settled(&buf, &[]);
    // The last committer delivers: "main" (the outer writer) means the inner record
    // was committed first.
    format!(
        "delivered by {}, read {}",
        buf.client().delivered_by(0).unwrap(),
        if early.is_some() {
            "concurrently"
        } else {
            "after"
        }
    )
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn nested_writer_strictly_nested() {
    check("4a nested writer, strictly nested", strictly_nested)
        .assert_reached("stream [1, 2, 3]")
        .assert_reached("stream [3, 1, 2]");
}

#[test]
#[cfg_attr(ringbuf_mutant, ignore = "built with an engine mutant")]
fn nested_writer_commits_in_any_order() {
    check(
        "4b nested writer, commits in any order",
        commits_in_any_order,
    )
    .assert_reached("delivered by main, read concurrently")
    .assert_reached("delivered by inner, read concurrently")
    .assert_reached("delivered by main, read after")
    .assert_reached("delivered by inner, read after");
}

/// A Relaxed commit add: the deliverer, and through it the reader, no longer
/// synchronise with the other committer, whose bytes they then race with.
#[test]
#[cfg(ringbuf_mutant = "relaxed_commit")]
#[should_panic(expected = "Causality violation")]
fn mutant_relaxed_commit_is_caught() {
    check("mutant relaxed_commit vs 4b", commits_in_any_order);
}
