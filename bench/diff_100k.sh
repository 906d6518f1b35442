#!/usr/bin/env bash
# Diff time and peak memory of `driftwatch diff` for a container whose upper
# layer holds 100,000 small files (100 directories x 1,000 files, plus 1 ELF
# binary), written from inside the container through the overlay.
#
# As root, with podman (scripts/setup.sh):  bench/diff_100k.sh [FILES_PER_DIR] [DIRS]
# Prints, per worker count, the wall time and the peak RSS from /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/.."
per_dir=${1:-1000}
dirs=${2:-100}
name="dwdiff-bench-$$"
image="localhost/driftwatch-diff-bench:1"

# DRIFTWATCH_BIN: an already built binary (skips the release build).
bin=${DRIFTWATCH_BIN:-target/release/driftwatch}
if [ -z "${DRIFTWATCH_BIN:-}" ]; then
  flock /tmp/driftwatch-cargo.lock cargo build --release -q -p driftwatch
fi

work=$(mktemp -d)
cleanup() { podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh mkdir seq echo cp sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
podman import --quiet "$work/rootfs.tar" "$image" >/dev/null
podman run -d --name "$name" "$image" sleep 100000 >/dev/null

echo "populating: $dirs dirs x $per_dir files" >&2
start=$(date +%s)
podman exec "$name" sh -c "
  for d in \$(seq 1 $dirs); do
    mkdir -p /bench/d\$d
    for f in \$(seq 1 $per_dir); do echo \"file \$d/\$f\" > /bench/d\$d/f\$f; done
  done
  cp /bin/busybox /bench/dropped"
echo "populated in $(( $(date +%s) - start ))s" >&2

total=$((dirs * per_dir + 1))
"$bin" diff "$name" --json > "$work/out.json" || [ $? -eq 1 ]
added=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['counts']['added'])" "$work/out.json")
echo "entries reported as added: $added (expect $((total + dirs + 1)): files + directories)"

for jobs in 1 2; do
  for run in 1 2 3; do
    /usr/bin/time -v "$bin" diff "$name" --json --jobs "$jobs" >/dev/null 2>"$work/time" || true
    wall=$(grep 'Elapsed (wall clock)' "$work/time" | awk '{print $NF}')
    rss=$(grep 'Maximum resident set size' "$work/time" | awk '{print $NF}')
    echo "jobs=$jobs run=$run files=$total wall=$wall peak_rss_kib=$rss"
  done
done
# The table output (no JSON) for the same tree, 2 workers.
/usr/bin/time -v "$bin" diff "$name" --jobs 2 >/dev/null 2>"$work/time" || true
echo "table jobs=2 wall=$(grep 'Elapsed (wall clock)' "$work/time" | awk '{print $NF}') peak_rss_kib=$(grep 'Maximum resident set size' "$work/time" | awk '{print $NF}')"
# Nothing printed (--only removed matches nothing); the entries are still
# collected, so this is the walk plus the held differences without output.
/usr/bin/time -v "$bin" diff "$name" --only removed --jobs 2 >/dev/null 2>"$work/time" || true
echo "no output (--only removed) jobs=2 wall=$(grep 'Elapsed (wall clock)' "$work/time" | awk '{print $NF}') peak_rss_kib=$(grep 'Maximum resident set size' "$work/time" | awk '{print $NF}')"
