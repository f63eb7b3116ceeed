//! The consumer loop of a whole channel: wait for wakeups, export every buffer's
//! packets into its outputs (a trace directory, with zero user-space copies; a
//! relayd, one copy into its socket; or both), switch idle buffers periodically
//! (live mode), and export what is left when stopped.
//!
//! Per-CPU and per-thread channels alike; a per-thread channel's open packets are
//! never switched by a consumer, which only asks their threads to (see
//! [`Consumer::switch_all`]): a thread closes its packet at its next event.
//!
//! Each packet goes to every output before its sub-buffer goes back to the
//! writers: the trace directory first, then the relayd, each by the rule of
//! [`Splicer::export`]. A relayd that fails is dropped from the outputs (its
//! [`Relayd::failure`] says why, its [`crate::relayd::RelaydStats`] count what it
//! missed); the trace directory goes on. A trace directory that fails stops the
//! loop.
//!
//! The metadata grows while the producer runs (event classes registered after the
//! start): the loop hands every piece the consumer gives out to every output
//! ([`Outputs::forward_metadata`]): with each packet whose export brought one
//! (before the packet, which may use its classes), on every pass, and after the
//! last export, so the finished trace declares every class.
//!
//! **Live viewers of a relayd** merge streams by time and show nothing past the
//! time every stream has reached, so a stream that has no packet, or none for a
//! while, holds them back. While a live relayd session is connected, the loop
//! closes every buffer with `switch(Flush)` when it starts and then every
//! [`IDLE_FLUSH`], instead of `switch(Active)`: an idle per-CPU buffer then gets a
//! header-only packet (one page in each output), whose time the engine orders
//! before any later event; a buffer with an open packet just has it closed.
//! Closing packets writes their headers, so the consumer's client must be the
//! producer's (its trace uuid). Per-thread buffers are only asked to switch: an
//! idle thread's stream holds live viewers back until it writes or exits.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ringbuf_core::{Client, Clock, Switch, Word};
use ringbuf_mmap::{ChannelError, Consumer, ExportError};

use crate::export::Splicer;
use crate::relayd::Relayd;
use crate::trace_dir::{TraceDir, TraceError};

/// While a live relayd session is connected, how often idle buffers get a
/// header-only packet (see the module documentation): live viewers lag an idle
/// stream by at most this much (plus their polling), and each idle buffer costs
/// one page per period in each output.
pub const IDLE_FLUSH: Duration = Duration::from_secs(1);

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
    /// Packets taken from the buffers, each written to every working output.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Where the loop puts packets.
#[derive(Debug, Default)]
pub struct Outputs {
    /// A trace directory: every packet, or the loop stops with an error.
    pub trace: Option<TraceDir>,
    /// A relayd session: every packet while it is connected.
    pub relayd: Option<Relayd>,
}

impl Outputs {
    /// A trace directory alone.
    pub fn trace(trace: TraceDir) -> Self {
        Self {
            trace: Some(trace),
            relayd: None,
        }
    }

    /// Whether a live relayd session is connected (see the module documentation).
    fn live_relayd(&self) -> bool {
        self.relayd.as_ref().is_some_and(Relayd::is_live)
    }

    /// Appends metadata text the producer added to every output, before any
    /// packet exported after it (which may use its classes). A relayd that fails
    /// here is dropped like one that fails on a packet.
    pub fn forward_metadata(&mut self, text: &str) -> Result<(), TraceError> {
        if let Some(relayd) = &mut self.relayd {
            relayd.append_metadata(text);
        }
        match &mut self.trace {
            Some(trace) => trace.append_metadata(text),
            None => Ok(()),
        }
    }

    /// [`Outputs::forward_metadata`] of what `consumer` has now, if anything.
    pub fn forward_metadata_update<W: Word, K: Client, T: Clock>(
        &mut self,
        consumer: &Consumer<W, K, T>,
    ) -> Result<(), LoopError> {
        match consumer.metadata_update().map_err(LoopError::Metadata)? {
            Some(text) => self.forward_metadata(&text).map_err(LoopError::Trace),
            None => Ok(()),
        }
    }
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

/// Exports every complete packet of every buffer of `consumer` into `outputs`
/// now.
pub fn export_all<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    outputs: &mut Outputs,
    splicer: &mut Splicer,
    stats: &mut ExportStats,
) -> Result<(), LoopError> {
    export_each(consumer, outputs, splicer, stats, false)
}

/// Exports each buffer's packets into every output (a failed packet leaves
/// nothing in a stream file); with `snapshot`, only those complete when each
/// buffer's export began.
pub(crate) fn export_each<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    outputs: &mut Outputs,
    splicer: &mut Splicer,
    stats: &mut ExportStats,
    snapshot: bool,
) -> Result<(), LoopError> {
    for cpu in 0..consumer.buffer_count() {
        let mut one = |packet: ringbuf_mmap::ExportedPacket<'_>| {
            if let Some(text) = &packet.metadata {
                outputs.forward_metadata(text).map_err(|e| {
                    std::io::Error::other(format!("appending to the trace's metadata: {e}"))
                })?;
            }
            let Outputs { trace, relayd } = &mut *outputs;
            let len = packet.info.packet_size as usize;
            if let Some(trace) = trace {
                let file = trace.stream(cpu)?;
                splicer.export(consumer.shm(), packet.offset, len, file.as_fd())?;
            }
            if let Some(relayd) = relayd.as_mut() {
                relayd.send(splicer, consumer.shm(), cpu, &packet);
            }
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

/// Runs until `stop()` says so, then closes the open packets, exports the rest
/// and ends the relayd session (which waits until the relayd has written
/// everything). `progress` is called about once a second.
pub fn run<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    outputs: &mut Outputs,
    options: &LoopOptions,
    mut stop: impl FnMut() -> bool,
    mut progress: impl FnMut(&ExportStats, &Outputs),
    subbuf_size: usize,
) -> Result<ExportStats, LoopError> {
    let mut splicer = Splicer::new(subbuf_size).map_err(|e| LoopError::Trace(TraceError::Io(e)))?;
    let mut stats = ExportStats::default();
    let (mut last_switch, mut last_flush, mut last_progress) =
        (Instant::now(), Instant::now(), Instant::now());
    if outputs.live_relayd() {
        // A first packet on every stream, for live viewers.
        consumer.switch_all(Switch::Flush);
    }
    loop {
        let stopping = stop();
        export_all(consumer, outputs, &mut splicer, &mut stats)?;
        outputs.forward_metadata_update(consumer)?;
        if stopping {
            // The producer may still hold an open packet: close it and take it.
            consumer.switch_all(Switch::Active);
            export_all(consumer, outputs, &mut splicer, &mut stats)?;
            // Classes no exported packet used are declared too.
            outputs.forward_metadata_update(consumer)?;
            if let Some(relayd) = &mut outputs.relayd {
                relayd.finish();
            }
            progress(&stats, outputs);
            return Ok(stats);
        }
        if options
            .live_period
            .is_some_and(|p| last_switch.elapsed() >= p)
        {
            let kind = if outputs.live_relayd() && last_flush.elapsed() >= IDLE_FLUSH {
                last_flush = Instant::now();
                Switch::Flush
            } else {
                Switch::Active
            };
            consumer.switch_all(kind);
            last_switch = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(&stats, outputs);
            last_progress = Instant::now();
        }
        consumer.wait(options.poll);
    }
}
