//! Snapshots: the current flight-recorder content of every CPU, as a trace
//! directory, while writers keep running.
//!
//! Every buffer's open packet is closed first (`switch(Active)` on per-CPU
//! channels; a request to their threads on per-thread ones, see
//! [`Consumer::switch_all`]), then each CPU's packets that were complete
//! at that moment are exported, oldest first. Writers go on meanwhile: the reader
//! swaps its spare sub-buffer in for each packet it takes, so every exported packet
//! is whole and immutable; a packet overwritten before the snapshot reached it is a
//! `packet_seq_num` gap (babeltrace2 reports "discarded N packets"). A snapshot
//! takes the packets it exports: the next one starts after them.

use std::path::Path;

use ringbuf_core::{Client, Clock, Switch, Word};
use ringbuf_mmap::Consumer;

use crate::export::Splicer;
use crate::export_loop::{export_each, ExportStats, LoopError, Outputs};
use crate::trace_dir::{TraceDir, TraceError};

/// Writes a snapshot of `consumer`'s channel to the new directory `out`.
pub fn snapshot_to_dir<W: Word, K: Client, T: Clock>(
    consumer: &Consumer<W, K, T>,
    out: &Path,
    subbuf_size: usize,
) -> Result<ExportStats, LoopError> {
    let trace = TraceDir::with_metadata(out, consumer.metadata()).map_err(LoopError::Trace)?;
    let mut splicer = Splicer::new(subbuf_size).map_err(|e| LoopError::Trace(TraceError::Io(e)))?;
    let mut stats = ExportStats::default();
    consumer.switch_all(Switch::Active);
    let mut outputs = Outputs::trace(trace);
    export_each(consumer, &mut outputs, &mut splicer, &mut stats, true)?;
    // Classes registered since attaching that no exported packet used.
    outputs.forward_metadata_update(consumer)?;
    Ok(stats)
}
