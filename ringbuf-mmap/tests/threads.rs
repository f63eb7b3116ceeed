//! Per-thread channels as real programs use them: automatic registration, slots
//! given back after their threads exit and reused once read, switch requests for
//! live reading, signal handlers that fire before their thread's first event, the
//! thread id cache, and slot words rewritten by a hostile process.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use ringbuf_core::{Config, Mode, NoClock, RawPacket, RawRecords, Switch};
use ringbuf_mmap::clock::Monotonic;
use ringbuf_mmap::{
    current_tid, Backing, ChannelHeader, ChannelOptions, ConsumeError, PerThreadChannel,
    PerThreadConsumer, SlotError, SlotLosses, SlotState, MAX_CHANNELS_PER_THREAD,
};

type Channel = PerThreadChannel<RawRecords, NoClock>;
type Consumer = PerThreadConsumer<RawRecords, NoClock>;

fn options(slots: u32, subbufs: u64) -> ChannelOptions<'static> {
    ChannelOptions {
        config: Config::new(4096, subbufs, Mode::Discard),
        buffers: slots,
        format: 0,
        prefault: false,
        clock: Monotonic.describe(),
    }
}

fn channel(name: &str, slots: u32, subbufs: u64) -> Channel {
    PerThreadChannel::create(
        Backing::Memfd { name },
        &options(slots, subbufs),
        "",
        |_| RawRecords,
        |_| NoClock,
    )
    .unwrap()
}

/// A consumer attached through the channel's descriptor, as another process would.
fn consumer(channel: &Channel) -> Consumer {
    let memfd = channel.shm().try_clone_fd().unwrap();
    PerThreadConsumer::attach_fd(memfd, None, 0, |_| RawRecords, |_| NoClock).unwrap()
}

/// Payload: (thread, seq).
fn payload(thread: u64, seq: u64) -> [u8; 16] {
    let mut p = [0; 16];
    p[..8].copy_from_slice(&thread.to_le_bytes());
    p[8..].copy_from_slice(&seq.to_le_bytes());
    p
}

/// Every record of every packet of slot `slot` read now: (event id, thread, seq).
fn drain(consumer: &Consumer, slot: u32) -> Vec<Vec<(u32, u64, u64)>> {
    let mut scratch = Vec::new();
    let mut packets = Vec::new();
    consumer
        .drain(slot, &mut scratch, |p| {
            let packet = RawPacket::parse(p).expect("valid packet");
            let records = packet.records().map(|r| {
                let (id, p) = r.expect("valid record");
                let word = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap());
                (id, word(0), word(8))
            });
            packets.push(records.collect());
        })
        .unwrap();
    packets
}

const THREADS: u64 = 512;
const LAUNCHERS: u64 = 16;
const SLOTS: u32 = 8;
const EVENTS: u64 = 2000;

/// What one short-lived thread did.
#[derive(Default)]
struct Written {
    /// `committed[seq]`: the write returned Ok.
    committed: Vec<bool>,
    /// Writes the buffer refused (counted in its `Stats`).
    refused: u64,
    /// Calls of `writer()` that found no free slot (counted in `no_slot`).
    no_slot: u64,
}

#[test]
fn hundreds_of_short_lived_threads_share_eight_slots_with_exact_accounting() {
    let channel = channel("churn", SLOTS, 8);
    let consumer = consumer(&channel);
    let done = AtomicBool::new(false);
    let reader_gone = AtomicBool::new(false);
    let written: Mutex<Vec<Written>> =
        Mutex::new((0..THREADS).map(|_| Written::default()).collect());
    let seen = std::thread::scope(|s| {
        // The consumer: drains every slot (freeing the retiring ones) until the
        // writers are done and every slot is free again.
        let reader = s.spawn(|| {
            // If this thread fails, the writers waiting for a slot must fail too,
            // not wait for ever.
            let _gone = SetOnDrop(&reader_gone);
            let mut seen = vec![vec![0u8; EVENTS as usize]; THREADS as usize];
            loop {
                // Loaded before the pass: a pass that began after the last thread
                // exited and leaves every slot free has read everything.
                // Acquire: pairs with the Release below, after the launchers joined
                // every thread: their exit hooks' retirements are visible.
                let finished = done.load(Acquire);
                let mut got = 0;
                for slot in 0..SLOTS {
                    for packet in drain(&consumer, slot) {
                        got += 1;
                        for (id, thread, seq) in packet {
                            assert_eq!(id, thread as u32, "record intact");
                            seen[thread as usize][seq as usize] += 1;
                        }
                    }
                }
                let all_free =
                    (0..SLOTS).all(|slot| consumer.slot_state(slot) == Some(SlotState::Free));
                if finished && all_free {
                    return seen;
                }
                if got == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        // Launchers: each runs its share of the threads one after the other, so
        // that twice as many threads as slots live at any time.
        let launchers: Vec<_> = (0..LAUNCHERS)
            .map(|l| {
                let (channel, written, gone) = (&channel, &written, &reader_gone);
                s.spawn(move || {
                    for thread in (l..THREADS).step_by(LAUNCHERS as usize) {
                        // Joined explicitly: that waits for its exit hook too.
                        let w = std::thread::scope(|s| {
                            s.spawn(|| short_lived(channel, thread, gone))
                                .join()
                                .unwrap()
                        });
                        written.lock().unwrap()[thread as usize] = w;
                    }
                })
            })
            .collect();
        for l in launchers {
            l.join().unwrap();
        }
        done.store(true, Release);
        reader.join().unwrap()
    });
    let written = written.into_inner().unwrap();
    // Every committed event read exactly once, nothing else read.
    for (thread, (w, seen)) in written.iter().zip(&seen).enumerate() {
        for (seq, (&committed, &times)) in w.committed.iter().zip(seen).enumerate() {
            assert_eq!(times, committed as u8, "thread {thread} seq {seq}");
        }
    }
    // Every other event counted once: refused ones in the buffers' counters, those
    // of threads without a slot in the channel's.
    let refused: u64 = written.iter().map(|w| w.refused).sum();
    let no_slot: u64 = written.iter().map(|w| w.no_slot).sum();
    let counted: u64 = channel.stats().iter().map(|s| s.events_discarded()).sum();
    assert_eq!(counted, refused);
    assert_eq!(
        channel.losses(),
        SlotLosses {
            unregistered: 0,
            no_slot
        }
    );
    let committed: u64 = written
        .iter()
        .map(|w| w.committed.iter().filter(|&&c| c).count() as u64)
        .sum();
    eprintln!(
        "{THREADS} threads over {SLOTS} slots: {committed} events read, {refused} refused by \
         a full buffer, {no_slot} calls found no free slot"
    );
}

/// One short-lived thread: waits for a slot (each failed call counts one event
/// lost), writes [`EVENTS`] events, exits (its exit hook gives the slot back).
fn short_lived(channel: &Channel, thread: u64, reader_gone: &AtomicBool) -> Written {
    let mut w = Written::default();
    let writer = loop {
        match channel.writer() {
            Ok(writer) => break writer,
            Err(SlotError::NoFreeSlot) => {
                // Relaxed: a flag; the reader's own failure is what fails the test.
                assert!(!reader_gone.load(Relaxed), "no reader frees slots");
                w.no_slot += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("thread {thread}: {e}"),
        }
    };
    assert!(writer.slot() < SLOTS);
    for seq in 0..EVENTS {
        let ok = writer.write(thread as u32, &payload(thread, seq)).is_ok();
        w.committed.push(ok);
        w.refused += u64::from(!ok);
    }
    w
}

/// Sets its flag when dropped (also by a panic).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// Steps of the owner thread in the switch-request test.
enum Step {
    Write(u64),
    Exit,
}

#[test]
fn a_switch_request_closes_an_idle_threads_packet_on_its_next_event() {
    let channel = channel("request", 1, 4);
    let consumer = consumer(&channel);
    let records = |packets: Vec<Vec<(u32, u64, u64)>>| -> Vec<usize> {
        packets.iter().map(Vec::len).collect()
    };
    std::thread::scope(|s| {
        // Made in the scope: a failed assertion drops the sender, which ends the
        // owner thread, so the test fails instead of hanging.
        let (steps, step_rx) = mpsc::channel::<Step>();
        let (done_tx, done) = mpsc::channel::<()>();
        let channel = &channel;
        let owner = s.spawn(move || {
            let mut seq = 0;
            for step in step_rx {
                match step {
                    Step::Write(n) => {
                        let writer = channel.writer().unwrap();
                        for _ in 0..n {
                            writer.write(1, &payload(0, seq)).unwrap();
                            seq += 1;
                        }
                    }
                    Step::Exit => return,
                }
                done_tx.send(()).unwrap();
            }
        });
        let step = |s: Step| {
            steps.send(s).unwrap();
            done.recv().unwrap();
        };
        step(Step::Write(10));
        assert_eq!(
            records(drain(&consumer, 0)),
            [0usize; 0],
            "the packet is open"
        );
        // No request: the next event goes into the same open packet.
        step(Step::Write(1));
        assert_eq!(records(drain(&consumer, 0)), [0usize; 0]);
        // A request: nothing changes until the owner writes (the consumer never
        // writes the buffer)...
        assert!(!consumer.switch_all(Switch::Active), "only requested");
        let Some(SlotState::Owned {
            tid,
            switch_requested: true,
        }) = consumer.slot_state(0)
        else {
            panic!("{:?}", consumer.slot_state(0));
        };
        assert_ne!(tid, current_tid(), "the owner's id, not ours");
        assert_eq!(records(drain(&consumer, 0)), [0usize; 0]);
        // ...whose next event closes the packet first: the 11 events before it.
        step(Step::Write(1));
        assert_eq!(records(drain(&consumer, 0)), [11]);
        assert!(matches!(
            consumer.slot_state(0),
            Some(SlotState::Owned {
                switch_requested: false,
                ..
            })
        ));
        // At exit the hook closes the last packet, and reading it frees the slot.
        steps.send(Step::Exit).unwrap();
        owner.join().unwrap();
        assert!(matches!(
            consumer.slot_state(0),
            Some(SlotState::Retiring { .. })
        ));
        assert_eq!(records(drain(&consumer, 0)), [1]);
        assert_eq!(consumer.slot_state(0), Some(SlotState::Free));
    });
}

static HANDLER_CHANNEL: OnceLock<Channel> = OnceLock::new();
static HANDLER_OK: AtomicU64 = AtomicU64::new(0);
static HANDLER_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Writes one event through `signal_writer`, the async-signal-safe lookup.
extern "C" fn on_sigusr1(_: libc::c_int) {
    let channel = HANDLER_CHANNEL.get().expect("set before the signal");
    match channel.signal_writer() {
        Ok(writer) => {
            writer.write(2, &payload(1, 0)).unwrap();
            HANDLER_OK.fetch_add(1, Relaxed);
        }
        Err(SlotError::Unregistered) => {
            HANDLER_REFUSED.fetch_add(1, Relaxed);
        }
        Err(_) => std::process::abort(),
    }
}

thread_local! {
    /// Writes one event from its destructor, which may run after the thread's exit
    /// hook: a write then must be refused and counted, never lost silently.
    static LATE: LateWriter = const { LateWriter(Cell::new(false)) };
}

static LATE_OK: AtomicU64 = AtomicU64::new(0);
static LATE_EXITING: AtomicU64 = AtomicU64::new(0);

struct LateWriter(Cell<bool>);

impl Drop for LateWriter {
    fn drop(&mut self) {
        let channel = HANDLER_CHANNEL.get().expect("set");
        match channel.writer() {
            Ok(writer) => {
                writer.write(3, &payload(2, 0)).unwrap();
                LATE_OK.fetch_add(1, Relaxed);
            }
            Err(SlotError::Exiting) => {
                LATE_EXITING.fetch_add(1, Relaxed);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_signal_handler_before_the_threads_first_event_is_counted_and_never_registers() {
    let channel = HANDLER_CHANNEL.get_or_init(|| channel("handler", 2, 4));
    let consumer = consumer(channel);
    // SAFETY: a zeroed sigaction with a plain handler that only does
    // async-signal-safe work (atomics, the channel's signal path).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    std::thread::spawn(|| {
        // The destructor's thread-local first: destructors run in reverse order
        // of registration, so it runs after the exit hook.
        LATE.with(|l| l.0.set(true));
        // SAFETY: raise runs the handler on this thread before it returns.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        assert_eq!(HANDLER_REFUSED.load(Relaxed), 1, "refused: no slot yet");
        assert!((0..2).all(|slot| channel.slot_state(slot) == Some(SlotState::Free)));
        // The first event outside a handler registers; handlers then find it.
        channel.writer().unwrap().write(1, &payload(0, 0)).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        assert_eq!(HANDLER_OK.load(Relaxed), 1);
    })
    .join()
    .unwrap();
    let late_ok = LATE_OK.load(Relaxed);
    assert_eq!(
        late_ok + LATE_EXITING.load(Relaxed),
        1,
        "the late write ran"
    );
    assert_eq!(
        channel.losses(),
        SlotLosses {
            unregistered: 1 + LATE_EXITING.load(Relaxed),
            no_slot: 0
        }
    );
    // Read: the thread's event, the handler's second one, and the late one only
    // if it was accepted; one slot used, and freed by the reading.
    let mut ids = Vec::new();
    for slot in 0..2 {
        for packet in drain(&consumer, slot) {
            ids.extend(packet.iter().map(|r| r.0));
        }
    }
    let expected: &[u32] = if late_ok == 1 { &[1, 2, 3] } else { &[1, 2] };
    assert_eq!(ids, expected);
    assert!((0..2).all(|slot| consumer.slot_state(slot) == Some(SlotState::Free)));
}

#[test]
fn a_thread_writes_to_a_bounded_number_of_channels_and_dropped_ones_free_their_entry() {
    std::thread::spawn(|| {
        let mut channels: Vec<Channel> = (0..MAX_CHANNELS_PER_THREAD)
            .map(|_| channel("many", 1, 2))
            .collect();
        for c in &channels {
            c.writer().unwrap().write(1, &payload(0, 0)).unwrap();
        }
        let one_more = channel("one-more", 1, 2);
        assert_eq!(one_more.writer().err(), Some(SlotError::TooManyChannels));
        assert_eq!(one_more.losses().no_slot, 1);
        // A channel dropped while this thread is registered: its entry is reused.
        channels.pop();
        let writer = one_more.writer().unwrap();
        writer.write(1, &payload(0, 0)).unwrap();
        // Every channel is dropped before the thread's exit hook runs, which then
        // finds nothing to retire.
    })
    .join()
    .unwrap();
}

#[test]
fn the_thread_id_is_cached_per_thread_and_forgotten_by_a_forked_child() {
    // SAFETY: gettid has no preconditions.
    let gettid = || unsafe { libc::gettid() } as u32;
    assert_eq!(current_tid(), gettid());
    assert_eq!(current_tid(), current_tid());
    let other = std::thread::spawn(move || (current_tid(), gettid()))
        .join()
        .unwrap();
    assert_eq!(other.0, other.1);
    assert_ne!(other.0, current_tid());

    // A forked child of a registered thread: it must neither reuse the parent
    // thread's id nor write into its slot (whose writer lives on in the parent).
    let channel = channel("fork", 2, 2);
    let parent_slot = channel.writer().unwrap().slot();
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only does what is safe after fork in a multithreaded
    // process with glibc (whose fork makes malloc usable in the child), writes
    // its answer and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let answer = match channel.writer() {
            Ok(w) => [current_tid() as u64, gettid() as u64, w.slot() as u64],
            Err(_) => [0, 0, u64::MAX],
        };
        let bytes: Vec<u8> = answer.iter().flat_map(|v| v.to_le_bytes()).collect();
        // SAFETY: writing a local buffer to our pipe, then leaving at once.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    let mut bytes = [0u8; 24];
    // SAFETY: our pipe's ends: the write end closed first, so that a child that
    // died without writing gives end-of-file rather than a wait forever.
    let n = unsafe {
        libc::close(fds[1]);
        let n = libc::read(fds[0], bytes.as_mut_ptr().cast(), bytes.len());
        libc::close(fds[0]);
        n
    };
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(n, 24);
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let (child_cached, child_tid, child_slot) = (word(0), word(1), word(2));
    assert_eq!(child_cached, child_tid, "the child's own id");
    assert_ne!(child_tid, current_tid() as u64);
    assert_ne!(child_slot, parent_slot as u64, "a slot of its own");
    assert!(child_slot < 2);
}

/// The slot table's words as another process sees them: `(head, slots)`, each a
/// line of eight words.
fn table_words(channel: &Channel) -> &[AtomicU64] {
    let base = channel.shm().as_ptr();
    // SAFETY: the header is plain data at the start of the mapping.
    let header = unsafe { std::ptr::read_unaligned(base.cast::<ChannelHeader>()) };
    let lines = 1 + header.buffers as usize;
    // SAFETY: the table (a head line and one line per slot, 64 bytes each) lies at
    // the page-aligned `threads_offset` inside the mapping, which outlives the
    // returned slice (it borrows the channel); it is only accessed atomically.
    unsafe {
        std::slice::from_raw_parts(
            base.add(header.threads_offset as usize).cast::<AtomicU64>(),
            lines * 8,
        )
    }
}

#[test]
fn hostile_slot_words_neither_panic_nor_hang_writers_and_consumers() {
    const HOSTILE_SLOTS: u32 = 4;
    let channel = channel("hostile", HOSTILE_SLOTS, 4);
    let consumer = consumer(&channel);
    let words = table_words(&channel);
    let state = |slot: u32| &words[8 * (1 + slot as usize)];

    // Targeted: what a hostile value means to each side.
    for (value, decoded) in [
        (3, SlotState::Invalid(3)),
        (0b110, SlotState::Invalid(0b110)),
        (u64::MAX, SlotState::Invalid(u64::MAX)),
    ] {
        for slot in 0..HOSTILE_SLOTS {
            state(slot).store(value, Relaxed);
        }
        assert_eq!(consumer.slot_state(0), Some(decoded));
        // No slot is free: a writer is refused at once, without waiting.
        std::thread::scope(|s| {
            let refused = s.spawn(|| channel.writer().err()).join().unwrap();
            assert_eq!(refused, Some(SlotError::NoFreeSlot));
        });
        // A consumer frees nothing that is not retiring, and requests nothing of a
        // slot that is not owned.
        assert!(drain(&consumer, 0).is_empty());
        consumer.switch_all(Switch::Active);
        assert_eq!(state(0).load(Relaxed), value);
    }
    for slot in 0..HOSTILE_SLOTS {
        state(slot).store(0, Relaxed);
    }

    // Concurrent: a hostile thread rewrites the table (state words, owner ids,
    // counters) while short-lived writers come and go and a consumer drains,
    // requests switches and reads the states. Everything ends, nothing panics.
    let stop = AtomicBool::new(false);
    let hostile_writes = std::thread::scope(|s| {
        let malice = s.spawn(|| {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut writes = 0u64;
            while !stop.load(Relaxed) {
                let r = next();
                let word = &words[(r % words.len() as u64) as usize];
                let value = match r >> 60 {
                    0..=3 => next() & 0b111, // a plausible tag, generation 0
                    4..=7 => (next() & !0b111) | (r >> 56 & 0b111),
                    8 => u64::MAX,
                    _ => next(),
                };
                word.store(value, Relaxed);
                writes += 1;
                if r & 7 == 0 {
                    std::thread::yield_now();
                }
            }
            writes
        });
        let consumer_thread = s.spawn(|| {
            let mut rounds = 0u64;
            while !stop.load(Relaxed) || rounds == 0 {
                let mut scratch = Vec::new();
                for slot in 0..HOSTILE_SLOTS {
                    // The regions are not attacked, but a slot marked free under
                    // its owner may get two writers, which can leave a region that
                    // reads as corrupt: a typed error, like any hostile region.
                    match consumer.drain(slot, &mut scratch, |_| {}) {
                        Ok(_) | Err(ConsumeError::Corrupt { .. }) => {}
                        Err(e) => panic!("slot {slot}: {e}"),
                    }
                    let _ = consumer.slot_state(slot);
                }
                consumer.switch_all(Switch::Active);
                let _ = consumer.slot_losses();
                rounds += 1;
            }
        });
        for thread in 0..64u64 {
            std::thread::scope(|s| {
                s.spawn(|| {
                    // Bounded: with the table under attack there may never be a
                    // free slot.
                    for _ in 0..100 {
                        if let Ok(writer) = channel.writer() {
                            for seq in 0..200 {
                                let _ = writer.write(1, &payload(thread, seq));
                            }
                            return;
                        }
                        std::thread::yield_now();
                    }
                })
                .join()
                .unwrap();
            });
        }
        stop.store(true, Relaxed);
        consumer_thread.join().unwrap();
        malice.join().unwrap()
    });
    assert!(hostile_writes > 0);
}
