#!/usr/bin/env bash
# Starts the whole Shoal control plane on this machine: nats-server (JetStream),
# Postgres, registry, balancer, two coordinators (so failover can be seen) and N
# simulated-by-process announcers. Installs what is missing first. Ctrl-C stops it all.
#
#   scripts/up.sh            # 3 announcers
#   SHOAL_NODES=5 scripts/up.sh
#
# Data lives under .shoal/run/ (kept between runs; delete it to start empty).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

nodes="${SHOAL_NODES:-3}"
nats_port="${SHOAL_NATS_PORT:-4222}"
nats_mon="${SHOAL_NATS_MONITOR_PORT:-8222}"
pg_port="${SHOAL_PG_PORT:-55432}"
profile="${SHOAL_PROFILE:-debug}"
run="$root/.shoal/run"
logs="$run/logs"
mkdir -p "$logs" "$run/nats"

scripts/deps.sh
echo "building services ($profile)…"
if [ "$profile" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
bin="$root/target/$profile"

pids=()
cleanup() {
  echo
  echo "stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  as_pg "$pg_bin/pg_ctl" -D "$run/pg" -m fast stop >/dev/null 2>&1 || true
  echo "stopped; data kept in $run"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

wait_until() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then echo "error: $what did not come up within ${secs}s; see $logs" >&2; exit 1; fi
    sleep 0.1
  done
}

# nats-server with JetStream
.shoal/tools/nats-server -a 127.0.0.1 -p "$nats_port" -m "$nats_mon" -js -sd "$run/nats" \
  -n shoal-local >"$logs/nats-server.log" 2>&1 &
pids+=($!)
wait_until "nats-server" 20 curl -sf "http://127.0.0.1:$nats_mon/healthz?js-enabled-only=true"

# Postgres (as the postgres user when root: initdb and postgres refuse root)
pg_bin="$(pg_config --bindir)"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ ! -f "$run/pg/PG_VERSION" ]; then
  mkdir -p "$run/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$run/pg"; fi
  as_pg "$pg_bin/initdb" -D "$run/pg" -U postgres --auth=trust -E UTF8 >"$logs/initdb.log" 2>&1
fi
touch "$logs/postgres.log"
if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$run/pg" "$logs/postgres.log"; fi
as_pg "$pg_bin/pg_ctl" -D "$run/pg" -l "$logs/postgres.log" -w \
  -o "-p $pg_port -k $run/pg -c listen_addresses=127.0.0.1" start >/dev/null
wait_until "postgres" 30 "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port"
psql -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='shoal'" | grep -q 1 \
  || psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE shoal"

export SHOAL_NATS_URL="nats://127.0.0.1:$nats_port"
export SHOAL_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/shoal"

start() { # name, binary, args...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  printf '  %-16s pid %-7s log %s\n' "$name" "$!" "$logs/$name.log"
}
echo "control plane:"
printf '  %-16s %s (monitoring http://127.0.0.1:%s)\n' nats-server "$SHOAL_NATS_URL" "$nats_mon"
printf '  %-16s %s\n' postgres "$SHOAL_DATABASE_URL"
start registry "$bin/shoal-registry" --instance-id registry-1
start balancer "$bin/shoal-balancer" --instance-id balancer-1
start coordinator-1 "$bin/shoal-coordinator" --instance-id coordinator-1
start coordinator-2 "$bin/shoal-coordinator" --instance-id coordinator-2
for i in $(seq 1 "$nodes"); do
  start "node-$i" "$bin/shoal-announcer" --node-id "node-$i" --instance-id "node-$i"
done
echo "running; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "a process exited; see $logs" >&2
