//! The read side on hostile channel files. Recovery: a huge sparse channel, special
//! files, a corrupted metadata length, an output that exists; each gets a typed
//! error that names the path (or a trace), never a hang, an abort or a huge
//! allocation. Export: a packet whose header contradicts the stream is refused
//! instead of making the whole stream unreadable.

use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ringbuf_core::ctf::{self, Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
use ringbuf_core::{Config, Mode, Nesting};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{
    recover_to_dir, Backing, ChannelError, ChannelHeader, ChannelOptions, ExportError,
    PerCpuChannel, PerCpuConsumer, RecoveryError,
};

const UUID: [u8; 16] = *b"recovery-test-id";
static EVENTS: [EventSchema; 1] = [EventSchema {
    id: 1,
    name: "tick",
    fields: &[FieldDef {
        name: "n",
        ty: FieldType::U64,
    }],
}];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbuf-recovery-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// A file-backed channel in `dir/chan` with `events` events written to buffer 0.
fn channel(dir: &Path, config: Config, events: u64) -> PerCpuChannel<Ctf, Monotonic> {
    let mut metadata = String::new();
    let trace = TraceDescription {
        uuid: UUID,
        clock: Monotonic.describe(),
        events: &EVENTS,
        tracer_name: "test",
        env: &[],
        event_context: &[],
    };
    ctf::write_metadata(&mut metadata, &trace).unwrap();
    let options = ChannelOptions {
        config,
        buffers: 1,
        format: 1,
        prefault: false,
        clock: trace.clock,
    };
    let channel = PerCpuChannel::create(
        Backing::File { dir, name: "chan" },
        &options,
        &metadata,
        |cpu| Ctf::new(UUID, cpu),
        |_| Monotonic,
    )
    .unwrap();
    let nest = Nesting::new();
    for n in 0..events {
        ctf::write_event(&channel.buffers()[0], &nest, &EVENTS[0], &[Value::U64(n)]).unwrap();
    }
    channel
}

/// Runs `f` on another thread; fails if it does not return within 20 s.
fn within_a_while<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(20))
        .expect("did not return (blocked?)")
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_huge_sparse_channel_recovers_in_little_memory() {
    let dir = temp_dir("sparse");
    // 128 sub-buffers of 1 GiB: a 128 GiB file of which a few pages exist.
    let channel = channel(&dir, Config::new(1 << 30, 128, Mode::Discard), 1000);
    let path = dir.join("chan");
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 128 << 30, "{len}");
    let before = peak_rss();
    let report = recover_to_dir(&path, &dir.join("trace")).unwrap();
    let grew = peak_rss().saturating_sub(before);
    assert_eq!((report.complete, report.partial), (0, 1), "{report:?}");
    assert!(grew < 64 << 20, "recovery grew the process by {grew} bytes");
    let stream = std::fs::metadata(dir.join("trace/stream_0")).unwrap().len();
    assert_eq!(
        stream,
        3 * 4096,
        "1000 events of 12 bytes and a header, page-padded"
    );
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = temp_dir("special");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [fifo, dir.clone(), PathBuf::from("/dev/null")] {
        let out = dir.join("out");
        let (p, o) = (path.clone(), out.clone());
        let result = within_a_while(move || recover_to_dir(&p, &o));
        match result {
            Err(e @ RecoveryError::NotRegular { .. }) => {
                assert!(e.to_string().contains(path.to_str().unwrap()), "{e}")
            }
            other => panic!("{}: {other:?}", path.display()),
        }
        assert!(!out.exists(), "nothing written for {}", path.display());
    }
    let missing = dir.join("missing/chan");
    let e = recover_to_dir(&missing, &dir.join("out")).unwrap_err();
    assert!(matches!(e, RecoveryError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("missing/chan"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupted_metadata_length_is_refused() {
    let dir = temp_dir("metadata");
    let channel = channel(&dir, Config::new(4096, 4, Mode::Discard), 10);
    let path = dir.join("chan");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = offset_of!(ChannelHeader, metadata_len) as u64;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, at).unwrap();
    let len = u64::from_ne_bytes(len);
    // Both stay inside the metadata page(s), so the layout is unchanged and only
    // the text tells.
    let room = len.next_multiple_of(4096) - len;
    for (wrong, why) in [(len - 7, "too short"), (len + room.min(7), "too long")] {
        assert_ne!(wrong, len);
        file.write_all_at(&wrong.to_ne_bytes(), at).unwrap();
        let out = dir.join(format!("out-{wrong}"));
        match recover_to_dir(&path, &out) {
            Err(RecoveryError::Channel {
                error: ChannelError::BadMetadata(_),
                ..
            }) => {}
            other => panic!("metadata {why}: {other:?}"),
        }
        assert!(!out.exists());
    }
    file.write_all_at(&len.to_ne_bytes(), at).unwrap();
    recover_to_dir(&path, &dir.join("good")).unwrap();
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_existing_output_is_refused_by_name() {
    let dir = temp_dir("exists");
    let channel = channel(&dir, Config::new(4096, 4, Mode::Discard), 10);
    let out = dir.join("trace");
    std::fs::create_dir(&out).unwrap();
    let e = recover_to_dir(&dir.join("chan"), &out).unwrap_err();
    assert!(matches!(e, RecoveryError::Write { .. }), "{e:?}");
    assert!(e.to_string().contains(out.to_str().unwrap()), "{e}");
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_refuses_a_packet_that_contradicts_its_stream() {
    use ringbuf_core::{Mapped, Switch};
    let dir = temp_dir("export");
    // Four packets of one event each in buffer 0.
    let channel = channel(&dir, Config::new(4096, 8, Mode::Discard), 0);
    let buffer = &channel.buffers()[0];
    let nest = Nesting::new();
    for n in 0..4 {
        ctf::write_event(buffer, &nest, &EVENTS[0], &[Value::U64(n)]).unwrap();
        buffer.switch(Switch::Active).unwrap();
    }
    // Packet 2 (physical sub-buffer 2 in discard mode) claims to begin at time 0.
    // SAFETY: the packet is delivered and no writer touches it; the 8 bytes are the
    // header's timestamp_begin (offset 24).
    unsafe {
        let begin = buffer.control().subbuf_ptr(2).add(24);
        std::ptr::write_unaligned(begin.cast::<u64>(), 0);
    }
    let consumer = PerCpuConsumer::attach_path(
        &dir.join("chan"),
        1,
        |cpu| Ctf::new(UUID, cpu),
        |_| Monotonic,
    )
    .unwrap();
    let mut exported = Vec::new();
    let result = consumer.export(0, |packet| {
        exported.push(packet.info.seq);
        Ok(())
    });
    match result {
        Err(ExportError::Inconsistent {
            buffer: 0,
            seq: 2,
            why,
        }) => {
            assert!(why.contains("begins before"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(exported, [0, 1], "the packets before it are exported");
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();
}
