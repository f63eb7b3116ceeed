//! The session end to end: typed events of every field type from several threads
//! and a signal handler, read back by babeltrace2 with the writing thread's id and
//! the process in the trace environment; the errors a tracer author can meet.

use std::sync::Mutex;

use ringbuf_splice::{EmitError, Session, SessionError};

mod common;

use common::temp_dir;

/// One session at a time per process: the tests take turns.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

ringbuf_splice::event! {
    /// Every field type.
    pub struct Everything {
        u: u8,
        w: u16,
        d: u32,
        q: u64,
        i: i64,
        small: i8,
        f: f32,
        g: f64,
        ok: bool,
        name: &str,
        blob: &[u8],
        tag: [u8; 4],
        pair: [u32; 2],
    }
    /// A numbered event, from threads and a signal handler.
    pub struct Numbered { who: u32, n: u64 }
    /// Never declared in any session.
    pub struct Stray { n: u64 }
}

/// babeltrace2's text output of `dir`, or `None` when it is missing outside CI.
fn babeltrace(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = match std::process::Command::new("babeltrace2")
        .args(args)
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED babeltrace2 check: {e}");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "babeltrace2: {stderr}");
    assert!(!stderr.contains("ERROR"), "babeltrace2: {stderr}");
    Some(String::from_utf8(out.stdout).unwrap())
}

static HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    let n = HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A probe in a signal handler: no allocation, no lock.
    let _ = Numbered::emit_in_handler(u32::MAX, n);
}

#[test]
fn typed_events_from_threads_and_a_handler_read_back_with_their_thread_and_process() {
    let _turn = turn();
    for per_thread in [false, true] {
        let builder = Session::builder();
        let builder = if per_thread {
            builder.per_thread(16)
        } else {
            builder.per_cpu()
        };
        round_trip(builder, &format!("session-{per_thread}"));
    }
}

fn round_trip(builder: ringbuf_splice::Builder, name: &str) {
    HANDLED.store(0, std::sync::atomic::Ordering::Relaxed);
    let dir = temp_dir(name);
    let out = dir.join("trace");
    let session = builder
        .event::<Everything>()
        .event::<Numbered>()
        .name("session-test")
        .output(&out)
        .start()
        .unwrap();
    Everything::emit(
        7,
        65535,
        1 << 31,
        u64::MAX,
        -5,
        -128,
        1.5,
        -2.25,
        true,
        "héllo",
        b"\x01\x02",
        *b"abcd",
        [10, 20],
    )
    .unwrap();
    const THREADS: u32 = 4;
    const EACH: u64 = 1000;
    let tids: Vec<i32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|who| {
                s.spawn(move || {
                    for n in 0..EACH {
                        Numbered::emit(who, n).unwrap();
                    }
                    // SAFETY: gettid has no preconditions.
                    unsafe { libc::gettid() }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // SAFETY: a handler that only emits (async-signal-safe) and counts.
    unsafe { libc::signal(libc::SIGUSR2, on_signal as *const () as libc::sighandler_t) };
    for _ in 0..10 {
        // SAFETY: raising a signal whose handler is installed.
        unsafe { libc::raise(libc::SIGUSR2) };
    }
    assert_eq!(
        Stray::emit(1),
        Err(EmitError::Undeclared { event: "Stray" })
    );
    let counters = session.finish().unwrap();
    assert_eq!(counters.events_lost(), 0, "{counters:?}");
    assert_eq!(counters.bytes_unexported, 0, "{counters:?}");
    assert!(counters.packets > 0);
    // After finish, probes are refused, not lost silently.
    assert_eq!(Numbered::emit(0, 0), Err(EmitError::NoSession));

    let Some(text) = babeltrace(&out, &[]) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let everything: Vec<&&str> = lines.iter().filter(|l| l.contains("Everything:")).collect();
    assert_eq!(everything.len(), 1, "{text}");
    for want in [
        "u = 7",
        "w = 65535",
        "d = 2147483648",
        "q = 18446744073709551615",
        "i = -5",
        "small = -128",
        "f = 1.5",
        "g = -2.25",
        "name = \"héllo\"",
        "[0] = 10, [1] = 20",
    ] {
        assert!(everything[0].contains(want), "{want} in {}", everything[0]);
    }
    for who in 0..THREADS {
        let mine: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains(&format!("who = {who},")))
            .collect();
        assert_eq!(mine.len() as u64, EACH, "thread {who}");
        // Every event carries its writer's thread id.
        let tid = format!("vtid = {}", tids[who as usize]);
        assert!(mine.iter().all(|l| l.contains(&tid)), "{tid}: {}", mine[0]);
    }
    let handled = HANDLED.load(std::sync::atomic::Ordering::Relaxed);
    let from_handler = lines
        .iter()
        .filter(|l| l.contains(&format!("who = {},", u32::MAX)))
        .count();
    assert_eq!(from_handler as u64, handled);
    assert_eq!(handled, 10);
    // The process, once per trace; babeltrace2 names the trace after the host.
    let Some(details) = babeltrace(&out, &["-c", "sink.text.details"]) else {
        return;
    };
    for want in [
        "trace_name: session-test",
        "vpid: ",
        "procname: ",
        "hostname: ",
        "tracer_name: ringbuf",
    ] {
        assert!(details.contains(want), "{want}");
    }
    assert!(!details.contains("Trace ``"), "the trace has a name");
    std::fs::remove_dir_all(&dir).unwrap();
}

ringbuf_splice::event! {
    /// A field named after a TSDL keyword.
    pub struct Keyword { string: u32 }
    /// A field that collides with the length of a string field.
    pub struct Collision { msg: &str, msg_length: u32 }
}

#[test]
fn a_session_refuses_what_would_make_an_unreadable_trace() {
    let _turn = turn();
    let dir = temp_dir("session-errors");
    let start = |b: ringbuf_splice::Builder| b.output(dir.join("t")).start().err().unwrap();
    let e = start(Session::builder().event::<Keyword>());
    let text = e.to_string();
    assert!(
        matches!(e, SessionError::Metadata(_))
            && text.contains("Keyword")
            && text.contains("string"),
        "{text}"
    );
    let e = start(Session::builder().event::<Collision>());
    let text = e.to_string();
    assert!(
        text.contains("Collision") && text.contains("msg_length"),
        "{text}"
    );
    let e = start(Session::builder().event::<Numbered>().event::<Numbered>());
    assert!(e.to_string().contains("Numbered"), "{e}");
    let e = Session::builder().start().err().unwrap();
    assert!(matches!(e, SessionError::NoOutput), "{e}");
    assert!(
        !dir.join("t").exists(),
        "nothing created for a refused session"
    );

    // One session at a time.
    let first = Session::builder()
        .event::<Numbered>()
        .output(dir.join("first"))
        .start()
        .unwrap();
    let e = start(Session::builder().event::<Numbered>());
    assert!(matches!(e, SessionError::AlreadyRunning), "{e}");
    assert!(!dir.join("t").exists());
    first.finish().unwrap();
    // The output must not exist.
    let taken = dir.join("first");
    let e = Session::builder().output(&taken).start().err().unwrap();
    assert!(e.to_string().contains(taken.to_str().unwrap()), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hundreds_of_short_lived_threads_share_a_few_per_thread_slots_with_exact_accounting() {
    let _turn = turn();
    let dir = temp_dir("session-pool");
    let out = dir.join("trace");
    let session = Session::builder()
        .per_thread(4)
        .event::<Numbered>()
        .live_period(Some(std::time::Duration::from_millis(5)))
        .output(&out)
        .start()
        .unwrap();
    const THREADS: u32 = 300;
    const EACH: u64 = 50;
    let mut refused = 0;
    for wave in 0..THREADS / 10 {
        // Ten threads at a time, each gone after its events.
        refused += std::thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|i| {
                    s.spawn(move || {
                        (0..EACH)
                            .filter(|&n| Numbered::emit(wave * 10 + i, n).is_err())
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
    }
    let counters = session.finish().unwrap();
    // Every refused event is counted by cause; the others are all in the trace.
    assert_eq!(refused, counters.events_lost(), "{counters:?}");
    let Some(text) = babeltrace(&out, &[]) else {
        return;
    };
    let read = text.lines().filter(|l| l.contains("Numbered:")).count() as u64;
    assert_eq!(read + refused, u64::from(THREADS) * EACH, "{counters:?}");
    assert!(read > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_thread_still_running_at_finish_is_counted_not_lost_silently() {
    let _turn = turn();
    let dir = temp_dir("session-unexported");
    let out = dir.join("trace");
    let session = Session::builder()
        .per_thread(4)
        .event::<Numbered>()
        .live_period(None)
        .output(&out)
        .start()
        .unwrap();
    let (written, go_on) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let (tx, rx) = written;
    let (resume, wait) = go_on;
    // A thread that writes, then idles past the session's end.
    let idle = std::thread::spawn(move || {
        Numbered::emit(1, 1).unwrap();
        tx.send(()).unwrap();
        wait.recv().unwrap();
    });
    rx.recv().unwrap();
    let counters = session.finish().unwrap();
    assert!(counters.bytes_unexported > 0, "{counters:?}");
    resume.send(()).unwrap();
    idle.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
