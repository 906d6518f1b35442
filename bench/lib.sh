# Shared by the sensor benchmarks (sourced, not run): the busybox container
# the storms run in, the storms themselves, and starting the sensor.
# Callers set WORK (a scratch dir), IMAGE, NAME, BIN, EXECS and WRITES.

# Builds the busybox image and starts a long-lived container from it.
bench_container() {
  bench_container_with ""
}

# As bench_container, with extra `podman run` options ($1, word-split).
bench_container_with() {
  mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp"
  cp "$(command -v busybox)" "$WORK/rootfs/bin/busybox"
  for a in sh true sleep echo; do ln -sf busybox "$WORK/rootfs/bin/$a"; done
  tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
  podman import -q "$WORK/rootfs.tar" "$IMAGE" >/dev/null
  # shellcheck disable=SC2086
  podman run -d --name "$NAME" $1 "$IMAGE" sh -c 'while true; do sleep 1; done' >/dev/null
}

# EXECS fork+exec of /bin/true from a shell loop.
exec_storm() {
  podman exec "$NAME" sh -c "i=0; while [ \$i -lt $EXECS ]; do /bin/true; i=\$((i+1)); done"
}
# WRITES open-write-close of /etc/bench (a builtin redirection, no fork).
write_storm() {
  podman exec "$NAME" sh -c "i=0; while [ \$i -lt $WRITES ]; do echo \$i > /etc/bench; i=\$((i+1)); done"
}

# The repository's pipeline.toml with its cache in $WORK, written to $1.
default_pipeline() {
  sed "s|^cache_dir = .*|cache_dir = \"$WORK/cache\"|" pipeline.toml >"$1"
}

# The last value of the daemon counter $1 in its log, as `"name":N`.
last_counter() {
  grep -o "\"$1\":[0-9]*" "$WORK/dw.log" | tail -1
}

# Starts `driftwatch run -c $1` in the background (DW_PID, log in
# $WORK/dw.log) and returns once its programs are attached (at most 5
# minutes: a debug build compiles the plugins slowly the first time).
start_sensor() {
  start_sensor_to "$1" /dev/null
}
# As start_sensor, with the daemon's stdout (the findings) in $2.
start_sensor_to() {
  # Emptied here, not by the redirection below: that runs in the child,
  # possibly after the first grep has seen the previous run's log.
  : >"$WORK/dw.log"
  DRIFTWATCH_LOG=info "$BIN" run -c "$1" >"$2" 2>"$WORK/dw.log" &
  DW_PID=$!
  for _ in $(seq 3000); do
    grep -q "kernel sensor attached" "$WORK/dw.log" && return 0
    kill -0 "$DW_PID" 2>/dev/null || { cat "$WORK/dw.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: sensor did not start" >&2; exit 1
}
stop_sensor() {
  kill -TERM "$DW_PID"; wait "$DW_PID" || true; DW_PID=
}

# Refuses to start unless root with a release binary at $BIN; installs
# auditd (the comparison some benches make) when $1 is "auditd".
bench_preflight() {
  [ "$(id -u)" -eq 0 ] || { echo "bench: run as root" >&2; exit 1; }
  [ -x "$BIN" ] || { echo "bench: $BIN missing: cargo build --release -p driftwatch" >&2; exit 1; }
  if [ "${1:-}" = auditd ] && ! command -v auditctl >/dev/null; then
    echo "bench: installing auditd" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq auditd >/dev/null
  fi
}

# The EXIT trap of every bench: stops the sensor, drops audit rules, puts
# kernel.bpf_stats_enabled back when STATS_WAS saved it, removes the
# container and the scratch dir.
bench_cleanup() {
  [ -n "${DW_PID:-}" ] && kill "$DW_PID" 2>/dev/null || true
  command -v auditctl >/dev/null && { auditctl -D >/dev/null 2>&1 || true; }
  [ -n "${STATS_WAS:-}" ] && { sysctl -q kernel.bpf_stats_enabled="$STATS_WAS" || true; }
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

# The median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
