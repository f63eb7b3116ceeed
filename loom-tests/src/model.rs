//! The loom control block and the harness the models share.

use core::sync::atomic::Ordering;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32 as CountU32, AtomicUsize as CountUsize};
use std::sync::Mutex;
use std::time::Instant;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;

use ringbuf_core::id::SubbufId;
use ringbuf_core::{
    Buffer, Client, Clock, Config, Control, Flavour, LossWords, Mode, NoClock, Out, PacketBegin,
    PacketEnd, RawPacket, RawRecords, ReadError, Reader, ReaderWords, RecordInfo, SlotWords,
    Subbuf, Word, WriterWords,
};

/// A loom atomic as an engine [`Word`]. Used for the writer-only words and the
/// reader-modified words alike: loom checks the orderings the engine asks for.
#[repr(transparent)]
#[derive(Debug)]
pub struct ModelWord(AtomicU64);

impl ModelWord {
    /// A word holding `value` (call inside `loom::model`).
    pub fn new(value: u64) -> Self {
        Self(AtomicU64::new(value))
    }
}

// SAFETY: loom's `AtomicU64` is a single-copy atomic with (at least) the requested
// orderings in loom's memory model, which is all the model checker runs on.
unsafe impl Word for ModelWord {
    const FLAVOUR: Flavour = Flavour::Model;
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        self.0.fetch_add(value, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.0.compare_exchange(current, new, success, failure)
    }
}

/// A [`Control`] over loom atomics and one loom `UnsafeCell<u8>` per sub-buffer byte.
///
/// Its initial state is the one `Region::init_raw` lays out: every word zero, slot
/// `i`'s id `SubbufId::referenced(0, i)`, the reader's spare `N`. It deliberately does
/// not implement `Mapped`: the models write with `Reservation::write_at` and read with
/// `Reader::read_at`, so every byte access goes through loom's causality checks.
pub struct LoomControl {
    config: Config,
    subbuf_size: usize,
    physical: usize,
    writer: WriterWords<ModelWord>,
    losses: LossWords<ModelWord>,
    reader: ReaderWords<ModelWord>,
    slots: Box<[SlotWords<ModelWord, ModelWord>]>,
    bytes: Box<[UnsafeCell<u8>]>,
}

// SAFETY: the words are loom atomics (`Sync`). The byte cells are only accessed
// through the `Control` byte methods, whose callers (the engine) promise exclusive
// access by the algorithm's rules; loom runs every model thread on one OS thread and
// checks exactly that promise on each access (a violation panics instead of racing).
unsafe impl Sync for LoomControl {}

impl LoomControl {
    /// A freshly initialised control block for `config` (call inside `loom::model`).
    ///
    /// # Panics
    ///
    /// If `config` does not validate.
    pub fn new(config: Config) -> Self {
        config.validate().expect("model configuration is valid");
        let n = config.subbuf_count;
        let physical = config.physical_count() as usize;
        let subbuf_size = config.subbuf_size as usize;
        let zero = || ModelWord::new(0);
        let slots = (0..n)
            .map(|i| SlotWords {
                commit: zero(),
                delivered: zero(),
                prefix: zero(),
                prefix_stamp_pre: zero(),
                prefix_stamp_post: zero(),
                end_ts: zero(),
                content: zero(),
                discarded: zero(),
                id: ModelWord::new(SubbufId::referenced(0, i).raw()),
            })
            .collect();
        let bytes = (0..physical * subbuf_size)
            .map(|_| UnsafeCell::new(0))
            .collect();
        Self {
            config,
            subbuf_size,
            physical,
            writer: WriterWords {
                write: zero(),
                last_timestamp: zero(),
                last_at: zero(),
            },
            losses: LossWords {
                full: zero(),
                wrap: zero(),
                big: zero(),
                nested: zero(),
                overrun: zero(),
                fenced: zero(),
            },
            reader: ReaderWords {
                consumed: zero(),
                spare: ModelWord::new(n),
                attached: zero(),
                fence: zero(),
            },
            slots,
            bytes,
        }
    }

    /// The cells of `len` bytes of physical sub-buffer `phys` from `offset`.
    fn cells(&self, phys: usize, offset: usize, len: usize) -> &[UnsafeCell<u8>] {
        assert!(
            phys < self.physical && offset + len <= self.subbuf_size,
            "engine accessed bytes out of range: phys {phys}, {offset}+{len}"
        );
        &self.bytes[phys * self.subbuf_size + offset..][..len]
    }
}

// SAFETY: `config` validated in `new` and never changes; `slots` has `subbuf_count`
// entries; the byte methods bound-check (`cells`) and address `physical_count`
// disjoint ranges of `subbuf_size` cells that are separate from every word.
unsafe impl Control for LoomControl {
    type Word = ModelWord;
    type Shared = ModelWord;

    fn config(&self) -> Config {
        self.config
    }
    fn writer(&self) -> &WriterWords<ModelWord> {
        &self.writer
    }
    fn losses(&self) -> &LossWords<ModelWord> {
        &self.losses
    }
    fn reader(&self) -> &ReaderWords<ModelWord> {
        &self.reader
    }
    fn slot(&self, i: usize) -> &SlotWords<ModelWord, ModelWord> {
        &self.slots[i]
    }

    unsafe fn write_bytes(&self, phys: usize, offset: usize, src: &[u8]) {
        for (cell, &b) in self.cells(phys, offset, src.len()).iter().zip(src) {
            // SAFETY: the pointer comes from a live cell; loom's `with_mut` panics if
            // this write is not ordered after every other access to the byte.
            cell.with_mut(|p| unsafe { *p = b });
        }
    }
    unsafe fn zero_bytes(&self, phys: usize, offset: usize, len: usize) {
        for cell in self.cells(phys, offset, len) {
            // SAFETY: as in `write_bytes`.
            cell.with_mut(|p| unsafe { *p = 0 });
        }
    }
    unsafe fn read_bytes(&self, phys: usize, offset: usize, dst: &mut [u8]) {
        for (cell, b) in self.cells(phys, offset, dst.len()).iter().zip(dst) {
            // SAFETY: the pointer comes from a live cell; loom's `with` panics if the
            // last write to the byte does not happen before this read.
            *b = cell.with(|p| unsafe { *p });
        }
    }
}

/// Highest packet sequence number the models' [`CountingClient`] tracks.
pub const MAX_SEQ: usize = 16;

/// [`RawRecords`], counting per packet how often the engine wrote its header
/// (`packet_begin`) and finalised it (`packet_end`: the delivery), which loom thread
/// delivered it, and how many padding records it wrote.
///
/// The counters are `std` types on purpose: they observe, they never synchronise
/// (loom runs all model threads on one OS thread, so they are exact).
#[derive(Debug, Default)]
pub struct CountingClient {
    begins: [CountU32; MAX_SEQ],
    ends: [CountU32; MAX_SEQ],
    paddings: CountU32,
    deliverers: Mutex<Vec<(u64, String)>>,
}

impl CountingClient {
    /// How many times the header of packet `seq` was written.
    pub fn begins(&self, seq: u64) -> u32 {
        self.begins[seq as usize].load(Ordering::Relaxed)
    }
    /// How many times packet `seq` was delivered (finalised).
    pub fn ends(&self, seq: u64) -> u32 {
        self.ends[seq as usize].load(Ordering::Relaxed)
    }
    /// How many padding records (failed undos) were written.
    pub fn paddings(&self) -> u32 {
        self.paddings.load(Ordering::Relaxed)
    }
    /// Name of the loom thread that delivered packet `seq` ("main" for the model's
    /// main thread), if it was delivered.
    pub fn delivered_by(&self, seq: u64) -> Option<String> {
        let deliverers = self.deliverers.lock().unwrap();
        deliverers
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, name)| name.clone())
    }
}

fn bump(counters: &[CountU32; MAX_SEQ], seq: u64) {
    let c = counters
        .get(seq as usize)
        .expect("model wrote more packets than MAX_SEQ");
    c.fetch_add(1, Ordering::Relaxed);
}

impl Client for CountingClient {
    const RECORD_ALIGN: usize = <RawRecords as Client>::RECORD_ALIGN;
    const USES_PREV_TIMESTAMP: bool = <RawRecords as Client>::USES_PREV_TIMESTAMP;

    fn packet_header_size(&self) -> usize {
        RawRecords.packet_header_size()
    }
    fn record_header_size(&self, rec: &RecordInfo) -> usize {
        RawRecords.record_header_size(rec)
    }
    fn write_record_header<O: Out>(&self, out: &mut O, rec: &RecordInfo) {
        RawRecords.write_record_header(out, rec)
    }
    fn write_padding_record<O: Out>(
        &self,
        out: &mut O,
        rec: &RecordInfo,
        header_size: usize,
        total: usize,
    ) {
        self.paddings.fetch_add(1, Ordering::Relaxed);
        RawRecords.write_padding_record(out, rec, header_size, total)
    }
    fn packet_begin<O: Out>(&self, out: &mut O, begin: &PacketBegin) {
        bump(&self.begins, begin.seq);
        RawRecords.packet_begin(out, begin)
    }
    fn packet_end<O: Out>(&self, out: &mut O, end: &PacketEnd) {
        bump(&self.ends, end.seq);
        let me = loom::thread::current();
        let name = me.name().unwrap_or("main").to_owned();
        self.deliverers.lock().unwrap().push((end.seq, name));
        RawRecords.packet_end(out, end)
    }
}

/// Spawns a loom thread named `name` (the name [`CountingClient::delivered_by`]
/// reports).
pub fn spawn<F, T>(name: &str, f: F) -> loom::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    loom::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("loom spawns")
}

/// A clock for models that check timestamps: a loom atomic counter, so every read
/// is later than every read that happens before it, as with the engine's ordered
/// TSC read.
#[derive(Debug)]
pub struct ModelClock(AtomicU64);

impl Clock for ModelClock {
    fn now(&self) -> u64 {
        // SeqCst: the model's "real time": reads are totally ordered, consistently
        // with happens-before.
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The engine as the models run it: the shipping [`Buffer`] over [`LoomControl`],
/// without a clock (every timestamp 0) unless the model checks time.
pub type ModelBuffer<T = NoClock> = Buffer<LoomControl, CountingClient, T>;
/// The shipping [`Reader`] of a [`ModelBuffer`].
pub type ModelReader<'b, T = NoClock> = Reader<'b, LoomControl, CountingClient, T>;

/// A fresh buffer for `config`, shared between loom threads.
pub fn new_buffer(config: Config) -> Arc<ModelBuffer> {
    new_buffer_with_clock(config, NoClock)
}

/// A fresh buffer for `config` whose timestamps come from a [`ModelClock`].
pub fn new_clocked_buffer(config: Config) -> Arc<ModelBuffer<ModelClock>> {
    new_buffer_with_clock(config, ModelClock(AtomicU64::new(0)))
}

fn new_buffer_with_clock<T: Clock>(config: Config, clock: T) -> Arc<ModelBuffer<T>> {
    let buffer = Buffer::new(LoomControl::new(config), CountingClient::default(), clock)
        .expect("the raw format fits the model's sub-buffers");
    Arc::new(buffer)
}

/// The checksummed payload of record `id`: `len` bytes derived from the id, so a
/// reader that sees a torn or foreign payload notices.
pub fn pattern(id: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as usize * 131 + i * 29 + 0x5a) as u8)
        .collect()
}

/// A packet as the models see it, decoded and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Packet sequence number from the header (checked against the reader's).
    pub seq: u64,
    /// `timestamp_begin` from the header.
    pub timestamp_begin: u64,
    /// `timestamp_end` from the header.
    pub timestamp_end: u64,
    /// Header plus records, in bytes.
    pub content_size: u64,
    /// Running total of discarded events at close.
    pub events_discarded: u64,
    /// Event ids of the records, in stream order, padding skipped.
    pub records: Vec<u32>,
    /// Event ids in stream order with every padding record as `None`.
    pub layout: Vec<Option<u32>>,
}

/// Copies the held sub-buffer out with [`Reader::read_at`] and decodes it; asserts
/// that it is a well-formed packet whose every payload matches [`pattern`].
pub fn read_packet<T: Clock>(reader: &ModelReader<'_, T>, sub: &Subbuf) -> Packet {
    let size = reader.config().subbuf_size as usize;
    let mut bytes = vec![0u8; size];
    assert!(
        reader.read_at(sub, 0, &mut bytes),
        "read_at of a held packet"
    );
    let packet = RawPacket::parse(&bytes).expect("a delivered packet parses");
    assert_eq!(packet.seq, sub.packet_seq(), "packet header seq");
    let mut records = Vec::new();
    for r in packet.records() {
        let (id, payload) = r.expect("well-formed records");
        assert_eq!(
            payload,
            &pattern(id, payload.len())[..],
            "payload of record {id} corrupt"
        );
        records.push(id);
    }
    // Walk again, keeping the padding records (which `records()` skips).
    let mut layout = Vec::new();
    let mut at = RawRecords::PACKET_HEADER;
    while at < packet.content_size as usize {
        let mut h = [0u8; 8];
        h.copy_from_slice(&bytes[at..at + 8]);
        let h = u64::from_le_bytes(h);
        let (len, id) = ((h as u32) as usize, (h >> 32) as u32);
        layout.push((id != RawRecords::PADDING_ID).then_some(id));
        at = (at + RawRecords::RECORD_HEADER + len).next_multiple_of(RawRecords::RECORD_ALIGN);
    }
    assert_eq!(
        at, packet.content_size as usize,
        "records end at content_size"
    );
    Packet {
        seq: packet.seq,
        timestamp_begin: packet.timestamp_begin,
        timestamp_end: packet.timestamp_end,
        content_size: packet.content_size,
        events_discarded: packet.events_discarded,
        records,
        layout,
    }
}

/// Gets, reads and puts the next packet; `None` on `NoData`.
///
/// # Panics
///
/// On any other read error.
pub fn read_next<T: Clock>(reader: &mut ModelReader<'_, T>) -> Option<Packet> {
    match reader.get_next_subbuf() {
        Ok(sub) => {
            let packet = read_packet(reader, &sub);
            reader.put_next_subbuf(sub);
            Some(packet)
        }
        Err(ReadError::NoData) => None,
        Err(e) => panic!("get_next_subbuf: {e}"),
    }
}

/// Attaches a reader and reads every complete packet left, in order.
pub fn drain<T: Clock>(buf: &ModelBuffer<T>) -> Vec<Packet> {
    let mut reader = buf.reader().expect("no other reader attached");
    let mut out = Vec::new();
    while let Some(p) = read_next(&mut reader) {
        out.push(p);
    }
    out
}

/// Writes record `id` with a [`pattern`] payload of `len` bytes.
pub fn write<T: Clock>(
    buf: &ModelBuffer<T>,
    nest: &ringbuf_core::Nesting,
    id: u32,
    len: usize,
) -> Result<(), ringbuf_core::ReserveError> {
    buf.write(nest, id, &pattern(id, len))
}

/// Asserts that packets `0..opened` had their header written exactly once and every
/// one of them except `undelivered` was delivered exactly once, and that no other
/// packet was touched.
pub fn assert_packets_once<T: Clock>(buf: &ModelBuffer<T>, opened: u64, undelivered: &[u64]) {
    let c = buf.client();
    for seq in 0..MAX_SEQ as u64 {
        let open = u32::from(seq < opened);
        let delivered = u32::from(seq < opened && !undelivered.contains(&seq));
        assert_eq!(c.begins(seq), open, "packet_begin count of packet {seq}");
        assert_eq!(c.ends(seq), delivered, "delivery count of packet {seq}");
    }
}

/// Asserts that every slot except those in `stuck` is settled: its commit count is
/// a whole number of laps, all delivered.
pub fn assert_slots_settled<T: Clock>(buf: &ModelBuffer<T>, stuck: &[usize]) {
    let ctl = buf.control();
    let s = buf.config().subbuf_size;
    for i in 0..buf.config().subbuf_count as usize {
        if stuck.contains(&i) {
            continue;
        }
        let w = ctl.slot(i);
        let commit = w.commit.load(Ordering::Relaxed);
        let delivered = w.delivered.load(Ordering::Relaxed);
        assert_eq!(commit % s, 0, "slot {i} commit {commit} not whole laps");
        assert_eq!(delivered, commit, "slot {i} delivered");
    }
}

/// Asserts the overwrite-mode id table plus the reader's spare is a permutation of
/// the physical sub-buffers.
pub fn assert_ids_permutation<T: Clock>(buf: &ModelBuffer<T>) {
    let config = buf.config();
    if config.mode != Mode::Overwrite {
        return;
    }
    let ctl = buf.control();
    let mut phys: Vec<u64> = (0..config.subbuf_count as usize)
        .map(|i| SubbufId::from_raw(ctl.slot(i).id.load(Ordering::Relaxed)).phys())
        .collect();
    phys.push(ctl.reader().spare.load(Ordering::Relaxed));
    phys.sort_unstable();
    let all: Vec<u64> = (0..config.physical_count()).collect();
    assert_eq!(phys, all, "id table and spare are a permutation");
}

/// What [`check`] explored: interleavings, and how many ended in each outcome.
#[derive(Debug)]
pub struct Explored {
    /// Interleavings (loom executions) explored.
    pub interleavings: usize,
    /// Executions per outcome label the model returned.
    pub outcomes: BTreeMap<String, usize>,
}

impl Explored {
    /// Asserts that some interleaving ended in `outcome`: the model really reached
    /// that case (it is not vacuous).
    ///
    /// # Panics
    ///
    /// If no execution returned `outcome`.
    pub fn assert_reached(&self, outcome: &str) -> &Self {
        assert!(
            self.outcomes.contains_key(outcome),
            "outcome {outcome:?} never reached; reached: {:?}",
            self.outcomes
        );
        self
    }
}

/// Runs `model` under loom (bounded by `LOOM_MAX_PREEMPTIONS` when set, exhaustive
/// otherwise) and prints the number of interleavings explored, the time taken, and
/// how many executions ended in each outcome (the label each execution returns).
pub fn check<F>(name: &str, model: F) -> Explored
where
    F: Fn() -> String + Sync + Send + 'static,
{
    let outcomes = std::sync::Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let count = std::sync::Arc::new(CountUsize::new(0));
    let (counter, tally) = (count.clone(), outcomes.clone());
    let builder = loom::model::Builder::new();
    let bound = builder
        .preemption_bound
        .map_or_else(|| "unbounded".to_owned(), |b| b.to_string());
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        let outcome = model();
        *tally.lock().unwrap().entry(outcome).or_default() += 1;
    });
    let elapsed = start.elapsed();
    let interleavings = count.load(Ordering::Relaxed);
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    println!(
        "loom model {name}: {interleavings} interleavings in {elapsed:.2?} \
         (preemption bound {bound}); outcomes: {outcomes:?}"
    );
    Explored {
        interleavings,
        outcomes,
    }
}
