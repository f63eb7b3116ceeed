#!/usr/bin/env bash
# Runs the `vs_lttng` bench with an LTTng session recording its tracepoint, and
# checks afterwards that LTTng recorded it.
#
#   benches/lttng/run.sh [criterion args]      e.g. --warm-up-time 1 --measurement-time 3
#   benches/lttng/run.sh --test                once, untimed (CI)
#
# Starts its own session daemon (`lttng-sessiond --no-kernel --daemonize`) with
# LTTNG_HOME in a temporary directory. As root, the daemon's run directory
# (/var/run/lttng, fixed for root) is a temporary directory too, bind-mounted in a
# private mount namespace (unshare), so that it never meets another root daemon;
# without unshare it uses the real one and fails if a daemon already runs there.
# Then: a snapshot session, a user-space channel (overwrite, 4 sub-buffers of
# 512 KiB per CPU), `ringbuf_bench:event` enabled, `lttng start`, the bench
# (RINGBUF_LTTNG_SESSION=1: the bench fails if the tracepoint is not enabled in
# its process), `lttng stop`, one `lttng snapshot record`, and babeltrace2 must
# count at least one `ringbuf_bench:event` and no `ringbuf_bench:event_off`. The
# session and the daemon are destroyed on exit, whatever happens.
#
# Without liblttng-ust the bench itself runs (its LTTng rows print "skipped") and
# this script does not start LTTng.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf 'lttng/run.sh: %s\n' "$*" >&2; }

if ! pkg-config --exists lttng-ust 2>/dev/null; then
    log "skipped LTTng: liblttng-ust-dev not installed; running the bench without it"
    exec cargo bench -p benches --bench vs_lttng -- "$@"
fi
for tool in lttng lttng-sessiond babeltrace2; do
    command -v "$tool" >/dev/null || { log "$tool not found (lttng-tools, babeltrace2)"; exit 1; }
done

# As root: into a private mount namespace, once.
if [ "$(id -u)" -eq 0 ] && [ -z "${RINGBUF_LTTNG_NS:-}" ] \
    && unshare --mount --propagation private true 2>/dev/null; then
    mkdir -p /var/run/lttng
    exec env RINGBUF_LTTNG_NS=1 unshare --mount --propagation private "$0" "$@"
fi

# Build first: compile time is not the session's business.
cargo bench -p benches --bench vs_lttng --no-run

tmp="$(mktemp -d)"
export LTTNG_HOME="$tmp/home"
mkdir -p "$LTTNG_HOME"
if [ "$(id -u)" -eq 0 ]; then
    rundir=/var/run/lttng
    if [ -n "${RINGBUF_LTTNG_NS:-}" ]; then
        mkdir -p "$tmp/run"
        mount --bind "$tmp/run" "$rundir"
    fi
else
    rundir="$LTTNG_HOME/.lttng"
fi
session="ringbuf-vs-lttng-$$"
pidfile="$rundir/lttng-sessiond.pid"
started=""

cleanup() {
    local rc=$?
    set +e
    if [ -n "$started" ]; then
        lttng destroy "$session" >/dev/null 2>&1
        if [ -s "$pidfile" ]; then
            local pid
            pid="$(cat "$pidfile")"
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        fi
    fi
    [ -n "${RINGBUF_LTTNG_NS:-}" ] && umount "$rundir" 2>/dev/null
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

if [ -e "$rundir/client-lttng-sessiond" ] && lttng list >/dev/null 2>&1; then
    log "a session daemon already runs on $rundir: not starting another"
    exit 1
fi
lttng-sessiond --no-kernel --daemonize
started=1
[ -s "$pidfile" ] || { log "lttng-sessiond wrote no $pidfile"; exit 1; }
log "lttng-sessiond $(cat "$pidfile") on $rundir"

lttng create "$session" --snapshot --output "$tmp/snapshot" >/dev/null
lttng enable-channel --userspace --session "$session" --overwrite \
    --subbuf-size 512K --num-subbuf 4 chan >/dev/null
lttng enable-event --userspace --session "$session" --channel chan ringbuf_bench:event >/dev/null
lttng start "$session" >/dev/null
lttng list "$session" | grep -q 'ringbuf_bench:event (type: tracepoint) \[enabled\]' || {
    lttng list "$session" >&2
    log "ringbuf_bench:event is not enabled in $session"
    exit 1
}

# The bench registers with the daemon while it starts (liblttng-ust's
# constructor waits up to LTTNG_UST_REGISTER_TIMEOUT ms for it), and fails if its
# tracepoint is not enabled after that.
RINGBUF_LTTNG_SESSION=1 LTTNG_UST_REGISTER_TIMEOUT=10000 \
    cargo bench -p benches --bench vs_lttng -- "$@"

lttng stop "$session" >/dev/null
lttng snapshot record --session "$session" >/dev/null
text="$tmp/events.txt"
babeltrace2 "$tmp/snapshot" >"$text"
on="$(grep -c 'ringbuf_bench:event:' "$text" || true)"
off="$(grep -c 'ringbuf_bench:event_off:' "$text" || true)"
log "snapshot: $on ringbuf_bench:event, $off ringbuf_bench:event_off"
if [ "$on" -eq 0 ] || [ "$off" -ne 0 ]; then
    log "LTTng did not record the bench's events as expected"
    exit 1
fi
