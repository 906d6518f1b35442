#!/usr/bin/env bash
# Builds the daemon image with podman from local files: no registry is
# reached (FROM scratch). The rootfs holds the driftwatch binary, the shared
# libraries `ldd` says it needs, CA certificates for TLS outputs, and the
# repository's pipeline.toml as a default configuration.
#
#   scripts/build-image.sh [--binary PATH] [--tag NAME]
#
# Without --binary, builds the release binary first (cargo --locked). The
# image is tagged NAME (default: the name deploy/kubernetes/daemonset.yaml
# runs, ghcr.io/driftwatch/driftwatch:<version>) and localhost/driftwatch:<version>.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
binary=
tag="ghcr.io/driftwatch/driftwatch:$version"
while (($#)); do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--tag NAME]" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release --locked -p driftwatch)
  binary="${CARGO_TARGET_DIR:-$root/target}/release/driftwatch"
fi
[ -x "$binary" ] || { echo "build-image: $binary is not an executable" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/bin" "$rootfs/etc/driftwatch" "$rootfs/etc/ssl/certs" "$rootfs/tmp" \
  "$rootfs/var/lib/driftwatch" "$rootfs/var/cache/driftwatch" "$rootfs/run/driftwatch"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/var/lib/driftwatch" "$rootfs/var/cache/driftwatch" "$rootfs/run/driftwatch"
install -m 0755 "$binary" "$rootfs/usr/bin/driftwatch"
# Debug info is most of the binary (a debug build: 533 MiB, 76 MiB without);
# symbols stay, so a backtrace still names functions.
if command -v strip >/dev/null; then
  strip --strip-debug "$rootfs/usr/bin/driftwatch"
fi
# Every shared object the binary loads, at the path the loader looks for
# it (the interpreter included).
ldd "$binary" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
cp "$root/pipeline.toml" "$rootfs/etc/driftwatch/pipeline.toml"

podman build -q -f "$root/Containerfile" -t "$tag" -t "localhost/driftwatch:$version" "$context"
podman image inspect --format '{{.Size}}' "$tag" | awk -v t="$tag" '{printf "build-image: %s, %.1f MiB\n", t, $1/1048576}' >&2
