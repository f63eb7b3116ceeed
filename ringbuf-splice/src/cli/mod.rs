//! The `ringbuf` command line.

mod args;
mod commands;
mod memory;
mod out;
mod record;
mod relayd;
mod signals;
mod summary;

use out::{say, tell};

/// Format tag of CTF channels made by the CLI (and `synthetic_producer --ctf`).
pub const CTF_FORMAT: u32 = 1;
/// The trace uuid of `ringbuf record` traces.
pub const UUID: [u8; 16] = *b"ringbuf-record!!";

const HELP: &str = "\
ringbuf: a lock-free per-CPU trace ring buffer, and tools for its traces.

Usage: ringbuf <command> [options]    (ringbuf <command> --help for its options)

Commands:
  record     run a synthetic multi-threaded workload into per-CPU shared-memory
             buffers and write a CTF trace directory (live export, zero-copy)
  consume    attach to the buffers of another process and export them live
  snapshot   dump the current content of another process's buffers
  recover    turn the buffer file of a crashed producer into a trace
  stat       the counters of a channel's buffers: written, read, lost by cause

consume, snapshot, recover and stat read per-CPU and per-thread channels.

Traces are CTF 1.8 directories: read them with `babeltrace2 DIR`.
";

/// A subcommand: its arguments in, an error message out.
type Command = fn(&[String]) -> Result<(), String>;

/// `ringbuf --help`.
fn overview(_: &[String]) -> Result<(), String> {
    say!("{}", HELP.trim_end());
    Ok(())
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let Some(command) = args.first() else {
        tell!("{}", HELP.trim_end());
        return 2;
    };
    let rest = &args[1..];
    let (run, help): (Command, &str) = match command.as_str() {
        "record" => (record::run, record::HELP),
        "consume" => (commands::consume, commands::CONSUME_HELP),
        "snapshot" => (commands::snapshot, commands::SNAPSHOT_HELP),
        "recover" => (commands::recover, commands::RECOVER_HELP),
        "stat" => (commands::stat, commands::STAT_HELP),
        "-h" | "--help" | "help" => (overview, HELP),
        other => {
            tell!("error: unknown command {other:?}\n\n{HELP}");
            return 2;
        }
    };
    let result = if rest.iter().any(|a| a == "--help" || a == "-h") {
        say!("{}", help.trim_end());
        Ok(())
    } else {
        run(rest)
    };
    match result {
        // Nothing was wrong but the output was cut (`ringbuf stat | head -1`).
        Ok(()) if out::cut() => 1,
        Ok(()) => 0,
        Err(e) => {
            tell!("error: {e}\n(see `ringbuf {command} --help`)");
            1
        }
    }
}
