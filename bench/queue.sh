#!/usr/bin/env bash
# What the in-memory queue's size buys under a storm the chain cannot keep
# up with, side by side in one run: the same compiled write loop in a podman
# container (each write to /etc a finding), with the per-container budget
# lifted so the whole storm reaches the queue, once per queue capacity,
# interleaved within each repetition.
#
#   bench/queue.sh                                   (as root, release build)
#   CAPS="65536 8192 1024" LOOPS=300000 REPS=3 bench/queue.sh
#
# Per capacity prints, medians over the repetitions: findings written to
# stdout, kernel_lost (the kernel ring was full), kernel_dropped (budget),
# and the daemon's peak RSS (VmHWM). A smaller queue bounds what a kill -9
# can lose (docs/service.md); this shows whether it costs findings.
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

CAPS=${CAPS:-65536 8192}
LOOPS=${LOOPS:-300000}
REPS=${REPS:-3}
BIN=${DRIFTWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-queue-$$
WORK=$(mktemp -d)
DW_PID=

bench_preflight
trap bench_cleanup EXIT

mkdir -p "$WORK/tools"
cc -static -O2 -o "$WORK/tools/file_loop" bench/file_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
for cap in $CAPS; do
  default_pipeline "$WORK/p$cap.toml"
  sed -i -e 's/^stats_interval_secs = .*/stats_interval_secs = 1/' \
    -e 's/^container_events_per_sec = .*/container_events_per_sec = 1000000/' \
    -e 's/^container_burst = .*/container_burst = 1000000/' \
    -e "s/^queue_capacity = .*/queue_capacity = $cap/" "$WORK/p$cap.toml"
  : >"$WORK/r$cap"
done

for rep in $(seq "$REPS"); do
  for cap in $CAPS; do
    : >"$WORK/out"
    start_sensor_to "$WORK/p$cap.toml" "$WORK/out"
    secs=$(podman exec "$NAME" /tools/file_loop append /etc/x "$LOOPS")
    # Let the chain drain what the queue holds before stopping.
    prev=-1
    while [ "$(wc -l <"$WORK/out")" != "$prev" ]; do prev=$(wc -l <"$WORK/out"); sleep 2; done
    hwm=$(awk '/^VmHWM/{print $2}' /proc/"$DW_PID"/status)
    stop_sensor
    found=$(grep -c '/etc/x' "$WORK/out" || true)
    lost=$(last_counter kernel_lost | cut -d: -f2)
    dropped=$(last_counter kernel_dropped | cut -d: -f2)
    echo "$found ${lost:-0} ${dropped:-0} $hwm $secs" >>"$WORK/r$cap"
    echo "rep $rep queue $cap: findings $found lost ${lost:-0} dropped ${dropped:-0} VmHWM ${hwm}KiB loop ${secs}s"
  done
done

printf '\n%-8s %10s %12s %14s %12s\n' queue findings kernel_lost kernel_dropped VmHWM_MiB
for cap in $CAPS; do
  col() { awk -v c="$1" '{print $c}' "$WORK/r$cap" | median; }
  printf '%-8s %10s %12s %14s %12.1f\n' "$cap" "$(col 1)" "$(col 2)" "$(col 3)" "$(echo "$(col 4) / 1024" | bc -l)"
done
echo "(LOOPS=$LOOPS writes to /etc per run, REPS=$REPS, medians)"
