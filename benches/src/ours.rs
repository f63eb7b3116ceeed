//! ringbuf-core buffers over heap memory, as systems under test, in both record
//! formats: `RawRecords` (8-byte record header, 8-byte aligned) and CTF 1.8
//! (4-byte compact header with a 27-bit TSC delta, byte-aligned).

use ringbuf_core::ctf::Ctf;
use ringbuf_core::{
    Buffer, Client, Config, LocalWord, Mode, Nesting, RawRecords, RecordInfo, Region, SharedWord,
    Switch, Tsc, Word,
};

use crate::Sink;

/// Heap memory for one region, 8-byte aligned (a `Vec<u64>`).
pub struct Memory(Vec<u64>);

impl Memory {
    /// Memory for a region of `config`.
    pub fn new(config: &Config) -> Self {
        let bytes = Region::<SharedWord>::size_for(config).expect("valid config");
        Self(vec![0; bytes.div_ceil(8)])
    }

    /// The bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: the Vec owns `len` initialised bytes, exclusively borrowed here.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) }
    }
}

/// A record format the benches build buffers with.
pub trait Format: Client + Sized {
    /// The region's format tag.
    const TAG: u32;
    /// The format's client for a bench buffer.
    fn client() -> Self;
}

impl Format for RawRecords {
    const TAG: u32 = 0;
    fn client() -> Self {
        RawRecords
    }
}

impl Format for Ctf {
    const TAG: u32 = 1;
    fn client() -> Self {
        Ctf::new([0x42; 16], 0)
    }
}

/// A buffer timestamped with the TSC, in format `K` (raw records by default).
pub type TscBuffer<'a, W, K = RawRecords> = Buffer<Region<'a, W>, K, Tsc>;

/// A shared-flavour buffer over `mem`.
pub fn shared_buffer<K: Format>(mem: &mut Memory, config: Config) -> TscBuffer<'_, SharedWord, K> {
    let region = Region::init(mem.bytes(), config, K::TAG).expect("region");
    Buffer::new(region, K::client(), Tsc).expect("buffer")
}

/// A local-flavour buffer over `mem`.
///
/// # Safety
///
/// Only one thread (and its signal handlers) writes to it.
pub unsafe fn local_buffer<K: Format>(
    mem: &mut Memory,
    config: Config,
) -> TscBuffer<'_, LocalWord, K> {
    // SAFETY: the caller's contract is the local flavour's.
    let region = unsafe { Region::init_local(mem.bytes(), config, K::TAG) }.expect("region");
    Buffer::new(region, K::client(), Tsc).expect("buffer")
}

/// Writes one event of `payload` (reserve, copy, commit); the operation measured.
#[inline(always)]
pub fn write_event<W: Word, K: Client, const N: usize>(
    buf: &TscBuffer<'_, W, K>,
    nest: &Nesting,
    payload: &[u8; N],
) {
    if let Ok(mut r) = buf.reserve(nest, 1, N) {
        r.payload_mut().copy_from_slice(payload);
        r.commit();
    }
}

/// Closes the open packet and takes every complete one (without reading it).
/// Returns the packets taken; 0 if another reader is attached.
pub fn drain<W: Word, K: Client>(buf: &TscBuffer<'_, W, K>) -> u64 {
    // An error means no room to close it (discard mode, full): reading makes room.
    let _ = buf.switch(Switch::Active);
    let Ok(mut reader) = buf.reader() else {
        return 0;
    };
    let mut packets = 0;
    while let Ok(sub) = reader.get_next_subbuf() {
        reader.put_next_subbuf(sub);
        packets += 1;
    }
    packets
}

/// A ringbuf buffer and its writer's nesting counter, as a [`Sink`].
pub struct Ringbuf<'a, W: Word, K: Client = RawRecords> {
    buf: TscBuffer<'a, W, K>,
    nest: Nesting,
}

impl<'a, K: Format> Ringbuf<'a, SharedWord, K> {
    /// A shared-flavour buffer of `config` over `mem`.
    pub fn shared(mem: &'a mut Memory, config: Config) -> Self {
        Self {
            buf: shared_buffer(mem, config),
            nest: Nesting::new(),
        }
    }
}

impl<'a, K: Format> Ringbuf<'a, LocalWord, K> {
    /// A local-flavour buffer of `config` over `mem`.
    ///
    /// # Safety
    ///
    /// Only one thread at a time (and its signal handlers) writes to it.
    pub unsafe fn local(mem: &'a mut Memory, config: Config) -> Self {
        Self {
            // SAFETY: the caller's contract.
            buf: unsafe { local_buffer(mem, config) },
            nest: Nesting::new(),
        }
    }
}

impl<'a, W: Word, K: Client> Ringbuf<'a, W, K> {
    /// The buffer.
    pub fn buffer(&self) -> &TscBuffer<'a, W, K> {
        &self.buf
    }
}

impl<W: Word, K: Client, const N: usize> Sink<N> for Ringbuf<'_, W, K> {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; N]) {
        write_event(&self.buf, &self.nest, payload);
    }

    fn room(&self) -> u64 {
        let config = self.buf.config();
        if config.mode == Mode::Overwrite {
            return u64::MAX;
        }
        // Discard mode: what fits in all but one sub-buffer, with the largest record
        // header (a timestamp far from the previous one), so that a batch never
        // meets a full buffer after a drain (which leaves every sub-buffer free).
        let client = self.buf.client();
        let far = RecordInfo {
            event_id: 1,
            payload_len: N,
            timestamp: 1 << 62,
            prev_timestamp: 0,
        };
        let record = (client.record_header_size(&far) + N).next_multiple_of(K::RECORD_ALIGN);
        let packet = client.packet_header_size() as u64;
        let per_subbuf = (config.subbuf_size - packet - 1) / record as u64;
        per_subbuf * (config.subbuf_count - 1)
    }

    fn drain(&mut self) {
        drain(&self.buf);
    }

    fn lost(&self) -> u64 {
        self.buf.stats().events_discarded()
    }
}

/// A per-CPU channel of raw records over the TSC, overwrite mode, written through
/// the shared path (`create`) or, if available, the rseq path (`create_rseq`).
pub fn percpu_channel(rseq: bool) -> ringbuf_mmap::PerCpuChannel<RawRecords, ringbuf_core::Tsc> {
    use ringbuf_mmap::{possible_cpus, Backing, ChannelOptions, PerCpuChannel};
    let options = ChannelOptions {
        config: crate::config(Mode::Overwrite),
        buffers: possible_cpus(),
        format: 0,
        prefault: true,
        // Recorded in the header only: nothing reads these timestamps.
        clock: ringbuf_core::ctf::ClockDescription {
            name: "tsc",
            description: "uncalibrated TSC",
            freq: 1_000_000_000,
            offset_s: 0,
            offset: 0,
        },
    };
    let create = if rseq {
        PerCpuChannel::create_rseq
    } else {
        PerCpuChannel::create
    };
    create(
        Backing::Memfd { name: "bench" },
        &options,
        "",
        |_| RawRecords,
        |_| ringbuf_core::Tsc,
    )
    .expect("channel")
}

/// One thread's handle on a per-CPU channel (overwrite mode: never drained).
pub struct PerCpuSink<'a>(pub &'a ringbuf_mmap::PerCpuChannel<RawRecords, ringbuf_core::Tsc>);

impl<const M: usize> Sink<M> for PerCpuSink<'_> {
    #[inline(always)]
    fn event(&mut self, payload: &[u8; M]) {
        let _ = self.0.write(1, payload);
    }
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn drain(&mut self) {}
    fn lost(&self) -> u64 {
        self.0.stats().iter().map(|s| s.events_discarded()).sum()
    }
}
