//! Zero-copy export, trace directories and the `ringbuf` CLI, built on [`ringbuf_core`].
//!
//! This crate is a placeholder until its own issue lands: it re-exports the core so
//! that the workspace layout is final from the start.
pub use ringbuf_core as core;
