//! `ringbuf-mmap`: ringbuf buffers in shared memory.
//!
//! * [`PerCpuChannel`] / [`PerThreadChannel`]: a channel of buffers in a memfd or a
//!   file, written from any thread and from signal handlers;
//! * [`Consumer`]: another process attaches by path or descriptor and reads packets,
//!   treating the memory as hostile ([`AnyConsumer`] when the channel may be of
//!   either kind);
//! * [`ChannelImage::recover`]: the packets a dead producer left in its file;
//! * [`clock`]: trace clocks (`CLOCK_MONOTONIC`, the calibrated TSC).

mod backing;
mod channel;
pub mod clock;
mod consumer;
pub mod guard;
mod producer;
mod recovery;
mod wakeup;

pub use backing::{recv_fd, send_fd, BackingError, Shm};
pub use channel::{
    check_metadata, ChannelError, ChannelHeader, ChannelLayout, CHANNEL_MAGIC, CHANNEL_VERSION,
};
pub use consumer::{
    AnyConsumer, ConsumeError, Consumer, ExportError, ExportedPacket, PerCpuConsumer,
    PerThreadConsumer,
};
pub use producer::{
    current_cpu, possible_cpus, wakeup_path, with_nesting, Backing, ChannelOptions, NoFreeSlot,
    PerCpuChannel, PerThreadChannel, ThreadReader, ThreadWriter,
};
pub use recovery::{recover_to_dir, ChannelImage, RecoveryError, RecoveryReport};
pub use wakeup::{Notify, Wakeup};

pub use ringbuf_core as core;
