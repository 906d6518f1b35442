#!/usr/bin/env bash
# Runs every test of driftwatch on this host, after installing what they need.
# As root on a fresh Debian/Ubuntu host: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The eBPF crate is outside the workspace (bpfel-unknown-none, nightly,
# build-std): check it on its own, in a target dir of its own.
cargo +nightly fmt --manifest-path collector-ebpf/Cargo.toml -- --check
cargo +nightly clippy --manifest-path collector-ebpf/Cargo.toml --locked \
  --target bpfel-unknown-none -Z build-std=core \
  --target-dir "${CARGO_TARGET_DIR:-target}/bpf-lint" -- -D warnings
cargo test --workspace --locked
# The fuzz targets build, and each runs a short smoke run (docs/fuzzing.md).
scripts/fuzz.sh "${DRIFTWATCH_FUZZ_SECS:-60}"
