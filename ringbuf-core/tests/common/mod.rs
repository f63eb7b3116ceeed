//! Helpers shared by the integration tests: page-aligned memory and buffer setup.
#![allow(dead_code)]

pub mod trace;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

use ringbuf_core::{Buffer, Config, RawPacket, RawRecords, Reader, Region, SharedWord, Subbuf};

/// Page-aligned, zeroed heap memory for a region.
pub struct Memory {
    ptr: *mut u8,
    layout: Layout,
}

impl Memory {
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }
    pub fn for_config(config: &Config) -> Self {
        Self::new(Region::<SharedWord>::size_for(config).unwrap())
    }
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: allocated with this length, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A strictly increasing clock shared by all threads.
pub struct Counter(pub AtomicU64);

impl ringbuf_core::Clock for Counter {
    fn now(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pub type TestBuffer<'a> = Buffer<Region<'a, SharedWord>, RawRecords, Counter>;

/// A buffer over `mem` with the raw format and a counter clock.
pub fn buffer(mem: &mut Memory, config: Config) -> TestBuffer<'_> {
    let region = Region::init(mem.bytes(), config, 0).unwrap();
    Buffer::new(region, RawRecords, Counter(AtomicU64::new(0))).unwrap()
}

/// A record payload that proves itself intact: `seq`, then `len - 8` bytes derived
/// from it. Returns the payload.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    assert!(len >= 8);
    let mut p = seq.to_le_bytes().to_vec();
    p.extend((0..len - 8).map(|i| (seq.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8));
    p
}

/// Checks a payload made by [`payload`] and returns its `seq`.
pub fn check_payload(p: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
    assert_eq!(p, payload(seq, p.len()), "torn or overwritten record {seq}");
    seq
}

/// An owned copy of a parsed raw packet.
#[derive(Debug)]
pub struct Packet {
    pub seq: u64,
    pub timestamp_begin: u64,
    pub timestamp_end: u64,
    pub content_size: u64,
    pub events_discarded: u64,
    pub records: Vec<(u32, Vec<u8>)>,
}

/// Parses raw packet bytes, panicking on any malformation.
pub fn parse(bytes: &[u8]) -> Packet {
    let p = RawPacket::parse(bytes).unwrap();
    Packet {
        seq: p.seq,
        timestamp_begin: p.timestamp_begin,
        timestamp_end: p.timestamp_end,
        content_size: p.content_size,
        events_discarded: p.events_discarded,
        records: p
            .records()
            .map(|r| {
                let (id, payload) = r.unwrap();
                (id, payload.to_vec())
            })
            .collect(),
    }
}

/// Gets, parses and puts the next packet; `None` when there is none.
pub fn next_packet<K, T>(reader: &mut Reader<'_, Region<'_, SharedWord>, K, T>) -> Option<Packet>
where
    K: ringbuf_core::Client,
    T: ringbuf_core::Clock,
{
    let sub: Subbuf = reader.get_next_subbuf().ok()?;
    let packet = parse(reader.bytes(&sub).unwrap());
    assert_eq!(packet.seq, sub.packet_seq());
    reader.put_next_subbuf(sub);
    Some(packet)
}
