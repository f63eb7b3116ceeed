//! Real threads, exact accounting: every event attempted is read exactly once and
//! intact, or counted in exactly one loss counter (discard mode), or sits in a
//! packet counted as overrun (overwrite mode, where losses are whole packets).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;

use common::{check_payload, parse, payload, Counter, Memory};
use ringbuf_core::{
    Buffer, Client, Clock, Config, LocalWord, Mode, Nesting, RawRecords, Reader, Region,
    ReserveError, SharedWord, Switch, Word,
};

const WRITERS: u64 = 3;
const EVENTS: u64 = if cfg!(debug_assertions) {
    60_000
} else {
    600_000
};

/// What one writer saw.
#[derive(Default)]
struct WriterLog {
    /// seq -> packet seq of each committed event.
    committed: HashMap<u64, u64>,
    /// Failures by cause.
    full: u64,
    wrap: u64,
    nested: u64,
    big: u64,
}

fn writer<C: ringbuf_core::Mapped, K: Client, T: Clock>(
    buf: &Buffer<C, K, T>,
    thread: u64,
) -> WriterLog {
    let nest = Nesting::new();
    let mut log = WriterLog::default();
    // On a loss, yield: let the reader or a preempted writer catch up, so the run
    // crosses many packets instead of failing through its events.
    let record = |log: &mut WriterLog, r: Result<u64, ReserveError>, seq: u64| match r {
        Ok(packet) => assert!(log.committed.insert(seq, packet).is_none()),
        Err(e) => {
            match e {
                ReserveError::Full => log.full += 1,
                ReserveError::Wrap => log.wrap += 1,
                ReserveError::Nested => log.nested += 1,
                ReserveError::TooBig => log.big += 1,
                ReserveError::Fenced => unreachable!("no rseq path here"),
            }
            std::thread::yield_now();
        }
    };
    let write_one = |seq: u64| -> Result<u64, ReserveError> {
        let len = 8 + (seq % 57) as usize;
        let mut r = buf.reserve(&nest, thread as u32, len)?;
        r.payload_mut().copy_from_slice(&payload(seq, len));
        let packet = r.packet_seq();
        r.commit();
        Ok(packet)
    };
    let mut i = 0;
    while i < EVENTS {
        let seq = (thread << 32) | i;
        if i % 16 == 5 && i + 1 < EVENTS {
            // An outer reservation held across an inner event, committed after it:
            // the out-of-order commit a signal handler causes.
            let len = 16;
            match buf.reserve(&nest, thread as u32, len) {
                Ok(mut outer) => {
                    outer.payload_mut().copy_from_slice(&payload(seq, len));
                    let inner = (thread << 32) | (i + 1);
                    let r = write_one(inner);
                    record(&mut log, r, inner);
                    let packet = outer.packet_seq();
                    outer.commit();
                    record(&mut log, Ok(packet), seq);
                }
                Err(e) => {
                    record(&mut log, Err(e), seq);
                    let inner = (thread << 32) | (i + 1);
                    let r = write_one(inner);
                    record(&mut log, r, inner);
                }
            }
            i += 2;
            continue;
        }
        let r = write_one(seq);
        record(&mut log, r, seq);
        i += 1;
    }
    log
}

/// Reads packets until `done` and nothing is left; returns (packet seq -> records).
fn read_all<C, K, T>(
    buf: &Buffer<C, K, T>,
    reader: &mut Reader<'_, C, K, T>,
    done: &AtomicBool,
) -> HashMap<u64, Vec<(u32, u64)>>
where
    C: ringbuf_core::Mapped,
    K: Client,
    T: Clock,
{
    let mut packets = HashMap::new();
    let mut last_discarded = 0;
    let mut last_seq = None;
    loop {
        let finished = done.load(Ordering::Acquire);
        match reader.get_next_subbuf() {
            Ok(sub) => {
                let p = parse(reader.bytes(&sub).unwrap());
                assert_eq!(p.seq, sub.packet_seq());
                assert!(last_seq < Some(p.seq), "packets in order");
                last_seq = Some(p.seq);
                assert!(
                    p.events_discarded >= last_discarded,
                    "discarded count decreased"
                );
                last_discarded = p.events_discarded;
                let recs = p
                    .records
                    .iter()
                    .map(|(id, payload)| (*id, check_payload(payload)))
                    .collect();
                assert!(packets.insert(p.seq, recs).is_none(), "packet read twice");
                reader.put_next_subbuf(sub);
            }
            Err(_) if finished => {
                let flushed = buf.switch(Switch::Flush);
                if flushed.is_ok() {
                    // Drain what the flush closed.
                    while let Ok(sub) = reader.get_next_subbuf() {
                        let p = parse(reader.bytes(&sub).unwrap());
                        let recs = p
                            .records
                            .iter()
                            .map(|(id, payload)| (*id, check_payload(payload)))
                            .collect();
                        assert!(p.events_discarded >= last_discarded);
                        last_discarded = p.events_discarded;
                        assert!(packets.insert(p.seq, recs).is_none());
                        reader.put_next_subbuf(sub);
                    }
                    return packets;
                }
            }
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn run<W: Word>(buf: &Buffer<Region<'_, W>, RawRecords, Counter>, writers: u64) {
    let done = AtomicBool::new(false);
    let start = Barrier::new(writers as usize + 1);
    let (logs, packets) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    writer(buf, t)
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut reader = buf.reader().unwrap();
            start.wait();
            read_all(buf, &mut reader, &done)
        });
        let logs: Vec<WriterLog> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        (logs, reader.join().unwrap())
    });
    check_accounting(buf, writers, &logs, &packets);
}

fn check_accounting<W: Word>(
    buf: &Buffer<Region<'_, W>, RawRecords, Counter>,
    writers: u64,
    logs: &[WriterLog],
    packets: &HashMap<u64, Vec<(u32, u64)>>,
) {
    let stats = buf.stats();
    let config = buf.config();
    // Every loss the writers saw is counted once, in its own counter.
    assert_eq!(stats.lost_full, logs.iter().map(|l| l.full).sum::<u64>());
    assert_eq!(stats.lost_wrap, logs.iter().map(|l| l.wrap).sum::<u64>());
    assert_eq!(
        stats.lost_nested,
        logs.iter().map(|l| l.nested).sum::<u64>()
    );
    assert_eq!(stats.lost_big, 0);
    for log in logs {
        let failed = log.full + log.wrap + log.nested + log.big;
        assert_eq!(log.committed.len() as u64 + failed, EVENTS);
    }
    // Every record read is intact (checked while reading), read once, committed.
    let mut seen = HashSet::new();
    for (seq, recs) in packets {
        for &(thread, event) in recs {
            assert_eq!(event >> 32, thread as u64);
            assert!(seen.insert(event), "event {event:#x} read twice");
            assert_eq!(
                logs[thread as usize].committed.get(&event),
                Some(seq),
                "event read from another packet than it was committed to"
            );
        }
    }
    // Every committed event is read, unless its whole packet was overwritten.
    let total_packets = stats.write / config.subbuf_size;
    assert_eq!(stats.write % config.subbuf_size, 0, "flushed");
    let mut unread_packets = HashSet::new();
    for (thread, log) in logs.iter().enumerate() {
        for (&event, &packet) in &log.committed {
            if !seen.contains(&event) {
                assert!(
                    !packets.contains_key(&packet),
                    "event {event:#x} lost from a read packet (thread {thread})"
                );
                unread_packets.insert(packet);
            }
        }
    }
    match config.mode {
        Mode::Discard => {
            assert_eq!(stats.overrun, 0);
            assert!(unread_packets.is_empty());
            assert_eq!(packets.len() as u64, total_packets, "every packet read");
        }
        Mode::Overwrite => {
            assert_eq!(
                packets.len() as u64 + stats.overrun,
                total_packets,
                "each packet read once or counted overrun once"
            );
            assert!(unread_packets.len() as u64 <= stats.overrun);
        }
    }
    let attempted = writers * EVENTS;
    let read = seen.len() as u64;
    eprintln!(
        "{:?}: attempted {attempted}, read {read}, lost full {} wrap {} nested {}, overrun {} packets of {total_packets}",
        config.mode, stats.lost_full, stats.lost_wrap, stats.lost_nested, stats.overrun
    );
}

fn shared_buffer_test(mode: Mode, subbuf: u64, count: u64) {
    let config = Config::new(subbuf, count, mode).with_nesting_limit(2);
    let mut mem = Memory::for_config(&config);
    let region = Region::init(mem.bytes(), config, 0).unwrap();
    let buf = Buffer::new(region, RawRecords, Counter(AtomicU64::new(0))).unwrap();
    run::<SharedWord>(&buf, WRITERS);
}

#[test]
fn discard_mode_threads_account_for_every_event() {
    shared_buffer_test(Mode::Discard, 1024, 4);
}

#[test]
fn overwrite_mode_threads_account_for_every_event() {
    shared_buffer_test(Mode::Overwrite, 1024, 4);
}

#[test]
fn larger_buffers_lose_less_and_still_account_exactly() {
    shared_buffer_test(Mode::Discard, 64 * 1024, 8);
    shared_buffer_test(Mode::Overwrite, 64 * 1024, 8);
}

#[test]
fn local_flavour_single_writer_with_a_concurrent_reader() {
    for mode in [Mode::Discard, Mode::Overwrite] {
        let config = Config::new(1024, 4, mode).with_nesting_limit(2);
        let mut mem = Memory::for_config(&config);
        // SAFETY: one writer thread only (the reader thread never writes).
        let region = unsafe { Region::<LocalWord>::init_local(mem.bytes(), config, 0) }.unwrap();
        let buf = Buffer::new(region, RawRecords, Counter(AtomicU64::new(0))).unwrap();
        run::<LocalWord>(&buf, 1);
    }
}
