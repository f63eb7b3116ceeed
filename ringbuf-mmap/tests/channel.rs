//! Channel behaviour: wakeups, live reading, exclusive creation, thread slots, the
//! clock in the header.

use std::time::{Duration, Instant};

use ringbuf_core::ctf::ClockDescription;
use ringbuf_core::{Config, Mode, NoClock, RawPacket, RawRecords, Switch};
use ringbuf_mmap::clock::{Monotonic, TscError, UnknownClock};
use ringbuf_mmap::{
    Backing, BackingError, ChannelError, ChannelOptions, ClockError, ConsumeError, ExportError,
    PerCpuChannel, PerCpuConsumer, PerThreadChannel, PerThreadConsumer, RecoveryError, SlotError,
    SlotLosses, SlotState, CLOCK_DESCRIPTION_BYTES, CLOCK_NAME_BYTES,
};

fn options(buffers: u32) -> ChannelOptions<'static> {
    ChannelOptions {
        config: Config::new(4096, 4, Mode::Discard),
        buffers,
        format: 0,
        prefault: false,
        clock: Monotonic.describe(),
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-chan-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

fn records(consumer: &PerCpuConsumer<RawRecords, NoClock>) -> usize {
    let mut scratch = Vec::new();
    let mut n = 0;
    for cpu in 0..consumer.buffer_count() {
        consumer
            .drain(cpu, &mut scratch, |p| {
                n += RawPacket::parse(p).unwrap().records().count()
            })
            .unwrap();
    }
    n
}

#[test]
fn delivery_wakes_the_consumer_and_a_live_switch_makes_idle_data_readable() {
    let dir = temp_dir("wake");
    let channel = PerCpuChannel::create(
        Backing::File {
            dir: &dir,
            name: "c",
        },
        &options(1),
        "",
        |_| RawRecords,
        |_| NoClock,
    )
    .unwrap();
    let consumer =
        PerCpuConsumer::attach_path(&dir.join("c"), 0, |_| RawRecords, |_| NoClock).unwrap();
    // Nothing delivered: no wakeup.
    assert!(!consumer.wait(Duration::from_millis(20)));
    // A few events stay in the open packet: still no wakeup, nothing to read...
    for i in 0..3u32 {
        channel.write(i, &[1; 16]).unwrap();
    }
    assert!(!consumer.wait(Duration::from_millis(20)));
    assert_eq!(records(&consumer), 0);
    // ...until the producer's live timer switches: that delivers it and wakes us.
    channel.switch_all(Switch::Active).unwrap();
    assert!(consumer.wait(Duration::from_millis(1000)));
    assert_eq!(records(&consumer), 3);
    // A consumer of a per-CPU channel may also switch itself (no wakeup needed).
    channel.write(9, &[9; 16]).unwrap();
    assert_eq!(records(&consumer), 0);
    consumer.switch_all(Switch::Active);
    assert_eq!(records(&consumer), 1);
    // Filling a packet delivers it from the writer, which wakes a waiting consumer.
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        let woke = consumer.wait(Duration::from_secs(5));
        (woke, start.elapsed(), records(&consumer))
    });
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..200u32 {
        let _ = channel.write(i, &[2; 16]);
    }
    let (woke, after, read) = waiter.join().unwrap();
    assert!(woke && after < Duration::from_secs(5));
    assert!(read > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_existing_file_is_never_reused_and_files_are_private() {
    let dir = temp_dir("excl");
    let create = || {
        PerCpuChannel::create(
            Backing::File {
                dir: &dir,
                name: "c",
            },
            &options(1),
            "",
            |_| RawRecords,
            |_| NoClock,
        )
    };
    let first = create().unwrap();
    let mode = std::fs::metadata(dir.join("c")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    match create() {
        Err(ChannelError::Backing(BackingError::Io(e))) => {
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("expected AlreadyExists, got {:?}", other.err()),
    }
    drop(first);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A consumer that attaches the moment a file channel's name appears finds a
/// complete channel: the name is linked only once the header and every region are
/// written. (It was the file itself, created first: a watcher attached to zeros,
/// "bad magic", or to a header not yet ready.) A large prefaulted channel keeps
/// the creation long enough for the watcher to look many times.
#[test]
fn a_file_channel_appears_under_its_name_only_when_complete() {
    let dir = temp_dir("appear");
    let path = dir.join("c");
    for round in 0..5 {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(dir.join(".c.wake"));
        let watcher = std::thread::spawn({
            let path = path.clone();
            move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !path.exists() {
                    assert!(Instant::now() < deadline, "{} never came", path.display());
                    std::hint::spin_loop();
                }
                PerCpuConsumer::attach_path(&path, 0, |_| RawRecords, |_| NoClock).map(drop)
            }
        });
        let options = ChannelOptions {
            config: Config::new(1 << 20, 16, Mode::Discard),
            prefault: true,
            ..options(2)
        };
        let channel = PerCpuChannel::create(
            Backing::File {
                dir: &dir,
                name: "c",
            },
            &options,
            "",
            |_| RawRecords,
            |_| NoClock,
        )
        .unwrap();
        let attached = watcher.join().unwrap();
        assert!(attached.is_ok(), "round {round}: {:?}", attached.err());
        drop(channel);
    }
    // Only the channel and its wakeup FIFO: no hidden file left behind.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".c.wake", "c"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn per_thread_channels_give_each_thread_a_slot_and_take_it_back_once_read() {
    let channel = PerThreadChannel::create(
        Backing::Memfd { name: "slots" },
        &options(2),
        "",
        |_| RawRecords,
        |_| NoClock,
    )
    .unwrap();
    std::thread::scope(|s| {
        let slots: Vec<u32> = (0..2)
            .map(|t| {
                let channel = &channel;
                s.spawn(move || {
                    // No registration call: the first event claims the slot.
                    let w = channel.writer().unwrap();
                    w.write(t, &[t as u8; 8]).unwrap();
                    assert_eq!(channel.writer().unwrap().slot(), w.slot(), "once");
                    w.slot()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_ne!(slots[0], slots[1]);
    });
    // Both threads exited: their exit hooks closed their packets and retired their
    // slots, which stay taken until a consumer has read them.
    for slot in 0..2 {
        assert!(
            matches!(channel.slot_state(slot), Some(SlotState::Retiring { .. })),
            "{:?}",
            channel.slot_state(slot)
        );
    }
    assert_eq!(channel.writer().err(), Some(SlotError::NoFreeSlot));
    assert_eq!(
        channel.losses(),
        SlotLosses {
            unregistered: 0,
            no_slot: 1
        }
    );
    let consumer = PerThreadConsumer::attach_fd(
        channel.shm().try_clone_fd().unwrap(),
        None,
        0,
        |_| RawRecords,
        |_| NoClock,
    )
    .unwrap();
    assert_eq!(consumer.slot_losses(), Some(channel.losses()));
    let mut scratch = Vec::new();
    for slot in 0..2 {
        let mut records = 0;
        consumer
            .drain(slot, &mut scratch, |p| {
                records += RawPacket::parse(p).unwrap().records().count()
            })
            .unwrap();
        assert_eq!(records, 1, "slot {slot}: the exit hook's flush");
        assert_eq!(consumer.slot_state(slot), Some(SlotState::Free));
    }
    // Read to the end: this thread gets one now.
    let w = channel.writer().unwrap();
    assert!(matches!(
        consumer.slot_state(w.slot()),
        Some(SlotState::Owned { .. })
    ));
    assert!(channel.reader(2).is_none());
}

#[test]
fn the_header_records_the_clock_and_refuses_an_invalid_one_before_any_file_exists() {
    let dir = temp_dir("clock");
    let clock = Monotonic.describe();
    let channel = PerCpuChannel::create(
        Backing::File {
            dir: &dir,
            name: "c",
        },
        &options(1),
        "",
        |_| RawRecords,
        |_| NoClock,
    )
    .unwrap();
    let consumer =
        PerCpuConsumer::attach_path(&dir.join("c"), 0, |_| RawRecords, |_| NoClock).unwrap();
    // The description the options gave (measured again here: the offset may
    // differ by a tick).
    let got = consumer.clock();
    assert_eq!(
        (got.name, got.description, got.freq),
        ("monotonic", "CLOCK_MONOTONIC", 1_000_000_000)
    );
    assert!((got.offset_s - clock.offset_s).abs() <= 1);
    drop(consumer);
    drop(channel);

    let mut name = String::from("x");
    name.extend(std::iter::repeat_n('y', CLOCK_NAME_BYTES - 1));
    let long_text = "z".repeat(CLOCK_DESCRIPTION_BYTES);
    for (i, (bad, says)) in [
        (ClockDescription { name: "", ..clock }, "clock name \"\""),
        (
            ClockDescription {
                name: "9lives",
                ..clock
            },
            "\"9lives\"",
        ),
        (
            ClockDescription {
                name: "a b",
                ..clock
            },
            "\"a b\"",
        ),
        (
            ClockDescription {
                name: &name,
                ..clock
            },
            &name[..],
        ),
        (
            ClockDescription {
                description: "say \"hi\"",
                ..clock
            },
            "clock description",
        ),
        (
            ClockDescription {
                description: &long_text,
                ..clock
            },
            &long_text[..],
        ),
        (ClockDescription { freq: 0, ..clock }, "frequency 0"),
        (
            ClockDescription {
                freq: 1000,
                offset: 1000,
                ..clock
            },
            "offset 1000 ticks",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut options = options(1);
        options.clock = bad;
        let file = format!("bad{i}");
        let error = PerCpuChannel::create(
            Backing::File {
                dir: &dir,
                name: &file,
            },
            &options,
            "",
            |_| RawRecords,
            |_| NoClock,
        )
        .err()
        .unwrap_or_else(|| panic!("{bad:?}: accepted"));
        assert!(matches!(error, ChannelError::Clock(_)), "{error:?}");
        assert!(error.to_string().contains(says), "{error} lacks {says}");
        assert!(!dir.join(&file).exists(), "{bad:?}: a file was left");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_error_type_says_what_went_wrong_and_is_an_error() {
    fn message<E: std::error::Error>(e: E) -> String {
        e.to_string()
    }
    let messages = [
        message(BackingError::NotSealed),
        message(ChannelError::BufferCount(0)),
        message(ClockError::ZeroFrequency),
        message(ConsumeError::Truncated),
        message(ExportError::Io(std::io::Error::other("disk on fire"))),
        message(RecoveryError::NotRegular {
            path: "/a/path".into(),
        }),
        message(TscError::Calibration),
        message(UnknownClock {
            name: "sundial".into(),
            freq: 1,
        }),
        message(SlotError::NoFreeSlot),
        message(SlotError::TooManyChannels),
        message(SlotError::Unregistered),
        message(SlotError::Exiting),
    ];
    for (m, says) in messages.iter().zip([
        "sealed",
        "0 buffers",
        "frequency 0",
        "truncated",
        "disk on fire",
        "/a/path",
        "calibration",
        "sundial",
        "no free",
        "8 per-thread",
        "signal handler",
        "exiting",
    ]) {
        assert!(m.contains(says), "{m:?} lacks {says:?}");
    }
    // Wrapped errors are reachable as sources.
    use std::error::Error;
    let corrupt = ConsumeError::Corrupt {
        buffer: 3,
        error: ringbuf_core::ReadError::Corrupt,
    };
    assert!(corrupt.to_string().contains("buffer 3"));
    assert!(corrupt.source().is_some());
    assert!(ExportError::Consume(corrupt).source().is_some());
    let config = ChannelError::Config(ringbuf_core::ConfigError::ZeroNestingLimit);
    assert!(config.source().is_some());
    assert!(ChannelError::Clock(ClockError::ZeroFrequency)
        .source()
        .is_some());
}
