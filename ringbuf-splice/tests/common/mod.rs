//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod numbered;
pub mod text;

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// What babeltrace2 read in a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Event messages.
    pub events: u64,
    /// Packet messages (packet end messages).
    pub packets: u64,
    /// Events the tracer says it discarded: the sum of the counts of every
    /// discarded-events message (the deltas of the packets' `events_discarded`).
    pub discarded: u64,
}

/// babeltrace2's event count and warnings (stderr) for `dir`, after checking it
/// read the trace without error; `None` when babeltrace2 is missing outside CI.
pub fn babeltrace_count(dir: &Path) -> Option<(u64, String)> {
    let (stdout, stderr) = babeltrace(dir, &["-c", "sink.utils.counter", "-p", "step=+0"])?;
    Some((counter(&stdout, "Event message"), stderr))
}

/// babeltrace2's counts for `dir` (see [`babeltrace_count`]). The counter sink
/// only counts discarded-events messages, not the events in them, so when there
/// are some the trace is read a second time through the text sink, whose warnings
/// give each message's count (slow: it formats every event).
pub fn babeltrace_counts(dir: &Path) -> Option<Counts> {
    let (stdout, _) = babeltrace(dir, &["-c", "sink.utils.counter", "-p", "step=+0"])?;
    let mut counts = Counts {
        events: counter(&stdout, "Event message"),
        packets: counter(&stdout, "Packet end message"),
        discarded: 0,
    };
    if counter(&stdout, "Discarded event message") > 0 {
        let (_, warnings) = babeltrace(dir, &[])?;
        // "WARNING: Tracer discarded 5895 events between [...]" ("1 event").
        counts.discarded = warnings
            .lines()
            .filter_map(|l| l.split("Tracer discarded ").nth(1)?.split(' ').next())
            .map(|n| n.parse::<u64>().expect("a count"))
            .sum();
    }
    Some(counts)
}

/// Runs `babeltrace2 DIR ARGS`; returns stdout (unless the text sink, whose event
/// lines go nowhere) and stderr.
fn babeltrace(dir: &Path, args: &[&str]) -> Option<(String, String)> {
    let stdout = if args.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let out = match Command::new("babeltrace2")
        .arg(dir)
        .args(args)
        .stdout(stdout)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED babeltrace2 check: {e}");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && !stderr.contains("ERROR"),
        "babeltrace2: {stderr}"
    );
    Some((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}

/// The `N <what>s` line of the counter sink (`1 <what>` when there is one).
fn counter(stdout: &str, what: &str) -> u64 {
    stdout
        .lines()
        .find(|l| l.trim_end().trim_end_matches('s').ends_with(what))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
