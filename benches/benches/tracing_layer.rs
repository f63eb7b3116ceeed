//! A `tracing` event through ringbuf's Layer against the layers people pick
//! today, in the same run: one `info!` callsite with two primitive fields and a
//! message, recorded by
//!
//! * `ringbuf`: `ringbuf_splice::tracing::Layer` into a running session (per-CPU
//!   buffers of 8 x 1 MiB, overwrite mode; its exporter thread splices packets
//!   into the trace directory meanwhile);
//! * `fmt_file`: `tracing_subscriber::fmt` (no ANSI) writing each line to a file
//!   (`Arc<File>`: one `write(2)` per event, what `with_writer` on a file gives);
//! * `fmt_file_buffered`: the same through a `Mutex<BufWriter<File>>` (no system
//!   call per event: the kindest setting for `fmt`);
//! * `chrome`: `tracing-chrome` writing its JSON file, with the fields
//!   (`include_args(true)`; its writer thread formats and writes meanwhile);
//! * `registry_only`: the subscriber the layers sit on, with no layer: what
//!   `tracing` itself costs.
//!
//! Each bench times only the calling thread; background threads (ringbuf's
//! exporter, chrome's writer) run on the other CPU.
//!
//! `cargo bench -p benches --bench tracing_layer`

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, Throughput};
use ringbuf_splice::{Mode, Session};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

/// The measured event: one callsite for every subscriber.
#[inline(never)]
fn event(i: u64) {
    tracing::info!(n = i, even = i.is_multiple_of(2), "served");
}

/// Times `iters` events under `dispatch`.
fn timed(dispatch: &Dispatch, iters: u64) -> Duration {
    tracing::dispatcher::with_default(dispatch, || {
        let start = Instant::now();
        for i in 0..iters {
            event(black_box(i));
        }
        start.elapsed()
    })
}

/// Empties a file written by one of the layers between samples, so the bench
/// does not fill the disk.
fn empty(file: &File) {
    file.set_len(0).expect("truncating");
}

fn tracing_layer(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("ringbuf-bench-tracing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let mut group = c.benchmark_group("tracing_event");
    group.throughput(Throughput::Elements(1));

    let registry = Dispatch::new(tracing_subscriber::registry());
    group.bench_function("registry_only", |b| {
        b.iter_custom(|iters| timed(&registry, iters))
    });

    {
        let session = Session::builder()
            .output(dir.join("ringbuf"))
            .mode(Mode::Overwrite)
            .subbuf_size(1 << 20)
            .start()
            .expect("a session");
        let layer = ringbuf_splice::tracing::Layer::new();
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        group.bench_function("ringbuf", |b| {
            b.iter_custom(|iters| timed(&dispatch, iters))
        });
        let counters = session.finish().expect("finishing the session");
        // Overwrite mode: nothing is refused; overwritten packets are expected.
        assert_eq!(counters.events_lost(), 0, "{counters:?}");
    }

    let path = dir.join("fmt.log");
    let file = Arc::new(open_appending(&path));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(file.clone());
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    group.bench_function("fmt_file", |b| {
        b.iter_custom(|iters| {
            let time = timed(&dispatch, iters);
            empty(&file);
            time
        })
    });

    let buffered = Arc::new(Mutex::new(BufWriter::new(open_appending(
        &dir.join("fmt-buffered.log"),
    ))));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(MutexWriter(buffered.clone()));
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    group.bench_function("fmt_file_buffered", |b| {
        b.iter_custom(|iters| {
            let time = timed(&dispatch, iters);
            let mut w = buffered.lock().expect("the writer");
            w.flush().expect("flushing");
            empty(w.get_ref());
            w.get_mut().rewind().expect("rewinding");
            time
        })
    });

    {
        let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
            .file(dir.join("chrome.json"))
            .include_args(true)
            .build();
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        group.bench_function("chrome", |b| b.iter_custom(|iters| timed(&dispatch, iters)));
        drop(dispatch);
        drop(guard);
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn open_appending(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .expect("a log file")
}

/// `fmt`'s writer for a shared, buffered file.
#[derive(Clone)]
struct MutexWriter(Arc<Mutex<BufWriter<File>>>);

impl Write for MutexWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the writer").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("the writer").flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MutexWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// In a private module: the macro's `pub fn` then needs no doc comment.
mod group {
    criterion::criterion_group! {
        name = benches;
        // Short: the files the `fmt` and chrome layers write grow by some
        // hundred MB per second.
        config = criterion::Criterion::default()
            .warm_up_time(std::time::Duration::from_secs(1))
            .measurement_time(std::time::Duration::from_secs(3));
        targets = super::tracing_layer
    }
}
criterion_main!(group::benches);
