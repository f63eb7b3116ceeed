//! loom models of `ringbuf-core` (docs/ARCHITECTURE.md, design §9).
//!
//! The models in `tests/` run the *shipping* engine ([`ringbuf_core::Buffer`],
//! [`ringbuf_core::Reader`]) over a loom-backed [`ringbuf_core::Control`]: every word
//! is a loom atomic and every sub-buffer byte a loom `UnsafeCell`, so loom explores
//! the interleavings *and* the weak-memory behaviours of the real code and reports
//! any access to a byte that does not happen after the last write to it.
//!
//! Everything here is `#[cfg(loom)]`: build and run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --profile loom -- --nocapture
//! ```
//!
//! or `loom-tests/run.sh` (the models, then the engine mutants they must catch); see
//! `loom-tests/README.md`. Without `--cfg loom` this crate is empty.

#[cfg(loom)]
mod model;

#[cfg(loom)]
pub use model::*;
