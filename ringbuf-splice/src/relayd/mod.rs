//! Streaming to an unmodified `lttng-relayd` (lttng-tools 2.11 and later; checked
//! against 2.13), the daemon that collects traces from many hosts, writes them as
//! CTF trace directories and serves live viewers
//! (`babeltrace2 --input-format=lttng-live`, Trace Compass).
//!
//! A producer holds two TCP connections: *control* (commands, each answered) and
//! *data* (packets). [`Relayd::connect`] negotiates protocol 2.13 (both sides use
//! the lower of the minors they announce; this client needs 2.11 or later),
//! creates the session (with a live timer when it is live), its trace chunk, one
//! stream per buffer (`stream_<n>`, as in a trace directory) plus the `metadata`
//! stream, sends the metadata and says "streams sent", which shows the streams to
//! live viewers. [`Relayd::send`] then sends each packet on the data connection
//! (a 32-byte header, the packet's content copied from the consumer's mapping
//! by [`crate::export::Splicer::export`]; the relayd writes the zero padding
//! itself) and its index entry on the control connection, which the relayd needs
//! to pair with the data before it writes the packet's index and shows it to
//! viewers. [`Relayd::finish`] waits until the relayd has written everything,
//! closes every stream and both connections: viewers then reach the end.
//!
//! What the relayd requires of a producer, and how it is met:
//!
//! * a non-nil producer uuid in `CREATE_SESSION` (a random one per session);
//! * session and host names that are path-safe (not empty, no `/`, not starting
//!   with `.`): checked before connecting, with a typed error;
//! * a trace chunk before any stream, every stream in it, the metadata stream
//!   named `metadata`;
//! * an index entry per packet (the relayd keeps packets without one in memory);
//!   the CTF stream class id in it never changes within a stream (babeltrace2's
//!   live reader asserts it);
//! * for live viewers: a packet on every stream before they show anything (they
//!   merge streams by time, so each stream must say how far it is), and then
//!   fresh times on idle streams. The relayd's "beacons" (an index entry with no
//!   packet, claiming a stream is idle up to a time) are not used: a beacon time
//!   must never be later than an event still to come, and a writer preempted
//!   between reading the clock and reserving can still commit an earlier event
//!   after any time a consumer picks. The export loop closes idle buffers with
//!   header-only packets instead ([`crate::export_loop`]): their time comes from
//!   the engine, which moves the reserve position, so an older reservation fails
//!   and takes a later time (time follows positions).
//!
//! A relayd that is down, dies or stalls never blocks writers (they never wait for
//! the consumer) and blocks the consumer at most the timeout per call: the first
//! failure ends the session, [`Relayd::failure`] says why, and every later packet
//! is counted unsent ([`RelaydStats`]). There is no reconnection (lttng's
//! consumers do not resume a session either).

mod address;
mod client;
pub mod protocol;

use std::net::SocketAddr;
use std::time::Duration;

pub use address::{RelaydAddress, DEFAULT_CONTROL_PORT, DEFAULT_DATA_PORT, DEFAULT_LIVE_PORT};
pub use client::{hostname, Relayd, RelaydOptions, RelaydStats};

/// Why streaming to a relayd failed.
#[derive(Debug)]
pub enum RelaydError {
    /// The URL is not `net://HOST[:CONTROL_PORT[:DATA_PORT]]`.
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host name does not resolve.
    Resolve {
        /// The host.
        host: String,
        /// Why.
        error: std::io::Error,
    },
    /// A connection could not be made.
    Connect {
        /// `control` or `data`.
        port: &'static str,
        /// The address tried last.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The session or host name cannot name a directory on the relayd.
    Name {
        /// `session name` or `host name`.
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The relayd speaks a protocol this client does not.
    Version {
        /// Its major version.
        major: u32,
        /// Its minor version.
        minor: u32,
    },
    /// The relayd answered a command with an error code.
    Refused {
        /// The command (lttng-tools' name).
        command: &'static str,
        /// The code (`LTTNG_OK` is 10).
        code: u32,
    },
    /// A reply or a value does not fit the protocol.
    Protocol {
        /// The command.
        command: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Sending or receiving failed.
    Io {
        /// What was being done.
        what: String,
        /// Why.
        error: std::io::Error,
    },
    /// The relayd did not take or answer in time.
    Timeout {
        /// What was being done.
        what: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The session is over (after a failure or [`Relayd::finish`]).
    Closed,
}

impl std::fmt::Display for RelaydError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url { url, why } => write!(f, "relayd URL {url:?}: {why}"),
            Self::Resolve { host, error } => write!(f, "resolving {host}: {error}"),
            Self::Connect {
                port,
                address,
                error,
            } => write!(f, "connecting to the {port} port {address}: {error}"),
            Self::Name { what, name, why } => {
                write!(f, "{what} {name:?} cannot name a relayd directory: {why}")
            }
            Self::Version { major, minor } => write!(
                f,
                "the relayd speaks protocol {major}.{minor}; this client needs 2.{} or later",
                protocol::MIN_MINOR
            ),
            Self::Refused { command, code } => {
                write!(f, "the relayd refused {command} (code {code})")
            }
            Self::Protocol { command, why } => write!(f, "{command}: {why}"),
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Timeout { what, timeout } => {
                write!(f, "{what}: no progress within {timeout:?}")
            }
            Self::Closed => f.write_str("the relayd session is over"),
        }
    }
}

impl std::error::Error for RelaydError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Resolve { error, .. } | Self::Connect { error, .. } | Self::Io { error, .. } => {
                Some(error)
            }
            _ => None,
        }
    }
}
