//! The consumer loop of a whole channel: wait for wakeups, export every CPU's
//! packets into a trace directory with zero user-space copies, switch idle buffers
//! periodically (live mode), and export what is left when stopped.
//!
//! Per-CPU and per-thread channels alike; a per-thread channel's open packets are
//! never switched by a consumer, which only asks their threads to (see
//! [`Consumer::switch_all`]): a thread closes its packet at its next event.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ringbuf_core::{Client, Clock, Switch, Word};
use ringbuf_mmap::{Consumer, ExportError};

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
}

impl std::fmt::Display for LoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Export(e) => write!(f, "{e}"),
            Self::Trace(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoopError {}

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
        let stream = trace
            .stream(cpu)
            .map_err(|e| LoopError::Trace(TraceError::Io(e)))?;
        let mut one = |packet: ringbuf_mmap::ExportedPacket<'_>| {
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
        export_all(consumer, trace, &mut splicer, &mut stats)?;
        if stopping {
            // The producer may still hold an open packet: close it and take it.
            consumer.switch_all(Switch::Active);
            export_all(consumer, trace, &mut splicer, &mut stats)?;
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
