#!/usr/bin/env bash
# The file side's cost on compiled tight loops in a podman container, side by
# side in one run: no tracer, the sensor (the repository's pipeline.toml),
# the sensor without folding repeats (aggregate_window_ms = 0), and auditd
# watching the same syscalls. Modes are interleaved within each
# repetition, so background load hits them alike; report ratios.
#
#   bench/file_loops.sh                      (as root, after a release build)
#   LOOPS=200000 REPS=5 bench/file_loops.sh
#
# Loops (bench/file_loop.c, built static here):
#   read   open(O_RDONLY)+close of /bin/busybox: opens nobody wants
#   tmp    open(O_WRONLY|O_APPEND|O_CREAT)+write+close of /tmp/x: a write the
#          write rule excludes (dropped by the kernel prefilter)
#   etc    the same on /etc/x: each one a finding, folded in the kernel
#          into one event per second (aggregate_window_ms); without folding,
#          limited by the container's budget (container_events_per_sec)
# Prints the median seconds per loop and mode, ratios to no tracer, the
# sensor's kernel losses and budget drops, and for the sensor the kernel's
# BPF run-time stats per program (kernel.bpf_stats_enabled, on only for a
# second, untimed pass of each loop): ns per run, runs; for the file hook,
# which runs at every syscall exit on the host, that is the cost per
# syscall, the stats' own two clock reads included.
# Not a test: figures depend on the machine and its other load.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

LOOPS=${LOOPS:-200000}
REPS=${REPS:-3}
BIN=${DRIFTWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/driftwatch}
IMAGE=localhost/driftwatch-bench:1
NAME=dw-fileloops-$$
WORK=$(mktemp -d)
DW_PID=
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)

bench_preflight auditd
trap bench_cleanup EXIT

mkdir -p "$WORK/tools"
cc -static -O2 -o "$WORK/tools/file_loop" bench/file_loop.c
bench_container_with "-v $WORK/tools:/tools:ro"
default_pipeline "$WORK/pipeline.toml"
# The counters once a second in the log (last_counter reads them).
sed -i 's/^stats_interval_secs = .*/stats_interval_secs = 1/' "$WORK/pipeline.toml"
sed 's/^aggregate_window_ms = .*/aggregate_window_ms = 0/' "$WORK/pipeline.toml" >"$WORK/nofold.toml"

loop() { # kind -> seconds of the loop itself
  case $1 in
    read) podman exec "$NAME" /tools/file_loop read /bin/busybox "$LOOPS" ;;
    tmp) podman exec "$NAME" /tools/file_loop append /tmp/x "$LOOPS" ;;
    etc) podman exec "$NAME" /tools/file_loop append /etc/x "$LOOPS" ;;
  esac
}

start_auditd() {
  auditd 2>/dev/null || true
  auditctl -D >/dev/null
  for arch in b64 b32; do
    auditctl -a always,exit -F arch=$arch -S openat -F 'a2&0x243' -k dw_write >/dev/null
    auditctl -a always,exit -F arch=$arch -S open -F 'a1&0x243' -k dw_write >/dev/null
    auditctl -a always,exit -F arch=$arch -S creat,openat2,truncate,ftruncate,rename,renameat,renameat2,link,linkat,symlink,symlinkat,unlink,unlinkat,chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown -k dw_file >/dev/null 2>&1 \
      || auditctl -a always,exit -F arch=$arch -S creat,truncate,ftruncate,rename,renameat,link,linkat,symlink,symlinkat,unlink,unlinkat,chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown -k dw_file >/dev/null
  done
  auditctl -e 1 >/dev/null
}
stop_auditd() { auditctl -D >/dev/null; }

# One line per program of the daemon: tag run_time_ns run_cnt.
prog_stats() {
  for f in /proc/"$DW_PID"/fdinfo/*; do
    grep -q '^prog_tag' "$f" 2>/dev/null || continue
    awk '/^prog_tag/{t=$2} /^run_time_ns/{r=$2} /^run_cnt/{c=$2} END{if (c != "") print t, r, c}' "$f"
  done | sort -u
}


LOOP_KINDS="read tmp etc"
MODES="off sensor nofold auditd"
for m in $MODES; do for l in $LOOP_KINDS; do : >"$WORK/$m.$l"; done; done
: >"$WORK/bpf"
sysctl -q kernel.bpf_stats_enabled=0
for rep in $(seq "$REPS"); do
  for mode in $MODES; do
    case $mode in
      sensor) start_sensor "$WORK/pipeline.toml" ;;
      nofold) start_sensor "$WORK/nofold.toml" ;;
      auditd) start_auditd ;;
    esac
    traced=false
    case $mode in sensor | nofold) traced=true ;; esac
    for l in $LOOP_KINDS; do
      loop "$l" >>"$WORK/$mode.$l"
      if $traced; then
        # The run-time stats read the clock twice per program run, which
        # on a VM's paravirtual clock costs about as much as a cheap
        # program: so they are on only for a second, untimed pass.
        sysctl -q kernel.bpf_stats_enabled=1
        before=$(prog_stats)
        loop "$l" >/dev/null
        after=$(prog_stats)
        sysctl -q kernel.bpf_stats_enabled=0
        join <(echo "$before") <(echo "$after") | awk -v l="$mode.$l" '
          { dr=$4-$2; dc=$5-$3; if (dc > 0) printf "%s %s %.1f %d\n", l, $1, dr/dc, dc }' >>"$WORK/bpf"
      fi
    done
    case $mode in
      sensor | nofold)
        sleep 1.5
        stop_sensor
        echo "rep $rep $mode: $(last_counter kernel_lost) $(last_counter kernel_dropped)" ;;
      auditd) stop_auditd ;;
    esac
  done
done

printf '\n%-6s %10s %10s %10s %10s %11s %11s %11s\n' loop off sensor nofold auditd \
  sensor/off nofold/off auditd/off
for l in $LOOP_KINDS; do
  off=$(median <"$WORK/off.$l"); sen=$(median <"$WORK/sensor.$l")
  nof=$(median <"$WORK/nofold.$l"); aud=$(median <"$WORK/auditd.$l")
  printf '%-6s %9.3fs %9.3fs %9.3fs %9.3fs %11.3f %11.3f %11.3f\n' "$l" "$off" "$sen" "$nof" "$aud" \
    "$(echo "$sen / $off" | bc -l)" "$(echo "$nof / $off" | bc -l)" "$(echo "$aud / $off" | bc -l)"
done
echo "(LOOPS=$LOOPS REPS=$REPS, medians of the loops' own time)"
echo
echo "BPF program time during each loop (median over reps): loop, program tag, ns per run, runs"
sort -k1,1 -k2,2 "$WORK/bpf" | awk '
  { k=$1" "$2; n[k]++; ns[k, n[k]]=$3; runs[k]=$4 }
  END { for (k in n) { m=int((n[k]+1)/2); print k, ns[k, m], runs[k] } }' | sort
