//! The wire format of lttng-relayd's control and data connections, as lttng-tools
//! 2.11 to 2.13 define it (`src/common/sessiond-comm/relayd.h`): message layouts,
//! their encoding and the decoding of replies. No I/O here.
//!
//! Every integer is big-endian and every structure packed. A control command is a
//! 24-byte header (`circuit_id` u64, always 0; `data_size` u64, the payload's
//! length; `cmd` u32; `cmd_version` u32, always 0) and its payload; a data packet
//! is a 32-byte header and the packet's content (see [`data_header`]).

/// The protocol's major version: the relayd refuses any other.
pub const MAJOR: u32 = 2;
/// The minor version announced: that of the relayd this client was checked
/// against. Both sides then use the lower of the two announced minors.
pub const MINOR: u32 = 13;
/// The oldest minor whose message layouts this client writes (variable-length
/// names, trace chunks, 80-byte indexes); older relayds use other layouts.
pub const MIN_MINOR: u32 = 11;

/// The relayd's success code (`LTTNG_OK`).
pub const LTTNG_OK: u32 = 10;

/// Bytes of a control command header.
pub const COMMAND_HEADER: usize = 24;
/// Bytes of a data packet header.
pub const DATA_HEADER: usize = 32;
/// The largest control payload a relayd accepts
/// (`DEFAULT_NETWORK_RELAYD_CTRL_MAX_PAYLOAD_SIZE`).
pub const MAX_CONTROL_PAYLOAD: usize = 128 << 20;
/// The longest session name, in bytes (`LTTNG_NAME_MAX`, its NUL included).
pub const MAX_SESSION_NAME: usize = 254;
/// The longest host name, in bytes (`LTTNG_HOST_NAME_MAX`, its NUL included).
pub const MAX_HOSTNAME: usize = 255;
/// The longest stream path, in bytes (`LTTNG_NAME_MAX`, its NUL included).
pub const MAX_STREAM_PATH: usize = 254;
/// The longest stream (channel) name, in bytes (`DEFAULT_STREAM_NAME_LEN`, its
/// NUL included).
pub const MAX_STREAM_NAME: usize = 263;
/// The channel name that makes a stream the trace's metadata stream.
pub const METADATA_CHANNEL: &str = "metadata";

/// The control commands this client sends (`enum lttcomm_relayd_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    /// Announce a stream; the reply carries its handle.
    AddStream = 1,
    /// Create the session; the reply carries its id and output path.
    CreateSession = 2,
    /// Negotiate the protocol version.
    Version = 5,
    /// Append metadata text to the metadata stream (no reply).
    SendMetadata = 6,
    /// Close a stream once its last packet arrived.
    CloseStream = 7,
    /// Whether a stream's packets up to a sequence number are written.
    DataPending = 8,
    /// The index entry of one packet (or a live beacon).
    SendIndex = 13,
    /// Publish the streams announced so far to live viewers.
    StreamsSent = 16,
    /// Create the trace chunk (directory) streams are written into.
    CreateTraceChunk = 19,
}

impl Command {
    /// The name lttng-tools gives the command, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddStream => "ADD_STREAM",
            Self::CreateSession => "CREATE_SESSION",
            Self::Version => "VERSION",
            Self::SendMetadata => "SEND_METADATA",
            Self::CloseStream => "CLOSE_STREAM",
            Self::DataPending => "DATA_PENDING",
            Self::SendIndex => "SEND_INDEX",
            Self::StreamsSent => "STREAMS_SENT",
            Self::CreateTraceChunk => "CREATE_TRACE_CHUNK",
        }
    }
}

/// A message being encoded: big-endian integers and raw bytes appended in order.
struct Message(Vec<u8>);

impl Message {
    /// A command with room for a payload of `payload` bytes; its header's
    /// `data_size` is filled in by [`Message::finish`].
    fn command(cmd: Command, payload: usize) -> Self {
        let mut m = Self(Vec::with_capacity(COMMAND_HEADER + payload));
        m.u64(0).u64(0).u32(cmd as u32).u32(0);
        m
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    /// A NUL-terminated string.
    fn cstr(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes()).u8(0)
    }

    /// The encoded command, its payload length written into the header.
    fn finish(mut self) -> Vec<u8> {
        let payload = (self.0.len() - COMMAND_HEADER) as u64;
        self.0[8..16].copy_from_slice(&payload.to_be_bytes());
        self.0
    }
}

/// The length of a NUL-terminated string, as the length fields count it.
fn cstr_len(s: &str) -> u32 {
    (s.len() + 1) as u32
}

/// `VERSION`: the versions this client speaks.
pub fn version() -> Vec<u8> {
    let mut m = Message::command(Command::Version, 8);
    m.u32(MAJOR).u32(MINOR);
    m.finish()
}

/// What `CREATE_SESSION` announces.
#[derive(Clone, Copy, Debug)]
pub struct NewSession<'a> {
    /// The session name (path-safe: not empty, no `/`, not starting with `.`).
    pub name: &'a str,
    /// The producing host's name (path-safe too).
    pub hostname: &'a str,
    /// The live timer in microseconds; 0 makes a session live viewers cannot
    /// attach to.
    pub live_timer_us: u32,
    /// The producer instance's uuid (a session daemon's, for LTTng): the relayd
    /// refuses the nil uuid, which it reserves for peers older than 2.11.
    pub producer_uuid: [u8; 16],
    /// The producer's own id for the session.
    pub session_id: u64,
    /// Seconds since the epoch: the relayd names the session's directory
    /// `<hostname>/<name>-<date>-<time>` after it.
    pub creation_time: u64,
}

/// `CREATE_SESSION` in the 2.11 layout: no base path, not a snapshot session, no
/// current trace chunk (one is created next, with [`create_trace_chunk`]).
pub fn create_session(s: &NewSession<'_>) -> Vec<u8> {
    let names = s.name.len() + s.hostname.len() + 3;
    let mut m = Message::command(Command::CreateSession, 59 + names);
    m.u32(cstr_len(s.name))
        .u32(cstr_len(s.hostname))
        .u32(1) // the empty base path, its NUL
        .u32(s.live_timer_us)
        .u8(0) // snapshot
        .u8(0) // the name does not contain the creation time
        .bytes(&s.producer_uuid)
        .u64(s.session_id)
        .u64(s.creation_time)
        .u8(0) // current_chunk_id: not set
        .u64(0)
        .cstr(s.name)
        .cstr(s.hostname)
        .cstr("");
    m.finish()
}

/// `CREATE_TRACE_CHUNK`: chunk `id`, named by the relayd (no override), created at
/// `creation_time` (seconds since the epoch). Before any rotation, a session's
/// first chunk is its output directory itself.
pub fn create_trace_chunk(id: u64, creation_time: u64) -> Vec<u8> {
    let mut m = Message::command(Command::CreateTraceChunk, 20);
    m.u64(id).u64(creation_time).u32(0);
    m.finish()
}

/// `ADD_STREAM` in the 2.11 layout: a stream written to `<path>/<channel>` in
/// trace chunk `chunk`, in one file (no size limit).
pub fn add_stream(channel: &str, path: &str, chunk: u64) -> Vec<u8> {
    let mut m = Message::command(Command::AddStream, 32 + channel.len() + path.len() + 2);
    m.u32(cstr_len(channel))
        .u32(cstr_len(path))
        .u64(0) // tracefile_size
        .u64(0) // tracefile_count
        .u64(chunk)
        .cstr(channel)
        .cstr(path);
    m.finish()
}

/// `SEND_METADATA`: `text` appended to the metadata stream `handle`.
pub fn send_metadata(handle: u64, text: &str) -> Vec<u8> {
    let mut m = Message::command(Command::SendMetadata, 12 + text.len());
    m.u64(handle).u32(0).bytes(text.as_bytes());
    m.finish()
}

/// `STREAMS_SENT`: every stream is announced; live viewers may see them.
pub fn streams_sent() -> Vec<u8> {
    Message::command(Command::StreamsSent, 0).finish()
}

/// One packet's index entry (`struct lttcomm_relayd_index`, index format 1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// The stream's relayd handle.
    pub stream: u64,
    /// The packet's sequence number on the data connection.
    pub net_seq: u64,
    /// The packet's size in bits, padding included; 0 makes the entry a live
    /// beacon.
    pub packet_size_bits: u64,
    /// Its content size in bits.
    pub content_size_bits: u64,
    /// `timestamp_begin`.
    pub timestamp_begin: u64,
    /// `timestamp_end` (a beacon's: the time up to which the stream is idle).
    pub timestamp_end: u64,
    /// The running total of events discarded.
    pub events_discarded: u64,
    /// The CTF stream class id: live viewers require it never to change within a
    /// stream.
    pub stream_class: u64,
    /// The stream instance (the buffer).
    pub stream_instance: u64,
    /// `packet_seq_num`.
    pub packet_seq: u64,
}

/// Bytes of an index entry (format 1.1, which protocol minors from 8 on use).
pub const INDEX_SIZE: usize = 80;

/// `SEND_INDEX`.
pub fn send_index(i: &Index) -> Vec<u8> {
    let mut m = Message::command(Command::SendIndex, INDEX_SIZE);
    m.u64(i.stream)
        .u64(i.net_seq)
        .u64(i.packet_size_bits)
        .u64(i.content_size_bits)
        .u64(i.timestamp_begin)
        .u64(i.timestamp_end)
        .u64(i.events_discarded)
        .u64(i.stream_class)
        .u64(i.stream_instance)
        .u64(i.packet_seq);
    m.finish()
}

/// The `last_net_seq` of a stream that sent `sent` packets: the sequence number
/// of its last one, or all ones (-1) when it sent none.
pub fn last_net_seq(sent: u64) -> u64 {
    sent.wrapping_sub(1)
}

/// `CLOSE_STREAM`: stream `handle` ends with packet `last_net_seq` (see
/// [`last_net_seq`]); the relayd closes it once that packet is written.
pub fn close_stream(handle: u64, last_net_seq: u64) -> Vec<u8> {
    let mut m = Message::command(Command::CloseStream, 16);
    m.u64(handle).u64(last_net_seq);
    m.finish()
}

/// `DATA_PENDING`: whether stream `handle`'s packets (data and index) up to
/// `last_net_seq` are not all written yet. The reply's code is 0 (written) or 1
/// (pending).
pub fn data_pending(handle: u64, last_net_seq: u64) -> Vec<u8> {
    let mut m = Message::command(Command::DataPending, 16);
    m.u64(handle).u64(last_net_seq);
    m.finish()
}

/// The header of a packet on the data connection: stream `handle`, its
/// `net_seq`-th packet (from 0), `content` bytes following, and `padding` zero
/// bytes that the relayd appends itself (so they never cross the network).
pub fn data_header(handle: u64, net_seq: u64, content: u32, padding: u32) -> [u8; DATA_HEADER] {
    let mut h = [0u8; DATA_HEADER];
    h[8..16].copy_from_slice(&handle.to_be_bytes());
    h[16..24].copy_from_slice(&net_seq.to_be_bytes());
    h[24..28].copy_from_slice(&content.to_be_bytes());
    h[28..32].copy_from_slice(&padding.to_be_bytes());
    h
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes of the reply to `VERSION`: the relayd's major and minor.
pub const VERSION_REPLY: usize = 8;

/// The relayd's `(major, minor)`.
pub fn parse_version(reply: &[u8; VERSION_REPLY]) -> (u32, u32) {
    (be_u32(reply, 0), be_u32(reply, 4))
}

/// Bytes of a generic reply: a return code.
pub const CODE_REPLY: usize = 4;

/// A generic reply's return code.
pub fn parse_code(reply: &[u8; CODE_REPLY]) -> u32 {
    be_u32(reply, 0)
}

/// Bytes of the fixed part of the reply to `CREATE_SESSION` (2.11 layout); the
/// output path's bytes follow.
pub const SESSION_REPLY: usize = 16;

/// The reply to `CREATE_SESSION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionReply {
    /// The relayd's id of the session.
    pub session_id: u64,
    /// Its return code.
    pub code: u32,
    /// Bytes of output path (NUL included) that follow.
    pub path_len: u32,
}

/// Decodes the fixed part of the reply to `CREATE_SESSION`.
pub fn parse_session(reply: &[u8; SESSION_REPLY]) -> SessionReply {
    SessionReply {
        session_id: be_u64(reply, 0),
        code: be_u32(reply, 8),
        path_len: be_u32(reply, 12),
    }
}

/// Bytes of the reply to `ADD_STREAM`: the stream's handle and a return code.
pub const STREAM_REPLY: usize = 12;

/// `(handle, code)` of the reply to `ADD_STREAM`.
pub fn parse_stream(reply: &[u8; STREAM_REPLY]) -> (u64, u32) {
    (be_u64(reply, 0), be_u32(reply, 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command header of `m`: (circuit, data_size, cmd, cmd_version).
    fn header(m: &[u8]) -> (u64, u64, u32, u32) {
        (be_u64(m, 0), be_u64(m, 8), be_u32(m, 16), be_u32(m, 20))
    }

    #[test]
    fn commands_carry_their_payload_length_and_number() {
        for (m, cmd, len) in [
            (version(), Command::Version, 8),
            (create_trace_chunk(0, 7), Command::CreateTraceChunk, 20),
            (streams_sent(), Command::StreamsSent, 0),
            (close_stream(3, 9), Command::CloseStream, 16),
            (data_pending(3, 9), Command::DataPending, 16),
            (
                send_index(&Index::default()),
                Command::SendIndex,
                INDEX_SIZE,
            ),
            (send_metadata(2, "abc"), Command::SendMetadata, 15),
        ] {
            assert_eq!(header(&m), (0, len as u64, cmd as u32, 0), "{}", cmd.name());
            assert_eq!(m.len(), COMMAND_HEADER + len, "{}", cmd.name());
        }
        assert_eq!(be_u32(&version(), 24), 2);
        assert_eq!(be_u32(&version(), 28), MINOR);
    }

    #[test]
    fn create_session_follows_the_2_11_layout() {
        let m = create_session(&NewSession {
            name: "s",
            hostname: "host",
            live_timer_us: 100_000,
            producer_uuid: [0xab; 16],
            session_id: 42,
            creation_time: 1_700_000_000,
        });
        let p = &m[COMMAND_HEADER..];
        // 59 bytes of fixed fields (`struct lttcomm_relayd_create_session_2_11`),
        // then "s\0host\0\0".
        assert_eq!(header(&m).1 as usize, p.len());
        assert_eq!(p.len(), 59 + 2 + 5 + 1);
        assert_eq!((be_u32(p, 0), be_u32(p, 4), be_u32(p, 8)), (2, 5, 1));
        assert_eq!(be_u32(p, 12), 100_000);
        assert_eq!((p[16], p[17]), (0, 0));
        assert_eq!(&p[18..34], &[0xab; 16]);
        assert_eq!(be_u64(p, 34), 42);
        assert_eq!(be_u64(p, 42), 1_700_000_000);
        assert_eq!(p[50], 0, "no current chunk");
        assert_eq!(&p[59..], b"s\0host\0\0");
    }

    #[test]
    fn add_stream_index_and_data_header_layouts() {
        let m = add_stream("stream_3", "ringbuf", 0);
        let p = &m[COMMAND_HEADER..];
        assert_eq!((be_u32(p, 0), be_u32(p, 4)), (9, 8));
        assert_eq!((be_u64(p, 8), be_u64(p, 16), be_u64(p, 24)), (0, 0, 0));
        assert_eq!(&p[32..], b"stream_3\0ringbuf\0");

        let index = Index {
            stream: 1,
            net_seq: 2,
            packet_size_bits: 3,
            content_size_bits: 4,
            timestamp_begin: 5,
            timestamp_end: 6,
            events_discarded: 7,
            stream_class: 8,
            stream_instance: 9,
            packet_seq: 10,
        };
        let m = send_index(&index);
        let fields: Vec<u64> = (0..10)
            .map(|i| be_u64(&m, COMMAND_HEADER + 8 * i))
            .collect();
        assert_eq!(fields, (1..=10).collect::<Vec<u64>>());

        let h = data_header(5, 6, 100, 3996);
        assert_eq!((be_u64(&h, 0), be_u64(&h, 8), be_u64(&h, 16)), (0, 5, 6));
        assert_eq!((be_u32(&h, 24), be_u32(&h, 28)), (100, 3996));

        let m = send_metadata(2, "/* CTF 1.8 */");
        assert_eq!((be_u64(&m, 24), be_u32(&m, 32)), (2, 0));
        assert_eq!(&m[36..], b"/* CTF 1.8 */");
        assert_eq!(last_net_seq(0), u64::MAX);
        assert_eq!(last_net_seq(5), 4);
    }

    #[test]
    fn replies_decode() {
        let mut v = [0u8; VERSION_REPLY];
        v[..4].copy_from_slice(&2u32.to_be_bytes());
        v[4..].copy_from_slice(&13u32.to_be_bytes());
        assert_eq!(parse_version(&v), (2, 13));
        assert_eq!(parse_code(&10u32.to_be_bytes()), LTTNG_OK);
        let mut s = [0u8; SESSION_REPLY];
        s[..8].copy_from_slice(&7u64.to_be_bytes());
        s[8..12].copy_from_slice(&10u32.to_be_bytes());
        s[12..].copy_from_slice(&20u32.to_be_bytes());
        assert_eq!(
            parse_session(&s),
            SessionReply {
                session_id: 7,
                code: 10,
                path_len: 20
            }
        );
        let mut r = [0u8; STREAM_REPLY];
        r[..8].copy_from_slice(&9u64.to_be_bytes());
        r[8..].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(parse_stream(&r), (9, 10));
    }
}
