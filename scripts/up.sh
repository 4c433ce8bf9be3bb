#!/usr/bin/env bash
# Starts the whole Shoal control plane on this machine: installs what is missing
# (pinned nats-server, Postgres server), builds the binaries, then runs `shoal up`:
# nats-server (JetStream), Postgres, registry, balancer, two coordinators and three
# announcers, until Ctrl-C. Extra arguments go to `shoal up` (see `shoal up --help`):
#
#   scripts/up.sh --nodes 5
#
# Data and logs live under .shoal/run/ (kept between runs; delete it to start empty).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh
echo "building shoal (cargo build --bins; a few minutes the first time)…"
cargo build --bins
exec target/debug/shoal up "$@"
