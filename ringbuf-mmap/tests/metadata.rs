//! Metadata that grows while the producer runs: appended text reaches every
//! consumer in order and once (alone, or with the first packet exported after
//! it), a new consumer and crash recovery read the whole text, the area's
//! capacity holds, and a hostile length or text is a typed error.

use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringbuf_core::ctf::Ctf;
use ringbuf_core::{Config, Mode, NoClock, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{
    append_metadata, recover_to_dir, Backing, ChannelError, ChannelHeader, ChannelLayout,
    ChannelOptions, ExportError, PerCpuChannel, PerCpuConsumer, RecoveryError, MAX_METADATA,
    METADATA_ROOM,
};

/// Whole TSDL metadata, as a producer starts with.
const START: &str = "/* CTF 1.8 */\ntrace { major = 1; minor = 8; };\n";

fn class(i: usize) -> String {
    format!("\nevent {{\n    name = \"class {i}\";\n    id = {i};\n    stream_id = 0;\n}};\n")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-meta-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

fn options() -> ChannelOptions<'static> {
    ChannelOptions {
        config: Config::new(4096, 4, Mode::Discard),
        buffers: 1,
        format: 1,
        prefault: false,
        clock: Monotonic.describe(),
    }
}

/// A file-backed channel `dir/chan` whose metadata starts with [`START`].
fn channel(dir: &Path) -> PerCpuChannel<Ctf, NoClock> {
    PerCpuChannel::create(
        Backing::File { dir, name: "chan" },
        &options(),
        START,
        |cpu| Ctf::new([7; 16], cpu),
        |_| NoClock,
    )
    .unwrap()
}

fn consumer(dir: &Path) -> Result<PerCpuConsumer<Ctf, NoClock>, ChannelError> {
    PerCpuConsumer::attach_path(
        &dir.join("chan"),
        1,
        |cpu| Ctf::new([7; 16], cpu),
        |_| NoClock,
    )
}

/// Writes `value` at `offset` of the channel file (as a hostile process would).
fn poke(dir: &Path, offset: usize, value: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("chan"))
        .unwrap();
    file.write_all_at(value, offset as u64).unwrap();
}

fn len_at() -> usize {
    offset_of!(ChannelHeader, metadata_len)
}

#[test]
fn appended_text_reaches_each_consumer_once_and_before_the_packets_that_follow() {
    let dir = temp_dir("order");
    let channel = channel(&dir);
    let consumer = consumer(&dir).unwrap();
    assert_eq!(consumer.metadata(), START);
    assert_eq!(consumer.metadata_update().unwrap(), None);

    append_metadata(channel.shm(), &class(1)).unwrap();
    assert_eq!(consumer.metadata_update().unwrap(), Some(class(1)));
    assert_eq!(consumer.metadata_update().unwrap(), None);

    // Two appends, then an event and its packet: the packet brings both.
    append_metadata(channel.shm(), &class(2)).unwrap();
    append_metadata(channel.shm(), &class(3)).unwrap();
    channel.write(2, &[1, 2, 3]).unwrap();
    channel.switch_all(Switch::Active).unwrap();
    let mut brought = Vec::new();
    let exported = consumer
        .export(0, |packet| {
            brought.push(packet.metadata);
            Ok(())
        })
        .unwrap();
    assert_eq!(exported, 1);
    assert_eq!(brought, [Some(class(2) + &class(3))]);
    assert_eq!(consumer.metadata_update().unwrap(), None);

    // A consumer attached now reads all of it at once.
    let late = self::consumer(&dir).unwrap();
    assert_eq!(
        late.metadata(),
        START.to_owned() + &class(1) + &class(2) + &class(3)
    );
    assert_eq!(late.metadata_update().unwrap(), None);
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_area_keeps_room_and_refuses_what_does_not_fit() {
    let config = options().config;
    let layout = ChannelLayout::new(&config, 1, START.len() as u64).unwrap();
    assert!(layout.metadata_capacity >= START.len() as u64 + METADATA_ROOM);
    let large = ChannelLayout::new(&config, 1, 3 << 20).unwrap();
    assert!(
        large.metadata_capacity >= 6 << 20,
        "as much again as the text"
    );
    let largest = ChannelLayout::new(&config, 1, MAX_METADATA).unwrap();
    assert_eq!(largest.metadata_capacity, MAX_METADATA);
    assert!(ChannelLayout::new(&config, 1, MAX_METADATA + 1).is_err());

    let dir = temp_dir("full");
    let channel = channel(&dir);
    let consumer = consumer(&dir).unwrap();
    let room = (layout.metadata_capacity - START.len() as u64) as usize;
    // One byte too many: refused, nothing written.
    let mut text = class(9);
    text.push_str(&" ".repeat(room + 1 - text.len()));
    match append_metadata(channel.shm(), &text) {
        Err(ChannelError::MetadataFull { capacity, needed }) => {
            assert_eq!(capacity, layout.metadata_capacity);
            assert_eq!(needed, capacity + 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(consumer.metadata_update().unwrap(), None);
    // Exactly full: taken (newlines after a declaration keep it whole).
    let mut filled = class(9);
    filled.push_str(&"\n".repeat(room - filled.len()));
    append_metadata(channel.shm(), &filled).unwrap();
    assert_eq!(consumer.metadata_update().unwrap(), Some(filled));
    let e = append_metadata(channel.shm(), ";").unwrap_err();
    assert!(e.to_string().contains("metadata area"), "{e}");
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recovery_reads_the_final_text() {
    let dir = temp_dir("recover");
    let channel = channel(&dir);
    for i in 1..=3 {
        append_metadata(channel.shm(), &class(i)).unwrap();
    }
    channel.write(1, &[1]).unwrap();
    channel.switch_all(Switch::Flush).unwrap();
    let out = dir.join("trace");
    recover_to_dir(&dir.join("chan"), &out).unwrap();
    let text = std::fs::read_to_string(out.join("metadata")).unwrap();
    assert_eq!(text, START.to_owned() + &class(1) + &class(2) + &class(3));
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_hostile_length_or_text_is_an_error_never_a_read_outside_the_area() {
    let dir = temp_dir("hostile");
    let channel = channel(&dir);
    let consumer = consumer(&dir).unwrap();
    let capacity = ChannelLayout::new(&options().config, 1, START.len() as u64)
        .unwrap()
        .metadata_capacity;
    let set_len = |len: u64| poke(&dir, len_at(), &len.to_ne_bytes());
    let bad = |why: &str| {
        match consumer.metadata_update() {
            Err(ChannelError::BadMetadata(said)) => assert!(said.contains(why), "{said}"),
            other => panic!("{why}: {other:?}"),
        };
    };
    let start = START.len() as u64;
    set_len(capacity + 1);
    bad("exceeds");
    set_len(u64::MAX);
    bad("exceeds");
    set_len(start - 1);
    bad("went back");
    // Past the text: zeros, a cut declaration, bytes that are not UTF-8.
    set_len(start + 8);
    bad("control characters");
    let cut = "\nevent { name = \"x\";";
    poke(&dir, 4096 + START.len(), cut.as_bytes());
    set_len(start + cut.len() as u64);
    bad("inside a declaration");
    poke(&dir, 4096 + START.len(), &[0xff, b';']);
    set_len(start + 2);
    bad("UTF-8");
    // Nothing was handed out: the real text still comes, whole.
    set_len(start);
    append_metadata(channel.shm(), &class(1)).unwrap();
    assert_eq!(consumer.metadata_update().unwrap(), Some(class(1)));

    // With a packet, a bad update fails the export: the packet may use it.
    channel.write(1, &[1]).unwrap();
    channel.switch_all(Switch::Active).unwrap();
    set_len(capacity + 1);
    match consumer.export(0, |_| panic!("exported with bad metadata")) {
        Err(ExportError::Metadata(ChannelError::BadMetadata(_))) => {}
        other => panic!("{other:?}"),
    }
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_hostile_capacity_is_refused_when_attaching_and_recovering() {
    let dir = temp_dir("capacity");
    let channel = channel(&dir);
    let at = offset_of!(ChannelHeader, metadata_capacity);
    let capacity = ChannelLayout::new(&options().config, 1, START.len() as u64)
        .unwrap()
        .metadata_capacity;
    for (wrong, says) in [
        (MAX_METADATA + 4096, "metadata area too large"),
        (capacity + 4096, "offsets differ"),
        (4096, "offsets differ"),
        (8, "offsets differ"),
    ] {
        poke(&dir, at, &wrong.to_ne_bytes());
        let e = consumer(&dir).err().expect("refused");
        assert!(e.to_string().contains(says), "{wrong}: {e}");
        match recover_to_dir(&dir.join("chan"), &dir.join("out")) {
            Err(RecoveryError::Channel { error, .. }) => {
                assert!(error.to_string().contains(says), "{wrong}: {error}")
            }
            other => panic!("{wrong}: {other:?}"),
        }
    }
    poke(&dir, at, &capacity.to_ne_bytes());
    poke(&dir, len_at(), &(capacity + 1).to_ne_bytes());
    let e = consumer(&dir).err().expect("refused");
    assert!(e.to_string().contains("longer than its area"), "{e}");
    poke(&dir, len_at(), &(START.len() as u64).to_ne_bytes());
    assert_eq!(consumer(&dir).unwrap().metadata(), START);
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_consumer_reading_while_the_producer_appends_gets_every_class_whole_and_once() {
    const CLASSES: usize = 300;
    for round in 0..4 {
        let dir = temp_dir(&format!("race-{round}"));
        let channel = channel(&dir);
        let consumer = consumer(&dir).unwrap();
        let mut read = String::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..CLASSES {
                    append_metadata(channel.shm(), &class(i)).unwrap();
                }
            });
            let all: String = (0..CLASSES).map(class).collect();
            while read.len() < all.len() {
                if let Some(text) = consumer.metadata_update().unwrap() {
                    // Whole declarations only, in order.
                    assert!(text.trim_end().ends_with("};"), "{text}");
                    read.push_str(&text);
                }
            }
            assert_eq!(read, all);
        });
        assert_eq!(consumer.metadata_update().unwrap(), None);
        drop(channel);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
