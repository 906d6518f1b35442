#!/usr/bin/env bash
# Starts containerd, then dockerd on top of it, in the background, each only
# when it does not already answer. For hosts without systemd (CI machines,
# these test hosts): idempotent, safe to run concurrently (a lock serializes
# callers), and it never stops or restarts a daemon someone else started.
# scripts/setup.sh installs both (Debian's containerd and docker.io).
#
#   scripts/start-runtimes.sh          # returns once both answer (or fails)
#
# The daemons do not inherit the lock (9>&-), or the next caller would wait
# for them forever. Logs go to $DRIFTWATCH_RUNTIME_LOGS (default /var/log/driftwatch-runtimes).
set -euo pipefail

log() { printf 'start-runtimes: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "containerd and dockerd need root"; exit 1
fi
for b in containerd ctr dockerd docker; do
  command -v "$b" >/dev/null 2>&1 || { log "$b is not installed (scripts/setup.sh installs it)"; exit 1; }
done

logs=${DRIFTWATCH_RUNTIME_LOGS:-/var/log/driftwatch-runtimes}
mkdir -p "$logs" /run/containerd
exec 9>/run/driftwatch-start-runtimes.lock
flock 9

containerd_up() { timeout 5 ctr --address /run/containerd/containerd.sock version >/dev/null 2>&1; }
docker_up() { timeout 5 docker --host unix:///var/run/docker.sock version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Waits up to 60 s for "$1" (a function) to succeed.
wait_for() {
  local i
  for i in $(seq 1 120); do
    "$1" && return 0
    sleep 0.5
  done
  return 1
}

if ! containerd_up; then
  log "starting containerd (log: $logs/containerd.log)"
  setsid containerd 9>&- </dev/null >>"$logs/containerd.log" 2>&1 &
  wait_for containerd_up || { log "containerd did not answer within 60 s; see $logs/containerd.log"; exit 1; }
fi
if ! docker_up; then
  log "starting dockerd (log: $logs/dockerd.log)"
  setsid dockerd --containerd /run/containerd/containerd.sock 9>&- </dev/null >>"$logs/dockerd.log" 2>&1 &
  wait_for docker_up || { log "dockerd did not answer within 60 s; see $logs/dockerd.log"; exit 1; }
fi
