//! One test per engine path: boundaries, padding, losses, modes, switch, discard,
//! nesting, out-of-order commits, dead writers, the committed prefix.

mod common;

use common::{buffer, next_packet, Memory};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use ringbuf_core::{
    Config, Control, Mode, Nesting, PrefixStamp, RawRecords, ReadError, ReserveError, Switch,
};

const S: u64 = 256;
const H: u64 = RawRecords::PACKET_HEADER as u64;
const R: u64 = RawRecords::RECORD_HEADER as u64;

/// Payload length that makes one record fill a packet exactly.
const FILL: usize = (S - H - R) as usize;

#[test]
fn exact_fit_closes_the_packet_without_padding() {
    let config = Config::new(S, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    // 48 + 2 * (8 + 72) + (8 + 40) = 256.
    buf.write(&nest, 1, &[1; 72]).unwrap();
    buf.write(&nest, 2, &[2; 72]).unwrap();
    let mut reader = buf.reader().unwrap();
    assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData));
    buf.write(&nest, 3, &[3; 40]).unwrap();
    // Delivered by the last commit, with no switch.
    let p = next_packet(&mut reader).unwrap();
    assert_eq!(p.seq, 0);
    assert_eq!(p.content_size, S);
    let ids: Vec<u32> = p.records.iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(buf.stats().write, S);
    // The next record opens packet 1.
    buf.write(&nest, 4, &[4; 8]).unwrap();
    assert_eq!(buf.stats().write, S + H + R + 8);
}

#[test]
fn a_record_that_does_not_fit_pads_the_packet_and_opens_the_next() {
    let config = Config::new(S, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    buf.write(&nest, 1, &[1; 150]).unwrap(); // ends at 206
    buf.write(&nest, 2, &[2; 100]).unwrap(); // 208 + 108 > 256: next packet
    let mut reader = buf.reader().unwrap();
    let p0 = next_packet(&mut reader).unwrap();
    assert_eq!((p0.seq, p0.content_size), (0, 48 + 8 + 150));
    assert_eq!(p0.records, [(1, vec![1; 150])]);
    assert!(p0.timestamp_begin <= p0.timestamp_end);
    buf.switch(Switch::Active).unwrap();
    let p1 = next_packet(&mut reader).unwrap();
    assert_eq!((p1.seq, p1.content_size), (1, 48 + 8 + 100));
    assert_eq!(p1.records, [(2, vec![2; 100])]);
    assert!(p0.timestamp_end <= p1.timestamp_begin);
}

#[test]
fn an_event_larger_than_a_sub_buffer_payload_is_refused_and_counted() {
    let config = Config::new(S, 2, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    assert_eq!(buf.max_payload(0), FILL);
    assert_eq!(
        buf.write(&nest, 0, &vec![0; FILL + 1]).err(),
        Some(ReserveError::TooBig)
    );
    assert_eq!(buf.stats().lost_big, 1);
    assert_eq!(buf.stats().write, 0, "a refused event reserves nothing");
    assert_eq!(nest.depth(), 0);
    buf.write(&nest, 0, &[0; FILL]).unwrap();
    assert_eq!(buf.stats().write, S);
}

#[test]
fn discard_mode_drops_new_events_when_full_and_resumes_after_a_read() {
    let config = Config::new(S, 2, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    buf.write(&nest, 0, &[0; FILL]).unwrap();
    buf.write(&nest, 1, &[1; FILL]).unwrap();
    for _ in 0..3 {
        assert_eq!(buf.write(&nest, 2, &[2; 8]), Err(ReserveError::Full));
    }
    assert_eq!(buf.stats().lost_full, 3);
    let mut reader = buf.reader().unwrap();
    assert_eq!(next_packet(&mut reader).unwrap().records[0].0, 0);
    buf.write(&nest, 3, &[3; FILL]).unwrap();
    assert_eq!(next_packet(&mut reader).unwrap().records[0].0, 1);
    let p2 = next_packet(&mut reader).unwrap();
    assert_eq!((p2.seq, p2.records[0].0), (2, 3));
    // The packet closed after the losses reports them.
    assert_eq!(p2.events_discarded, 3);
}

#[test]
fn overwrite_mode_keeps_the_newest_packets_and_counts_overruns() {
    let config = Config::new(S, 2, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    for i in 0..5u32 {
        buf.write(&nest, i, &[i as u8; FILL]).unwrap();
    }
    assert_eq!(buf.stats().overrun, 3);
    assert_eq!(buf.stats().lost_full + buf.stats().lost_wrap, 0);
    let mut reader = buf.reader().unwrap();
    let seqs: Vec<u64> = std::iter::from_fn(|| next_packet(&mut reader))
        .map(|p| {
            assert_eq!(p.records, [(p.seq as u32, vec![p.seq as u8; FILL])]);
            p.seq
        })
        .collect();
    // Packets 0..3 were overwritten: the gap in sequence numbers shows it.
    assert_eq!(seqs, [3, 4]);
}

#[test]
fn the_reader_keeps_a_consistent_packet_while_writers_lap_it() {
    let config = Config::new(S, 2, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    buf.write(&nest, 0, &[0; FILL]).unwrap();
    buf.write(&nest, 1, &[1; FILL]).unwrap();
    let mut reader = buf.reader().unwrap();
    let held = reader.get_next_subbuf().unwrap();
    let before = reader.bytes(&held).unwrap().to_vec();
    // Writers go round the buffer twice while the reader holds packet 0.
    for i in 2..6u32 {
        buf.write(&nest, i, &[i as u8; FILL]).unwrap();
    }
    assert_eq!(
        reader.bytes(&held).unwrap(),
        &before[..],
        "held packet changed"
    );
    let p0 = common::parse(&before);
    assert_eq!((p0.seq, &p0.records[..]), (0, &[(0, vec![0; FILL])][..]));
    reader.put_next_subbuf(held);
    // Read once or overrun once: 1 read + 3 overrun + 2 still readable = 6 written.
    let rest: Vec<u64> = std::iter::from_fn(|| next_packet(&mut reader))
        .map(|p| p.seq)
        .collect();
    assert_eq!(rest, [4, 5]);
    assert_eq!(buf.stats().overrun, 3);
}

#[test]
fn switch_active_closes_only_non_empty_packets_and_flush_always_ends_the_stream() {
    let config = Config::new(S, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    let mut reader = buf.reader().unwrap();
    buf.switch(Switch::Active).unwrap();
    assert_eq!(
        buf.stats().write,
        0,
        "active switch on an empty buffer is a no-op"
    );
    assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData));

    buf.write(&nest, 9, &[9; 16]).unwrap();
    assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData));
    buf.switch(Switch::Active).unwrap();
    let p = next_packet(&mut reader).unwrap();
    assert_eq!((p.seq, p.content_size), (0, H + R + 16));
    assert_eq!(p.records, [(9, vec![9; 16])]);
    buf.switch(Switch::Active).unwrap();
    assert_eq!(buf.stats().write, S, "nothing open: no-op");

    // Flush with nothing open emits a header-only packet.
    buf.switch(Switch::Flush).unwrap();
    let p = next_packet(&mut reader).unwrap();
    assert_eq!((p.seq, p.content_size, p.records.len()), (1, H, 0));
    assert!(p.timestamp_begin <= p.timestamp_end);
}

#[test]
fn flush_cannot_open_a_packet_in_a_full_buffer_and_says_so() {
    let config = Config::new(S, 2, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    buf.write(&nest, 0, &[0; FILL]).unwrap();
    buf.write(&nest, 0, &[0; FILL]).unwrap();
    assert_eq!(buf.switch(Switch::Flush), Err(ReserveError::Full));
    assert_eq!(buf.stats().lost_full, 0, "a failed flush loses no event");
    let mut reader = buf.reader().unwrap();
    next_packet(&mut reader).unwrap();
    buf.switch(Switch::Flush).unwrap();
    next_packet(&mut reader).unwrap();
    let last = next_packet(&mut reader).unwrap();
    assert_eq!((last.seq, last.records.len()), (2, 0));
}

#[test]
fn discard_pads_and_never_moves_the_reserve_position_back() {
    let config = Config::new(S, 4, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    buf.write(&nest, 1, &[1; 8]).unwrap();
    let after_first = buf.stats().write;

    // The last reservation too: its bytes become padding.
    buf.reserve(&nest, 2, 8).unwrap().discard();
    assert_eq!(buf.stats().write, after_first + R + 8);

    // Dropping a reservation discards it too.
    drop(buf.reserve(&nest, 3, 8).unwrap());
    assert_eq!(buf.stats().write, after_first + 2 * (R + 8));

    let mut a = buf.reserve(&nest, 4, 8).unwrap();
    let b = buf.reserve(&nest, 5, 8).unwrap();
    assert!(a.write_at(0, &[4; 8]));
    a.discard();
    b.commit();

    // The opening reservation of a packet.
    buf.switch(Switch::Active).unwrap();
    buf.reserve(&nest, 6, 8).unwrap().discard();
    assert_eq!(nest.depth(), 0);

    buf.switch(Switch::Flush).unwrap();
    let mut reader = buf.reader().unwrap();
    let p0 = next_packet(&mut reader).unwrap();
    let ids: Vec<u32> = p0.records.iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 5], "discarded records are not read");
    assert_eq!(p0.content_size, H + 5 * (R + 8));
    let p1 = next_packet(&mut reader).unwrap();
    assert!(p1.records.is_empty());
    assert_eq!(p1.content_size, H + R + 8);
    let stats = buf.stats();
    assert_eq!(stats.events_discarded(), 0, "discarding is not a loss");
}

/// A clock that parks the thread that armed it, once, between its reading of the
/// time and its return: the engine reads the clock after loading the reserve
/// position and before its CAS, so the parked thread holds a stale position and a
/// stale time while others go on.
struct ParkingClock {
    now: AtomicU64,
    parked: Mutex<bool>,
    cv: Condvar,
}

thread_local! {
    static PARK_HERE: Cell<bool> = const { Cell::new(false) };
}

impl ParkingClock {
    fn new() -> Self {
        Self {
            now: AtomicU64::new(0),
            parked: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    /// Waits until the armed thread is parked.
    fn wait_parked(&self) {
        let guard = self.parked.lock().unwrap();
        drop(self.cv.wait_while(guard, |parked| !*parked).unwrap());
    }

    /// Lets the parked thread go on.
    fn release(&self) {
        *self.parked.lock().unwrap() = false;
        self.cv.notify_all();
    }
}

impl ringbuf_core::Clock for ParkingClock {
    fn now(&self) -> u64 {
        let t = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        if PARK_HERE.with(|p| p.replace(false)) {
            let mut parked = self.parked.lock().unwrap();
            *parked = true;
            self.cv.notify_all();
            drop(self.cv.wait_while(parked, |parked| *parked).unwrap());
        }
        t
    }
}

/// Writer X loads the position, reads the time and stalls; meanwhile a reservation
/// is discarded and another of the same size is made and committed. If discarding
/// moved the position back, the second reservation would end where the first did
/// and X's CAS would succeed: X's record after it, with an earlier time (ABA).
#[test]
fn a_stalled_writer_never_lands_after_a_later_record_with_an_earlier_time() {
    for stalled_switch in [false, true] {
        let config = Config::new(S, 4, Mode::Discard);
        let mut mem = Memory::for_config(&config);
        let region = ringbuf_core::Region::init(mem.bytes(), config, 0).unwrap();
        let buf = ringbuf_core::Buffer::new(region, RawRecords, ParkingClock::new()).unwrap();
        let nest = Nesting::new();
        buf.write(&nest, 1, &[1; 8]).unwrap(); // so the next reservations open nothing
        let discarded = buf.reserve(&nest, 2, 8).unwrap();
        let stalled = std::thread::scope(|s| {
            let x = s.spawn(|| {
                PARK_HERE.with(|p| p.set(true));
                if stalled_switch {
                    buf.switch(Switch::Active).unwrap();
                    None
                } else {
                    let x_nest = Nesting::new();
                    let r = buf.reserve(&x_nest, 3, 8).unwrap();
                    let at = (r.position(), r.timestamp());
                    r.commit();
                    Some(at)
                }
            });
            buf.clock().wait_parked();
            discarded.discard();
            let y = buf.reserve(&nest, 4, 8).unwrap();
            let y_at = (y.position(), y.timestamp());
            y.commit();
            buf.clock().release();
            let x_at = x.join().unwrap();
            (x_at, y_at)
        });
        let (x_at, (y_pos, y_ts)) = stalled;
        if let Some((x_pos, x_ts)) = x_at {
            assert!(x_pos > y_pos, "X reserved after Y");
            assert!(
                x_ts > y_ts,
                "X at {x_pos} with time {x_ts}, before Y's {y_ts} at {y_pos}"
            );
        }
        buf.switch(Switch::Flush).unwrap();
        let mut reader = buf.reader().unwrap();
        let p = next_packet(&mut reader).unwrap();
        assert!(
            p.timestamp_end >= y_ts,
            "packet closed at {} before its record at {y_ts}",
            p.timestamp_end
        );
        let ids: Vec<u32> = p.records.iter().map(|r| r.0).collect();
        let expected: &[u32] = if stalled_switch { &[1, 4] } else { &[1, 4, 3] };
        assert_eq!(ids, expected);
    }
}

#[test]
fn nesting_beyond_the_limit_is_dropped_and_counted() {
    let config = Config::new(S, 4, Mode::Discard).with_nesting_limit(2);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    let outer = buf.reserve(&nest, 1, 8).unwrap();
    let inner = buf.reserve(&nest, 2, 8).unwrap();
    assert_eq!(nest.depth(), 2);
    assert_eq!(buf.reserve(&nest, 3, 8).err(), Some(ReserveError::Nested));
    assert_eq!(buf.stats().lost_nested, 1);
    inner.commit();
    let again = buf.reserve(&nest, 4, 8).unwrap();
    // Commits in any order.
    outer.commit();
    again.commit();
    assert_eq!(nest.depth(), 0);
    buf.switch(Switch::Flush).unwrap();
    let mut reader = buf.reader().unwrap();
    let p = next_packet(&mut reader).unwrap();
    let ids: Vec<u32> = p.records.iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 2, 4]);
    assert_eq!(p.events_discarded, 1);
}

#[test]
fn out_of_order_commits_deliver_the_packet_exactly_once_after_the_last() {
    let config = Config::new(S, 4, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    let mut reader = buf.reader().unwrap();
    let mut a = buf.reserve(&nest, 1, 64).unwrap();
    let mut b = buf.reserve(&nest, 2, 64).unwrap();
    let mut c = buf.reserve(&nest, 3, 56).unwrap(); // fills the packet exactly
    for (r, v) in [(&mut a, 1u8), (&mut b, 2), (&mut c, 3)] {
        let n = r.payload_len();
        r.payload_mut().copy_from_slice(&vec![v; n]);
    }
    c.commit();
    assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData));
    a.commit();
    assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData));
    b.commit();
    let p = next_packet(&mut reader).unwrap();
    assert_eq!(
        p.records,
        [(1, vec![1; 64]), (2, vec![2; 64]), (3, vec![3; 56])]
    );
    assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData));
    let slot0 = buf.control().slot(0);
    assert_eq!(
        slot0.delivered.load(std::sync::atomic::Ordering::Relaxed),
        S
    );
}

#[test]
fn a_dead_writer_wedges_only_its_sub_buffer_and_others_lose_with_lost_wrap() {
    for mode in [Mode::Discard, Mode::Overwrite] {
        let config = Config::new(S, 2, mode);
        let mut mem = Memory::for_config(&config);
        let buf = buffer(&mut mem, config);
        let dead_nest = Nesting::new();
        let nest = Nesting::new();
        buf.write(&nest, 1, &[1; 8]).unwrap();
        std::mem::forget(buf.reserve(&dead_nest, 2, 8).unwrap());
        buf.write(&nest, 3, &[3; 8]).unwrap();
        buf.switch(Switch::Active).unwrap(); // packet 0 closed but never complete
        buf.write(&nest, 4, &[4; FILL]).unwrap(); // packet 1, delivered
                                                  // Packet 2 would reuse slot 0, whose lap 0 is not committed.
        assert_eq!(buf.write(&nest, 5, &[5; 8]), Err(ReserveError::Wrap));
        assert_eq!(buf.switch(Switch::Flush), Err(ReserveError::Wrap));
        assert_eq!(buf.stats().lost_wrap, 1, "{mode:?}");
        let mut reader = buf.reader().unwrap();
        assert_eq!(reader.get_next_subbuf(), Err(ReadError::NoData), "{mode:?}");
        // Committed prefix of slot 0: header and record 1; record 2 never committed.
        let prefix = buf
            .control()
            .slot(0)
            .prefix
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(prefix, H + R + 8, "{mode:?}");
    }
}

#[test]
fn the_committed_prefix_waits_for_earlier_reservations() {
    let config = Config::new(S, 2, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    let prefix = || {
        buf.control()
            .slot(0)
            .prefix
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // The timestamp bound stored with the prefix, checked against its tag.
    let bound = || {
        let slot = buf.control().slot(0);
        let p = slot.prefix.load(Ordering::Relaxed);
        let pre = PrefixStamp::from_raw(slot.prefix_stamp_pre.load(Ordering::Relaxed));
        let post = PrefixStamp::from_raw(slot.prefix_stamp_post.load(Ordering::Relaxed));
        assert_eq!(pre, post);
        pre.bound_for(p).expect("the stamp belongs to the prefix")
    };
    let a = buf.reserve(&nest, 1, 8).unwrap();
    let b = buf.reserve(&nest, 2, 8).unwrap();
    let b_ts = b.timestamp();
    b.commit();
    assert_eq!(prefix(), 0, "a is still pending");
    a.commit();
    assert_eq!(prefix(), H + 2 * (R + 8));
    assert!(
        bound() >= b_ts,
        "out of order: bounded by a clock read at commit"
    );
    let c = buf.reserve(&nest, 3, 8).unwrap();
    let c_ts = c.timestamp();
    c.commit();
    assert_eq!(prefix(), H + 3 * (R + 8));
    assert!(
        bound() >= c_ts,
        "in order: bounded by the record's own time"
    );
    // A stamp never vouches for another prefix.
    let stamp = PrefixStamp::new(prefix(), c_ts);
    assert!(stamp.bound_for(prefix() + 1).is_none());
    assert!(stamp.bound_for(prefix() - (R + 8)).is_none());
}

#[test]
fn only_one_reader_attaches_at_a_time() {
    let config = Config::new(S, 2, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let mut first = buf.reader().unwrap();
    assert!(buf.reader().is_err());
    buf.write(&Nesting::new(), 0, &[0; FILL]).unwrap();
    let sub = first.get_next_subbuf().unwrap();
    assert_eq!(first.get_next_subbuf(), Err(ReadError::AlreadyHeld));
    first.put_next_subbuf(sub);
    drop(first);
    assert!(buf.reader().is_ok());
}

#[test]
fn events_discarded_is_a_running_total_along_the_stream() {
    let config = Config::new(S, 2, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    let buf = buffer(&mut mem, config);
    let nest = Nesting::new();
    let mut reader = buf.reader().unwrap();
    let mut totals = Vec::new();
    let mut lost = 0;
    for round in 0..6 {
        for i in 0..3 {
            if buf.write(&nest, i, &[0; 100]).is_err() {
                lost += 1;
            }
        }
        if round % 2 == 0 {
            while let Some(p) = next_packet(&mut reader) {
                totals.push(p.events_discarded);
            }
        }
    }
    buf.switch(Switch::Flush).unwrap_or_else(|_| {
        while let Some(p) = next_packet(&mut reader) {
            totals.push(p.events_discarded);
        }
        buf.switch(Switch::Flush).unwrap();
    });
    while let Some(p) = next_packet(&mut reader) {
        totals.push(p.events_discarded);
    }
    assert!(lost > 0);
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
    assert_eq!(
        *totals.last().unwrap(),
        lost,
        "the final packet has the final count"
    );
    assert_eq!(buf.stats().lost_full, lost);
}
