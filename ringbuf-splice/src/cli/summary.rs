//! The report at the end of `ringbuf record`: per-CPU packets and losses, and
//! what each loss counter that moved means, in words.

use std::time::Duration;

use ringbuf_core::Stats;

use super::out::say;

/// What a run did.
pub struct Run<'a> {
    /// Every buffer's counters, after the final flush.
    pub stats: &'a [Stats],
    /// Bytes per sub-buffer.
    pub subbuf_size: u64,
    /// Events the writers tried to write.
    pub attempted: u64,
    /// Events written.
    pub committed: u64,
    /// From the start to the end of the export.
    pub elapsed: Duration,
}

/// Each loss counter: its name, its value, and what it means.
fn counters(s: &Stats) -> [(&'static str, u64, &'static str); 4] {
    [
        (
            "lost_full",
            s.lost_full,
            "events dropped because the buffer was full: its reader was behind the \
             writers (lower --rate, or use more or larger sub-buffers)",
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
    ]
}

/// Prints the per-CPU table, the event counts, and a sentence for every loss
/// counter that is not zero.
pub fn print(run: &Run<'_>) {
    say!("cpu     packets   lost_full   lost_wrap    lost_big lost_nested     overrun");
    for (cpu, s) in run.stats.iter().enumerate() {
        say!(
            "{cpu:>3} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            s.write.div_ceil(run.subbuf_size),
            s.lost_full,
            s.lost_wrap,
            s.lost_big,
            s.lost_nested,
            s.overrun
        );
    }
    let total = run.stats.iter().fold(Stats::default(), |mut t, s| {
        t.lost_full += s.lost_full;
        t.lost_wrap += s.lost_wrap;
        t.lost_big += s.lost_big;
        t.lost_nested += s.lost_nested;
        t
    });
    let lost = total.events_discarded();
    say!(
        "attempted {} events, committed {}, lost {lost}",
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
    for (name, value, meaning) in counters(&total) {
        if value > 0 {
            say!("  {name} {value}: {meaning}");
        }
    }
}
