//! The region: layout, attach validation, corrupt and hostile contents.

mod common;

use common::{buffer, next_packet, Counter, Memory};
use ringbuf_core::{
    Buffer, Config, ConfigError, Flavour, LocalWord, Mode, Nesting, RawRecords, Region,
    RegionError, RegionHeader, SharedWord, Switch, HEADER_SIZE, REGION_MAGIC,
};
use std::sync::atomic::AtomicU64;

const FORMAT: u32 = 0;

fn header_of(mem: &mut Memory) -> RegionHeader {
    // SAFETY: the memory holds at least a header; plain data.
    unsafe { std::ptr::read_unaligned(mem.bytes().as_ptr().cast()) }
}

fn set_header(mem: &mut Memory, h: RegionHeader) {
    // SAFETY: as above.
    unsafe { std::ptr::write_unaligned(mem.bytes().as_mut_ptr().cast(), h) }
}

fn attach(mem: &mut Memory) -> Result<(), RegionError> {
    Region::<SharedWord>::attach(mem.bytes(), FORMAT).map(|_| ())
}

#[test]
fn init_refuses_bad_memory_and_bad_configurations() {
    let config = Config::new(256, 4, Mode::Discard);
    let need = Region::<SharedWord>::size_for(&config).unwrap();
    let mut mem = Memory::new(need + 8);
    assert_eq!(
        Region::init(&mut mem.bytes()[..need - 1], config, FORMAT).err(),
        Some(RegionError::TooSmall {
            need: need as u64,
            have: need as u64 - 1
        })
    );
    assert_eq!(
        Region::init(&mut mem.bytes()[1..], config, FORMAT).err(),
        Some(RegionError::Misaligned)
    );
    assert_eq!(
        Region::init(mem.bytes(), Config::new(256, 3, Mode::Discard), FORMAT).err(),
        Some(RegionError::Config(ConfigError::SubbufCountNotPowerOfTwo(
            3
        )))
    );
    // A packet header that leaves no room for a record.
    let region = Region::init(mem.bytes(), Config::new(64, 2, Mode::Discard), FORMAT).unwrap();
    struct Fat;
    impl ringbuf_core::Client for Fat {
        const RECORD_ALIGN: usize = 8;
        const USES_PREV_TIMESTAMP: bool = false;
        fn packet_header_size(&self) -> usize {
            60
        }
        fn record_header_size(&self, _: &ringbuf_core::RecordInfo) -> usize {
            0
        }
        fn write_record_header<O: ringbuf_core::Out>(
            &self,
            _: &mut O,
            _: &ringbuf_core::RecordInfo,
        ) {
        }
        fn write_padding_record<O: ringbuf_core::Out>(
            &self,
            _: &mut O,
            _: &ringbuf_core::RecordInfo,
            _: usize,
            _: usize,
        ) {
        }
        fn packet_begin<O: ringbuf_core::Out>(&self, _: &mut O, _: &ringbuf_core::PacketBegin) {}
        fn packet_end<O: ringbuf_core::Out>(&self, _: &mut O, _: &ringbuf_core::PacketEnd) {}
    }
    assert_eq!(
        Buffer::new(region, Fat, ringbuf_core::NoClock).err(),
        Some(ConfigError::PacketHeaderTooLarge {
            header: 64,
            subbuf_size: 64
        })
    );
}

#[test]
fn layout_is_cache_line_separated_and_page_aligned() {
    let config = Config::new(4096, 8, Mode::Overwrite);
    let layout = ringbuf_core::Layout::new(&config).unwrap();
    let lines = [layout.writer, layout.losses, layout.reader, layout.slots];
    assert!(lines.windows(2).all(|w| w[1] - w[0] >= 64));
    assert!(lines.iter().all(|o| o % 64 == 0));
    assert_eq!(layout.slot_stride, 128, "two cache lines per slot");
    assert_eq!(layout.data % 4096, 0);
    assert!(layout.data >= layout.slots + 8 * 128);
    assert_eq!(
        layout.size,
        layout.data + 9 * 4096,
        "N + 1 physical sub-buffers"
    );
}

#[test]
fn attach_sees_what_the_creator_wrote() {
    let config = Config::new(256, 4, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    {
        let buf = buffer(&mut mem, config);
        buf.write(&Nesting::new(), 5, &[5; 200]).unwrap();
        buf.switch(Switch::Active).unwrap();
    }
    let region = Region::<SharedWord>::attach(mem.bytes(), FORMAT).unwrap();
    assert_eq!(ringbuf_core::Control::config(&region), config);
    let buf = Buffer::new(region, RawRecords, Counter(AtomicU64::new(0))).unwrap();
    let mut reader = buf.reader().unwrap();
    let p = next_packet(&mut reader).unwrap();
    assert_eq!(p.records, [(5, vec![5; 200])]);
}

#[test]
fn attach_refuses_each_corrupt_header_field_with_its_own_error() {
    let config = Config::new(256, 4, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    Region::init(mem.bytes(), config, FORMAT).unwrap();
    let good = header_of(&mut mem);
    assert_eq!(good.magic, REGION_MAGIC);
    type Corruption = (fn(&mut RegionHeader), RegionError);
    let cases: Vec<Corruption> = vec![
        (|h| h.magic[0] ^= 1, RegionError::BadMagic),
        (|h| h.version = 99, RegionError::UnsupportedVersion(99)),
        (
            |h| h.endian = h.endian.swap_bytes(),
            RegionError::WrongEndianness,
        ),
        (|h| h.word_size = 4, RegionError::WrongWordSize(4)),
        (|h| h.flavour = 7, RegionError::UnknownFlavour(7)),
        (
            |h| h.flavour = Flavour::Local as u32,
            RegionError::FlavourMismatch {
                region: Flavour::Local,
            },
        ),
        (|h| h.mode = 0, RegionError::UnknownMode(0)),
        (|h| h.format = 3, RegionError::FormatMismatch { region: 3 }),
        (
            |h| h.subbuf_size = 100,
            RegionError::Config(ConfigError::SubbufSizeNotPowerOfTwo(100)),
        ),
        (
            |h| h.subbuf_count = 1,
            RegionError::Config(ConfigError::SubbufCountOutOfRange(1)),
        ),
        (|h| h.data_offset += 8, RegionError::LayoutMismatch),
        (|h| h.slot_stride = 8, RegionError::LayoutMismatch),
        (|h| h.fields[3] = 0, RegionError::LayoutMismatch),
        (|h| h.physical_count = 4, RegionError::LayoutMismatch),
        (
            |h| h.subbuf_size = 1 << 20,
            RegionError::LayoutMismatch, // region_size no longer matches
        ),
    ];
    for (i, (corrupt, expected)) in cases.into_iter().enumerate() {
        let mut h = good;
        corrupt(&mut h);
        set_header(&mut mem, h);
        assert_eq!(attach(&mut mem), Err(expected), "case {i}");
    }
    set_header(&mut mem, good);
    assert_eq!(attach(&mut mem), Ok(()));
    // Truncated memory.
    let len = mem.bytes().len();
    assert_eq!(
        Region::<SharedWord>::attach(&mut mem.bytes()[..len - 1], FORMAT).err(),
        Some(RegionError::TooSmall {
            need: len as u64,
            have: len as u64 - 1
        })
    );
    assert!(matches!(
        Region::<SharedWord>::attach(&mut mem.bytes()[..HEADER_SIZE - 1], FORMAT),
        Err(RegionError::TooSmall { .. })
    ));
}

#[test]
fn attach_refuses_an_inconsistent_id_table() {
    let config = Config::new(256, 4, Mode::Overwrite);
    let mut mem = Memory::for_config(&config);
    let layout = {
        let region = Region::init(mem.bytes(), config, FORMAT).unwrap();
        region.layout()
    };
    let id = std::mem::offset_of!(ringbuf_core::SlotWords<SharedWord, SharedWord>, id);
    let id_at = |slot: usize| layout.slots + slot * layout.slot_stride + id;
    let set = |mem: &mut Memory, at: usize, v: u64| {
        mem.bytes()[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    };
    // Two slots mapped to one physical sub-buffer.
    set(&mut mem, id_at(1), 0);
    assert_eq!(attach(&mut mem), Err(RegionError::CorruptState));
    // An index out of range.
    set(&mut mem, id_at(1), 77);
    assert_eq!(attach(&mut mem), Err(RegionError::CorruptState));
    set(&mut mem, id_at(1), 1);
    assert_eq!(attach(&mut mem), Ok(()));
    // The reader ahead of the writers.
    set(&mut mem, layout.reader, 1 << 20);
    assert_eq!(attach(&mut mem), Err(RegionError::CorruptState));
}

#[test]
fn local_flavour_regions_need_the_local_type() {
    let config = Config::new(256, 2, Mode::Discard);
    let mut mem = Memory::for_config(&config);
    // SAFETY: this test's writers all run on this thread.
    let region = unsafe { Region::<LocalWord>::init_local(mem.bytes(), config, FORMAT) }.unwrap();
    let buf = Buffer::new(region, RawRecords, ringbuf_core::NoClock).unwrap();
    buf.write(&Nesting::new(), 1, &[1; 8]).unwrap();
    let _ = buf;
    assert_eq!(
        attach(&mut mem),
        Err(RegionError::FlavourMismatch {
            region: Flavour::Local
        })
    );
}

/// xorshift64*: deterministic corruption without a dependency.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn random_corruption_of_the_control_area_yields_errors_never_a_panic() {
    for mode in [Mode::Discard, Mode::Overwrite] {
        let config = Config::new(256, 4, mode);
        let mut pristine = Memory::for_config(&config);
        {
            let buf = buffer(&mut pristine, config);
            let nest = Nesting::new();
            for i in 0..10u32 {
                let _ = buf.write(&nest, i, &[i as u8; 40]);
            }
        }
        let control_len = ringbuf_core::Layout::new(&config).unwrap().data;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ mode as u64;
        let (mut attached, mut refused) = (0, 0);
        for _ in 0..2000 {
            let mut mem = Memory::for_config(&config);
            mem.bytes().copy_from_slice(pristine.bytes());
            for _ in 0..1 + rng(&mut seed) % 4 {
                let at = (rng(&mut seed) as usize) % control_len;
                mem.bytes()[at] = rng(&mut seed) as u8;
            }
            let Ok(region) = Region::<SharedWord>::attach(mem.bytes(), FORMAT) else {
                refused += 1;
                continue;
            };
            attached += 1;
            // Whatever survived validation must be usable without a panic.
            let buf = Buffer::new(region, RawRecords, Counter(AtomicU64::new(0))).unwrap();
            let nest = Nesting::new();
            let mut reader = buf.reader().ok();
            for i in 0..12u32 {
                let _ = buf.write(&nest, i, &[0; 40]);
                if let Some(r) = reader.as_mut() {
                    if let Ok(sub) = r.get_next_subbuf() {
                        let _ = ringbuf_core::RawPacket::parse(r.bytes(&sub).unwrap())
                            .map(|p| p.records().count());
                        r.put_next_subbuf(sub);
                    }
                }
            }
            let _ = buf.switch(Switch::Flush);
            assert_eq!(nest.depth(), 0);
        }
        assert!(
            attached > 0 && refused > 0,
            "{attached} attached, {refused} refused"
        );
    }
}
