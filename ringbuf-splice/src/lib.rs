//! `ringbuf-splice`: getting trace data out of buffers.
//!
//! For now: a CTF trace directory writer ([`TraceDir`]) that babeltrace2 reads.
//! Zero-copy page export, live streaming, snapshots and the `ringbuf` CLI come with
//! their own issue.

mod trace_dir;

pub use trace_dir::{TraceDir, TraceError};

pub use ringbuf_core as core;
