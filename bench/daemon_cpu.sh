#!/usr/bin/env bash
# The daemon's own CPU per container exec (or per write), and how often
# each of its threads was woken, for one or more builds side by side in
# one run.
#
#   bench/daemon_cpu.sh                               (as root, release build)
#   EXECS=20000 REPS=5 bench/daemon_cpu.sh old/driftwatch target/release/driftwatch
#   STORM=write WRITES=150000 bench/daemon_cpu.sh     (appends to /etc/x)
#   STORM=write AGGREGATE_MS=0 bench/daemon_cpu.sh    (every write an event)
#
# Each rep starts each build in turn with the default pipeline.toml (its
# plugin cache warmed once beforehand, as on a node after its first start),
# runs EXECS fork+execs of /bin/true from a compiled loop in a podman
# container (STORM=write: WRITES open-append-write-close of /etc/x, each
# one a finding; repeats fold into one event with a count unless
# AGGREGATE_MS=0 turns folding off), and reads the daemon's CPU time from the scheduler
# (/proc/<pid>/task/*/schedstat, nanoseconds, every thread summed: utime
# and stime tick at 10 ms, too coarse for the 0.2 s an exec storm costs)
# and each thread's voluntary context switches (its wake-ups). Prints
# every run, then the median µs per exec for each build.
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

EXECS=${EXECS:-20000}
WRITES=${WRITES:-150000}
STORM=${STORM:-exec}
case "$STORM" in
  exec) N=$EXECS UNIT=exec ;;
  write) N=$WRITES UNIT=write ;;
  *) echo "bench: STORM is exec or write, not $STORM" >&2; exit 2 ;;
esac
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
cc -static -O2 -o "$WORK/tools/file_loop" bench/file_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
default_pipeline "$WORK/p.toml"
if [ -n "${AGGREGATE_MS:-}" ]; then
  sed -i "s/^aggregate_window_ms = .*/aggregate_window_ms = $AGGREGATE_MS/" "$WORK/p.toml"
  grep -q "^aggregate_window_ms = $AGGREGATE_MS\$" "$WORK/p.toml" || { echo "bench: no aggregate_window_ms in the pipeline" >&2; exit 1; }
fi

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
    if [ "$STORM" = exec ]; then
      podman exec "$NAME" /tools/exec_loop /bin/true "$N" >/dev/null
    else
      podman exec "$NAME" /tools/file_loop append /etc/x "$N" >/dev/null
    fi
    sleep 1
    c1=$(cpu_ns); wakeups >"$WORK/w1"
    stop_sensor
    us=$(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN {printf "%.2f", (b - a) / n / 1000}')
    echo "$i $us" >>"$WORK/results"
    # The run's counters as the daemon logged them at exit: the events that
    # reached it (every kind; the container budget drops a write flood's
    # excess in the kernel, kernel_dropped) and what the kernel lost.
    events=$(grep -o '"events_in":{[^}]*}' "$WORK/dw.log" | tail -1 | grep -o '[0-9]*' | awk '{s += $1} END {print s + 0}')
    per_event=$(awk -v a="$c0" -v b="$c1" -v n="$events" 'BEGIN {if (n > 0) printf "%.2f", (b - a) / n / 1000; else print "-"}')
    echo "rep $rep build $i ($BIN): $us µs/$UNIT, $per_event µs per event in ($events events);" \
      "$(last_counter kernel_lost) $(last_counter kernel_dropped); wake-ups:" \
      "$(join "$WORK/w0" "$WORK/w1" | awk '$3 > $2 {printf "%s=%d ", $1, $3 - $2}')"
  done
done

echo
for i in $(seq $#); do
  med=$(awk -v i="$i" '$1 == i {print $2}' "$WORK/results" | median)
  echo "build $i (${!i}): median $med µs of daemon CPU per $UNIT over $REPS reps"
done
