#!/usr/bin/env bash
# Sustained events/s without loss through an lttng-relayd on loopback, next to
# a local trace directory, in one run: `ringbuf record` into a trace directory
# (trace), to the relayd (relayd), to both (both), and, with LTTNG=1, the same
# workload traced by lttng-ust and streamed by LTTng's own consumer to the same
# relayd (lttng). For each, the highest rate per writer thread at which a whole
# run loses no event, found by doubling then bisecting; the outputs take turns
# at every step, so they share the machine's conditions.
#
#   bash ringbuf-splice/relayd-bench/run.sh          # THREADS=2 DURATION=3 STEPS=5
#   LTTNG=1 bash ringbuf-splice/relayd-bench/run.sh  # also LTTng's consumer
#
# Needs lttng-relayd (lttng-tools); LTTNG=1 also needs lttng-sessiond, gcc and
# lttng-ust's headers (liblttng-ust-dev). LTTng's session daemon runs as an
# unprivileged user (nobody when run as root) with a home of its own: a root
# session daemon would take over /var/run/lttng from any other one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

threads="${THREADS:-2}"
duration="${DURATION:-3}"
steps="${STEPS:-5}"
live_ms=100 # record's default --live-ms, and LTTng's live timer here
cargo build -q --release -p ringbuf-splice --bin ringbuf
ringbuf="$PWD/target/release/ringbuf"
work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

# A relayd of our own on loopback (ports from 35342 on, or PORT=...).
port="${PORT:-35342}"
LTTNG_HOME="$work" LTTNG_RELAYD_HEALTH="$work/relayd-health" lttng-relayd -C "tcp://127.0.0.1:$port" -D "tcp://127.0.0.1:$((port + 1))" \
    -L "tcp://127.0.0.1:$((port + 2))" -o "$work/relayd" >"$work/relayd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done
url="net://127.0.0.1:$port:$((port + 1))"

# Events/s and MB/s of `events` in `secs`, the relayd (or trace) holding `bytes`.
rates() { awk -v e="$1" -v s="$2" -v b="$3" 'BEGIN { printf "%.0f %.1f\n", e / s, b / s / 1e6 }'; }

# One recording; prints "events/s MB/s" if it lost nothing.
run_ringbuf() { # output rate
    local out=() n=$((++runs))
    case "$1" in
    trace) out=(--output "$work/trace-$n") ;;
    relayd) out=(--relayd "$url") ;;
    both) out=(--output "$work/trace-$n" --relayd "$url") ;;
    esac
    local summary
    summary="$("$ringbuf" record --threads "$threads" --rate "$2" --duration "$duration" \
        --live-ms "$live_ms" "${out[@]}" 2>/dev/null)" || { rm -rf "$work/trace-$n"; return 1; }
    rm -rf "$work/trace-$n" "${work:?}/relayd"/*
    # Exit status 0: the relayd (if any) got every packet; and no event was lost.
    grep -q '^no event lost' <<<"$summary" || return 1
    rates "$(sed -n 's/^attempted .* committed \([0-9]*\),.*/\1/p' <<<"$summary")" \
        "$(sed -n 's/.* committed over \([0-9.]*\) s$/\1/p' <<<"$summary")" \
        "$(sed -n 's/^packets: .*(\([0-9.]*\) MB)$/\1/p' <<<"$summary" | awk '{ print $1 * 1e6 }')"
}

outputs=(trace relayd both)
if [ "${LTTNG:-0}" = 1 ]; then
    outputs+=(lttng)
    lttng_dir="$work/lttng"
    mkdir "$lttng_dir"
    cp "$here/workload.tp" "$lttng_dir/"
    (cd "$lttng_dir" && lttng-gen-tp workload.tp -o workload-tp.h -o workload-tp.c)
    gcc -O2 -I"$lttng_dir" -o "$lttng_dir/workload" "$here/workload.c" "$lttng_dir/workload-tp.c" \
        -llttng-ust -ldl -lpthread
    as_user=()
    if [ "$(id -u)" -eq 0 ]; then
        chown nobody "$lttng_dir"
        as_user=(runuser -u nobody --)
    fi
    lttng_env=(env HOME="$lttng_dir" LTTNG_HOME="$lttng_dir")
    "${as_user[@]}" "${lttng_env[@]}" lttng-sessiond --no-kernel >"$work/sessiond.log" 2>&1 &
    pids+=($!)
    until "${as_user[@]}" "${lttng_env[@]}" lttng list >/dev/null 2>&1; do sleep 0.1; done
fi

# The workload traced by lttng-ust, streamed by LTTng's consumer; prints
# "events/s MB/s" if the relayd's trace holds every event.
run_lttng() { # rate
    local as=("${as_user[@]}" "${lttng_env[@]}") session="bench$((++runs))" summary
    "${as[@]}" lttng create "$session" "--live=$((live_ms * 1000))" "--set-url=$url" >/dev/null
    "${as[@]}" lttng enable-channel -u -s "$session" ch --subbuf-size 64K --num-subbuf 16 >/dev/null
    "${as[@]}" lttng enable-event -u -s "$session" -c ch 'ringbuf_bench:*' >/dev/null
    "${as[@]}" lttng start "$session" >/dev/null
    summary="$("${as[@]}" "$lttng_dir/workload" "$threads" "$1" "$duration")"
    "${as[@]}" lttng destroy "$session" >/dev/null # stops and waits for the data
    local trace events bytes attempted secs
    trace="$(dirname "$(find "$work/relayd" -name metadata | head -n 1)")"
    events="$(babeltrace2 "$trace" -c sink.utils.counter -p 'step=+0' | awk '/ Event messages/ { print $1 }')"
    bytes="$(find "$trace" -maxdepth 1 -type f -name 'ch_*' -printf '%s\n' | awk '{ s += $1 } END { print s }')"
    rm -rf "${work:?}/relayd"/*
    read -r _ attempted _ _ secs _ <<<"$summary"
    [ "$events" = "$attempted" ] || return 1
    rates "$events" "$secs" "$bytes"
}

run() { # output rate
    case "$1" in
    lttng) run_lttng "$2" ;;
    *) run_ringbuf "$1" "$2" ;;
    esac
}
runs=0

declare -A lo hi best
for o in "${outputs[@]}"; do lo[$o]=0; hi[$o]=0; best[$o]="-"; done
rate=25000
# Doubling until every output has lost events once.
while :; do
    pending=0
    for o in "${outputs[@]}"; do
        [ "${hi[$o]}" -ne 0 ] && continue
        pending=1
        if r="$(run "$o" "$rate")"; then lo[$o]=$rate; best[$o]="$r"; else hi[$o]=$rate; fi
    done
    [ "$pending" -eq 0 ] && break
    rate=$((rate * 2))
done
# Bisecting, the outputs taking turns.
for _ in $(seq "$steps"); do
    for o in "${outputs[@]}"; do
        mid=$(((lo[$o] + hi[$o]) / 2))
        if r="$(run "$o" "$mid")"; then lo[$o]=$mid; best[$o]="$r"; else hi[$o]=$mid; fi
    done
done

echo "lttng-relayd $(lttng-relayd --version), $threads writer threads, ${duration} s runs, $(nproc) CPUs"
printf '%-8s %14s %16s %8s\n' output rate/thread "events/s" "MB/s"
for o in "${outputs[@]}"; do
    read -r events mb _ <<<"${best[$o]} -"
    printf '%-8s %14s %16s %8s\n' "$o" "${lo[$o]}" "$events" "$mb"
done
