#!/usr/bin/env bash
# OTLP export figures against a real local collector (rotel): findings/s over
# gRPC and HTTP, and event -> receiver latency (p50/p99) with default batching.
# As root after scripts/setup.sh:  bench/otlp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo bench -p driftwatch --bench export --locked
