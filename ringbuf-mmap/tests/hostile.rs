//! Hostile shared memory fed to the consumer (docs/ARCHITECTURE.md, design §6, §8 and §9).
//!
//! The consumer maps a file that anyone with write access to it may change at any
//! moment, or truncate. It must answer with typed errors: never a panic (debug
//! builds' overflow checks included), never undefined behaviour, never a hang,
//! never a dead process.
//!
//! * Static corruption: a real channel is written, then thousands of copies of its
//!   file get random words of the channel header, metadata, region headers, control
//!   words and data rewritten with a deterministic PRNG (xorshift, seed overridable
//!   with `HOSTILE_SEED`), sometimes truncated or extended; each copy is attached,
//!   drained, its packets parsed, and crash recovery is run over it. The same for
//!   CTF channels, exported without copies.
//! * The writer's side: real writers, switches and discards over corrupt words
//!   (positions near 2^64 above all): the producer reads the same words, and the
//!   consumer's `switch_all` runs the writer's paths.
//! * Targeted corruption: one field at a time, each giving the expected error; a
//!   writer faking deliveries ahead of the reader cannot hold `drain` or `export`.
//! * Concurrent malice: a thread maps the live file and keeps rewriting words while
//!   a real writer writes events and consumers attach, drain and parse.
//! * Truncation: the file shrinks under an attached, draining consumer, which then
//!   reports `Truncated` (the SIGBUS guard) and goes on living.
//!
//! Every scenario runs under a watchdog: a hang fails the test instead of blocking.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::mem::offset_of;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use ringbuf_core::ctf::{Ctf, PacketInfo};
use ringbuf_core::id::SubbufId;
use ringbuf_core::{
    Buffer, Config, ConfigError, Control, Field, Flavour, Layout, LossWords, Mode, Nesting,
    NoClock, RawPacket, RawRecords, ReadError, ReaderWords, Region, RegionError, RegionHeader,
    SharedWord, SlotWords, Switch, WriterWords, ENDIAN_TAG,
};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{
    Backing, BackingError, ChannelClock, ChannelError, ChannelHeader, ChannelImage, ChannelLayout,
    ChannelOptions, ClockError, ConsumeError, ExportError, ExportedPacket, PerCpuChannel,
    PerCpuConsumer, CHANNEL_VERSION,
};

const S: u64 = 4096;
const N: u64 = 4;
const BUFFERS: u32 = 2;
const FORMAT: u32 = 0;
const EVENT: u32 = 7;
const METADATA: &str = "/* CTF 1.8 */\ntrace { major = 1; minor = 8; byte_order = le; };\n";
/// Copies attached and drained per mode.
const ITERATIONS: u32 = 1500;
/// Longest any scenario may take before it counts as a hang.
const WATCHDOG: Duration = Duration::from_secs(30);
/// Phases of concurrent malice, each on a fresh channel: a warm-up, then malice.
const PHASES: u64 = 5;
const WARMUP: Duration = Duration::from_millis(30);
const MALICE: Duration = Duration::from_millis(300);

type Consumer = PerCpuConsumer<RawRecords, NoClock>;
type Channel = PerCpuChannel<RawRecords, NoClock>;

// ---------------------------------------------------------------------------------
// Plumbing: PRNG, files, watchdog.

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_5eed)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// Writes `bytes` to a new file `path` of mode 0600 (replacing any old one).
/// Writes `bytes` to `dir/copy` and opens it read-write (for a hostile writer).
fn writable_copy(dir: &Path, bytes: &[u8]) -> (PathBuf, File) {
    let path = dir.join("copy");
    write_file(&path, bytes);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (path, file)
}

fn write_file(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Runs `f` on its own thread; a scenario that does not finish within [`WATCHDOG`]
/// is a hang and fails the test (the stuck thread dies with the test process).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let value = f();
        let _ = tx.send(());
        value
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung for {WATCHDOG:?}"),
    }
}

fn attach(path: &Path) -> Result<Consumer, ChannelError> {
    PerCpuConsumer::attach_path(path, FORMAT, |_| RawRecords, |_| NoClock)
}

fn get(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn put32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn check(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0xdead_beef
}

/// Event payload: `seq`, its checksum, and the buffer it was written to.
fn payload(buffer: usize, seq: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p[8..16].copy_from_slice(&check(seq).to_le_bytes());
    p[16..].copy_from_slice(&(buffer as u64).to_le_bytes());
    p
}

/// The name of an enum variant from its `Debug` output.
fn variant(debug: String) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn channel_kind(e: &ChannelError) -> String {
    match e {
        ChannelError::Backing(b) => format!("Backing/{}", variant(format!("{b:?}"))),
        ChannelError::Config(c) => format!("Config/{}", variant(format!("{c:?}"))),
        ChannelError::Region { error, .. } => format!("Region/{}", variant(format!("{error:?}"))),
        ChannelError::BadHeader(why) => format!("BadHeader({why})"),
        ChannelError::BadLayout(why) => format!("BadLayout({why})"),
        ChannelError::BadMetadata(_) => "BadMetadata".into(),
        ChannelError::MetadataFull { .. } => "MetadataFull".into(),
        ChannelError::BufferCount(_) => "BufferCount".into(),
        ChannelError::Clock(c) => format!("Clock/{}", variant(format!("{c:?}"))),
    }
}

fn consume_kind(e: &ConsumeError) -> String {
    match e {
        ConsumeError::ReaderBusy { .. } => "ReaderBusy".into(),
        ConsumeError::Corrupt { error, .. } => format!("Corrupt/{}", variant(format!("{error:?}"))),
        ConsumeError::Truncated => "Truncated".into(),
    }
}

// ---------------------------------------------------------------------------------
// The channel and where its parts lie.

fn config(mode: Mode) -> Config {
    Config::new(S, N, mode)
}

fn create(dir: &Path, name: &str, mode: Mode) -> Channel {
    let options = ChannelOptions {
        config: config(mode),
        buffers: BUFFERS,
        format: FORMAT,
        prefault: false,
        clock: Monotonic.describe(),
    };
    PerCpuChannel::create(
        Backing::File { dir, name },
        &options,
        METADATA,
        |_| RawRecords,
        |_| NoClock,
    )
    .unwrap()
}

/// Events written to each buffer by [`fill`]: discard mode stays within one lap,
/// overwrite mode laps the buffer.
fn events(mode: Mode, buffer: usize) -> u64 {
    match mode {
        Mode::Discard => [300, 340][buffer],
        Mode::Overwrite => [1000, 1100][buffer],
    }
}

/// Writes [`events`] to each buffer, then closes buffer 1's open packet.
fn fill(channel: &Channel, mode: Mode) {
    let nest = Nesting::new();
    for (b, buffer) in channel.buffers().iter().enumerate() {
        for seq in 0..events(mode, b) {
            buffer.write(&nest, EVENT, &payload(b, seq)).unwrap();
        }
    }
    channel.buffers()[1].switch(Switch::Active).unwrap();
}

/// A channel file written by a real producer, which then went away.
fn make_image(dir: &Path, mode: Mode) -> Vec<u8> {
    let channel = create(dir, "image", mode);
    fill(&channel, mode);
    let path = channel.path().unwrap().to_owned();
    drop(channel);
    std::fs::read(path).unwrap()
}

/// Offsets of everything in a channel file of this test's configuration.
struct Map {
    mode: Mode,
    channel: ChannelLayout,
    region: Layout,
    /// Every control word of every region: (absolute offset, name).
    words: Vec<(usize, String)>,
}

impl Map {
    fn new(mode: Mode) -> Self {
        let config = config(mode);
        let channel = ChannelLayout::new(&config, BUFFERS, METADATA.len() as u64).unwrap();
        let region = Layout::new(&config).unwrap();
        type Slot = SlotWords<SharedWord, SharedWord>;
        let groups: [(usize, &[(&str, usize)]); 3] = [
            (
                region.writer,
                &[
                    ("write", offset_of!(WriterWords<SharedWord>, write)),
                    (
                        "last_ts",
                        offset_of!(WriterWords<SharedWord>, last_timestamp),
                    ),
                ],
            ),
            (
                region.losses,
                &[
                    ("lost_full", offset_of!(LossWords<SharedWord>, full)),
                    ("lost_wrap", offset_of!(LossWords<SharedWord>, wrap)),
                    ("lost_big", offset_of!(LossWords<SharedWord>, big)),
                    ("lost_nested", offset_of!(LossWords<SharedWord>, nested)),
                    ("overrun", offset_of!(LossWords<SharedWord>, overrun)),
                ],
            ),
            (
                region.reader,
                &[
                    ("consumed", offset_of!(ReaderWords<SharedWord>, consumed)),
                    ("spare", offset_of!(ReaderWords<SharedWord>, spare)),
                    ("attached", offset_of!(ReaderWords<SharedWord>, attached)),
                ],
            ),
        ];
        let slot_words = [
            ("commit", offset_of!(Slot, commit)),
            ("delivered", offset_of!(Slot, delivered)),
            ("prefix", offset_of!(Slot, prefix)),
            ("end_ts", offset_of!(Slot, end_ts)),
            ("content", offset_of!(Slot, content)),
            ("discarded", offset_of!(Slot, discarded)),
            ("id", offset_of!(Slot, id)),
        ];
        let mut map = Self {
            mode,
            channel,
            region,
            words: Vec::new(),
        };
        for r in 0..BUFFERS as usize {
            let base = map.region_at(r);
            for (group, words) in groups {
                for (name, at) in words {
                    map.words.push((base + group + at, format!("r{r}.{name}")));
                }
            }
            for slot in 0..N as usize {
                for (name, at) in slot_words {
                    let at = base + region.slots + slot * region.slot_stride + at;
                    map.words.push((at, format!("r{r}.{name}[{slot}]")));
                }
            }
        }
        map
    }

    fn region_at(&self, r: usize) -> usize {
        (self.channel.regions_offset + self.channel.region_stride * r as u64) as usize
    }
    fn physical(&self) -> u64 {
        config(self.mode).physical_count()
    }
    fn reader_word(&self, r: usize, at: usize) -> usize {
        self.region_at(r) + self.region.reader + at
    }
    fn consumed(&self, r: usize) -> usize {
        self.reader_word(r, offset_of!(ReaderWords<SharedWord>, consumed))
    }
    fn spare(&self, r: usize) -> usize {
        self.reader_word(r, offset_of!(ReaderWords<SharedWord>, spare))
    }
    fn attached(&self, r: usize) -> usize {
        self.reader_word(r, offset_of!(ReaderWords<SharedWord>, attached))
    }
    fn write(&self, r: usize) -> usize {
        self.region_at(r) + self.region.writer + offset_of!(WriterWords<SharedWord>, write)
    }
    fn slot_word(&self, r: usize, slot: usize, at: usize) -> usize {
        self.region_at(r) + self.region.slots + slot * self.region.slot_stride + at
    }
    fn delivered(&self, r: usize, slot: usize) -> usize {
        self.slot_word(
            r,
            slot,
            offset_of!(SlotWords<SharedWord, SharedWord>, delivered),
        )
    }
    fn id(&self, r: usize, slot: usize) -> usize {
        self.slot_word(r, slot, offset_of!(SlotWords<SharedWord, SharedWord>, id))
    }
    fn region_field(&self, r: usize, at: usize) -> usize {
        self.region_at(r) + at
    }

    /// A random place to corrupt: (area, offset of an 8-byte word, or of one byte
    /// for "metadata").
    fn pick(&self, rng: &mut Rng) -> (&'static str, usize, String) {
        let r = rng.below(BUFFERS as u64) as usize;
        match rng.below(100) {
            0..=9 => {
                let at = rng.below((size_of::<ChannelHeader>() / 8) as u64) as usize * 8;
                ("channel header", at, format!("chan+{at}"))
            }
            10..=13 => {
                let at = 4096 + rng.below(METADATA.len() as u64) as usize;
                ("metadata", at, format!("meta+{}", at - 4096))
            }
            14..=25 => {
                let at = rng.below((size_of::<RegionHeader>() / 8) as u64) as usize * 8;
                (
                    "region header",
                    self.region_at(r) + at,
                    format!("r{r}.hdr+{at}"),
                )
            }
            26..=75 => {
                let (at, name) = &self.words[rng.below(self.words.len() as u64) as usize];
                ("control", *at, name.clone())
            }
            _ => {
                let phys = rng.below(self.physical()) as usize;
                let off = if rng.chance(50) {
                    rng.below(RawRecords::PACKET_HEADER as u64 / 8) as usize * 8
                } else {
                    rng.below(S / 8) as usize * 8
                };
                let at = self.region_at(r) + self.region.data + phys * S as usize + off;
                ("data", at, format!("r{r}.data[{phys}]+{off}"))
            }
        }
    }
}

/// A hostile value for a word that held `old`: extremes, bit flips, near misses of
/// positions and commit counts, plausible sub-buffer ids, or noise.
fn value(rng: &mut Rng, old: u64, name: &str) -> u64 {
    let k = 1 + rng.below(2 * N + 2);
    match rng.below(14) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - rng.below(2 * S),
        3 => old ^ (1 << rng.below(64)),
        4 => old.wrapping_add(k * S),
        5 => old.wrapping_sub(k * S),
        6 => old.wrapping_add(1 + rng.below(64)),
        7 => 1 << rng.below(64),
        8 => rng.below(1 << 20),
        9 => (old & !0xffff_ffff) | (rng.next() & 0xffff_ffff),
        10 => (old & 0xffff_ffff) | (rng.next() << 32),
        11 if name.contains(".id[") || name.contains("spare") => {
            let lap = rng.below(8);
            let phys = rng.below(N + 3);
            match rng.below(3) {
                0 => SubbufId::delivered(lap, phys).raw(),
                1 => SubbufId::referenced(lap, phys).raw(),
                _ => phys,
            }
        }
        11 => (old & !(S - 1)).wrapping_add(rng.below(2) * S + rng.below(2)),
        12 => (old & !0xffff_ffff) | u64::from(ringbuf_core::ctf::CTF_MAGIC),
        _ => rng.next(),
    }
}

// ---------------------------------------------------------------------------------
// Consuming and counting.

/// What happened, by kind.
#[derive(Default, Debug)]
struct Tally {
    attached: u64,
    refused: u64,
    refusals: BTreeMap<String, u64>,
    drains_ok: u64,
    drain_errors: BTreeMap<String, u64>,
    packets: u64,
    packets_parsed: u64,
    packets_unparsed: u64,
    records_intact: u64,
    records_other: u64,
    records_bad: u64,
    recovered: u64,
    recovery_refused: u64,
}

impl Tally {
    fn refusal(&mut self, e: &ChannelError) {
        self.refused += 1;
        *self.refusals.entry(channel_kind(e)).or_default() += 1;
    }

    /// Checks one drained packet copy: whatever its bytes, parsing answers Ok or Err.
    fn packet(&mut self, bytes: &[u8]) {
        assert_eq!(
            bytes.len() as u64,
            S,
            "a packet copy is one whole sub-buffer"
        );
        self.packets += 1;
        match RawPacket::parse(bytes) {
            Ok(packet) => {
                self.packets_parsed += 1;
                assert!(packet.content_size as usize <= bytes.len());
                for record in packet.records() {
                    match record {
                        Ok((EVENT, p)) if p.len() == 24 && check(le(p, 0)) == le(p, 8) => {
                            self.records_intact += 1
                        }
                        Ok((_, p)) => {
                            assert!(p.len() <= bytes.len());
                            self.records_other += 1
                        }
                        Err(_) => self.records_bad += 1,
                    }
                }
            }
            Err(_) => self.packets_unparsed += 1,
        }
    }

    /// Drains every buffer of `consumer` `rounds` times; `truncation_possible`
    /// says whether `Truncated` is a legitimate answer.
    fn drain_all(&mut self, consumer: &Consumer, rounds: u32, truncation_possible: bool) {
        let mut scratch = Vec::new();
        for _ in 0..rounds {
            for cpu in 0..consumer.buffer_count() {
                let mut copies = Vec::new();
                let result = consumer.drain(cpu, &mut scratch, |b| copies.push(b.to_vec()));
                for copy in &copies {
                    self.packet(copy);
                }
                match result {
                    Ok(n) => {
                        assert_eq!(n, copies.len());
                        assert!(n as u64 <= N, "one drain reads at most one buffer's worth");
                        self.drains_ok += 1;
                    }
                    Err(e) => {
                        assert!(
                            truncation_possible || e != ConsumeError::Truncated,
                            "Truncated, but the file was never truncated"
                        );
                        if let ConsumeError::ReaderBusy { buffer }
                        | ConsumeError::Corrupt { buffer, .. } = e
                        {
                            assert_eq!(buffer, cpu);
                        }
                        *self.drain_errors.entry(consume_kind(&e)).or_default() += 1;
                    }
                }
                let _ = consumer.stats(cpu);
            }
        }
        // Out of range: nothing, not a panic.
        assert_eq!(consumer.drain(BUFFERS + 7, &mut scratch, |_| {}), Ok(0));
    }

    fn merge(&mut self, other: Tally) {
        self.attached += other.attached;
        self.refused += other.refused;
        for (k, v) in other.refusals {
            *self.refusals.entry(k).or_default() += v;
        }
        self.drains_ok += other.drains_ok;
        for (k, v) in other.drain_errors {
            *self.drain_errors.entry(k).or_default() += v;
        }
        self.packets += other.packets;
        self.packets_parsed += other.packets_parsed;
        self.packets_unparsed += other.packets_unparsed;
        self.records_intact += other.records_intact;
        self.records_other += other.records_other;
        self.records_bad += other.records_bad;
        self.recovered += other.recovered;
        self.recovery_refused += other.recovery_refused;
    }
}

fn le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Crash recovery reads the same hostile bytes (from a private copy): it must
/// answer too.
fn recover(path: &Path, tally: &mut Tally) {
    match ChannelImage::read(path) {
        Ok(mut image) => match image.recover(|_, packet| {
            assert!(packet.len() as u64 <= S);
            Ok(())
        }) {
            Ok(_) => tally.recovered += 1,
            Err(_) => tally.recovery_refused += 1,
        },
        Err(_) => tally.recovery_refused += 1,
    }
}

// ---------------------------------------------------------------------------------
// 1. Static corruption: random.

/// Corrupts a copy of a channel file: 1 to 4 words, sometimes a truncation or an
/// extension. Returns what it did.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, map: &Map) -> String {
    let mut log = String::new();
    for _ in 0..1 + rng.below(4) {
        let (area, at, name) = map.pick(rng);
        if area == "metadata" {
            let b = rng.next() as u8;
            write!(log, "{name}: {:#x}->{b:#x}; ", bytes[at]).unwrap();
            bytes[at] = b;
            continue;
        }
        let old = get(bytes, at);
        let new = value(rng, old, &name);
        put(bytes, at, new);
        write!(log, "{name}: {old:#x}->{new:#x}; ").unwrap();
    }
    match rng.below(100) {
        0..=4 => {
            let len = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(len);
            write!(log, "truncated to {len}").unwrap();
        }
        5..=9 => {
            let len = rng.below(bytes.len() as u64 / 4096) as usize * 4096;
            bytes.truncate(len);
            write!(log, "truncated to page {len}").unwrap();
        }
        10..=14 => {
            let more = 1 + rng.below(3 * 4096) as usize;
            bytes.resize(bytes.len() + more, 0);
            write!(log, "extended by {more}").unwrap();
        }
        _ => {}
    }
    log
}

/// Attaches, drains and recovers one corrupt copy.
fn one_copy(path: &Path, tally: &mut Tally) {
    match attach(path) {
        Ok(consumer) => {
            tally.attached += 1;
            assert_eq!(consumer.buffer_count(), BUFFERS);
            tally.drain_all(&consumer, 2, false);
        }
        Err(e) => tally.refusal(&e),
    }
    recover(path, tally);
}

fn static_fuzz(mode: Mode) -> Tally {
    let dir = temp_dir(&format!("static-{mode:?}"));
    let original = make_image(&dir, mode);
    let map = Map::new(mode);
    assert_eq!(original.len() as u64, map.channel.size);
    let seed = seed() ^ mode as u64;
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let path = dir.join("copy");

    // The untouched copy reads back exactly what was written.
    write_file(&path, &original);
    pristine(&attach(&path).unwrap(), mode);

    for iteration in 0..ITERATIONS {
        let mut bytes = original.clone();
        let what = mutate(&mut rng, &mut bytes, &map);
        write_file(&path, &bytes);
        let mut one = Tally::default();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one_copy(&path, &mut one)));
        if let Err(panic) = outcome {
            let keep = std::env::temp_dir().join(format!(
                "ringbuf-hostile-{mode:?}-seed{seed}-iteration{iteration}.bin"
            ));
            std::fs::copy(&path, &keep).unwrap();
            eprintln!("{mode:?} iteration {iteration}: {what}\n  input kept in {keep:?}");
            std::panic::resume_unwind(panic);
        }
        tally.merge(one);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    tally
}

/// Drains an untouched copy: the records written, in order, intact.
fn pristine(consumer: &Consumer, mode: Mode) {
    let mut scratch = Vec::new();
    for b in 0..BUFFERS {
        let mut seqs = Vec::new();
        let n = consumer
            .drain(b, &mut scratch, |bytes| {
                let packet = RawPacket::parse(bytes).unwrap();
                for record in packet.records() {
                    let (id, p) = record.unwrap();
                    assert_eq!((id, p.len()), (EVENT, 24));
                    assert_eq!(le(p, 8), check(le(p, 0)));
                    assert_eq!(le(p, 16), b as u64);
                    seqs.push(le(p, 0));
                }
            })
            .unwrap();
        // 126 records of 32 bytes per 4096-byte packet (48 bytes of header). Discard:
        // the open packet is not readable (buffer 0) or was switched (buffer 1).
        // Overwrite: writers pushed the reader to one lap behind the open packet.
        let (packets, first, end) = match (mode, b) {
            (Mode::Discard, 0) => (2, 0, 252),
            (Mode::Discard, _) => (3, 0, 340),
            (Mode::Overwrite, 0) => (3, 504, 882),
            (Mode::Overwrite, _) => (4, 630, 1100),
        };
        assert_eq!(n, packets, "{mode:?} buffer {b}");
        assert_eq!(
            seqs,
            (first..end).collect::<Vec<_>>(),
            "{mode:?} buffer {b}"
        );
        let stats = consumer.stats(b).unwrap();
        assert_eq!(
            stats.write.div_ceil(S),
            events(mode, b as usize).div_ceil(126)
        );
    }
}

fn report(what: &str, tally: &Tally) {
    eprintln!("{what}: {tally:#?}");
}

#[test]
fn random_corruption_of_a_channel_file_gives_typed_errors_in_both_modes() {
    let tally = within("static fuzz", || {
        let mut tally = static_fuzz(Mode::Discard);
        let overwrite = static_fuzz(Mode::Overwrite);
        report("static fuzz, overwrite mode", &overwrite);
        tally.merge(overwrite);
        tally
    });
    report("static fuzz, both modes", &tally);
    assert_eq!(tally.attached + tally.refused, 2 * ITERATIONS as u64);
    assert!(tally.attached > 100, "{tally:?}");
    assert!(tally.refused > 100, "{tally:?}");
    assert!(
        tally.drains_ok > 0 && !tally.drain_errors.is_empty(),
        "{tally:?}"
    );
    assert!(
        tally.packets_parsed > 0 && tally.packets_unparsed > 0,
        "{tally:?}"
    );
    assert!(tally.records_intact > 0, "{tally:?}");
    // Refusals come from every layer: the file, the channel header, the regions.
    for layer in ["Backing/", "BadHeader(", "BadLayout(", "Region/"] {
        assert!(
            tally.refusals.keys().any(|k| k.starts_with(layer)),
            "no {layer} refusal: {:?}",
            tally.refusals
        );
    }
}

// ---------------------------------------------------------------------------------
// 1a. CTF channels: zero-copy export and crash recovery read the same bytes.

type CtfConsumer = PerCpuConsumer<Ctf, NoClock>;
const CTF_FORMAT: u32 = 1;

/// A CTF channel file written by a real producer, which then went away.
fn ctf_image(dir: &Path, mode: Mode) -> Vec<u8> {
    let options = ChannelOptions {
        config: config(mode),
        buffers: BUFFERS,
        format: CTF_FORMAT,
        prefault: false,
        clock: Monotonic.describe(),
    };
    let backing = Backing::File { dir, name: "ctf" };
    let client = |cpu| Ctf::new(*b"hostile-ringbuf!", cpu);
    let channel = PerCpuChannel::create(backing, &options, METADATA, client, |_| NoClock).unwrap();
    let nest = Nesting::new();
    for (b, buffer) in channel.buffers().iter().enumerate() {
        for seq in 0..events(mode, b) {
            let _ = buffer.write(&nest, EVENT, &payload(b, seq));
        }
    }
    channel.buffers()[1].switch(Switch::Active).unwrap();
    let path = channel.path().unwrap().to_owned();
    drop(channel);
    std::fs::read(path).unwrap()
}

fn attach_ctf(path: &Path) -> Result<CtfConsumer, ChannelError> {
    PerCpuConsumer::attach_path(path, CTF_FORMAT, |cpu| Ctf::new([0; 16], cpu), |_| NoClock)
}

/// Exports (both ways) and drains every buffer: whatever the bytes, the packets
/// handed out lie inside the file and their sub-buffer, and at most one buffer's
/// worth comes per call.
fn export_all(consumer: &CtfConsumer, file_len: u64, tally: &mut Tally) {
    for cpu in 0..consumer.buffer_count() {
        for snapshot in [false, true] {
            let mut handed = 0;
            let check = |p: ExportedPacket<'_>| {
                assert!(p.info.packet_size <= S, "{:?}", p.info);
                assert!(p.offset.is_multiple_of(S) && p.offset + S <= file_len);
                handed += 1;
                Ok(())
            };
            let result = if snapshot {
                consumer.export_snapshot(cpu, check)
            } else {
                consumer.export(cpu, check)
            };
            match result {
                Ok(n) => {
                    assert_eq!(n, handed);
                    assert!(n as u64 <= N);
                    tally.drains_ok += 1;
                    tally.packets += n as u64;
                }
                Err(e) => {
                    let kind = match &e {
                        ExportError::Consume(c) => consume_kind(c),
                        other => variant(format!("{other:?}")),
                    };
                    *tally
                        .drain_errors
                        .entry(format!("export/{kind}"))
                        .or_default() += 1;
                }
            }
        }
        let mut scratch = Vec::new();
        let mut parsed = 0;
        let drained = consumer.drain(cpu, &mut scratch, |bytes| {
            if let Ok(info) = PacketInfo::parse(bytes) {
                assert!(info.packet_size <= S);
                parsed += 1;
            }
        });
        if let Ok(n) = drained {
            assert!(parsed <= n);
            tally.packets_parsed += parsed as u64;
        }
    }
}

/// Random corruption of CTF channel files, attached and exported, then recovered.
fn ctf_fuzz(mode: Mode) -> Tally {
    let dir = temp_dir(&format!("ctf-{mode:?}"));
    let original = ctf_image(&dir, mode);
    let map = Map::new(mode);
    let path = dir.join("copy");
    let mut rng = Rng::new(seed() ^ 0xc7f ^ mode as u64);
    let mut tally = Tally::default();
    // The untouched copy recovers and exports its packets.
    write_file(&path, &original);
    let mut image = ChannelImage::read(&path).unwrap();
    let report = image.recover(|_, _| Ok(())).unwrap();
    assert!(report.complete > 0 && report.partial > 0, "{report:?}");
    let mut pristine = Tally::default();
    export_all(
        &attach_ctf(&path).unwrap(),
        original.len() as u64,
        &mut pristine,
    );
    assert!(
        pristine.packets > 0 && pristine.drain_errors.is_empty(),
        "{pristine:?}"
    );
    for _ in 0..ITERATIONS / 3 {
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes, &map);
        write_file(&path, &bytes);
        match attach_ctf(&path) {
            Ok(consumer) => {
                tally.attached += 1;
                export_all(&consumer, bytes.len() as u64, &mut tally);
            }
            Err(e) => tally.refusal(&e),
        }
        recover(&path, &mut tally);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    tally
}

#[test]
fn random_corruption_of_a_ctf_channel_under_export_and_recovery() {
    let tally = within("ctf fuzz", || {
        let mut tally = ctf_fuzz(Mode::Discard);
        tally.merge(ctf_fuzz(Mode::Overwrite));
        tally
    });
    report("CTF channels: export and recovery", &tally);
    assert!(tally.attached > 50 && tally.refused > 50, "{tally:?}");
    assert!(tally.packets > 0 && tally.recovered > 0, "{tally:?}");
}

/// A hostile writer that keeps forging the next packet (copying the current one's
/// header ahead and marking it delivered) cannot keep `export` from returning (nor
/// get its forgeries exported: their sequence numbers are wrong).
#[test]
fn a_writer_that_keeps_delivering_cannot_hold_export() {
    within("endless export", || {
        let mode = Mode::Discard;
        let dir = temp_dir("endless-export");
        let original = ctf_image(&dir, mode);
        let map = Map::new(mode);
        let (path, file) = writable_copy(&dir, &original);
        let consumer = attach_ctf(&path).unwrap();
        let geo = config(mode).validate().unwrap();
        let data = map.region_at(0) + map.region.data;
        for snapshot in [false, true] {
            let mut handed = 0u64;
            let forge = |p: ExportedPacket<'_>| {
                handed += 1;
                if handed > 10_000 {
                    return Ok(()); // give up, so the assertion below reports it
                }
                // Discard mode: the packet being exported is at `consumed`.
                let mut word = [0u8; 8];
                file.read_exact_at(&mut word, map.consumed(0) as u64)?;
                let next = u64::from_ne_bytes(word) + S;
                let mut packet = vec![0u8; S as usize];
                file.read_exact_at(&mut packet, p.offset)?;
                let to = data + geo.slot(next) * S as usize;
                file.write_all_at(&packet, to as u64)?;
                let delivered = geo.full_commit(next).to_ne_bytes();
                file.write_all_at(&delivered, map.delivered(0, geo.slot(next)) as u64)
            };
            let n = if snapshot {
                consumer.export_snapshot(0, forge)
            } else {
                consumer.export(0, forge)
            };
            // It returns: with at most a buffer's worth, or refusing a forged packet
            // (a copy carries the sequence number of the one it was copied from).
            assert!(
                handed <= N
                    && matches!(n, Ok(k) if k as u64 <= N)
                        | matches!(n, Err(ExportError::Inconsistent { .. })),
                "export read {handed} packets in one call ({n:?})"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// The file is cut while `export` hands out a packet: that call and every later one
/// report the truncation, as for `drain`.
#[test]
fn a_cut_during_an_export_is_reported() {
    within("cut in export", || {
        let mode = Mode::Overwrite;
        let dir = temp_dir("cut-in-export");
        let original = ctf_image(&dir, mode);
        let path = dir.join("copy");
        write_file(&path, &original);
        let consumer = attach_ctf(&path).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let result = consumer.export(1, |_| file.set_len(0));
        assert!(
            matches!(result, Err(ExportError::Consume(ConsumeError::Truncated))),
            "{result:?}"
        );
        for cpu in [1, 0] {
            let again = consumer.export(cpu, |_| panic!("exported after the cut"));
            assert!(
                matches!(again, Err(ExportError::Consume(ConsumeError::Truncated))),
                "{again:?}"
            );
            assert_eq!(
                consumer.drain(cpu, &mut Vec::new(), |_| panic!("read after the cut")),
                Err(ConsumeError::Truncated)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

// ---------------------------------------------------------------------------------
// 1b. The writer's side of corrupt words.

/// Writers, a switch, discards and a reader, all in this process, over a copy of a
/// region whose words are corrupt: the producer's buffers read the same words a
/// hostile process rewrites, and the consumer's `switch_all` runs the writer's
/// paths too. `first` picks what runs first, while the words are as given (see
/// [`FIRST_OPS`]). Returns whether the region attached.
fn writers_over(region_bytes: &[u8], first: u64, tally: &mut Tally) -> bool {
    let mut words = vec![0u64; region_bytes.len().div_ceil(8)];
    // SAFETY: `words` is plain memory of at least `region_bytes.len()` bytes, 8-byte
    // aligned, borrowed only through `mem` from here on.
    let mem = unsafe {
        std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), region_bytes.len())
    };
    mem.copy_from_slice(region_bytes);
    let region = match Region::attach(mem, FORMAT) {
        Ok(region) => region,
        Err(e) => {
            *tally
                .refusals
                .entry(format!("Region/{}", variant(format!("{e:?}"))))
                .or_default() += 1;
            return false;
        }
    };
    let buffer = Buffer::new(region, RawRecords, NoClock).unwrap();
    let nest = Nesting::new();
    let off = buffer.stats().write % S;
    // The record header goes at the next 8-byte boundary.
    let room = (S - off.next_multiple_of(8)).saturating_sub(8) as usize;
    match first {
        1 => drop(buffer.switch(Switch::Flush)),
        2 => drop(buffer.switch(Switch::Active)),
        // A record that ends exactly at the end of the open sub-buffer.
        3 if off != 0 => {
            if let Ok(r) = buffer.reserve(&nest, EVENT, room) {
                assert_eq!(r.payload_len(), room);
                r.commit();
            }
        }
        4 if off != 0 => {
            if let Ok(r) = buffer.reserve(&nest, EVENT, room) {
                r.discard();
            }
        }
        5 => {
            if let Ok(r) = buffer.reserve(&nest, EVENT, 16) {
                r.discard();
            }
        }
        // A record that fills a whole new sub-buffer.
        6 => drop(buffer.write(&nest, EVENT, &vec![7; buffer.max_payload(EVENT)])),
        // Overwrite mode: ids changed after attach, then an exact fit.
        7 if off != 0 => {
            for slot in 0..N as usize {
                let id = &buffer.control().slot(slot).id;
                id.store(SubbufId::referenced(0, 77).raw(), Relaxed);
            }
            if let Ok(r) = buffer.reserve(&nest, EVENT, room) {
                r.commit();
            }
        }
        _ => {}
    }
    for seq in 0..300 {
        let _ = buffer.write(&nest, EVENT, &payload(0, seq));
        if seq % 97 == 0 {
            let _ = buffer.switch(Switch::Active);
        }
    }
    if let Ok(mut r) = buffer.reserve(&nest, EVENT, 100) {
        assert!(r.write_at(92, &[1; 8]) && !r.write_at(93, &[1; 8]));
        r.discard();
    }
    let max = buffer.max_payload(EVENT);
    if let Ok(r) = buffer.reserve(&nest, EVENT, max) {
        let _ = r.packet_seq();
        drop(r); // discarded as padding or undone
    }
    let _ = buffer.write(&nest, EVENT, &vec![0; max + 1]);
    let _ = buffer.switch(Switch::Flush);
    let _ = buffer.stats().events_discarded();
    let Ok(mut reader) = buffer.reader() else {
        *tally.drain_errors.entry("ReaderBusy".into()).or_default() += 1;
        return true;
    };
    let read = |reader: &mut ringbuf_core::Reader<'_, _, _, _>, sub, tally: &mut Tally| {
        let bytes = reader.bytes(&sub).unwrap().to_vec();
        tally.packet(&bytes);
        reader.put_next_subbuf(sub);
    };
    for _ in 0..2 * N {
        match reader.get_next_subbuf() {
            Ok(sub) => read(&mut reader, sub, tally),
            Err(e) => {
                *tally
                    .drain_errors
                    .entry(variant(format!("{e:?}")))
                    .or_default() += 1;
                break;
            }
        }
    }
    let snapshot = reader.snapshot();
    let mut pos = snapshot.consumed;
    for _ in 0..=N {
        if pos >= snapshot.produced {
            break;
        }
        if let Ok(sub) = reader.get_subbuf(pos) {
            read(&mut reader, sub, tally);
        }
        pos = pos.wrapping_add(S);
    }
    tally.drains_ok += 1;
    true
}

/// First operations of [`writers_over`]: none, flush, switch, an exact fit
/// committed, an exact fit discarded, a small record discarded, a record filling a
/// sub-buffer, ids out of range then an exact fit.
const FIRST_OPS: u64 = 8;

/// Positions near 2^64, and random control words, under real writers.
fn writer_fuzz(mode: Mode) -> Tally {
    let dir = temp_dir(&format!("writers-{mode:?}"));
    let original = make_image(&dir, mode);
    let map = Map::new(mode);
    let start = map.region_at(0);
    let region = &original[start..start + map.channel.region_size as usize];
    let at = |absolute: usize| absolute - start;
    let mut tally = Tally::default();
    let tops = [
        0,
        1,
        7,
        8,
        47,
        48,
        49,
        56,
        4000,
        S - 1,
        S,
        S + 1,
        S + 48,
        2 * S,
        N * S,
    ];
    let geo = config(mode).validate().unwrap();
    for (i, back) in tops.into_iter().enumerate() {
        for (consumed_too, enterable) in [(false, false), (true, false), (true, true)] {
            let mut bytes = region.to_vec();
            let top = u64::MAX - back;
            let start_of_top = geo.subbuf_start(top);
            put(&mut bytes, at(map.write(0)), top);
            if consumed_too {
                put(&mut bytes, at(map.consumed(0)), start_of_top);
            }
            if enterable {
                // The top sub-buffer and the next one (position 0 again) may be
                // entered: their previous laps are delivered.
                for pos in [start_of_top, start_of_top.wrapping_add(S)] {
                    let lap_base = geo.full_commit(pos) - S;
                    put(&mut bytes, at(map.delivered(0, geo.slot(pos))), lap_base);
                }
            } else {
                // Some slot delivered for the top lap, to let a reader in.
                let slot = i % N as usize;
                put(&mut bytes, at(map.delivered(0, slot)), geo.full_commit(top));
            }
            for first in 0..FIRST_OPS {
                assert!(writers_over(&bytes, first, &mut tally), "top - {back}");
            }
        }
    }
    let mut rng = Rng::new(seed() ^ 0x3141 ^ mode as u64);
    let region_words: Vec<_> = map
        .words
        .iter()
        .filter(|(a, _)| *a < start + S as usize)
        .collect();
    for _ in 0..ITERATIONS / 3 {
        let mut bytes = region.to_vec();
        for _ in 0..1 + rng.below(4) {
            let (absolute, name) = region_words[rng.below(region_words.len() as u64) as usize];
            let old = get(&bytes, at(*absolute));
            put(&mut bytes, at(*absolute), value(&mut rng, old, name));
        }
        if writers_over(&bytes, rng.below(FIRST_OPS), &mut tally) {
            tally.attached += 1;
        } else {
            tally.refused += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    tally
}

#[test]
fn writers_over_corrupt_words_neither_panic_nor_hang() {
    let tally = within("writer fuzz", || {
        let mut tally = writer_fuzz(Mode::Discard);
        tally.merge(writer_fuzz(Mode::Overwrite));
        tally
    });
    report("writers over corrupt words", &tally);
    assert!(tally.attached > 100 && tally.refused > 10, "{tally:?}");
    assert!(
        tally.packets_parsed > 0 && tally.records_intact > 0,
        "{tally:?}"
    );
}

// ---------------------------------------------------------------------------------
// 1c. Static corruption: targeted, each with its expected error.

/// Corrupt copies of one pristine image, each in a file of its own.
struct Fixture {
    dir: PathBuf,
    original: Vec<u8>,
    map: Map,
    mode: Mode,
    copies: u32,
}

impl Fixture {
    fn new(mode: Mode) -> Self {
        let dir = temp_dir(&format!("targeted-{mode:?}"));
        let original = make_image(&dir, mode);
        Self {
            dir,
            original,
            map: Map::new(mode),
            mode,
            copies: 0,
        }
    }

    /// A copy edited by `edit`, in a new file.
    fn copy(&mut self, edit: impl FnOnce(&Map, &mut Vec<u8>)) -> PathBuf {
        let mut bytes = self.original.clone();
        edit(&self.map, &mut bytes);
        self.copies += 1;
        let path = self.dir.join(format!("copy{}", self.copies));
        write_file(&path, &bytes);
        path
    }

    /// Attaching the edited copy fails as `expected` says.
    fn refused(
        &mut self,
        what: &str,
        edit: impl FnOnce(&Map, &mut Vec<u8>),
        expected: impl FnOnce(&ChannelError) -> bool,
    ) {
        let path = self.copy(edit);
        self.refused_path(what, &path, expected);
        recover(&path, &mut Tally::default());
    }

    fn refused_path(&self, what: &str, path: &Path, expected: impl FnOnce(&ChannelError) -> bool) {
        match attach(path) {
            Ok(_) => panic!("{:?}: {what}: attached", self.mode),
            Err(e) => assert!(expected(&e), "{:?}: {what}: {e:?}", self.mode),
        }
    }

    /// The edited copy attaches; returns the consumer.
    fn attached(&mut self, what: &str, edit: impl FnOnce(&Map, &mut Vec<u8>)) -> Consumer {
        let path = self.copy(edit);
        attach(&path).unwrap_or_else(|e| panic!("{:?}: {what}: {e:?}", self.mode))
    }
}

fn targeted(mode: Mode) {
    let mut f = Fixture::new(mode);
    let len = f.original.len();
    let set64 = |at: usize, v: u64| move |_: &Map, b: &mut Vec<u8>| put(b, at, v);
    let set32 = |at: usize, v: u32| move |_: &Map, b: &mut Vec<u8>| put32(b, at, v);
    let bad_header = |why: &'static str| move |e: &ChannelError| matches!(e, ChannelError::BadHeader(w) if *w == why);
    let bad_layout = |why: &'static str| move |e: &ChannelError| matches!(e, ChannelError::BadLayout(w) if *w == why);
    let offsets_differ = bad_layout("offsets differ from the configuration's");

    // The channel header.
    f.refused("magic", |_, b| b[3] ^= 0x20, bad_header("bad magic"));
    for version in [1, CHANNEL_VERSION + 1] {
        f.refused(
            "version",
            set32(offset_of!(ChannelHeader, version), version),
            bad_header("unsupported version"),
        );
    }
    f.refused(
        "not ready",
        set32(offset_of!(ChannelHeader, ready), 0),
        bad_header("producer has not finished creating it"),
    );
    f.refused(
        "mode",
        set32(offset_of!(ChannelHeader, mode), 9),
        bad_header("unknown mode"),
    );
    f.refused(
        "format",
        set32(offset_of!(ChannelHeader, format), 5),
        bad_header("record format differs"),
    );
    let regions = f.map.channel.regions_offset;
    let stride = f.map.channel.region_stride;
    let size = f.map.channel.region_size;
    for (what, at, v) in [
        (
            "metadata offset",
            offset_of!(ChannelHeader, metadata_offset),
            8192,
        ),
        (
            "thread table offset",
            offset_of!(ChannelHeader, threads_offset),
            regions,
        ),
        (
            "regions offset",
            offset_of!(ChannelHeader, regions_offset),
            regions + 4096,
        ),
        (
            "regions offset 0",
            offset_of!(ChannelHeader, regions_offset),
            0,
        ),
        (
            "region stride",
            offset_of!(ChannelHeader, region_stride),
            stride - 4096,
        ),
        (
            "region size",
            offset_of!(ChannelHeader, region_size),
            size + 8,
        ),
    ] {
        f.refused(what, set64(at, v), offsets_differ);
    }
    // The clock: every rule of `ChannelClock::new`, checked again on the way in.
    let clock = offset_of!(ChannelHeader, clock);
    let name = clock + offset_of!(ChannelClock, name);
    let description = clock + offset_of!(ChannelClock, description);
    let freq = clock + offset_of!(ChannelClock, freq);
    let clock_error = |check: fn(&ClockError) -> bool| move |e: &ChannelError| matches!(e, ChannelError::Clock(c) if check(c));
    let bad_name = clock_error(|c| matches!(c, ClockError::Name(_)));
    let bad_description = clock_error(|c| matches!(c, ClockError::Description(_)));
    f.refused("clock name empty", |_, b| b[name] = 0, bad_name);
    f.refused("clock name a digit", |_, b| b[name] = b'9', bad_name);
    f.refused(
        "clock name not padded",
        |_, b| b[name + 31] = b'x',
        bad_name,
    );
    f.refused("clock name not UTF-8", |_, b| b[name + 1] = 0xff, bad_name);
    f.refused(
        "clock description quoted",
        |_, b| b[description] = b'"',
        bad_description,
    );
    f.refused(
        "clock description not padded",
        |_, b| b[description + 63] = b'x',
        bad_description,
    );
    f.refused(
        "clock frequency",
        set64(freq, 0),
        clock_error(|c| *c == ClockError::ZeroFrequency),
    );
    f.refused(
        "clock offset",
        |_, b| {
            let hz = u64::from_ne_bytes(b[freq..freq + 8].try_into().unwrap());
            put(b, clock + offset_of!(ChannelClock, offset), hz);
        },
        clock_error(|c| matches!(c, ClockError::Offset { .. })),
    );
    f.refused(
        "no buffers",
        set32(offset_of!(ChannelHeader, buffers), 0),
        |e| matches!(e, ChannelError::BufferCount(0)),
    );
    f.refused(
        "too many buffers",
        set32(offset_of!(ChannelHeader, buffers), 4097),
        |e| matches!(e, ChannelError::BufferCount(4097)),
    );
    f.refused(
        "three buffers in a file of two",
        set32(offset_of!(ChannelHeader, buffers), 3),
        bad_layout("file shorter than its buffers"),
    );
    f.refused(
        "metadata length",
        set64(offset_of!(ChannelHeader, metadata_len), 65 << 20),
        bad_layout("metadata longer than its area"),
    );
    f.refused(
        "metadata capacity",
        set64(offset_of!(ChannelHeader, metadata_capacity), 65 << 20),
        bad_layout("metadata area too large"),
    );
    f.refused(
        "metadata capacity below the length",
        set64(offset_of!(ChannelHeader, metadata_capacity), 0),
        bad_layout("offsets differ from the configuration's"),
    );
    f.refused(
        "metadata bytes",
        |_, b| b[4096 + 3] = 0xff,
        |e| matches!(e, ChannelError::BadMetadata(_)),
    );
    f.refused(
        "sub-buffer size",
        set64(offset_of!(ChannelHeader, subbuf_size), 1000),
        |e| {
            matches!(
                e,
                ChannelError::Config(ConfigError::SubbufSizeNotPowerOfTwo(1000))
            )
        },
    );
    f.refused(
        "sub-buffer count",
        set64(offset_of!(ChannelHeader, subbuf_count), 3),
        |e| {
            matches!(
                e,
                ChannelError::Config(ConfigError::SubbufCountNotPowerOfTwo(3))
            )
        },
    );
    f.refused(
        "nesting limit",
        set32(offset_of!(ChannelHeader, nesting_limit), 0),
        |e| matches!(e, ChannelError::Config(ConfigError::ZeroNestingLimit)),
    );
    // The largest geometry the header allows: the total size overflows a u64.
    let too_large = bad_layout("larger than the address space");
    f.refused(
        "a channel larger than the address space",
        |map, b| {
            huge_channel(map, b);
        },
        too_large,
    );
    if mode == Mode::Discard {
        // The same in a sparse file as long as the size wraps to: had the size
        // wrapped, the file would look long enough, and region 1 would be looked for
        // 2^52 bytes past the mapping.
        let mut wrapped = 0;
        let path = f.copy(|map, b| wrapped = huge_channel(map, b));
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        match file.set_len(wrapped) {
            Ok(()) => f.refused_path("a sparse file of the wrapped size", &path, too_large),
            Err(e) => eprintln!("no sparse file of {wrapped} bytes ({e}): case skipped"),
        }
        std::fs::remove_file(&path).unwrap();
    }
    f.refused(
        "sub-buffer size differs from the regions'",
        mismatched_subbuf_size,
        |e| matches!(e, ChannelError::BadLayout(_)),
    );

    // Region headers (region 1; region 0 is checked first and is fine).
    let r = |field: usize| move |map: &Map| map.region_field(1, field);
    let region_error = |expected: RegionError| move |e: &ChannelError| matches!(e, ChannelError::Region { index: 1, error } if *error == expected);
    let region_cases: [(&str, usize, u64, bool, RegionError); 13] = [
        (
            "magic",
            offset_of!(RegionHeader, magic),
            u64::from_ne_bytes(*b"RINGBUG\0"),
            true,
            RegionError::BadMagic,
        ),
        (
            "version",
            offset_of!(RegionHeader, version),
            9,
            false,
            RegionError::UnsupportedVersion(9),
        ),
        (
            "endianness",
            offset_of!(RegionHeader, endian),
            ENDIAN_TAG.swap_bytes() as u64,
            false,
            RegionError::WrongEndianness,
        ),
        (
            "endian tag",
            offset_of!(RegionHeader, endian),
            7,
            false,
            RegionError::CorruptState,
        ),
        (
            "word size",
            offset_of!(RegionHeader, word_size),
            4,
            false,
            RegionError::WrongWordSize(4),
        ),
        (
            "flavour",
            offset_of!(RegionHeader, flavour),
            Flavour::Local as u64,
            false,
            RegionError::FlavourMismatch {
                region: Flavour::Local,
            },
        ),
        (
            "unknown flavour",
            offset_of!(RegionHeader, flavour),
            9,
            false,
            RegionError::UnknownFlavour(9),
        ),
        (
            "mode",
            offset_of!(RegionHeader, mode),
            3,
            false,
            RegionError::UnknownMode(3),
        ),
        (
            "format",
            offset_of!(RegionHeader, format),
            5,
            false,
            RegionError::FormatMismatch { region: 5 },
        ),
        (
            "header size",
            offset_of!(RegionHeader, header_size),
            128,
            false,
            RegionError::LayoutMismatch,
        ),
        (
            "sub-buffer size",
            offset_of!(RegionHeader, subbuf_size),
            1000,
            true,
            RegionError::Config(ConfigError::SubbufSizeNotPowerOfTwo(1000)),
        ),
        (
            "data offset",
            offset_of!(RegionHeader, data_offset),
            4096 + 8,
            true,
            RegionError::LayoutMismatch,
        ),
        (
            "region size",
            offset_of!(RegionHeader, region_size),
            1 << 40,
            true,
            RegionError::LayoutMismatch,
        ),
    ];
    for (what, field, v, wide, expected) in region_cases {
        let at = r(field);
        f.refused(
            what,
            move |map, b| {
                if wide {
                    put(b, at(map), v)
                } else {
                    put32(b, at(map), v as u32)
                }
            },
            region_error(expected),
        );
    }
    let fields = r(offset_of!(RegionHeader, fields) + 2 * Field::Consumed as usize);
    f.refused(
        "field table",
        move |map, b| {
            let at = fields(map);
            b[at] = b[at].wrapping_add(8);
        },
        region_error(RegionError::LayoutMismatch),
    );

    // Region state.
    f.refused(
        "consumed past write",
        |map, b| {
            let write = get(b, map.write(1));
            put(b, map.consumed(1), write.next_multiple_of(S) + S);
        },
        region_error(RegionError::CorruptState),
    );
    if mode == Mode::Overwrite {
        f.refused(
            "id out of range",
            |map, b| put(b, map.id(1, 2), SubbufId::delivered(1, 77).raw()),
            region_error(RegionError::CorruptState),
        );
        f.refused(
            "duplicate id",
            |map, b| {
                let id0 = get(b, map.id(1, 0));
                put(b, map.id(1, 1), id0)
            },
            region_error(RegionError::CorruptState),
        );
        f.refused(
            "spare out of range",
            |map, b| put(b, map.spare(1), 77),
            region_error(RegionError::CorruptState),
        );
        f.refused(
            "spare is a slot's",
            |map, b| {
                let phys = SubbufId::from_raw(get(b, map.id(1, 3))).phys();
                put(b, map.spare(1), phys)
            },
            region_error(RegionError::CorruptState),
        );
    }

    // The file itself.
    f.refused(
        "truncated by a byte",
        |_, b| b.truncate(len - 1),
        bad_layout("file shorter than its buffers"),
    );
    f.refused(
        "truncated to its header",
        |map, b| b.truncate(map.channel.regions_offset as usize),
        bad_layout("file shorter than its buffers"),
    );
    f.refused(
        "shorter than a page",
        |_, b| b.truncate(100),
        bad_layout("file smaller than its header"),
    );
    f.refused(
        "empty",
        |_, b| b.clear(),
        |e| matches!(e, ChannelError::Backing(BackingError::TooSmall { len: 0 })),
    );
    for mode_bits in [0o644, 0o640, 0o602] {
        let path = f.copy(|_, _| {});
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode_bits)).unwrap();
        f.refused_path("permissions", &path, |e| {
            matches!(e, ChannelError::Backing(BackingError::Permissions { mode }) if *mode == mode_bits)
        });
    }
    let path = f.copy(|_, _| {});
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; the result is checked.
    if unsafe { libc::chown(c_path.as_ptr(), 1, u32::MAX) } == 0 {
        f.refused_path("owner", &path, |e| {
            matches!(e, ChannelError::Backing(BackingError::Owner { uid: 1 }))
        });
    } else {
        eprintln!("cannot chown (not root?): owner check skipped");
    }
    let target = f.copy(|_, _| {});
    let link = f.dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    f.refused_path("symlink", &link, |e| {
        matches!(e, ChannelError::Backing(BackingError::Io(io)) if io.raw_os_error() == Some(libc::ELOOP))
    });
    // The producer's wakeup FIFO is not a channel.
    f.refused_path("fifo", &f.dir.join(".image.wake"), |e| {
        matches!(e, ChannelError::Backing(BackingError::NotRegular))
    });
    f.refused_path("missing", &f.dir.join("nothing"), |e| {
        matches!(e, ChannelError::Backing(BackingError::Io(io)) if io.kind() == std::io::ErrorKind::NotFound)
    });
    let mut scratch = Vec::new();
    let consumer = f.attached("pristine", |_, _| {});
    assert!(consumer.metadata() == METADATA);
    assert_eq!(consumer.producer_pid(), std::process::id());
    drop(consumer);

    // Attached, but the state is wrong.
    let consumer = f.attached("reader attached", |map, b| put(b, map.attached(0), 1));
    assert_eq!(
        consumer.drain(0, &mut scratch, |_| panic!("read while busy")),
        Err(ConsumeError::ReaderBusy { buffer: 0 })
    );
    assert!(consumer.drain(1, &mut scratch, |_| {}).unwrap() > 0);

    // A write position at the very top: no overflow when checking consumed against
    // it, at attach or later.
    let consumer = f.attached("write at the top", |map, b| put(b, map.write(0), u64::MAX));
    let mut tally = Tally::default();
    tally.drain_all(&consumer, 2, false);
    consumer.switch_all(Switch::Flush);
    tally.drain_all(&consumer, 1, false);

    // The last packet of the position space, delivered: moving the reader past it
    // wraps (rather than overflowing).
    let top = u64::MAX - (S - 1);
    let consumer = f.attached("a packet at the top", |map, b| {
        top_packet(map, b, mode, top)
    });
    let mut n = 0;
    let first = consumer.drain(0, &mut scratch, |_| n += 1);
    assert!(
        matches!(first, Ok(_) | Err(ConsumeError::Corrupt { buffer: 0, .. })),
        "{first:?}"
    );
    assert!(n >= 1, "the packet at the top is read");
    tally.drain_all(&consumer, 2, false);

    // Corruption after attach, through the file: the reader checks at each use.
    let path = f.copy(|_, _| {});
    let consumer = attach(&path).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let poke = |at: usize, v: u64| file.write_all_at(&v.to_ne_bytes(), at as u64).unwrap();
    poke(f.map.consumed(0), 5);
    assert_eq!(
        consumer.drain(0, &mut scratch, |_| panic!("read a misaligned position")),
        Err(ConsumeError::Corrupt {
            buffer: 0,
            error: ReadError::Corrupt
        })
    );
    if mode == Mode::Overwrite {
        // The id of the oldest unread packet (position 5S in buffer 1) points out of
        // the buffer.
        let slot = 1;
        let id = SubbufId::from_raw(get(&f.original, f.map.id(1, slot)));
        assert!(id.noref());
        poke(f.map.id(1, slot), SubbufId::delivered(1, 77).raw());
        assert_eq!(
            consumer.drain(1, &mut scratch, |_| panic!("read a bad id")),
            Err(ConsumeError::Corrupt {
                buffer: 1,
                error: ReadError::Corrupt
            })
        );
        // The spare equals the packet's sub-buffer.
        poke(f.map.id(1, slot), id.raw());
        poke(f.map.spare(1), id.phys());
        assert_eq!(
            consumer.drain(1, &mut scratch, |_| panic!("read into the spare")),
            Err(ConsumeError::Corrupt {
                buffer: 1,
                error: ReadError::Corrupt
            })
        );
    }
    std::fs::remove_dir_all(&f.dir).unwrap();
}

fn put64_all(b: &mut [u8], fields: &[(usize, u64)]) {
    for &(at, v) in fields {
        put(b, at, v);
    }
}

/// Turns the channel into 4096 discard-mode regions of 2^20 sub-buffers of 2^32
/// bytes (2^52 bytes each), region 0's header included: the total overflows a u64.
/// Returns the size it wraps to (about 256 GiB).
fn huge_channel(map: &Map, b: &mut [u8]) -> u64 {
    let config = Config::new(1 << 32, 1 << 20, Mode::Discard);
    let region = Layout::new(&config).unwrap();
    let stride = (region.size as u64).next_multiple_of(4096);
    put32(b, offset_of!(ChannelHeader, buffers), 4096);
    put32(b, offset_of!(ChannelHeader, mode), Mode::Discard as u32);
    put64_all(
        b,
        &[
            (offset_of!(ChannelHeader, subbuf_size), config.subbuf_size),
            (offset_of!(ChannelHeader, subbuf_count), config.subbuf_count),
            (offset_of!(ChannelHeader, region_size), region.size as u64),
            (offset_of!(ChannelHeader, region_stride), stride),
        ],
    );
    let r = map.region_at(0);
    put32(b, r + offset_of!(RegionHeader, mode), Mode::Discard as u32);
    put64_all(
        b,
        &[
            (
                r + offset_of!(RegionHeader, subbuf_size),
                config.subbuf_size,
            ),
            (
                r + offset_of!(RegionHeader, subbuf_count),
                config.subbuf_count,
            ),
            (
                r + offset_of!(RegionHeader, physical_count),
                config.physical_count(),
            ),
            (
                r + offset_of!(RegionHeader, region_size),
                region.size as u64,
            ),
            (
                r + offset_of!(RegionHeader, data_offset),
                region.data as u64,
            ),
            (
                r + offset_of!(RegionHeader, data_stride),
                region.data_stride as u64,
            ),
            (map.write(0), 0),
            (map.consumed(0), 0),
        ],
    );
    map.channel
        .regions_offset
        .wrapping_add(stride.wrapping_mul(4096))
}

/// A consistent channel header whose sub-buffer size (8192) differs from that of
/// the regions it points to (4096), regions moved to the header's stride.
fn mismatched_subbuf_size(map: &Map, b: &mut Vec<u8>) {
    let config = Config::new(2 * S, N, map.mode);
    let layout = ChannelLayout::new(&config, BUFFERS, METADATA.len() as u64).unwrap();
    let mut out = vec![0u8; layout.size as usize];
    out[..layout.regions_offset as usize].copy_from_slice(&b[..layout.regions_offset as usize]);
    for r in 0..BUFFERS as usize {
        let from = map.region_at(r);
        let to = (layout.regions_offset + layout.region_stride * r as u64) as usize;
        let len = map.channel.region_size as usize;
        out[to..to + len].copy_from_slice(&b[from..from + len]);
    }
    put(&mut out, offset_of!(ChannelHeader, subbuf_size), 2 * S);
    put(
        &mut out,
        offset_of!(ChannelHeader, region_stride),
        layout.region_stride,
    );
    put(
        &mut out,
        offset_of!(ChannelHeader, region_size),
        layout.region_size,
    );
    *b = out;
}

/// Region 0's reader sits at `top`, the last sub-buffer position before 2^64, whose
/// packet is delivered (and, in overwrite mode, takeable).
fn top_packet(map: &Map, b: &mut [u8], mode: Mode, top: u64) {
    let geo = config(mode).validate().unwrap();
    let slot = geo.slot(top);
    put(b, map.write(0), top);
    put(b, map.consumed(0), top);
    put(b, map.delivered(0, slot), geo.full_commit(top));
    if mode == Mode::Overwrite {
        let phys = SubbufId::from_raw(get(b, map.id(0, slot))).phys();
        put(
            b,
            map.id(0, slot),
            SubbufId::delivered(geo.lap(top), phys).raw(),
        );
    }
}

#[test]
fn targeted_corruption_gives_the_expected_error_in_discard_mode() {
    within("targeted, discard", || targeted(Mode::Discard));
}

#[test]
fn targeted_corruption_gives_the_expected_error_in_overwrite_mode() {
    within("targeted, overwrite", || targeted(Mode::Overwrite));
}

/// A hostile writer that keeps delivering, always one step ahead of the reader,
/// cannot keep `drain` from returning.
#[test]
fn a_writer_that_keeps_delivering_cannot_hold_drain() {
    within("endless delivery", || {
        let mode = Mode::Discard;
        let dir = temp_dir("endless");
        let original = make_image(&dir, mode);
        let map = Map::new(mode);
        let (path, file) = writable_copy(&dir, &original);
        let consumer = attach(&path).unwrap();
        let geo = config(mode).validate().unwrap();
        let mut scratch = Vec::new();
        let mut packets = 0u64;
        // Called after the reader moved on: deliver the slot it reads next.
        let n = consumer.drain(0, &mut scratch, |_| {
            packets += 1;
            if packets > 10_000 {
                return; // give up, so the assertion below reports it
            }
            let mut word = [0u8; 8];
            file.read_exact_at(&mut word, map.consumed(0) as u64)
                .unwrap();
            let next = u64::from_ne_bytes(word);
            let delivered = geo.full_commit(next).to_ne_bytes();
            file.write_all_at(&delivered, map.delivered(0, geo.slot(next)) as u64)
                .unwrap();
        });
        assert!(
            matches!(n, Ok(k) if k as u64 <= N),
            "drain read {packets} packets in one call ({n:?})"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

// ---------------------------------------------------------------------------------
// 2. Concurrent malice.

/// Rewrites random words of the live file through its own shared mapping until
/// `until`, in bursts of 1 to 8 words; after most bursts it puts the old values back
/// a moment later (almost always for headers), so that the state flickers between
/// consistent and corrupt instead of staying dead. Returns the number of writes.
fn malice(path: &Path, map: &Map, seed: u64, until: Instant) -> u64 {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mapping = MmapRaw::map_raw(&file).unwrap();
    assert_eq!(mapping.len() as u64, map.channel.size);
    let base = mapping.as_mut_ptr();
    // Atomic stores, because threads of this process access these bytes too: another
    // process would race the same way, which is the situation under test.
    let byte = |at: usize| {
        assert!(at < mapping.len());
        // SAFETY: `at` is inside the mapping, which outlives every use of the closure.
        unsafe { AtomicU8::from_ptr(base.add(at)) }
    };
    let word = |at: usize| {
        assert!(at.is_multiple_of(8) && at + 8 <= mapping.len());
        // SAFETY: `at` is 8-byte aligned (the mapping is page-aligned) and `at + 8`
        // inside the mapping, which outlives every use of the closure.
        unsafe { AtomicU64::from_ptr(base.add(at).cast::<u64>()) }
    };
    let mut rng = Rng::new(seed);
    let mut writes = 0;
    let mut undo = Vec::new();
    while Instant::now() < until {
        let mut headers = false;
        for _ in 0..1 + rng.below(8) {
            let (area, at, name) = map.pick(&mut rng);
            headers |= area.contains("header") || area == "metadata";
            if area == "metadata" {
                let old = byte(at).swap(rng.next() as u8, Relaxed);
                undo.push((at, u64::from(old), true));
            } else {
                let old = word(at).load(Relaxed);
                word(at).store(value(&mut rng, old, &name), Relaxed);
                undo.push((at, old, false));
            }
            writes += 1;
        }
        // Leave the corruption in place for a while: none, a yield, or a sleep.
        match rng.below(100) {
            0..=49 => {}
            50..=84 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(rng.below(200))),
        }
        if rng.chance(if headers { 95 } else { 85 }) {
            for (at, old, is_byte) in undo.drain(..).rev() {
                if is_byte {
                    byte(at).store(old as u8, Relaxed);
                } else {
                    word(at).store(old, Relaxed);
                }
            }
        }
        undo.clear();
    }
    writes
}

/// What one phase of concurrent malice did.
#[derive(Default)]
struct Phase {
    hostile_writes: u64,
    events_written: u64,
    events_lost: u64,
    consumer_rounds: u64,
}

/// One phase: a fresh channel, a real producer, consumers, and [`MALICE`] of
/// hostile writes after a short warm-up.
fn concurrent_phase(mode: Mode, phase: u64, dir: &Path, tally: &mut Tally) -> Phase {
    let channel = create(dir, &format!("live{phase}"), mode);
    fill(&channel, mode);
    let path = channel.path().unwrap().to_owned();
    let map = Map::new(mode);
    let first = attach(&path).unwrap();
    let stop = AtomicBool::new(false);
    // Threads that have begun their first round: the malice waits for both, so a
    // busy machine that starts them late cannot make a phase without them.
    let running = AtomicU64::new(0);
    let shared = Mutex::new(Tally::default());
    let mut out = Phase::default();
    std::thread::scope(|s| {
        // The real producer.
        let producer = s.spawn(|| {
            let nest = Nesting::new();
            let (mut ok, mut lost) = (0u64, 0u64);
            let mut seq = 0;
            running.fetch_add(1, Relaxed);
            while !stop.load(Relaxed) || seq == 0 {
                for (b, buffer) in channel.buffers().iter().enumerate() {
                    match buffer.write(&nest, EVENT, &payload(b, seq)) {
                        Ok(()) => ok += 1,
                        Err(_) => lost += 1,
                    }
                }
                seq += 1;
                if seq % 64 == 0 {
                    let _ = channel.switch_all(Switch::Active);
                    let _ = channel.stats();
                }
            }
            (ok, lost)
        });
        // Consumers: the one attached before the malice, and new ones.
        let consumer = s.spawn(|| {
            let mut rounds = 0u64;
            running.fetch_add(1, Relaxed);
            while !stop.load(Relaxed) || rounds == 0 {
                let mut local = Tally::default();
                local.drain_all(&first, 1, false);
                first.switch_all(Switch::Active);
                rounds += 1;
                if rounds.is_multiple_of(16) {
                    match attach(&path) {
                        Ok(c) => {
                            local.attached += 1;
                            local.drain_all(&c, 1, false);
                        }
                        Err(e) => local.refusal(&e),
                    }
                }
                shared.lock().unwrap().merge(local);
            }
            rounds
        });
        while running.load(Relaxed) < 2 {
            std::thread::yield_now();
        }
        std::thread::sleep(WARMUP);
        let seed = seed() ^ 0x11fe ^ (mode as u64) << 8 ^ phase;
        out.hostile_writes = malice(&path, &map, seed, Instant::now() + MALICE);
        stop.store(true, Relaxed);
        (out.events_written, out.events_lost) = producer.join().unwrap();
        out.consumer_rounds = consumer.join().unwrap();
    });
    // After the malice, whatever state it left: typed answers still.
    let mut phase_tally = shared.into_inner().unwrap();
    phase_tally.drain_all(&first, 2, false);
    match attach(&path) {
        Ok(c) => phase_tally.drain_all(&c, 2, false),
        Err(e) => phase_tally.refusal(&e),
    }
    tally.merge(phase_tally);
    out
}

fn concurrent(mode: Mode) {
    let dir = temp_dir(&format!("live-{mode:?}"));
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut total = Phase::default();
    for phase in 0..PHASES {
        let p = concurrent_phase(mode, phase, &dir, &mut tally);
        assert!(p.consumer_rounds > 0 && p.events_written > 0);
        total.hostile_writes += p.hostile_writes;
        total.events_written += p.events_written;
        total.events_lost += p.events_lost;
        total.consumer_rounds += p.consumer_rounds;
    }
    eprintln!(
        "{mode:?}: {PHASES} phases in {:?}: {} hostile writes; the producer wrote {} events \
         and lost {}; {} consumer rounds",
        start.elapsed(),
        total.hostile_writes,
        total.events_written,
        total.events_lost,
        total.consumer_rounds,
    );
    report(&format!("concurrent malice, {mode:?}"), &tally);
    assert!(total.hostile_writes > 1000, "the malice did little");
    assert!(tally.drains_ok > 0 && tally.packets > 0, "{tally:?}");
    assert!(tally.records_intact > 0, "{tally:?}");
    assert!(
        tally.packets_unparsed + tally.records_bad + tally.records_other > 0
            || !tally.drain_errors.is_empty(),
        "the malice was never noticed: {tally:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_hostile_writer_rewriting_a_live_channel_gets_typed_errors_in_discard_mode() {
    within("concurrent, discard", || concurrent(Mode::Discard));
}

#[test]
fn a_hostile_writer_rewriting_a_live_channel_gets_typed_errors_in_overwrite_mode() {
    within("concurrent, overwrite", || concurrent(Mode::Overwrite));
}

// ---------------------------------------------------------------------------------
// 2b. Truncation under an attached consumer.

/// A consumer drains in a loop while the producer writes; the producer stops and the
/// file is cut to `len` bytes. Every drain after that answers `Truncated` (the SIGBUS
/// guard), and so does everything else the consumer offers, without a signal
/// killing the process.
fn truncation(mode: Mode, len: u64) {
    let dir = temp_dir(&format!("truncate-{mode:?}-{len}"));
    let channel = create(&dir, "chan", mode);
    fill(&channel, mode);
    let path = channel.path().unwrap().to_owned();
    let consumer = attach(&path).unwrap();
    // `cutting`: the file may be cut from now on; `cut`: it is.
    let cutting = AtomicBool::new(false);
    let cut = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut scratch = Vec::new();
            let mut packets = 0u64;
            let mut truncated_at = None;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut rounds = 0u32;
            loop {
                assert!(Instant::now() < deadline, "never saw the truncation");
                let cut_before = cut.load(Relaxed);
                for cpu in 0..BUFFERS {
                    let mut copies = Vec::new();
                    match consumer.drain(cpu, &mut scratch, |b| copies.push(b.to_vec())) {
                        Ok(n) => {
                            assert!(truncated_at.is_none(), "a drain after Truncated succeeded");
                            packets += n as u64;
                        }
                        Err(ConsumeError::Truncated) => {
                            assert!(cutting.load(Relaxed), "Truncated before the cut");
                            truncated_at.get_or_insert(rounds);
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    for copy in &copies {
                        let _ = RawPacket::parse(copy).map(|p| p.records().count());
                    }
                }
                rounds += 1;
                // A full round that started after the cut sees it; every drain after
                // that answers Truncated.
                if cut_before {
                    assert!(truncated_at.is_some(), "a full round after the cut read on");
                }
                if truncated_at.is_some_and(|t| rounds > t + 20) {
                    return packets;
                }
            }
        });
        let nest = Nesting::new();
        let until = Instant::now() + Duration::from_millis(100);
        let mut seq = 0;
        while Instant::now() < until {
            for (b, buffer) in channel.buffers().iter().enumerate() {
                let _ = buffer.write(&nest, EVENT, &payload(b, seq));
            }
            seq += 1;
            if seq % 32 == 0 {
                let _ = channel.switch_all(Switch::Active);
            }
        }
        // The producer (this thread) stops touching its mapping before the cut: a
        // SIGBUS in the producer is not the consumer's to survive.
        std::thread::sleep(Duration::from_millis(20));
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        cutting.store(true, Relaxed);
        file.set_len(len).unwrap();
        cut.store(true, Relaxed);
        let packets = reader.join().unwrap();
        assert!(packets > 0, "nothing read before the cut");
    });
    // Everything else the consumer offers survives the cut too.
    for cpu in 0..BUFFERS {
        let _ = consumer.stats(cpu);
        assert_eq!(
            consumer.drain(cpu, &mut Vec::new(), |_| panic!("read after the cut")),
            Err(ConsumeError::Truncated)
        );
    }
    consumer.switch_all(Switch::Flush);
    consumer.switch_all(Switch::Active);
    let _ = consumer.wait(Duration::from_millis(1));
    // A new consumer is refused with a typed error.
    let again = attach(&path).map(|_| ());
    assert!(
        matches!(
            again,
            Err(ChannelError::BadLayout(_) | ChannelError::Backing(BackingError::TooSmall { .. }))
        ),
        "{again:?}"
    );
    drop(consumer);
    // The producer's mapping is dropped without being touched.
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncating_the_file_under_a_draining_consumer_gives_truncated() {
    within("truncation", || {
        let map = Map::new(Mode::Discard);
        truncation(Mode::Discard, 0);
        truncation(Mode::Overwrite, 4096);
        // Only region 1 and the end of region 0's data are gone.
        truncation(Mode::Discard, map.region_at(1) as u64 - 4096);
    });
}

/// Stats and switches right after a cut, before any drain noticed it: each is the
/// first touch of the missing pages for its consumer.
#[test]
fn a_consumer_survives_a_cut_it_has_not_noticed() {
    within("cut unnoticed", || {
        let dir = temp_dir("cut-unnoticed");
        let channel = create(&dir, "chan", Mode::Overwrite);
        fill(&channel, Mode::Overwrite);
        let path = channel.path().unwrap().to_owned();
        drop(channel);
        let (counting, switching) = (attach(&path).unwrap(), attach(&path).unwrap());
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        for cpu in 0..BUFFERS {
            assert_eq!(
                counting.stats(cpu),
                None,
                "the counters are gone with the file"
            );
        }
        switching.switch_all(Switch::Flush);
        switching.switch_all(Switch::Active);
        for consumer in [&counting, &switching] {
            for cpu in 0..BUFFERS {
                assert_eq!(
                    consumer.drain(cpu, &mut Vec::new(), |_| panic!("read after the cut")),
                    Err(ConsumeError::Truncated)
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// The file is cut while `drain` hands out its last packet: the first touch of the
/// missing pages is the reader's release at the end of the call. The truncation is
/// still reported, by that call and every later one (the guard's zero page over the
/// control words must not make the buffer look merely empty).
#[test]
fn a_cut_during_the_last_packet_of_a_drain_is_reported() {
    within("cut in the callback", || {
        let mode = Mode::Overwrite;
        let dir = temp_dir("cut-in-callback");
        let original = make_image(&dir, mode);
        let path = dir.join("copy");
        write_file(&path, &original);
        let consumer = attach(&path).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut packets = 0;
        // Buffer 1 holds exactly N packets (see `pristine`): one drain's worth.
        let first = consumer.drain(1, &mut Vec::new(), |_| {
            packets += 1;
            if packets == N {
                file.set_len(0).unwrap();
            }
        });
        assert_eq!(packets, N);
        assert_eq!(first, Err(ConsumeError::Truncated));
        for cpu in [1, 0, 1] {
            assert_eq!(
                consumer.drain(cpu, &mut Vec::new(), |_| panic!("read after the cut")),
                Err(ConsumeError::Truncated)
            );
        }
        assert_eq!(consumer.stats(0), None);
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Truncations and regrowths of the file while consumers attach and drain.
#[test]
fn attaching_while_the_file_is_cut_and_regrown() {
    within("cut and regrow", || {
        let mode = Mode::Overwrite;
        let dir = temp_dir("cut-regrow");
        let original = make_image(&dir, mode);
        let path = dir.join("copy");
        write_file(&path, &original);
        let stop = AtomicBool::new(false);
        let mut tally = Tally::default();
        std::thread::scope(|s| {
            let cutter = s.spawn(|| {
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                let mut rng = Rng::new(seed() ^ 0xc07);
                let mut cuts = 0;
                while !stop.load(Relaxed) {
                    file.set_len(rng.below(original.len() as u64)).unwrap();
                    std::thread::sleep(Duration::from_micros(rng.below(300)));
                    file.set_len(original.len() as u64).unwrap();
                    file.write_all_at(&original, 0).unwrap();
                    std::thread::sleep(Duration::from_micros(rng.below(1000)));
                    cuts += 1;
                }
                cuts
            });
            let until = Instant::now() + Duration::from_millis(600);
            while Instant::now() < until {
                match attach(&path) {
                    Ok(c) => {
                        tally.attached += 1;
                        tally.drain_all(&c, 3, true);
                        for cpu in 0..BUFFERS {
                            let _ = c.stats(cpu);
                        }
                    }
                    Err(e) => tally.refusal(&e),
                }
            }
            stop.store(true, Relaxed);
            assert!(cutter.join().unwrap() > 0);
        });
        report("cut and regrow", &tally);
        assert!(tally.attached > 0 && tally.refused > 0, "{tally:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
