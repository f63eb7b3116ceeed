//! Channel behaviour: wakeups, live reading, exclusive creation, thread slots.

use std::time::{Duration, Instant};

use ringbuf_core::{Config, Mode, NoClock, RawPacket, RawRecords, Switch};
use ringbuf_mmap::{
    Backing, BackingError, ChannelError, ChannelOptions, NoFreeSlot, PerCpuChannel, PerCpuConsumer,
    PerThreadChannel,
};

fn options(buffers: u32) -> ChannelOptions {
    ChannelOptions {
        config: Config::new(4096, 4, Mode::Discard),
        buffers,
        format: 0,
        prefault: false,
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

#[test]
fn per_thread_channels_give_each_thread_its_own_slot_until_none_is_left() {
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
                    let w = channel.register().unwrap();
                    w.write(t, &[t as u8; 8]).unwrap();
                    w.switch(Switch::Flush).unwrap();
                    w.slot()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_ne!(slots[0], slots[1]);
    });
    assert_eq!(channel.register().err(), Some(NoFreeSlot));
    for slot in 0..2 {
        let mut reader = channel.reader(slot).unwrap().unwrap();
        let sub = reader.get_next_subbuf().unwrap();
        let packet = RawPacket::parse(reader.bytes(&sub).unwrap()).unwrap();
        assert_eq!(packet.records().count(), 1);
        reader.put_next_subbuf(sub);
    }
    assert!(channel.reader(2).is_none());
}
