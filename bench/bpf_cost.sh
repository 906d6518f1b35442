#!/usr/bin/env bash
# The eBPF programs' own cost per call, from the kernel's BPF run-time stats
# (kernel.bpf_stats_enabled): run an exec storm and a write storm in a podman
# container under the sensor, and read run_time_ns / run_cnt of the daemon's
# programs around each. Separates what the programs cost from the rest of the
# overhead bench/run.sh measures (daemon CPU, wake-ups, noise).
#   EXECS=5000 WRITES=20000 bench/bpf_cost.sh     (as root, after a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

EXECS=${EXECS:-5000}
WRITES=${WRITES:-20000}
BIN=${DRIFTWATCH_BIN:-target/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-bpfcost-$$
WORK=$(mktemp -d)
DW_PID=
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)

bench_preflight
trap bench_cleanup EXIT

bench_container

default_pipeline "$WORK/pipeline.toml"
sysctl -q kernel.bpf_stats_enabled=1
start_sensor "$WORK/pipeline.toml"

# One line per program: tag run_time_ns run_cnt (programs attached to
# several tracepoints share one fd, so each is read once).
snapshot() {
  for f in /proc/"$DW_PID"/fdinfo/*; do
    grep -q '^prog_tag' "$f" 2>/dev/null || continue
    awk '/^prog_tag/{t=$2} /^run_time_ns/{r=$2} /^run_cnt/{c=$2} END{if (c != "") print t, r, c}' "$f"
  done | sort -u
}
storm() { # label, storm function
  local before after s e
  before=$(snapshot); s=$(date +%s.%N)
  "$2"
  e=$(date +%s.%N); after=$(snapshot)
  local secs; secs=$(echo "$e - $s" | bc -l)
  echo "$1: $(printf '%.2f' "$secs") s"
  join <(echo "$before") <(echo "$after") | awk -v secs="$secs" '
    { dr=$4-$2; dc=$5-$3; if (dc > 0)
        printf "  prog %s: %d runs, %.2f us per run; %.2f%% of the storm time\n",
          $1, dc, dr/dc/1000, 100*dr/1e9/secs }'
}
storm "exec storm ($EXECS execs)" exec_storm
storm "write storm ($WRITES writes)" write_storm
echo "(program tags: the exec program runs about once per exec; the file programs about once per file syscall)"
