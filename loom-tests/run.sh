#!/usr/bin/env bash
# Runs the loom models of ringbuf-core, then checks that each engine mutant is
# caught by the model that targets it. See loom-tests/README.md.
#
#   LOOM_MAX_PREEMPTIONS  preemption bound (default 2); "unbounded" or empty runs
#                         the models exhaustively (much longer, see the README)
#   LOOM_TARGET_DIR       cargo target dir of the models (default target/loom);
#                         the mutants build in "$LOOM_TARGET_DIR-mutant"
#   LOOM_SKIP_MUTANTS     set to 1 to run the models only
set -euo pipefail
cd "$(dirname "$0")/.."

bound="${LOOM_MAX_PREEMPTIONS-2}"
if [ -z "$bound" ] || [ "$bound" = unbounded ]; then
    unset LOOM_MAX_PREEMPTIONS
    bound=unbounded
else
    export LOOM_MAX_PREEMPTIONS="$bound"
fi
target="${LOOM_TARGET_DIR:-$PWD/target/loom}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# The `loom` profile (workspace Cargo.toml) is optimised but quick to build.
loom_test() {
    cargo test -p loom-tests --profile loom "$@"
}

echo "== loom models (preemption bound: $bound)"
start=$SECONDS
CARGO_TARGET_DIR="$target" RUSTFLAGS="--cfg loom" \
    loom_test -- --nocapture --test-threads=1 2>&1 | tee "$log"
echo
echo "== loom models: summary ($((SECONDS - start))s including the build)"
grep -o 'loom model .*(preemption bound [^)]*)' "$log"

if [ "${LOOM_SKIP_MUTANTS:-0}" = 1 ]; then
    exit 0
fi

# Each mutant is a deliberately broken engine (`ringbuf_mutant` cfg in ringbuf-core)
# and a `#[should_panic]` test that runs the model expected to catch it.
mutants=(
    "relaxed_commit nested mutant_relaxed_commit_is_caught"
    "acquire_claim boundary mutant_acquire_claim_is_caught"
    "any_lap_noref boundary mutant_any_lap_noref_is_caught"
    "skip_noref overwrite_reader mutant_skip_noref_is_caught"
    "undo_discard discard mutant_undo_discard_is_caught"
)
for m in "${mutants[@]}"; do
    read -r name file test <<<"$m"
    echo
    echo "== mutant $name: must be caught by tests/$file.rs"
    start=$SECONDS
    if ! CARGO_TARGET_DIR="$target-mutant" \
        RUSTFLAGS="--cfg loom --cfg ringbuf_mutant=\"$name\"" \
        loom_test --test "$file" -- --exact "$test" >"$log" 2>&1; then
        cat "$log"
        echo "mutant $name was NOT caught (or its check failed to build)" >&2
        exit 1
    fi
    # The test must really have run (and passed because the model panicked).
    if ! grep -q "test $test - should panic ... ok" "$log"; then
        cat "$log"
        echo "mutant check $test did not run" >&2
        exit 1
    fi
    echo "mutant $name caught ($((SECONDS - start))s including the build)"
done
