#!/usr/bin/env bash
# What the kernel ring buffers' size (sources.ebpf.ring_buffer_kib, each of
# the two lanes) costs in memory and buys in records, side by side in one
# run, sizes interleaved within each repetition. Two storms in a podman
# container, each at the loop's full rate:
#   write  the compiled open-append-write-close loop on /etc/x (each write
#          a finding) with folding off and the container's budget lifted,
#          so every write is a record in the file lane: the worst case the
#          file ring has to absorb;
#   exec   the compiled fork+exec loop (busybox true): the exec lane.
#
#   bench/rings.sh                                   (as root, release build)
#   RINGS="8192 2048 1024" LOOPS=100000 EXECS=5000 REPS=3 bench/rings.sh
#
# Per size prints, medians over the repetitions: the daemon's RSS once
# settled before the storms (IDLE_SECS after start, when mimalloc has
# returned its start-up memory), its peak RSS (VmHWM), and per storm the
# records lost because the ring was full (kernel_lost) and the findings
# written (write) or exec records received (exec).
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RINGS=${RINGS:-8192 2048 1024}
LOOPS=${LOOPS:-100000}
EXECS=${EXECS:-5000}
REPS=${REPS:-2}
IDLE_SECS=${IDLE_SECS:-30}
BIN=${DRIFTWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-rings-$$
WORK=$(mktemp -d)
DW_PID=

bench_preflight
trap bench_cleanup EXIT

mkdir -p "$WORK/tools"
cc -static -O2 -o "$WORK/tools/file_loop" bench/file_loop.c
cc -static -O2 -o "$WORK/tools/exec_loop" bench/exec_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
for kib in $RINGS; do
  default_pipeline "$WORK/p$kib.toml"
  sed -i -e 's/^stats_interval_secs = .*/stats_interval_secs = 1/' \
    -e 's/^aggregate_window_ms = .*/aggregate_window_ms = 0/' \
    -e 's/^container_events_per_sec = .*/container_events_per_sec = 1000000/' \
    -e 's/^container_burst = .*/container_burst = 1000000/' \
    -e "s/^ring_buffer_kib = .*/ring_buffer_kib = $kib/" "$WORK/p$kib.toml"
  grep -q "^ring_buffer_kib = $kib\$" "$WORK/p$kib.toml" || { echo "bench: no ring_buffer_kib in pipeline.toml" >&2; exit 1; }
  : >"$WORK/r$kib"
done

lost() { local v; v=$(last_counter kernel_lost | cut -d: -f2); echo "${v:-0}"; }
# Exec records the daemon received (events_in.exec), from its last stats line.
execs_in() {
  local v
  v=$(grep -o '"events_in":{[^}]*}' "$WORK/dw.log" | tail -1 | grep -o '"exec":[0-9]*' | cut -d: -f2)
  echo "${v:-0}"
}
# Waits until the findings file stops growing: the chain has drained.
drain() {
  local prev=-1
  while [ "$(wc -l <"$1")" != "$prev" ]; do prev=$(wc -l <"$1"); sleep 2; done
}

# The first start compiles the plugins into the fresh cache_dir, which
# inflates that run's memory: do it once, unmeasured.
start_sensor "$WORK/p${RINGS%% *}.toml"
stop_sensor

for rep in $(seq "$REPS"); do
  for kib in $RINGS; do
    : >"$WORK/out"
    start_sensor_to "$WORK/p$kib.toml" "$WORK/out"
    sleep "$IDLE_SECS"
    idle=$(awk '/^VmRSS/{print $2}' /proc/"$DW_PID"/status)
    podman exec "$NAME" /tools/file_loop append /etc/x "$LOOPS" >/dev/null
    drain "$WORK/out"
    sleep 1.5
    wlost=$(lost)
    wfound=$(grep -c '/etc/x' "$WORK/out" || true)
    e0=$(execs_in)
    podman exec "$NAME" /tools/exec_loop /bin/true "$EXECS" >/dev/null
    sleep 2.5
    elost=$(($(lost) - wlost))
    efound=$(($(execs_in) - e0))
    hwm=$(awk '/^VmHWM/{print $2}' /proc/"$DW_PID"/status)
    stop_sensor
    echo "$idle $hwm $wlost $wfound $elost $efound" >>"$WORK/r$kib"
    echo "rep $rep ring ${kib}KiB: idle RSS ${idle}KiB VmHWM ${hwm}KiB;" \
      "write: lost $wlost findings $wfound; exec: lost $elost received $efound"
  done
done

printf '\n%-9s %13s %13s %11s %14s %10s %13s\n' ring_KiB idle_RSS_MiB VmHWM_MiB write_lost write_findings exec_lost exec_received
for kib in $RINGS; do
  col() { awk -v c="$1" '{print $c}' "$WORK/r$kib" | median; }
  printf '%-9s %13.1f %13.1f %11s %14s %10s %13s\n' "$kib" "$(echo "$(col 1) / 1024" | bc -l)" \
    "$(echo "$(col 2) / 1024" | bc -l)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)"
done
echo "(LOOPS=$LOOPS writes to /etc, EXECS=$EXECS execs per run, REPS=$REPS, medians)"
