#!/usr/bin/env bash
# The daemon's own CPU per container exec, and how often each of its
# threads was woken, for one or more builds side by side in one run.
#
#   bench/daemon_cpu.sh                               (as root, release build)
#   EXECS=20000 REPS=5 bench/daemon_cpu.sh old/driftwatch target/release/driftwatch
#
# Each rep starts each build in turn with the default pipeline.toml (its
# plugin cache warmed once beforehand, as on a node after its first start),
# runs EXECS fork+execs of /bin/true from a compiled loop in a podman
# container, and reads the daemon's CPU time from the scheduler
# (/proc/<pid>/task/*/schedstat, nanoseconds, every thread summed: utime
# and stime tick at 10 ms, too coarse for the 0.2 s an exec storm costs)
# and each thread's voluntary context switches (its wake-ups). Prints
# every run, then the median µs per exec for each build.
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

EXECS=${EXECS:-20000}
REPS=${REPS:-5}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-cpu-$$
WORK=$(mktemp -d)
DW_PID=
if [ $# -eq 0 ]; then
  set -- "${DRIFTWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/driftwatch}"
fi

for BIN in "$@"; do bench_preflight; done
trap bench_cleanup EXIT

mkdir -p "$WORK/tools"
cc -static -O2 -o "$WORK/tools/exec_loop" bench/exec_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
default_pipeline "$WORK/p.toml"

# ns of CPU of every thread of the daemon (%.0f: mawk's %d stops at 2^31).
cpu_ns() {
  cat /proc/"$DW_PID"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'
}
# "thread-name switches" per thread name, summed over threads of a name.
wakeups() {
  for t in /proc/"$DW_PID"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '/^voluntary_ctxt_switches/{print $2}' "$t/status")"
  done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}

# Every build compiles the plugins once into the shared cache first.
for BIN in "$@"; do start_sensor "$WORK/p.toml"; stop_sensor; done

for rep in $(seq "$REPS"); do
  for i in $(seq $#); do
    BIN=${!i}
    start_sensor "$WORK/p.toml"
    sleep 2
    c0=$(cpu_ns); wakeups >"$WORK/w0"
    podman exec "$NAME" /tools/exec_loop /bin/true "$EXECS" >/dev/null
    sleep 1
    c1=$(cpu_ns); wakeups >"$WORK/w1"
    stop_sensor
    us=$(awk -v a="$c0" -v b="$c1" -v n="$EXECS" 'BEGIN {printf "%.2f", (b - a) / n / 1000}')
    echo "$i $us" >>"$WORK/results"
    echo "rep $rep build $i ($BIN): $us µs/exec; wake-ups:" \
      "$(join "$WORK/w0" "$WORK/w1" | awk '$3 > $2 {printf "%s=%d ", $1, $3 - $2}')"
  done
done

echo
for i in $(seq $#); do
  med=$(awk -v i="$i" '$1 == i {print $2}' "$WORK/results" | median)
  echo "build $i (${!i}): median $med µs of daemon CPU per exec over $REPS reps"
done
