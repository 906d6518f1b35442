#!/usr/bin/env bash
# Latency from an exec in a container to its finding's line on the daemon's
# stdout, with the default pipeline.toml (its batching and drain interval).
# The finding carries the kernel's time of the exec (`time`, the record's
# ktime turned into wall-clock time); a reader on the other end of the pipe
# stamps each line as it arrives. Two loads, in a podman container, of a
# binary copied in (drift: each exec is a finding):
#   paced  one exec every PACE_US microseconds from a shell loop, PACED times;
#   storm  the compiled fork+exec loop at its full rate, STORM times.
#
#   bench/latency.sh                               (as root, release build)
#   PACED=1000 STORM=5000 bench/latency.sh
#
# Prints, per load: findings received, and latency p50, p90, p99 and max in
# milliseconds. Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

PACED=${PACED:-1000}
PACE_US=${PACE_US:-5000}
STORM=${STORM:-5000}
BIN=${DRIFTWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-latency-$$
WORK=$(mktemp -d)
DW_PID=
STAMP_PID=

bench_preflight
trap 'kill "$STAMP_PID" 2>/dev/null || true; bench_cleanup' EXIT

mkdir -p "$WORK/tools"
cc -static -O2 -o "$WORK/tools/exec_loop" bench/exec_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
podman exec "$NAME" sh -c 'mkdir -p /tmp/dwlat && cp /bin/busybox /tmp/dwlat/true'
default_pipeline "$WORK/pipeline.toml"

# Stamps each line of the fifo $1 on arrival; for the lines naming the
# drifted binary, writes "load latency_ms" to $2, the load being the one
# named in the file $3 when the line arrived.
cat >"$WORK/stamp.py" <<'EOF'
import calendar, json, sys, time

def wall_ns(s):
    # RFC 3339 with nanoseconds, UTC: 2026-12-07T06:14:46.123456789Z
    secs = calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))
    frac = s[20:-1] if len(s) > 20 else ""
    return secs * 10**9 + int((frac + "000000000")[:9])

with open(sys.argv[1]) as src, open(sys.argv[2], "w") as out:
    for line in src:
        now = time.time_ns()
        if "/tmp/dwlat/true" not in line:
            continue
        try:
            t = wall_ns(json.loads(line)["time"])
        except (ValueError, KeyError):
            continue
        with open(sys.argv[3]) as f:
            load = f.read().strip()
        out.write(f"{load} {(now - t) / 1e6:.3f}\n")
        out.flush()
EOF
mkfifo "$WORK/fifo"
echo none >"$WORK/load"
python3 "$WORK/stamp.py" "$WORK/fifo" "$WORK/lat" "$WORK/load" &
STAMP_PID=$!
start_sensor_to "$WORK/pipeline.toml" "$WORK/fifo"

# Waits until no new finding has arrived for 3 s.
settle() {
  local prev=-1
  while [ "$(wc -l <"$WORK/lat")" != "$prev" ]; do prev=$(wc -l <"$WORK/lat"); sleep 3; done
}

echo paced >"$WORK/load"
podman exec "$NAME" sh -c "i=0; while [ \$i -lt $PACED ]; do /tmp/dwlat/true; busybox usleep $PACE_US; i=\$((i+1)); done" || true
settle
echo storm >"$WORK/load"
podman exec "$NAME" /tools/exec_loop /tmp/dwlat/true "$STORM" >/dev/null
settle
stop_sensor
kill "$STAMP_PID" 2>/dev/null || true

printf '\n%-6s %6s %8s %8s %8s %8s %8s\n' load execs findings p50_ms p90_ms p99_ms max_ms
for load in paced storm; do
  n=$PACED; [ "$load" = storm ] && n=$STORM
  awk -v l="$load" '$1 == l {print $2}' "$WORK/lat" | sort -n | awk -v l="$load" -v n="$n" '
    function q(p,   i) { i = int(NR * p + 0.5); if (i < 1) i = 1; return a[i] }
    { a[NR] = $1 }
    END {
      if (NR == 0) { printf "%-6s %6d %8d\n", l, n, 0; exit }
      printf "%-6s %6d %8d %8.1f %8.1f %8.1f %8.1f\n", l, n, NR, q(0.5), q(0.9), q(0.99), a[NR]
    }'
done
echo "(PACED=$PACED every ${PACE_US}us, STORM=$STORM at full rate; default pipeline.toml)"
