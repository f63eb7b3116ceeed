//! A producer's session on a relayd: connecting and announcing the trace, one
//! packet at a time with its index entry, and the end of the session.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use ringbuf_mmap::{ExportedPacket, Shm};

use super::protocol::{self as wire, Command, Index};
use super::{RelaydAddress, RelaydError};
use crate::export::{write_all, Splicer};

/// The directory, under the session's, that holds the trace (the stream path of
/// every stream).
const TRACE_PATH: &str = "ringbuf";
/// The id of the session's only trace chunk.
const CHUNK_ID: u64 = 0;
/// How often [`Relayd::finish`] asks whether the relayd wrote everything.
const PENDING_POLL: Duration = Duration::from_millis(5);

/// How to announce the session.
#[derive(Clone, Debug)]
pub struct RelaydOptions {
    /// The session's name: live viewers open
    /// `net://RELAYD/host/<hostname>/<session>`, and the relayd writes the trace
    /// under `<hostname>/<session>-<date>-<time>/` in its output directory. Not
    /// empty, no `/`, not starting with `.`.
    pub session: String,
    /// The producing host's name (the same rules).
    pub hostname: String,
    /// `Some(period)`: a live session (viewers may attach while it runs), whose
    /// packets are closed this often; `None`: viewers cannot attach.
    pub live: Option<Duration>,
    /// The longest wait for a connection, a send, or a reply: a relayd that takes
    /// longer is given up (see [`Relayd::failure`]).
    pub timeout: Duration,
}

impl RelaydOptions {
    /// A live session `session` of this host, closing packets every `live`, with
    /// a 5-second timeout.
    pub fn new(session: &str, live: Option<Duration>) -> Self {
        Self {
            session: session.to_owned(),
            hostname: hostname(),
            live,
            timeout: Duration::from_secs(5),
        }
    }
}

/// This host's name, as `gethostname` gives it (`unknown` if it fails).
pub fn hostname() -> String {
    let mut host = [0u8; 256];
    // SAFETY: a valid buffer of its length; the name is NUL-terminated unless
    // truncated (handled below).
    let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    match ok {
        true => String::from_utf8_lossy(&host[..end]).into_owned(),
        false => String::from("unknown"),
    }
}

/// What a relayd got, and what it could not get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelaydStats {
    /// Packets the relayd acknowledged (their index entries were accepted).
    pub packets_sent: u64,
    /// Their bytes, padding included.
    pub bytes_sent: u64,
    /// Packets not sent because the connection was lost (or failed while sending
    /// them): the relayd's trace misses them, the local trace does not.
    pub packets_unsent: u64,
    /// Their bytes.
    pub bytes_unsent: u64,
}

/// One of the session's streams (one per buffer).
#[derive(Clone, Copy, Debug)]
struct Stream {
    /// The relayd's handle.
    handle: u64,
    /// Packets sent: the next packet's sequence number on the data connection.
    sent: u64,
}

/// The two connections to the relayd.
struct Link {
    control: TcpStream,
    data: TcpStream,
}

/// A session on a relayd, fed one packet at a time (see the module
/// documentation of [`crate::relayd`]).
///
/// Once a send, a reply or the connection fails, the session is over: the
/// connections are closed, [`Relayd::failure`] says why, and every later packet
/// is counted in [`RelaydStats::packets_unsent`]. Nothing here ever blocks longer
/// than the options' timeout per call.
pub struct Relayd {
    link: Option<Link>,
    address: RelaydAddress,
    options: RelaydOptions,
    timeout: Duration,
    minor: u32,
    session_id: u64,
    output_path: String,
    metadata: u64,
    streams: Vec<Stream>,
    stats: RelaydStats,
    failure: Option<RelaydError>,
}

impl std::fmt::Debug for Relayd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relayd")
            .field("address", &self.address)
            .field("session", &self.options.session)
            .field("connected", &self.link.is_some())
            .field("stats", &self.stats)
            .field("failure", &self.failure)
            .finish()
    }
}

/// Checks that `name` may name a directory on the relayd (its `is_name_path_safe`).
fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), RelaydError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.len() > max {
        Some("too long")
    } else {
        None
    };
    match why {
        Some(why) => Err(RelaydError::Name {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Connects to the first address of `addrs` that accepts within `timeout`.
fn connect(
    addrs: &[SocketAddr],
    port: &'static str,
    timeout: Duration,
) -> Result<TcpStream, RelaydError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(socket) => {
                let set = socket
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| socket.set_write_timeout(Some(timeout)))
                    .and_then(|()| socket.set_nodelay(true));
                return set.map(|()| socket).map_err(|error| RelaydError::Connect {
                    port,
                    address: *addr,
                    error,
                });
            }
            Err(error) => last = Some((*addr, error)),
        }
    }
    let (address, error) = last.expect("resolve gives at least one address");
    Err(RelaydError::Connect {
        port,
        address,
        error,
    })
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Relayd {
    /// Connects to the relayd at `address` and announces a session with `streams`
    /// data streams (named `stream_<n>`, as in a trace directory) and the trace's
    /// `metadata`; live viewers see the streams from now on.
    pub fn connect(
        address: &RelaydAddress,
        options: &RelaydOptions,
        metadata: &str,
        streams: u32,
    ) -> Result<Self, RelaydError> {
        check_name("session name", &options.session, wire::MAX_SESSION_NAME)?;
        check_name("host name", &options.hostname, wire::MAX_HOSTNAME)?;
        if metadata.len() + 12 > wire::MAX_CONTROL_PAYLOAD {
            return Err(RelaydError::Protocol {
                command: Command::SendMetadata.name(),
                why: format!(
                    "{} bytes of metadata are more than a relayd accepts",
                    metadata.len()
                ),
            });
        }
        let timeout = options.timeout;
        // The data connection first: a relayd that refuses it gets no session.
        let data = connect(&address.resolve(address.data)?, "data", timeout)?;
        let control = connect(&address.resolve(address.control)?, "control", timeout)?;
        let mut relayd = Self {
            link: Some(Link { control, data }),
            address: address.clone(),
            options: options.clone(),
            timeout,
            minor: wire::MINOR,
            session_id: 0,
            output_path: String::new(),
            metadata: 0,
            streams: Vec::with_capacity(streams as usize),
            stats: RelaydStats::default(),
            failure: None,
        };
        relayd.announce(metadata, streams)?;
        Ok(relayd)
    }

    /// The session's setup, in the order the relayd requires: version, session,
    /// trace chunk, streams, metadata, then "streams sent".
    fn announce(&mut self, metadata: &str, streams: u32) -> Result<(), RelaydError> {
        let mut version = [0u8; wire::VERSION_REPLY];
        self.request(Command::Version, &wire::version(), &mut version)?;
        let (major, minor) = wire::parse_version(&version);
        if major != wire::MAJOR || minor < wire::MIN_MINOR {
            return Err(RelaydError::Version { major, minor });
        }
        self.minor = minor.min(wire::MINOR);

        let live_timer_us = match self.options.live {
            // At least 1 µs: 0 would make the session not live.
            Some(period) => period.as_micros().clamp(1, u32::MAX as u128) as u32,
            None => 0,
        };
        let session = wire::create_session(&wire::NewSession {
            name: &self.options.session,
            hostname: &self.options.hostname,
            live_timer_us,
            producer_uuid: crate::session::new_uuid(),
            session_id: u64::from(std::process::id()),
            creation_time: unix_now(),
        });
        let mut reply = [0u8; wire::SESSION_REPLY];
        self.request(Command::CreateSession, &session, &mut reply)?;
        let reply = wire::parse_session(&reply);
        if reply.path_len as usize > 4096 {
            return Err(self.malformed(Command::CreateSession, "an output path over 4096 bytes"));
        }
        let mut path = vec![0u8; reply.path_len as usize];
        self.receive(Command::CreateSession, &mut path)?;
        Self::expect_ok(Command::CreateSession, reply.code)?;
        self.session_id = reply.session_id;
        self.output_path =
            String::from_utf8_lossy(path.strip_suffix(&[0]).unwrap_or(&path)).into_owned();

        self.expect_code(
            Command::CreateTraceChunk,
            &wire::create_trace_chunk(CHUNK_ID, unix_now()),
        )?;
        self.metadata = self.add_stream(wire::METADATA_CHANNEL)?;
        for n in 0..streams {
            let handle = self.add_stream(&format!("stream_{n}"))?;
            self.streams.push(Stream { handle, sent: 0 });
        }
        // No reply: the relayd reads the text and goes on (a failure closes the
        // connection, which the next command sees).
        self.send_control(
            Command::SendMetadata,
            &wire::send_metadata(self.metadata, metadata),
        )?;
        self.expect_code(Command::StreamsSent, &wire::streams_sent())
    }

    fn add_stream(&mut self, channel: &str) -> Result<u64, RelaydError> {
        let mut reply = [0u8; wire::STREAM_REPLY];
        let message = wire::add_stream(channel, TRACE_PATH, CHUNK_ID);
        self.request(Command::AddStream, &message, &mut reply)?;
        let (handle, code) = wire::parse_stream(&reply);
        Self::expect_ok(Command::AddStream, code)?;
        Ok(handle)
    }

    fn link(&self) -> Result<&Link, RelaydError> {
        self.link.as_ref().ok_or(RelaydError::Closed)
    }

    /// An I/O error while doing `what`, a timeout said as such.
    fn io(&self, what: String, error: std::io::Error) -> RelaydError {
        match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => RelaydError::Timeout {
                what,
                timeout: self.timeout,
            },
            _ => RelaydError::Io { what, error },
        }
    }

    fn malformed(&self, command: Command, why: &str) -> RelaydError {
        RelaydError::Protocol {
            command: command.name(),
            why: why.to_owned(),
        }
    }

    fn send_control(&self, command: Command, message: &[u8]) -> Result<(), RelaydError> {
        write_all(&self.link()?.control, message)
            .map_err(|e| self.io(format!("sending {}", command.name()), e))
    }

    fn receive(&self, command: Command, reply: &mut [u8]) -> Result<(), RelaydError> {
        let mut control = &self.link()?.control;
        control.read_exact(reply).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => RelaydError::Io {
                what: format!("waiting for the reply to {}", command.name()),
                error: std::io::Error::new(e.kind(), "the relayd closed the connection"),
            },
            _ => self.io(format!("waiting for the reply to {}", command.name()), e),
        })
    }

    /// Sends a control command and reads its fixed-size reply.
    fn request(
        &self,
        command: Command,
        message: &[u8],
        reply: &mut [u8],
    ) -> Result<(), RelaydError> {
        self.send_control(command, message)?;
        self.receive(command, reply)
    }

    /// Sends a control command whose reply is a return code; returns the code.
    fn code(&self, command: Command, message: &[u8]) -> Result<u32, RelaydError> {
        let mut reply = [0u8; wire::CODE_REPLY];
        self.request(command, message, &mut reply)?;
        Ok(wire::parse_code(&reply))
    }

    /// Sends a control command whose reply must be `LTTNG_OK`.
    fn expect_code(&self, command: Command, message: &[u8]) -> Result<(), RelaydError> {
        Self::expect_ok(command, self.code(command, message)?)
    }

    fn expect_ok(command: Command, code: u32) -> Result<(), RelaydError> {
        match code {
            wire::LTTNG_OK => Ok(()),
            code => Err(RelaydError::Refused {
                command: command.name(),
                code,
            }),
        }
    }

    /// Sends packet `packet` of buffer `stream` (its content, by the copy rule of
    /// [`Splicer::export`], then its index entry). When it returns, nothing
    /// references the packet's pages. A failure ends the session (see
    /// [`Relayd::failure`]); the packet is counted unsent.
    pub fn send(
        &mut self,
        splicer: &mut Splicer,
        shm: &Shm,
        stream: u32,
        packet: &ExportedPacket<'_>,
    ) {
        let bytes = packet.info.packet_size;
        let sent = self.link.is_some() && {
            let result = self.send_packet(splicer, shm, stream, packet);
            if let Err(e) = result {
                self.fail(e);
            }
            self.link.is_some()
        };
        if sent {
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += bytes;
        } else {
            self.stats.packets_unsent += 1;
            self.stats.bytes_unsent += bytes;
        }
    }

    fn send_packet(
        &mut self,
        splicer: &mut Splicer,
        shm: &Shm,
        stream: u32,
        packet: &ExportedPacket<'_>,
    ) -> Result<(), RelaydError> {
        let info = &packet.info;
        let Some(&Stream { handle, sent }) = self.streams.get(stream as usize) else {
            return Err(RelaydError::Protocol {
                command: "data",
                why: format!(
                    "buffer {stream} has no stream (the session has {})",
                    self.streams.len()
                ),
            });
        };
        // Checked by `PacketInfo`: content <= packet <= the sub-buffer.
        let (content, padding) = (info.content_size, info.packet_size - info.content_size);
        let (Ok(content32), Ok(padding32)) = (u32::try_from(content), u32::try_from(padding))
        else {
            return Err(RelaydError::Protocol {
                command: "data",
                why: format!(
                    "a packet of {} bytes is more than a relayd accepts",
                    info.packet_size
                ),
            });
        };
        let what = || format!("sending packet {} of stream {stream}", info.seq);
        let data = &self.link()?.data;
        write_all(data, &wire::data_header(handle, sent, content32, padding32))
            .and_then(|()| splicer.export(shm, packet.offset, content as usize, data.as_fd()))
            .map_err(|e| self.io(what(), e))?;
        let index = Index {
            stream: handle,
            net_seq: sent,
            packet_size_bits: info.packet_size * 8,
            content_size_bits: content * 8,
            timestamp_begin: info.timestamp_begin,
            timestamp_end: info.timestamp_end,
            events_discarded: info.events_discarded,
            stream_class: u64::from(info.stream_id),
            stream_instance: u64::from(stream),
            packet_seq: info.seq,
        };
        self.expect_code(Command::SendIndex, &wire::send_index(&index))?;
        self.streams[stream as usize].sent += 1;
        Ok(())
    }

    /// Ends the session: waits (up to the timeout) until the relayd has written
    /// every packet sent, closes every stream and both connections. Live viewers
    /// then reach the end of each stream. Does nothing once the session failed.
    pub fn finish(&mut self) {
        if self.link.is_none() {
            return;
        }
        if let Err(e) = self.close_streams() {
            self.fail(e);
        }
        self.link = None;
    }

    fn close_streams(&mut self) -> Result<(), RelaydError> {
        let deadline = Instant::now() + self.timeout;
        for s in self.streams.clone() {
            let last = wire::last_net_seq(s.sent);
            if s.sent > 0 {
                self.wait_written(s.handle, last, deadline)?;
            }
            self.expect_code(Command::CloseStream, &wire::close_stream(s.handle, last))?;
        }
        // The metadata stream had no packets on the data connection.
        let close = wire::close_stream(self.metadata, wire::last_net_seq(0));
        self.expect_code(Command::CloseStream, &close)
    }

    /// Waits until the relayd has written stream `handle`'s packets (data and
    /// index) up to `last`, or `deadline` passes.
    fn wait_written(&self, handle: u64, last: u64, deadline: Instant) -> Result<(), RelaydError> {
        loop {
            match self.code(Command::DataPending, &wire::data_pending(handle, last))? {
                0 => return Ok(()),
                1 if Instant::now() < deadline => std::thread::sleep(PENDING_POLL),
                1 => {
                    return Err(RelaydError::Timeout {
                        what: format!("waiting for the relayd to write stream {handle}"),
                        timeout: self.timeout,
                    })
                }
                code => {
                    return Err(RelaydError::Refused {
                        command: Command::DataPending.name(),
                        code,
                    })
                }
            }
        }
    }

    /// Appends `text` to the relayd's metadata stream (event classes registered
    /// while the producer runs), before the packets that use them. A failure ends
    /// the session, as for a packet.
    pub fn append_metadata(&mut self, text: &str) {
        if self.link.is_none() {
            return;
        }
        let message = wire::send_metadata(self.metadata, text);
        if let Err(e) = self.send_control(Command::SendMetadata, &message) {
            self.fail(e);
        }
    }

    /// Records the first failure and closes the connections.
    fn fail(&mut self, error: RelaydError) {
        self.failure.get_or_insert(error);
        self.link = None;
    }

    /// Why the session ended early, if it did.
    pub fn failure(&self) -> Option<&RelaydError> {
        self.failure.as_ref()
    }

    /// Why the session ended early, if it did, taking the error.
    pub fn into_failure(self) -> Option<RelaydError> {
        self.failure
    }

    /// Whether packets still go to the relayd.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Whether this is a live session whose packets still go to the relayd: live
    /// viewers are waiting for every stream to advance.
    pub fn is_live(&self) -> bool {
        self.options.live.is_some() && self.is_connected()
    }

    /// What the relayd got so far.
    pub fn stats(&self) -> RelaydStats {
        self.stats
    }

    /// The relayd.
    pub fn address(&self) -> &RelaydAddress {
        &self.address
    }

    /// The session's name and host name.
    pub fn options(&self) -> &RelaydOptions {
        &self.options
    }

    /// The protocol minor version in use (2.`minor`).
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// Where the relayd writes the session, relative to its output directory
    /// (`<hostname>/<session>-<date>-<time>`); the trace is in its `ringbuf`
    /// subdirectory.
    pub fn output_path(&self) -> &str {
        &self.output_path
    }

    /// The URL of the session for live viewers (see
    /// [`RelaydAddress::viewer_url`]).
    pub fn viewer_url(&self) -> String {
        self.address
            .viewer_url(&self.options.hostname, &self.options.session)
    }

    /// The relayd's id of the session.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }
}
