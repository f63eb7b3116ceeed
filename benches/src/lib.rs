//! Shared pieces of the criterion benchmarks: buffers over heap memory, and the
//! hardware floor they are compared with.

use ringbuf_core::{Buffer, Config, RawRecords, Region, Tsc, Word};

/// Heap memory for one region, 8-byte aligned (a `Vec<u64>`).
pub struct Memory(Vec<u64>);

impl Memory {
    /// Memory for a region of `config`.
    pub fn new(config: &Config) -> Self {
        let bytes = Region::<ringbuf_core::SharedWord>::size_for(config).expect("valid config");
        Self(vec![0; bytes.div_ceil(8)])
    }

    /// The bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: the Vec owns `len` initialised bytes, exclusively borrowed here.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) }
    }
}

/// A raw-record buffer timestamped with the TSC.
pub type TscBuffer<'a, W> = Buffer<Region<'a, W>, RawRecords, Tsc>;

/// A shared-flavour buffer over `mem`.
pub fn shared_buffer(mem: &mut Memory, config: Config) -> TscBuffer<'_, ringbuf_core::SharedWord> {
    let region = Region::init(mem.bytes(), config, 0).expect("region");
    Buffer::new(region, RawRecords, Tsc).expect("buffer")
}

/// A local-flavour buffer over `mem`.
///
/// # Safety
///
/// Only one thread (and its signal handlers) writes to it.
pub unsafe fn local_buffer(
    mem: &mut Memory,
    config: Config,
) -> TscBuffer<'_, ringbuf_core::LocalWord> {
    // SAFETY: the caller's contract is the local flavour's.
    let region = unsafe { Region::init_local(mem.bytes(), config, 0) }.expect("region");
    Buffer::new(region, RawRecords, Tsc).expect("buffer")
}

/// Writes one event of `payload` (reserve, copy, commit); the operation measured.
#[inline(always)]
pub fn write_event<W: Word, const N: usize>(
    buf: &TscBuffer<'_, W>,
    nest: &ringbuf_core::Nesting,
    payload: &[u8; N],
) {
    if let Ok(mut r) = buf.reserve(nest, 1, N) {
        r.payload_mut().copy_from_slice(payload);
        r.commit();
    }
}

/// The floor: what any tracer must do per event: read the TSC and store a record
/// of the same size (8-byte header + payload) into a plain array.
pub struct Floor {
    array: Vec<u8>,
    pos: usize,
}

impl Floor {
    /// A 1 MiB array, the same order of size as the buffers measured.
    pub fn new() -> Self {
        Self {
            array: vec![0; 1 << 20],
            pos: 0,
        }
    }

    /// One event.
    #[inline(always)]
    pub fn write<const N: usize>(&mut self, payload: &[u8; N]) {
        let ts = Tsc.now_u64();
        let len = 8 + payload.len();
        if self.pos + len > self.array.len() {
            self.pos = 0;
        }
        let header = (payload.len() as u64) | (ts << 32);
        self.array[self.pos..self.pos + 8].copy_from_slice(&header.to_le_bytes());
        self.array[self.pos + 8..self.pos + len].copy_from_slice(payload);
        self.pos += len.next_multiple_of(8);
        // The stores must happen, as a tracer's would: the array escapes.
        std::hint::black_box(&mut self.array);
    }
}

impl Default for Floor {
    fn default() -> Self {
        Self::new()
    }
}

trait NowU64 {
    fn now_u64(&self) -> u64;
}

impl NowU64 for Tsc {
    #[inline(always)]
    fn now_u64(&self) -> u64 {
        ringbuf_core::Clock::now(self)
    }
}
