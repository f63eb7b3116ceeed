//! Shared pieces of the criterion benchmarks: the systems under test (ringbuf
//! buffers, the hardware floor, the peers), all behind one [`Sink`] interface so
//! that every bench times exactly the same loop, plus CPU pinning and the signal
//! handler used by the nesting bench.
//!
//! Every system gets, per event: one TSC read, `8 + N` bytes (an 8-byte header and
//! the `N`-byte payload) stored into the same amount of memory ([`CAPACITY`]).
//! (ringbuf's CTF format stores `4 + N`: its compact event header is 4 bytes.)

pub mod affinity;
pub mod floor;
pub mod lttng;
pub mod ours;
pub mod peers;
pub mod signal;
pub mod sink;

pub use floor::{BareFloor, Floor, LockFloor, RdtscBare, TscOnly};
pub use ours::{drain, local_buffer, shared_buffer, write_event, Memory, Ringbuf, TscBuffer};
pub use sink::{time_events, Sink};

use ringbuf_core::{Clock, Config, Mode, Tsc};

/// Sub-buffer size of the ringbuf buffers measured.
pub const SUBBUF_SIZE: u64 = 64 * 1024;

/// Sub-buffer count of the ringbuf buffers measured.
pub const SUBBUF_COUNT: u64 = 8;

/// Bytes of event storage every system gets (ringbuf: `SUBBUF_COUNT * SUBBUF_SIZE`;
/// the floor's array, the peers' rings: the same).
pub const CAPACITY: usize = (SUBBUF_SIZE * SUBBUF_COUNT) as usize;

/// The configuration of the ringbuf buffers measured.
pub const fn config(mode: Mode) -> Config {
    Config::new(SUBBUF_SIZE, SUBBUF_COUNT, mode)
}

/// The 8-byte record header the floor and the peers store: payload length and the
/// low 32 bits of the timestamp (ringbuf's `RawRecords` header is the same size).
#[inline(always)]
pub fn record_header(timestamp: u64, len: usize) -> [u8; 8] {
    ((len as u64) | (timestamp << 32)).to_le_bytes()
}

/// Reads the TSC with ringbuf's own clock (`lfence; rdtsc; lfence` since the core
/// orders its clock read): the clock every system here uses.
#[inline(always)]
pub fn now() -> u64 {
    Tsc.now()
}

/// The payload written by every event of `N` bytes.
pub const fn payload<const N: usize>() -> [u8; N] {
    [0xab; N]
}

/// The `{u64; u32}` event (`a`, `b`) as ringbuf's raw payload: 12 bytes, little
/// endian, packed (what an LTTng-UST event of two integer fields stores too).
#[inline(always)]
pub fn u64_u32(a: u64, b: u32) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}
