//! Writes `EVENTS` events of `PAYLOAD` bytes into one system, for instruction counts
//! under callgrind (`benches/callgrind.sh` runs them all):
//!
//! `valgrind --tool=callgrind target/release/event_loop <system> <payload> <events>`
//!
//! Per-event instructions = (count at EVENTS) - (count at 0), divided by EVENTS.
//! Systems: the names of the event_path and peers benches (`rdtsc_bare`,
//! `tsc_only`, `floor`,
//! `floor_lock_cas`, `shared_overwrite`, `local_overwrite`, `shared_discard`,
//! `local_discard`, the same four prefixed with `ctf_`, `arrayqueue_force_push`,
//! `mpsc_sync_channel`, `rtrb_chunk`, `bbqueue_grant`), and a per-CPU channel
//! through the shared or the rseq path (`percpu_shared_overwrite`,
//! `percpu_rseq_overwrite`); payloads 8, 16, 64 or 256.
//! The loop is the benches' own (`time_events`), drains of the discard-mode and
//! SPSC systems included (one per batch of thousands of events).

use benches::ours::{percpu_channel, Format, PerCpuSink};
use benches::peers::{new_bbqueue, ArrayQueuePeer, BbqueuePeer, MpscPeer, RtrbPeer};
use benches::{
    config, payload, time_events, Floor, LockFloor, Memory, RdtscBare, Ringbuf, Sink, TscOnly,
};
use ringbuf_core::ctf::Ctf;
use ringbuf_core::{Mode, RawRecords};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let system = args.first().map_or("shared_overwrite", String::as_str);
    let size = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let events = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let ok = match size {
        8 => run::<8>(system, events),
        16 => run::<16>(system, events),
        64 => run::<64>(system, events),
        256 => run::<256>(system, events),
        _ => false,
    };
    if !ok {
        eprintln!("usage: event_loop <system> <8|16|64|256> <events> (systems: see the source)");
        std::process::exit(2);
    }
}

fn run<const N: usize>(system: &str, events: u64) -> bool {
    if let Some(ours) = system.strip_prefix("ctf_") {
        return run_ours::<N, Ctf>(ours, events);
    }
    match system {
        "rdtsc_bare" => go::<N, _>(&mut RdtscBare, events),
        "tsc_only" => go::<N, _>(&mut TscOnly, events),
        "floor" => go::<N, _>(&mut Floor::new(), events),
        "floor_lock_cas" => go::<N, _>(&mut LockFloor::new(), events),
        "arrayqueue_force_push" => go::<N, _>(&mut ArrayQueuePeer::<N>::new(), events),
        "mpsc_sync_channel" => go::<N, _>(&mut MpscPeer::<N>::new(), events),
        "rtrb_chunk" => go::<N, _>(&mut RtrbPeer::new(), events),
        "bbqueue_grant" => go::<N, _>(&mut BbqueuePeer::new(&new_bbqueue()), events),
        "percpu_shared_overwrite" => go::<N, _>(&mut PerCpuSink(&percpu_channel(false)), events),
        "percpu_rseq_overwrite" => go::<N, _>(&mut PerCpuSink(&percpu_channel(true)), events),
        _ => return run_ours::<N, RawRecords>(system, events),
    }
    true
}

/// `shared_overwrite`, `shared_discard`, `local_overwrite` or `local_discard`, in
/// format `K`.
fn run_ours<const N: usize, K: Format>(system: &str, events: u64) -> bool {
    let mode = match system.split_once('_') {
        Some((_, "overwrite")) => Mode::Overwrite,
        Some((_, "discard")) => Mode::Discard,
        _ => return false,
    };
    let mut mem = Memory::new(&config(mode));
    if system.starts_with("shared_") {
        go::<N, _>(&mut Ringbuf::<_, K>::shared(&mut mem, config(mode)), events);
    } else if system.starts_with("local_") {
        // SAFETY: only this (the main and only) thread writes.
        let mut buf = unsafe { Ringbuf::<_, K>::local(&mut mem, config(mode)) };
        go::<N, _>(&mut buf, events);
    } else {
        return false;
    }
    true
}

fn go<const N: usize, S: Sink<N>>(sink: &mut S, events: u64) {
    time_events(sink, &payload::<N>(), events);
}
