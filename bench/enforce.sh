#!/usr/bin/env bash
# [enforcement] side by side on a compiled tight exec loop in a podman
# container (bench/exec_loop.c: fork+execve+waitpid, one at a time). Modes,
# interleaved within each repetition so background load hits them alike:
#   none      no sensor
#   off       the sensor with enforcement in detect mode (every exec judged,
#             nothing killed): the same exec hook as before enforcement
#   enforce   the sensor in enforce mode, running an image binary (judged,
#             allowed to run): the cost of enforcement on benign execs
# and, in enforce mode, a loop of a drifted binary (busybox copied to the
# upper layer) that is killed every time: fork-to-reap time per kill beside
# fork-to-reap of the benign exec gives the exec->kill time, and the loop's
# counts say whether any drifted exec was not killed (a kill not delivered
# lets it run and exit: `exited` must be 0, `killed` equal to EXECS).
#
#   bench/enforce.sh                       (as root, after a release build)
#   EXECS=5000 REPS=5 bench/enforce.sh
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

EXECS=${EXECS:-5000}
REPS=${REPS:-3}
BIN=${DRIFTWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-enforce-$$
WORK=$(mktemp -d)
DW_PID=

bench_preflight
trap bench_cleanup EXIT

mkdir -p "$WORK/tools"
cc -static -O2 -o "$WORK/tools/exec_loop" bench/exec_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
podman exec "$NAME" sh -c 'cp /bin/busybox /tmp/true'

# The repository's pipeline.toml, findings to stdout, plus [enforcement].
pipeline() { # mode -> $WORK/pipeline-<mode>.toml
  default_pipeline "$WORK/pipeline-$1.toml"
  cat >>"$WORK/pipeline-$1.toml" <<TOML

[enforcement]
mode = "$1"
allow_paths = ["/tools/exec_loop"]
TOML
}
pipeline detect
pipeline enforce

loop() { # path -> the loop's line
  podman exec "$NAME" /tools/exec_loop "$1" "$EXECS"
}
us() { sed -n 's/.*us_per_exec=\([0-9.]*\).*/\1/p'; }

declare -A T
for rep in $(seq "$REPS"); do
  T[none]+=" $(loop /bin/true | us)"
  for mode in detect enforce; do
    start_sensor "$WORK/pipeline-$mode.toml"
    T[$mode]+=" $(loop /bin/true | us)"
    if [ "$mode" = enforce ]; then
      line=$(loop /tmp/true)
      echo "rep $rep drifted loop: $line"
      T[kill]+=" $(echo "$line" | us)"
    fi
    stop_sensor
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
none=$(echo "${T[none]}" | median)
printf '%-34s %10s %8s\n' "mode ($EXECS execs, $REPS reps)" "us/exec" "ratio"
for m in none detect enforce kill; do
  v=$(echo "${T[$m]}" | median)
  label=$m
  case $m in
    detect) label="sensor, enforcement detect" ;;
    enforce) label="sensor, enforce (image binary)" ;;
    kill) label="sensor, enforce (drift, killed)" ;;
    none) label="no sensor" ;;
  esac
  printf '%-34s %10s %8s\n' "$label" "$v" "$(awk -v a="$v" -v b="$none" 'BEGIN{printf "%.2f", a/b}')"
done
