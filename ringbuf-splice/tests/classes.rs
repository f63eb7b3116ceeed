//! Classes registered while a producer runs: through a session (the API dynamic
//! front ends such as the `tracing` Layer use), checked like the declared ones,
//! given ids past the padding ones, and declared in the trace's metadata before
//! their events; and through a channel, read by `ringbuf consume` in another
//! process that attached before they were.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringbuf_core::ctf::{self, Ctf, EventSchema, FieldDef, FieldType, TraceDescription, Value};
use ringbuf_core::{Config, Mode, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{append_metadata, Backing, ChannelOptions, PerCpuChannel};
use ringbuf_splice::session::{ClassSpec, Current};
use ringbuf_splice::{RegisterError, Session};

mod common;

use common::temp_dir;
use common::text::babeltrace_lines;

#[test]
fn classes_registered_while_running_are_checked_and_reach_every_reader() {
    let dir = temp_dir("register");
    let out = dir.join("trace");
    let session = Session::builder().output(&out).start().unwrap();
    // Enough classes to pass the padding ids (28, 29) and the compact ones.
    let names: Vec<String> = (0..40).map(|i| format!("dynamic:class {i}")).collect();
    let mut classes = Vec::new();
    for name in &names {
        let class = Current
            .register(&ClassSpec {
                name,
                fields: &[("n", FieldType::U64)],
                log_level: None,
            })
            .unwrap();
        assert!(!matches!(class.id(), 28 | 29), "padding ids are skipped");
        classes.push(class);
    }
    for (n, class) in (0u64..).zip(&classes) {
        class
            .emit(8, |out| out.copy_from_slice(&n.to_le_bytes()))
            .unwrap();
    }
    // Refused like the classes declared at start, naming the class and field.
    let refused = |spec: ClassSpec<'_>| Current.register(&spec).unwrap_err().to_string();
    let e = refused(ClassSpec {
        name: "bad",
        fields: &[("string", FieldType::U8)],
        log_level: None,
    });
    assert!(e.contains("`bad`") && e.contains("`string`"), "{e}");
    let e = refused(ClassSpec {
        name: "dynamic:class 3",
        fields: &[],
        log_level: None,
    });
    assert!(e.contains("dynamic:class 3"), "{e}");
    let e = refused(ClassSpec {
        name: "loud",
        fields: &[],
        log_level: Some(15),
    });
    assert!(e.contains("`loud`") && e.contains("15"), "{e}");
    let e = refused(ClassSpec {
        name: "ringbuf_padding",
        fields: &[],
        log_level: None,
    });
    assert!(e.contains("ringbuf_padding"), "{e}");
    session.finish().unwrap();
    // A class of a finished session is refused, not written elsewhere.
    assert_eq!(
        classes[0].emit(8, |_| {}),
        Err(ringbuf_splice::EmitError::NoSession)
    );
    assert!(matches!(
        Current.register(&ClassSpec {
            name: "late",
            fields: &[],
            log_level: None
        }),
        Err(RegisterError::NoSession)
    ));
    let metadata = std::fs::read_to_string(out.join("metadata")).unwrap();
    assert_eq!(metadata.matches("name = \"dynamic:class ").count(), 40);
    assert!(!metadata.contains("\"bad\""));
    if let Some(lines) = babeltrace_lines(&out) {
        assert_eq!(lines.len(), 40);
        for (n, line) in (0u64..).zip(&lines) {
            assert_eq!(line.name, format!("dynamic:class {n}"));
            assert_eq!(line.num("n"), n);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Classes the child producer adds one after another.
const LATE: u32 = 8;

static FIELDS: [FieldDef; 1] = [FieldDef {
    name: "n",
    ty: FieldType::U64,
}];

/// A producer in a child process of
/// `ringbuf_consume_sees_classes_added_after_it_attached` (it does nothing when
/// run otherwise): a file-backed channel with no consumer of its own, whose
/// classes come one at a time, each with an event, once the consumer attached.
#[test]
#[ignore = "the child process of another test"]
fn child_producer() {
    let Some(dir) = std::env::var_os("RINGBUF_CHILD_DIR").map(PathBuf::from) else {
        return;
    };
    let clock = Monotonic.describe();
    let description = |events: &[EventSchema]| {
        let mut text = String::new();
        let trace = TraceDescription {
            uuid: [9; 16],
            clock,
            events,
            tracer_name: "test",
            env: &[],
            event_context: &[],
        };
        ctf::write_metadata(&mut text, &trace).unwrap();
        text
    };
    let metadata = description(&[]);
    let options = ChannelOptions {
        config: Config::new(4096, 4, Mode::Discard),
        buffers: 2,
        format: 1,
        prefault: false,
        clock,
    };
    let channel = PerCpuChannel::create(
        Backing::File {
            dir: &dir,
            name: "chan",
        },
        &options,
        &metadata,
        |cpu| Ctf::new([9; 16], cpu),
        |_| Monotonic,
    )
    .unwrap();
    wait_for(&dir.join("go"));
    let names: Vec<String> = (0..LATE).map(|i| format!("late {i}")).collect();
    for (i, name) in (1u32..).zip(&names) {
        let schema = EventSchema {
            id: i,
            name: Box::leak(name.clone().into_boxed_str()),
            fields: &FIELDS,
        };
        // The class's declaration: what the metadata of it adds to none.
        let text = description(&[schema]);
        append_metadata(channel.shm(), &text[metadata.len()..]).unwrap();
        channel
            .write_event(&schema, &[Value::U64(u64::from(i))])
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    channel.switch_all(Switch::Flush).unwrap();
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never came", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ringbuf_consume_sees_classes_added_after_it_attached() {
    let dir = temp_dir("consume");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_producer", "--exact", "--ignored", "--nocapture"])
        .env("RINGBUF_CHILD_DIR", &dir)
        .spawn()
        .unwrap();
    let channel = dir.join("chan");
    wait_for(&channel);
    let out = dir.join("consumed");
    let mut consume = Command::new(env!("CARGO_BIN_EXE_ringbuf"))
        .arg("consume")
        .arg("--path")
        .arg(&channel)
        .arg("--output")
        .arg(&out)
        .args(["--live-ms", "20"])
        .spawn()
        .unwrap();
    // `consume` writes the metadata it attached with before it exports.
    wait_for(&out.join("metadata"));
    std::fs::write(dir.join("go"), "").unwrap();
    assert!(child.wait().unwrap().success());
    // It stops once the producer is gone (reaped above).
    assert!(consume.wait().unwrap().success());
    let metadata = std::fs::read_to_string(out.join("metadata")).unwrap();
    assert_eq!(metadata.matches("name = \"late ").count() as u32, LATE);
    if let Some(lines) = babeltrace_lines(&out) {
        let late: Vec<(String, u64)> = lines.iter().map(|l| (l.name.clone(), l.num("n"))).collect();
        let want: Vec<(String, u64)> = (1..=LATE)
            .map(|i| (format!("late {}", i - 1), u64::from(i)))
            .collect();
        assert_eq!(late, want);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
