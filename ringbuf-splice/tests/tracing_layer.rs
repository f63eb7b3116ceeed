//! The `tracing` Layer end to end: a small program instrumented with `tracing`
//! (events with fields of every type, nested spans, several threads) records
//! through the Layer, and babeltrace2 reads the trace back with one class per
//! callsite, the fields' values and types, the levels, and span ids that relate
//! every event to its span.

use std::collections::HashMap;
use std::sync::Mutex;

use ringbuf_splice::Session;
use tracing::{debug, debug_span, error, info, info_span, trace, trace_span, warn};
use tracing_subscriber::prelude::*;

mod common;

use common::temp_dir;
use common::text::{babeltrace_lines, Line};

/// One session at a time per process: the tests take turns.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

const THREADS: u64 = 3;
const EACH: u64 = 50;

/// The instrumented program: what an application does with `tracing`.
fn program() {
    let root = info_span!("root", job = "build", late = tracing::field::Empty);
    let _root = root.enter();
    info!(
        u = 42u64,
        i = -7i64,
        f = 2.5f64,
        b = true,
        s = "text",
        d = ?vec![1, 2],
        shown = %1.5f32,
        bytes = &b"\x01\x02"[..],
        big = u128::MAX,
        "message {}",
        5
    );
    root.record("late", 9u64);
    {
        let child = debug_span!("child", n = 3u64);
        let _child = child.enter();
        warn!(k = 1u64, "in the child");
        // Names CTF cannot hold as they are, and one of the Layer's own.
        error!(
            event = 1u64,
            r#type = "t",
            http.status = 200u64,
            span = 5u64,
            vtid = 6u64,
            "renamed"
        );
    }
    // Types that change between events of one callsite: one class each.
    for maybe in [Some(1u64), None] {
        debug!(maybe, "optional");
    }
    let sibling = trace_span!("sibling");
    sibling.follows_from(&root);
    // An explicit parent and a root event, whatever the thread entered.
    trace!(parent: &sibling, "explicit");
    info!(parent: None, "orphan");
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            // The span is created on its thread: `parent` is 0 there (no span
            // entered), and every event of the thread is in it.
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let worker = info_span!("worker", t);
                    let _in = worker.enter();
                    for n in 0..EACH {
                        info!(t, n, "work");
                    }
                })
            })
        })
        .collect();
    // Joined, not left to a scope: a join returns once the thread is gone, after
    // its thread-local destructors, which end a per-thread buffer's stream (a
    // scope may return before them, and the session end first).
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn a_traced_program_reads_back_with_classes_fields_and_span_ids() {
    let _turn = turn();
    for per_thread in [false, true] {
        let dir = temp_dir(&format!("layer-{per_thread}"));
        let out = dir.join("trace");
        let builder = Session::builder().output(&out).name("layer-test");
        let builder = if per_thread {
            builder.per_thread(16)
        } else {
            builder
        };
        let session = builder.start().unwrap();
        let subscriber = tracing_subscriber::registry().with(ringbuf_splice::tracing::Layer::new());
        tracing::subscriber::with_default(subscriber, program);
        let counters = session.finish().unwrap();
        assert_eq!(counters.events_lost(), 0, "{counters:?}");
        if let Some(lines) = babeltrace_lines(&out) {
            check(&lines, per_thread);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// What the program's trace must hold.
fn check(lines: &[Line], per_thread: bool) {
    let named = |suffix: &str| -> Vec<&Line> {
        lines.iter().filter(|l| l.name.ends_with(suffix)).collect()
    };
    let one = |suffix: &str| -> &Line {
        let found = named(suffix);
        assert_eq!(found.len(), 1, "{suffix}: {found:?}");
        found[0]
    };
    // Span classes carry the target and the span name; events the callsite.
    let root = one("tracing_layer:root:new");
    assert_eq!(root.level.as_deref(), Some("TRACE_INFO (6)"));
    let root_id = root.num("span");
    assert_ne!(root_id, 0);
    assert_eq!(root.num("parent"), 0);
    assert_eq!(root.get("job"), Some("\"build\""));
    let late = one("tracing_layer:root:record");
    assert_eq!((late.num("span"), late.num("late")), (root_id, 9));

    // Every field type.
    let all = lines
        .iter()
        .find(|l| l.has("message = \"message 5\""))
        .unwrap();
    assert!(all.name.starts_with("tracing_layer:event "), "{all:?}");
    assert!(all.name.contains("tests/tracing_layer.rs:"), "{all:?}");
    assert_eq!(all.level.as_deref(), Some("TRACE_INFO (6)"));
    assert_eq!(all.num("span"), root_id);
    for want in [
        ", u = 42,",
        ", i = -7,",
        ", f = 2.5,",
        ", b = ( \"true\" : container = 1 ),",
        ", s = \"text\",",
        ", d = \"[1, 2]\",",
        ", shown = \"1.5\",",
        ", bytes = [ [0] = 1, [1] = 2 ],",
        ", big = \"340282366920938463463374607431768211455\",",
    ] {
        assert!(all.has(want), "{want} in {all:?}");
    }

    // Nesting: the child's parent is the root; its events are in the child.
    let child = one("tracing_layer:child:new");
    assert_eq!(child.level.as_deref(), Some("TRACE_DEBUG_LINE (13)"));
    let child_id = child.num("span");
    assert_eq!(child.num("parent"), root_id);
    let warned = lines.iter().find(|l| l.has("\"in the child\"")).unwrap();
    assert_eq!(warned.level.as_deref(), Some("TRACE_WARNING (4)"));
    assert_eq!((warned.num("span"), warned.num("k")), (child_id, 1));
    let renamed = lines.iter().find(|l| l.has("\"renamed\"")).unwrap();
    assert_eq!(renamed.level.as_deref(), Some("TRACE_ERR (3)"));
    assert_eq!(renamed.num("span"), child_id);
    for (name, value) in [
        ("event_", "1"),
        ("type", "\"t\""),
        ("http_status", "200"),
        ("span_2", "5"),
        ("vtid_2", "6"),
    ] {
        assert_eq!(renamed.get(name), Some(value), "{name} in {renamed:?}");
    }
    let enters: Vec<u64> = named("tracing:span_enter")
        .iter()
        .map(|l| l.num("span"))
        .collect();
    let exits: Vec<u64> = named("tracing:span_exit")
        .iter()
        .map(|l| l.num("span"))
        .collect();
    let closes: Vec<u64> = named("tracing:span_close")
        .iter()
        .map(|l| l.num("span"))
        .collect();
    for id in [root_id, child_id] {
        for (what, ids) in [("enter", &enters), ("exit", &exits), ("close", &closes)] {
            assert_eq!(ids.iter().filter(|&&s| s == id).count(), 1, "{what} {id}");
        }
    }

    // One class per combination of types: `Some` and `None` of one callsite.
    let optional: Vec<&Line> = lines.iter().filter(|l| l.has("\"optional\"")).collect();
    assert_eq!(optional.len(), 2);
    assert_eq!(optional[0].get("maybe"), Some("1"));
    assert_eq!(optional[1].get("maybe"), None);
    assert_eq!(optional[1].name, format!("{}#2", optional[0].name));

    let sibling = one("tracing_layer:sibling:new");
    assert_eq!(sibling.level.as_deref(), Some("TRACE_DEBUG (14)"));
    let follows = one("tracing:span_follows_from");
    assert_eq!(
        (follows.num("span"), follows.num("follows")),
        (sibling.num("span"), root_id)
    );
    let explicit = lines.iter().find(|l| l.has("\"explicit\"")).unwrap();
    assert_eq!(explicit.num("span"), sibling.num("span"));
    let orphan = lines.iter().find(|l| l.has("\"orphan\"")).unwrap();
    assert_eq!(orphan.num("span"), 0);

    // Threads: each worker span is a root on its thread, and every event of the
    // thread is in it, written by that thread.
    let workers = named("tracing_layer:worker:new");
    assert_eq!(
        workers.len() as u64,
        THREADS,
        "per-thread buffers: {per_thread}"
    );
    let mut seen = HashMap::new();
    for worker in workers {
        assert_eq!(worker.num("parent"), 0);
        let t = worker.num("t");
        let id = worker.num("span");
        let work: Vec<&Line> = lines
            .iter()
            .filter(|l| l.has("\"work\"") && l.get("t") == Some(&t.to_string()))
            .collect();
        assert_eq!(work.len() as u64, EACH, "thread {t}");
        let ns: Vec<u64> = work.iter().map(|l| l.num("n")).collect();
        assert_eq!(ns, (0..EACH).collect::<Vec<_>>(), "thread {t}, in order");
        assert!(work
            .iter()
            .all(|l| l.num("span") == id && l.vtid == worker.vtid));
        assert!(
            seen.insert(worker.vtid, t).is_none(),
            "one worker per thread"
        );
    }
    // All `work` events share a class; they are one callsite with one set of types.
    let classes: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| l.has("\"work\""))
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(classes.len(), 1, "{classes:?}");
}

#[test]
fn events_of_a_class_the_session_cannot_register_are_counted() {
    use ringbuf_splice::session::{ClassSpec, Current};
    use ringbuf_splice::{FieldType, RegisterError};
    let _turn = turn();
    let dir = temp_dir("layer-full");
    let out = dir.join("trace");
    let session = Session::builder().output(&out).start().unwrap();
    let subscriber = tracing_subscriber::registry().with(ringbuf_splice::tracing::Layer::new());
    tracing::subscriber::with_default(subscriber, || {
        // One callsite, registered while there is room.
        let early = |n: u64| info!(n, "early");
        early(1);
        // Fill the channel's metadata area: classes of long names while they
        // fit, then of short ones, until not even an empty one does.
        let long: Vec<(String, FieldType)> = (0..4)
            .map(|i| (format!("field_{i}_{}", "x".repeat(100)), FieldType::U64))
            .collect();
        let long: Vec<(&str, FieldType)> = long.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let mut classes = 0;
        let mut fields = &long[..];
        let full = loop {
            let name = match fields.len() {
                0 => format!("f{classes}"),
                _ => format!("filler {classes:>200}"),
            };
            match Current.register(&ClassSpec {
                name: &name,
                fields,
                log_level: None,
            }) {
                Ok(_) => classes += 1,
                Err(e) if !fields.is_empty() => {
                    assert!(
                        matches!(
                            e,
                            RegisterError::Channel(ringbuf_mmap::ChannelError::MetadataFull { .. })
                        ),
                        "{e}"
                    );
                    fields = &[];
                }
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                full,
                RegisterError::Channel(ringbuf_mmap::ChannelError::MetadataFull { .. })
            ),
            "{full}"
        );
        assert!(classes > 100, "{classes} classes filled the area");
        for n in 0..3u64 {
            info!(n, "refused");
        }
        early(2);
    });
    let counters = session.finish().unwrap();
    assert_eq!(counters.lost_no_class, 3, "{counters:?}");
    assert_eq!(counters.events_lost(), 3);
    if let Some(lines) = babeltrace_lines(&out) {
        let early: Vec<u64> = lines
            .iter()
            .filter(|l| l.has("\"early\""))
            .map(|l| l.num("n"))
            .collect();
        assert_eq!(early, [1, 2]);
        assert!(!lines.iter().any(|l| l.has("\"refused\"")));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
