//! The report at the end of `ringbuf record`: per-CPU packets and losses, where
//! every packet went, and what each loss counter that moved means, in words.

use std::path::Path;
use std::time::Duration;

use ringbuf_core::{Config, Stats};
use ringbuf_mmap::WritePath;
use ringbuf_splice::export_loop::ExportStats;

use super::out::say;

/// What a run did.
pub struct Run<'a> {
    /// Every buffer's counters, after the final flush.
    pub stats: &'a [Stats],
    /// Every buffer's configuration.
    pub config: Config,
    /// Events the writers tried to write.
    pub attempted: u64,
    /// Events written.
    pub committed: u64,
    /// From the start to the end of the export.
    pub elapsed: Duration,
    /// What the export took from the buffers (`None`: `--no-export`).
    pub exported: Option<ExportStats>,
    /// The trace directory, if any.
    pub trace: Option<&'a Path>,
    /// Whether packets were streamed to a relayd (its own report follows).
    pub relayd: bool,
    /// SIGUSR1 snapshots taken, and the packets they took.
    pub snapshots: (u32, u64),
    /// Overwrite mode exported only at the end (and on SIGUSR1).
    pub flight_recorder: bool,
    /// How the writers updated the buffers.
    pub write_path: WritePath,
}

/// Each loss counter: its name, its value, and what it means.
fn counters(s: &Stats) -> [(&'static str, u64, &'static str); 5] {
    [
        (
            "lost_full",
            s.lost_full,
            "events dropped because the buffer was full: its reader was behind the \
             writers, or there was none (--no-export); lower --rate, or use more or \
             larger sub-buffers",
        ),
        (
            "lost_wrap",
            s.lost_wrap,
            "events dropped because the next sub-buffer still held an event reserved but \
             not committed, so it could be neither delivered nor reused: on per-CPU \
             buffers mostly a writer preempted between reserve and commit while the others \
             went round the whole buffer (a stuck or dead writer looks the same)",
        ),
        ("lost_big", s.lost_big, "events larger than a sub-buffer"),
        (
            "lost_nested",
            s.lost_nested,
            "events written deeper than the nesting limit (signal handlers interrupting \
             events being written)",
        ),
        (
            "lost_fenced",
            s.lost_fenced,
            "events a signal handler wrote on the rseq path while its own thread held \
             their buffer for a switch (the consumer's thread: it cannot wait for itself)",
        ),
    ]
}

/// Prints the per-CPU table, where every packet went, the event counts, and a
/// sentence for every loss counter that is not zero.
pub fn print(run: &Run<'_>) {
    let s = run.config.subbuf_size;
    say!("writers: {}", run.write_path);
    say!("cpu     written overwritten   lost_full   lost_wrap    lost_big lost_nested");
    for (cpu, st) in run.stats.iter().enumerate() {
        say!(
            "{cpu:>3} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            st.write.div_ceil(s),
            st.overrun,
            st.lost_full,
            st.lost_wrap,
            st.lost_big,
            st.lost_nested,
        );
    }
    let written = run.stats.iter().map(|st| st.write.div_ceil(s)).sum();
    let overwritten = run.stats.iter().map(|st| st.overrun).sum();
    packets(run, written, overwritten);
    let losses = run.stats.iter().fold(Stats::default(), |mut t, st| {
        t.lost_full += st.lost_full;
        t.lost_wrap += st.lost_wrap;
        t.lost_big += st.lost_big;
        t.lost_nested += st.lost_nested;
        t.lost_fenced += st.lost_fenced;
        t
    });
    let lost = losses.events_discarded();
    say!(
        "attempted {} events, committed {}, lost {lost} (dropped, never written)",
        run.attempted,
        run.committed
    );
    let secs = run.elapsed.as_secs_f64();
    say!(
        "{:.2} M events/s committed over {secs:.2} s",
        run.committed as f64 / secs / 1e6
    );
    if lost == 0 {
        say!("no event lost");
    }
    for (name, value, meaning) in counters(&losses) {
        if value > 0 {
            say!("  {name} {value}: {meaning}");
        }
    }
    if let Some(path) = run.trace {
        say!("view the trace: babeltrace2 {}", path.display());
    }
}

/// Where the `written` packets went: each one is in the trace, in a SIGUSR1
/// snapshot, overwritten, or left to other readers.
fn packets(run: &Run<'_>, written: u64, overwritten: u64) {
    let (snapshots, in_snapshots) = run.snapshots;
    let mut parts = Vec::new();
    let mut accounted = in_snapshots + overwritten;
    if let Some(exported) = run.exported {
        let mb = exported.bytes as f64 / 1e6;
        let what = if run.flight_recorder {
            "final snapshot"
        } else {
            "trace"
        };
        let place = match (run.trace, run.relayd) {
            (Some(path), false) => format!("in the {what} {}", path.display()),
            (Some(path), true) => format!("in the {what} {} and to the relayd", path.display()),
            (None, _) => String::from("exported to the relayd"),
        };
        parts.push(format!("{} {place} ({mb:.1} MB)", exported.packets));
        accounted += exported.packets;
    }
    if snapshots > 0 {
        parts.push(format!("{in_snapshots} in {snapshots} SIGUSR1 snapshots"));
    }
    if overwritten > 0 {
        parts.push(format!("{overwritten} overwritten before anyone read them"));
    }
    if written > accounted {
        let rest = written - accounted;
        parts.push(match run.exported {
            None => format!("{rest} left to other readers (--no-export)"),
            // Only when a final flush failed (a warning said so).
            Some(_) => format!("{rest} not exported"),
        });
    }
    say!("packets: {written} written = {}", parts.join(" + "));
    if overwritten > 0 {
        say!(
            "  overwritten: overwrite mode keeps the newest packets; the oldest gave way \
             to them (babeltrace2 shows the gaps as discarded packets)"
        );
    }
    if run.flight_recorder && run.exported.is_some() {
        if snapshots > 0 {
            say!(
                "  the final snapshot holds what was written after the last SIGUSR1 \
                 snapshot: a snapshot takes the packets it exports"
            );
        } else {
            say!(
                "  the final snapshot holds the newest packets, up to {} per CPU (the \
                 buffers' capacity)",
                run.config.subbuf_count
            );
        }
    }
}
