#!/usr/bin/env bash
# Runs Shoal's whole test suite against real nats-server and Postgres processes
# (started by the test harness on free ports; nothing is left behind), then, where
# a Docker engine answers, the compose stack test: compose/docker-compose.yml
# started for real on images built here without a registry
# (compose/offline/build-images.sh), put through kills, a pause and a cut.
# Usage: scripts/test.sh [extra nextest args, e.g. -p shoal-registry]
#   (with arguments, only the suite runs, narrowed by them)
#   SHOAL_SKIP_COMPOSE=1 scripts/test.sh   skips the compose stack test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh
# Integration tests spawn the service binaries; build them all first.
cargo build --workspace --bins
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile" "$@"

[ "$#" -eq 0 ] || exit 0
if [ "${SHOAL_SKIP_COMPOSE:-}" = 1 ]; then
  echo "test: compose stack test skipped (SHOAL_SKIP_COMPOSE=1)"
elif ! docker info >/dev/null 2>&1; then
  echo "test: no Docker engine answers here (docker info failed): the compose stack test is skipped"
else
  started=$(date +%s)
  echo "test: compose stack test (Docker engine found): building its images"
  compose/offline/build-images.sh
  cargo nextest run -p shoal-cli --profile "$profile" --test compose_stack \
    --run-ignored only --no-capture
  echo "test: compose stack test took $(( $(date +%s) - started )) s"
fi
