//! loom models of ringbuf-core (run with `RUSTFLAGS="--cfg loom"`).
