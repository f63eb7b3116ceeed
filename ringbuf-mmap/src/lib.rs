//! `ringbuf-mmap`: the std side of ringbuf buffers.
//!
//! For now: trace clocks ([`clock`]). Shared-memory channels, per-CPU buffers, the
//! cross-process consumer and crash recovery come with their own issue.

pub mod clock;

pub use ringbuf_core as core;
