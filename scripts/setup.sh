#!/usr/bin/env bash
# Installs everything driftwatch needs to build, run and test on a fresh
# Debian/Ubuntu host, as root. Idempotent: each step checks first and skips
# what is already there, so running it on every test run costs seconds.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

APT_PACKAGES=(
  # Real containers for the sensor tests (see docs/development.md).
  podman runc busybox-static uidmap
  # podman run --init (the benign-container tests).
  catatonit
  # Docker and containerd for the runtime tests (scripts/start-runtimes.sh
  # starts them without systemd); protoc builds containerd's API bindings.
  containerd docker.io protobuf-compiler
  # bpf-linker links the eBPF object against Debian's LLVM.
  llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
  # The C compiler the linker step, ring and mimalloc need.
  gcc libc6-dev
  # Protobuf / TLS pieces some crates build against; python for the OTLP receiver.
  pkg-config python3 python3-venv ca-certificates
  # systemd-analyze checks deploy/systemd/driftwatch.service offline
  # (tests/service.rs); installing the package does not make systemd PID 1.
  systemd
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages ${missing[*]} and not root: install them or run as root"; exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust pieces: wasm target for the plugins, nightly rust-src for the eBPF crate.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding rust target wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown
fi
for c in rustfmt clippy; do
  rustup component list --installed | grep -q "^$c" || { log "adding $c"; rustup component add "$c"; }
done
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing nightly toolchain"; rustup toolchain install nightly --profile minimal
fi
# rust-src to build the eBPF crate, rustfmt and clippy to check it (the
# minimal profile has neither).
for c in rust-src rustfmt clippy; do
  rustup component list --installed --toolchain nightly | grep -q "^$c" ||
    { log "adding $c to nightly"; rustup component add "$c" --toolchain nightly; }
done
if ! command -v bpf-linker >/dev/null 2>&1; then
  log "building bpf-linker against LLVM 22 (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --no-default-features --features llvm-22
fi
# The fuzz targets (fuzz/, docs/fuzzing.md) build with cargo-fuzz on nightly.
# The fuzz build runs the collector's build script under nightly, which
# builds the WASM guests with it.
if ! rustup target list --installed --toolchain nightly | grep -qx wasm32-unknown-unknown; then
  log "adding wasm32-unknown-unknown to nightly"; rustup target add wasm32-unknown-unknown --toolchain nightly
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "building cargo-fuzz (about a minute)"
  cargo install --locked cargo-fuzz --version 0.13.1
fi

# podman on these hosts: crun cannot run under hybrid cgroups and raising
# rlimits is refused, so use runc, cgroupfs and no default ulimits.
conf=/etc/containers/containers.conf
if [ "$(id -u)" -eq 0 ] && ! grep -q 'driftwatch' "$conf" 2>/dev/null; then
  log "writing $conf"
  mkdir -p /etc/containers
  cat >"$conf" <<'CONF'
# written by driftwatch scripts/setup.sh
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
fi

# A real OpenTelemetry collector for the export tests (PyPI rotel).
venv=${DRIFTWATCH_VENV:-/opt/driftwatch-venv}
if [ ! -x "$venv/bin/python" ]; then
  log "creating python venv $venv"; python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import rotel' >/dev/null 2>&1; then
  log "installing rotel into $venv"; "$venv/bin/pip" install -q rotel
fi
# Kubernetes schema validation of deploy/kubernetes (tests/k8s.rs).
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate into $venv"; "$venv/bin/pip" install -q kubernetes-validate
fi
# componentize-py builds the Python plugins (plugins/network-tool) into
# components; pinned, since the code it embeds is what the host runs. The
# version must match COMPONENTIZE_PY_VERSION in collector/src/authoring/toolchain.rs.
componentize_py_version=0.25.1
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
  log "installing componentize-py $componentize_py_version into $venv"
  "$venv/bin/pip" install -q "componentize-py==$componentize_py_version"
fi
log "ready"
