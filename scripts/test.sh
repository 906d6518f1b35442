#!/usr/bin/env bash
# Runs every test of driftwatch on this host, after installing what they need.
# As root on a fresh Debian/Ubuntu host: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
