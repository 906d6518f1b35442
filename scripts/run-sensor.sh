#!/usr/bin/env bash
# Builds driftwatch and runs the sensor with ./pipeline.toml, as root.
# Extra arguments go to `driftwatch run` (e.g. --config other.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p driftwatch
exec target/release/driftwatch run "$@"
