//! Stop and snapshot requests. SIGINT (Ctrl-C) and SIGTERM ask `record` and
//! `consume` to stop through their normal end (final flush, export, summary),
//! as the end of `--duration` does; the handler is reset by the first one, so a
//! second one kills a process that takes too long. SIGUSR1 asks a flight
//! recorder for a snapshot.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static SNAPSHOT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    // Relaxed: a request flag; nothing else is published with it.
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_snapshot(_: libc::c_int) {
    // Relaxed: as in `on_stop`.
    SNAPSHOT.store(true, Ordering::Relaxed);
}

/// Installs `handler` for `signal`. `SA_RESTART`: a signal must not make the
/// exporter's splice or write calls fail with EINTR.
fn install(signal: libc::c_int, handler: extern "C" fn(libc::c_int), flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handlers only store to atomics,
    // which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART | flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

/// From now on, SIGINT and SIGTERM request a stop (see [`stop_requested`]).
pub fn stop_on_sigint() {
    install(libc::SIGINT, on_stop, libc::SA_RESETHAND);
    install(libc::SIGTERM, on_stop, libc::SA_RESETHAND);
}

/// Requests a stop, as SIGINT does.
pub fn request_stop() {
    // Relaxed: as in `on_stop`.
    STOP.store(true, Ordering::Relaxed);
}

/// Whether a stop was requested (cheap: writers look at it for every event).
pub fn stop_requested() -> bool {
    // Relaxed: a request flag; what the requester did before is not read.
    STOP.load(Ordering::Relaxed)
}

/// From now on, SIGUSR1 requests a snapshot (see [`take_snapshot_request`]).
pub fn snapshot_on_sigusr1() {
    install(libc::SIGUSR1, on_snapshot, 0);
}

/// Whether SIGUSR1 came since the last call.
pub fn take_snapshot_request() -> bool {
    SNAPSHOT.swap(false, Ordering::Relaxed)
}
