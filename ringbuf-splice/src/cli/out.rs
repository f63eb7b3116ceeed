//! Everything the CLI prints goes through here. A closed pipe (`ringbuf stat |
//! head -1`) ends the printing, not the command: a recording still completes and
//! cleans up, and the exit status says the output was cut. Progress lines rewrite
//! themselves only on a terminal.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write failed.
static CUT: AtomicBool = AtomicBool::new(false);

/// Writes `args` to `w`; a failure (EPIPE: the reader went away) drops the text
/// and is remembered for the exit status. Never a panic.
pub fn emit(mut w: impl Write, args: fmt::Arguments<'_>) {
    if w.write_fmt(args).and_then(|()| w.flush()).is_err() {
        // Relaxed: read by the main thread after the command returned.
        CUT.store(true, Ordering::Relaxed);
    }
}

/// Whether some output could not be written.
pub fn cut() -> bool {
    CUT.load(Ordering::Relaxed)
}

/// `println!` that survives a closed stdout (see [`emit`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out::emit(::std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that survives a closed stderr (see [`emit`]).
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::cli::out::emit(::std::io::stderr(), format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {say, tell};

/// A progress line on stderr: rewritten in place on a terminal, one line per
/// update otherwise (a log file gets no carriage returns).
pub struct Progress {
    tty: bool,
    open: bool,
}

impl Progress {
    /// Progress on stderr.
    pub fn new() -> Self {
        // SAFETY: isatty has no preconditions.
        let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
        Self { tty, open: false }
    }

    /// Shows `args` as the current progress.
    pub fn show(&mut self, args: fmt::Arguments<'_>) {
        if self.tty {
            emit(io::stderr(), format_args!("\r{args}   "));
            self.open = true;
        } else {
            emit(io::stderr(), format_args!("{args}\n"));
        }
    }

    /// Ends the line being rewritten, if any, before other output.
    pub fn end(&mut self) {
        if std::mem::take(&mut self.open) {
            emit(io::stderr(), format_args!("\n"));
        }
    }
}

/// `bytes` in the largest binary unit that keeps a number of at least 1.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(super::bytes(1000), "1000 bytes");
        assert_eq!(super::bytes(64 << 10), "64.0 KiB");
        assert_eq!(super::bytes(3 << 29), "1.5 GiB");
        assert_eq!(super::bytes(u64::MAX), "16384.0 PiB");
    }
}
