//! `ringbuf-core`: a lock-free reserve/commit trace ring buffer engine.
//!
//! `#![no_std]`, no allocation. A buffer is `N` sub-buffers of `S` bytes laid out in
//! a caller-provided memory region ([`Region`]); writers [`Buffer::reserve`] room for
//! a record with one CAS, write it in place and [`Reservation::commit`] it, in any
//! order and from any nesting depth; one [`Reader`] gets whole sub-buffers (packets)
//! once every record in them is committed. See `docs/ARCHITECTURE.md` for the design.
//!
//! ```
//! use ringbuf_core::{Buffer, Config, Mode, Nesting, NoClock, RawPacket, RawRecords, Region};
//!
//! let config = Config::new(4096, 4, Mode::Discard);
//! let mut mem = vec![0u64; Region::<ringbuf_core::SharedWord>::size_for(&config).unwrap() / 8];
//! let bytes = unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast::<u8>(), mem.len() * 8) };
//! let region = Region::init(bytes, config, 0).unwrap();
//! let buffer = Buffer::new(region, RawRecords, NoClock).unwrap();
//!
//! let nest = Nesting::new();
//! buffer.write(&nest, 7, b"hello").unwrap();
//! buffer.switch(ringbuf_core::Switch::Flush).unwrap();
//!
//! let mut reader = buffer.reader().unwrap();
//! let sub = reader.get_next_subbuf().unwrap();
//! let packet = RawPacket::parse(reader.bytes(&sub).unwrap()).unwrap();
//! let records: Vec<_> = packet.records().map(Result::unwrap).collect();
//! assert_eq!(records, [(7, &b"hello"[..])]);
//! reader.put_next_subbuf(sub);
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

mod buffer;
mod bytes;
mod client;
mod clock;
mod config;
mod control;
pub mod ctf;
pub mod id;
mod nesting;
mod reader;
mod region;
pub mod seq;
mod word;

pub use buffer::{Buffer, Reservation, ReserveError, Stats, Switch, SwitchError};
pub use client::{
    Client, Out, PacketBegin, PacketEnd, ParseError, RawPacket, RawRecordIter, RawRecords,
    RecordInfo,
};
#[cfg(target_arch = "x86_64")]
pub use clock::Tsc;
pub use clock::{Clock, NoClock};
pub use config::{
    Config, ConfigError, Geometry, Mode, DEFAULT_NESTING_LIMIT, MAX_SUBBUF_COUNT, MAX_SUBBUF_SIZE,
    MIN_SUBBUF_SIZE,
};
pub use control::{Control, LossWords, Mapped, PrefixStamp, ReaderWords, SlotWords, WriterWords};
pub use nesting::Nesting;
pub use reader::{ReadError, Reader, ReaderBusy, Snapshot, Subbuf, MAX_RETRIES};
pub use region::{
    Field, FieldTable, Layout, Region, RegionError, RegionHeader, CACHE_LINE, ENDIAN_TAG,
    HEADER_SIZE, PAGE_SIZE, REGION_MAGIC, REGION_VERSION,
};
pub use word::{Flavour, LocalWord, SharedWord, Word};
