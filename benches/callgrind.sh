#!/usr/bin/env bash
# Instructions per event of every system, under callgrind (valgrind must be installed):
#   bash benches/callgrind.sh [payload bytes...]     (default: 16)
# Per event = (instructions at EVENTS - instructions at 0) / EVENTS, so setup, the
# drains between batches aside, cancels out.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p benches --bin event_loop
BIN=target/release/event_loop
EVENTS=${EVENTS:-200000}
SYSTEMS="rdtsc_bare tsc_only floor floor_lock_cas shared_overwrite local_overwrite shared_discard local_discard
         ctf_shared_overwrite ctf_local_overwrite ctf_shared_discard ctf_local_discard
         arrayqueue_force_push mpsc_sync_channel rtrb_chunk bbqueue_grant
         percpu_shared_overwrite percpu_rseq_overwrite"

count() { # system payload events -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" "$3" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

printf '%-24s %8s %14s\n' system payload instr/event
for size in "${@:-16}"; do
    for s in $SYSTEMS; do
        base=$(count "$s" "$size" 0)
        full=$(count "$s" "$size" "$EVENTS")
        awk -v s="$s" -v p="$size" -v b="$base" -v f="$full" -v n="$EVENTS" \
            'BEGIN { printf "%-24s %8s %14.1f\n", s, p, (f - b) / n }'
    done
done
