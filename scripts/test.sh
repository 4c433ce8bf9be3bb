#!/usr/bin/env bash
# Runs Shoal's whole test suite against real nats-server and Postgres processes
# (started by the test harness on free ports; nothing is left behind).
# Usage: scripts/test.sh [extra nextest args, e.g. -p shoal-registry]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh
# Integration tests spawn the service binaries; build them all first.
cargo build --workspace --bins
profile=default
[ "${CI:-}" = "true" ] && profile=ci
exec cargo nextest run --workspace --profile "$profile" "$@"
