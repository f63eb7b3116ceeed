//! The consumer loop of a whole channel: wait for wakeups, export every CPU's
//! packets into a trace directory with zero user-space copies, switch idle buffers
//! periodically (live mode), and export what is left when stopped.
//!
//! Per-CPU and per-thread channels alike; a per-thread channel's open packets are
//! never switched by a consumer, which only asks their threads to (see
//! [`Consumer::switch_all`]): a thread closes its packet at its next event.
//!
//! The metadata grows while the producer runs (event classes registered after the
//! start): the loop appends every piece the consumer hands out to the trace's
//! `metadata` ([`forward_metadata`]): with each packet whose export brought one
//! (before the packet, which may use its classes), on every pass, and after the
//! last export, so the finished trace declares every class.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ringbuf_core::{Client, Clock, Switch, Word};
use ringbuf_mmap::{ChannelError, Consumer, ExportError};

use crate::export::Splicer;
use crate::trace_dir::{TraceDir, TraceError};

/// How the loop runs.
#[derive(Clone, Copy, Debug)]
pub struct LoopOptions {
    /// Switch every buffer this often, so that idle ones become readable (live
    /// mode); `None` reads only full packets until the end.
    pub live_period: Option<Duration>,
    /// The longest sleep between two looks at the buffers.
    pub poll: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            live_period: Some(Duration::from_millis(100)),
            poll: Duration::from_millis(10),
        }
    }
}

/// What the loop exported so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Packets exported.
    pub packets: u64,
    /// Bytes exported.
    pub bytes: u64,
}

/// Why the loop stopped early.
#[derive(Debug)]
pub enum LoopError {
    /// Reading or moving a packet failed.
    Export(ExportError),
    /// The trace directory failed.
    Trace(TraceError),
    /// The metadata the producer appended is invalid (a corrupt or hostile
    /// channel).
    Metadata(ChannelError),
}

impl std::fmt::Display for LoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Export(e) => write!(f, "{e}"),
            Self::Trace(e) => write!(f, "{e}"),
            Self::Metadata(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoopError {}

/// Appends the metadata text the producer added since the consumer last handed
/// some out to every destination of the loop (the trace directory). Each
/// destination must get every piece, in order, before the packets exported after
/// it: a destination added to the loop hooks in here, and where packets carry
/// their piece ([`ringbuf_mmap::ExportedPacket::metadata`]).
pub fn forward_metadata(text: &str, trace: &mut TraceDir) -> Result<(), TraceError> {
    trace.append_metadata(text)
}

/// [`forward_metadata`] of what `consumer` has now, if anything.
pub fn forward_metadata_update<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    trace: &mut TraceDir,
) -> Result<(), LoopError> {
    match consumer.metadata_update().map_err(LoopError::Metadata)? {
        Some(text) => forward_metadata(&text, trace).map_err(LoopError::Trace),
        None => Ok(()),
    }
}

/// Exports every complete packet of every CPU of `consumer` into `trace` now.
pub fn export_all<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    trace: &mut TraceDir,
    splicer: &mut Splicer,
    stats: &mut ExportStats,
) -> Result<(), LoopError> {
    export_each(consumer, trace, splicer, stats, false)
}

/// Exports each CPU's packets into its stream file with splice (a failed packet
/// leaves nothing in the file); with `snapshot`, only those complete when each CPU's
/// export began.
pub(crate) fn export_each<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    trace: &mut TraceDir,
    splicer: &mut Splicer,
    stats: &mut ExportStats,
    snapshot: bool,
) -> Result<(), LoopError> {
    for cpu in 0..consumer.buffer_count() {
        trace
            .stream(cpu)
            .map_err(|e| LoopError::Trace(TraceError::Io(e)))?;
        let mut one = |packet: ringbuf_mmap::ExportedPacket<'_>| {
            if let Some(text) = &packet.metadata {
                forward_metadata(text, trace).map_err(|e| {
                    std::io::Error::other(format!("appending to the trace's metadata: {e}"))
                })?;
            }
            let stream = trace.stream(cpu)?;
            let len = packet.info.packet_size as usize;
            splicer.export(consumer.shm(), packet.offset, len, stream.as_fd())?;
            stats.packets += 1;
            stats.bytes += len as u64;
            Ok(())
        };
        let exported = if snapshot {
            consumer.export_snapshot(cpu, &mut one)
        } else {
            consumer.export(cpu, &mut one)
        };
        exported.map_err(LoopError::Export)?;
    }
    Ok(())
}

/// Runs until `stop()` says so, then closes the open packets and exports the
/// rest. `progress` is called about once a second.
pub fn run<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    trace: &mut TraceDir,
    options: &LoopOptions,
    mut stop: impl FnMut() -> bool,
    mut progress: impl FnMut(&ExportStats),
    subbuf_size: usize,
) -> Result<ExportStats, LoopError> {
    let mut splicer = Splicer::new(subbuf_size).map_err(|e| LoopError::Trace(TraceError::Io(e)))?;
    let mut stats = ExportStats::default();
    let (mut last_switch, mut last_progress) = (Instant::now(), Instant::now());
    loop {
        let stopping = stop();
        forward_metadata_update(consumer, trace)?;
        export_all(consumer, trace, &mut splicer, &mut stats)?;
        if stopping {
            // The producer may still hold an open packet: close it and take it.
            consumer.switch_all(Switch::Active);
            export_all(consumer, trace, &mut splicer, &mut stats)?;
            // Classes no exported packet used are declared too.
            forward_metadata_update(consumer, trace)?;
            progress(&stats);
            return Ok(stats);
        }
        if options
            .live_period
            .is_some_and(|p| last_switch.elapsed() >= p)
        {
            consumer.switch_all(Switch::Active);
            last_switch = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(&stats);
            last_progress = Instant::now();
        }
        consumer.wait(options.poll);
    }
}
