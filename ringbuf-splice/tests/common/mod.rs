//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod numbered;

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// babeltrace2's event count and warnings (stderr) for `dir`, after checking it
/// read the trace without error; `None` when babeltrace2 is missing outside CI.
pub fn babeltrace_count(dir: &Path) -> Option<(u64, String)> {
    let out = match Command::new("babeltrace2")
        .arg(dir)
        .args(["-c", "sink.utils.counter", "-p", "step=+0"])
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
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("Event messages"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some((events, stderr))
}
