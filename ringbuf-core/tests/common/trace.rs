//! CTF trace directories written from core buffers, and babeltrace2 to read them.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringbuf_core::ctf::PacketInfo;
use ringbuf_core::{Buffer, Client, Clock, Mapped, Switch};

/// A fresh (absent) directory for a trace.
pub fn trace_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-core-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Flushes `buf` and writes `dir` with `metadata` and stream file `stream_0` of
/// every packet in it, each `packet_size` bytes long (as babeltrace2 wants).
pub fn write_trace<C: Mapped, K: Client, T: Clock>(
    dir: &Path,
    metadata: &str,
    buf: &Buffer<C, K, T>,
) {
    buf.switch(Switch::Flush).unwrap();
    std::fs::create_dir(dir).unwrap();
    std::fs::write(dir.join("metadata"), metadata).unwrap();
    let mut stream = Vec::new();
    let mut reader = buf.reader().unwrap();
    while let Ok(sub) = reader.get_next_subbuf() {
        let bytes = reader.bytes(&sub).unwrap();
        let info = PacketInfo::parse(bytes).unwrap();
        stream.extend_from_slice(&bytes[..info.packet_size as usize]);
        reader.put_next_subbuf(sub);
    }
    std::fs::write(dir.join("stream_0"), stream).unwrap();
}

/// babeltrace2's text lines for `dir` (`--no-delta`, timestamps in cycles), or
/// `None` when babeltrace2 is missing and we may skip (not under CI).
pub fn babeltrace(dir: &Path) -> Option<Vec<String>> {
    let out = match Command::new("babeltrace2")
        .args(["--clock-cycles", "--no-delta"])
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: babeltrace2 not runnable ({e}); install it to run this test");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "babeltrace2 failed on {dir:?}: {stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    Some(stdout.lines().map(str::to_owned).collect())
}

/// Whether babeltrace2 reads `dir` without error (`None` when it is missing and
/// we may skip).
pub fn babeltrace_accepts(dir: &Path) -> Option<bool> {
    match Command::new("babeltrace2").arg(dir).output() {
        Ok(out) => Some(out.status.success()),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: babeltrace2 not runnable ({e}); install it to run this test");
            None
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    }
}

/// babeltrace2's `sink.text.details` output for `dir` (the trace class, its
/// environment included), or `None` when babeltrace2 is missing and we may skip.
pub fn babeltrace_details(dir: &Path) -> Option<String> {
    let out = match Command::new("babeltrace2")
        .args(["-c", "sink.text.details"])
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: babeltrace2 not runnable ({e}); install it to run this test");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "babeltrace2 failed on {dir:?}: {stderr}"
    );
    Some(String::from_utf8(out.stdout).unwrap())
}
