#!/usr/bin/env bash
# Builds the checkpoint fuzz targets with clang (libFuzzer + ASan + UBSan) and runs them.
#
#   csrc/fuzz/run.sh [SECONDS]     # default 60: both targets at once, SECONDS each
#
# Targets: fuzz_safetensors (cr_st_parse: a whole safetensors file) and fuzz_index
# (cr_st_parse_index: model.safetensors.index.json). Seeds: csrc/fuzz/corpus/<target>/ (written by
# make_corpus.py); every input that once crashed: tests/fuzz_regressions/<target>/, replayed first.
# New inputs go to build/fuzz/new-<target>/, crashes to build/fuzz/artifacts/ (and make this
# script fail). Needs clang and libclang-rt-14-dev (Debian 12: apt-get install clang libclang-rt-14-dev).
set -euo pipefail
SECONDS_EACH="${1:-60}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${CROSSRANK_FUZZ_OUT:-$ROOT/build/fuzz}"
CC="${CC_FUZZ:-clang}"
mkdir -p "$OUT/artifacts"

FLAGS=(-std=c11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -I"$ROOT/csrc"
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
SOURCES=("$ROOT/csrc/safetensors.c" "$ROOT/csrc/json.c" "$ROOT/csrc/error.c")
for target in safetensors index; do
    "$CC" "${FLAGS[@]}" -o "$OUT/fuzz_$target" "$ROOT/csrc/fuzz/fuzz_$target.c" "${SOURCES[@]}"
done

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# Replay the regression inputs: each must now run clean.
for target in safetensors index; do
    reg="$ROOT/tests/fuzz_regressions/$target"
    if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
        echo "== fuzz_$target: replaying $(ls "$reg" | wc -l) regression inputs"
        "$OUT/fuzz_$target" -runs=1 "$reg"/* >"$OUT/replay-$target.log" 2>&1 || {
            tail -40 "$OUT/replay-$target.log"; exit 1; }
    fi
done

pids=()
for target in safetensors index; do
    mkdir -p "$OUT/new-$target"
    echo "== fuzz_$target: ${SECONDS_EACH}s (log: $OUT/fuzz-$target.log)"
    "$OUT/fuzz_$target" -max_total_time="$SECONDS_EACH" -timeout=10 -max_len=65536 -rss_limit_mb=2048 \
        -dict="$ROOT/csrc/fuzz/fuzz.dict" -artifact_prefix="$OUT/artifacts/$target-" -print_final_stats=1 \
        "$OUT/new-$target" "$ROOT/csrc/fuzz/corpus/$target" >"$OUT/fuzz-$target.log" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    target=$([ "$i" = 0 ] && echo safetensors || echo index)
    if wait "${pids[$i]}"; then
        grep -E "DONE|^stat::number_of_executed_units" "$OUT/fuzz-$target.log" | sed "s/^/fuzz_$target: /" || true
    else
        status=1
        echo "fuzz_$target FAILED: crash input in $OUT/artifacts/ ; log tail:"
        tail -60 "$OUT/fuzz-$target.log"
    fi
done
exit $status
