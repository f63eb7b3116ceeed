//! `ringbuf-mmap`: ringbuf buffers in shared memory.
//!
//! * [`PerCpuChannel`] / [`PerThreadChannel`]: a channel of buffers in a memfd or a
//!   file, written from any thread and from signal handlers; a per-thread channel
//!   gives each thread a buffer on its first event and takes it back after the
//!   thread exits;
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
mod per_thread;
mod producer;
mod recovery;
pub mod rseq;
mod slots;
mod wakeup;

pub use backing::{recv_fd, send_fd, BackingError, Shm, Unpublished};
pub use channel::{
    append_metadata, check_metadata, check_metadata_update, ChannelClock, ChannelError,
    ChannelHeader, ChannelLayout, ClockError, WritePath, CHANNEL_MAGIC, CHANNEL_VERSION,
    CLOCK_DESCRIPTION_BYTES, CLOCK_NAME_BYTES, MAX_METADATA, METADATA_ROOM,
};
pub use consumer::{
    AnyConsumer, ConsumeError, Consumer, ExportError, ExportedPacket, PerCpuConsumer,
    PerThreadConsumer,
};
pub use per_thread::{
    PerThreadChannel, SlotError, ThreadReader, ThreadWriter, MAX_CHANNELS_PER_THREAD,
};
pub use producer::{
    current_cpu, current_tid, possible_cpus, wakeup_path, with_nesting, Backing, ChannelOptions,
    PerCpuChannel, RSEQ_EVENT_STAGE,
};
pub use recovery::{recover_to_dir, ChannelImage, RecoveryError, RecoveryReport};
pub use slots::{SlotLosses, SlotState};
pub use wakeup::{Notify, Wakeup};

pub use ringbuf_core as core;
