#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, docs/fuzzing.md) and runs each for
# SECONDS (default 60), from the seeds in fuzz/corpus/<target> plus what
# earlier runs found (kept under the target dir, never in the tree).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# A crash fails the run; libFuzzer writes the input to
# fuzz/artifacts/<target>/, and it becomes a regression seed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(kernel_record msgpack replay mountinfo spool runtime_metadata)
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
opts=(-O --fuzz-dir fuzz --target-dir "$target_dir")
# AddressSanitizer (cargo-fuzz's default) checks the unsafe code the
# decoders rest on.
cargo +nightly fuzz build "${opts[@]}"
for t in "${targets[@]}"; do
  found="$target_dir/corpus/$t"
  log="$target_dir/$t.log"
  mkdir -p "$found" "fuzz/corpus/$t"
  rc=0
  cargo +nightly fuzz run "${opts[@]}" "$t" "$found" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $t: ${runs} inputs in ${secs}s, peak RSS ${rss} MB, corpus $(ls "$found" | wc -l) entries"
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz: $t failed (exit $rc); the input is under fuzz/artifacts/$t/" >&2
    exit "$rc"
  fi
done
