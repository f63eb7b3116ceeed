//! `ringbuf-splice`: getting trace data out of buffers.
//!
//! * [`export`]: packet export (zero-copy splice into files, one copy into
//!   sockets and pipes) and why a sub-buffer may be released when it returns;
//! * [`TraceDir`]: CTF trace directories that babeltrace2 reads;
//! * [`session`]: the consumer loop of a whole channel (wakeups, live switching,
//!   export into a trace directory);
//! * [`stream`]: live streaming over TCP and its receiver;
//! * [`snapshot`]: flight-recorder snapshots while writers run;
//! * the `ringbuf` CLI (`src/main.rs`).

pub mod export;
pub mod session;
pub mod snapshot;
pub mod stream;
mod trace_dir;

pub use trace_dir::{TraceDir, TraceError};

pub use ringbuf_core as core;
