#!/usr/bin/env bash
# Overhead of the kernel sensor, side by side with auditd, in one run.
#
#   bench/run.sh                 # as root, after `cargo build --release -p driftwatch`
#   EXECS=20000 WRITES=200000 REPS=3 bench/run.sh
#
# Workloads run inside a podman container (busybox image built here):
#   exec storm : EXECS fork+exec of /bin/true from a shell loop
#   write storm: WRITES open(O_WRONLY|O_CREAT|O_TRUNC)+write+close of /etc/bench
#                (a shell builtin redirection, no fork)
# Modes: off (no tracer), sensor (`driftwatch run`, default plugins, scope
# containers, default batched wake-ups), sensor_wake (the same with
# drain_interval_ms = 0: the kernel wakes the daemon for every record),
# auditd (execve + write-intent open/openat/creat rules, the same things the
# sensor watches). Prints seconds per mode (median of REPS),
# ratios to off, the sensor's kernel losses and the daemon's own CPU time.
# Then the highest exec rate this machine produces (FLOOD_LOOPS exec loops
# in parallel, default: two per CPU) under the sensor with the default
# pipeline.toml: execs per second and events lost.
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

EXECS=${EXECS:-20000}
WRITES=${WRITES:-200000}
REPS=${REPS:-3}
FLOOD_LOOPS=${FLOOD_LOOPS:-$(( 2 * $(nproc) ))}
FLOOD_EXECS=${FLOOD_EXECS:-10000}
BIN=${DRIFTWATCH_BIN:-target/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-bench-$$
WORK=$(mktemp -d)
DW_PID=

bench_preflight auditd
trap bench_cleanup EXIT

bench_container

cat >"$WORK/pipeline.toml" <<TOML
[daemon]
cache_dir = "$WORK/cache"
stats_interval_secs = 0
hot_reload = false
[sources.ebpf]
scope = "containers"
ring_buffer_kib = 8192
[[plugins]]
name = "shell"
builtin = "shell"
[[plugins]]
name = "package-manager"
builtin = "package-manager"
[[plugins]]
name = "drift-binary"
builtin = "drift-binary"
[[plugins]]
name = "write-filter"
builtin = "write-filter"
[outputs.stdout]
enabled = true
TOML
sed 's/^ring_buffer_kib = 8192$/ring_buffer_kib = 8192\ndrain_interval_ms = 0/' \
  "$WORK/pipeline.toml" >"$WORK/pipeline-wake.toml"

seconds() { # seconds taken by "$@"
  local s e
  s=$(date +%s.%N); "$@"; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}

start_auditd() {
  systemctl start auditd 2>/dev/null || service auditd start 2>/dev/null || auditd 2>/dev/null || true
  auditctl -D >/dev/null
  auditctl -a always,exit -F arch=b64 -S execve -S execveat -k dw_exec >/dev/null
  auditctl -a always,exit -F arch=b64 -S openat -F 'a2&0x243' -k dw_write >/dev/null
  auditctl -a always,exit -F arch=b64 -S open -F 'a1&0x243' -k dw_write >/dev/null
  auditctl -a always,exit -F arch=b64 -S creat -k dw_write >/dev/null
  auditctl -e 1 >/dev/null
}
stop_auditd() { auditctl -D >/dev/null; }

# CPU seconds (user + system) the daemon has used so far.
daemon_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$DW_PID/stat"
}

declare -A T
MODES="off sensor sensor_wake auditd"
for mode in $MODES; do
  for w in exec_storm write_storm; do : > "$WORK/$mode.$w"; done
done
lost_line=
for rep in $(seq "$REPS"); do
  for mode in $MODES; do
    case $mode in
      sensor) start_sensor "$WORK/pipeline.toml" ;;
      sensor_wake) start_sensor "$WORK/pipeline-wake.toml" ;;
      auditd) start_auditd ;;
    esac
    cpu=()
    for w in exec_storm write_storm; do
      [ -n "$DW_PID" ] && c0=$(daemon_cpu)
      seconds "$w" >>"$WORK/$mode.$w"
      [ -n "$DW_PID" ] && cpu+=("$w $(echo "$(daemon_cpu) - $c0" | bc -l) CPU-s")
    done
    case $mode in
      sensor|sensor_wake)
        echo "rep $rep $mode daemon CPU: ${cpu[*]}"
        stop_sensor
        lost_line=$(last_counter kernel_lost)
        execs_seen=$(last_counter exec)
        writes_seen=$(last_counter open_write)
        echo "rep $rep $mode: $lost_line $execs_seen $writes_seen (expected >= $EXECS execs, $WRITES writes)" ;;
      auditd) stop_auditd ;;
    esac
  done
done
for mode in $MODES; do
  for w in exec_storm write_storm; do
    T[$mode.$w]=$(median <"$WORK/$mode.$w")
  done
done
printf '\n%-12s %10s %10s %12s %10s %11s %12s %11s\n' workload off sensor sensor_wake auditd sensor/off wake/off auditd/off
for w in exec_storm write_storm; do
  printf '%-12s %9.2fs %9.2fs %11.2fs %9.2fs %11.3f %12.3f %11.3f\n' "$w" "${T[off.$w]}" "${T[sensor.$w]}" \
    "${T[sensor_wake.$w]}" "${T[auditd.$w]}" \
    "$(echo "${T[sensor.$w]} / ${T[off.$w]}" | bc -l)" "$(echo "${T[sensor_wake.$w]} / ${T[off.$w]}" | bc -l)" \
    "$(echo "${T[auditd.$w]} / ${T[off.$w]}" | bc -l)"
done
echo "(EXECS=$EXECS WRITES=$WRITES REPS=$REPS, medians; last sensor run: $lost_line)"

# The highest exec rate: FLOOD_LOOPS loops of FLOOD_EXECS fork+exec each,
# in parallel, under the sensor with the repository's pipeline.toml.
default_pipeline "$WORK/pipeline-default.toml"
exec_flood() {
  local pids=() i
  for i in $(seq "$FLOOD_LOOPS"); do
    EXECS=$FLOOD_EXECS exec_storm &
    pids+=($!)
  done
  wait "${pids[@]}"
}
start_sensor "$WORK/pipeline-default.toml"
flood_secs=$(seconds exec_flood)
stop_sensor
flood_lost=$(last_counter kernel_lost)
flood_seen=$(last_counter exec)
flood_total=$((FLOOD_LOOPS * FLOOD_EXECS))
printf '\nexec flood: %d loops x %d execs = %d in %.2fs (%.0f execs/s), default pipeline.toml: %s %s (expected >= %d)\n' \
  "$FLOOD_LOOPS" "$FLOOD_EXECS" "$flood_total" "$flood_secs" "$(echo "$flood_total / $flood_secs" | bc -l)" \
  "$flood_lost" "$flood_seen" "$flood_total"
