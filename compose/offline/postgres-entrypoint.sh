#!/bin/bash
# Entrypoint of shoal-offline/postgres: what the official image's does for the
# variables Shoal's compose file sets. On first start (empty PGDATA) it creates the
# cluster with POSTGRES_USER as superuser and POSTGRES_PASSWORD as its password
# (scram-sha-256 over TCP from anywhere, trust on the local socket), then
# POSTGRES_DB; then it runs `postgres` listening on every address.
set -euo pipefail

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres: POSTGRES_PASSWORD is not set; the database would be open to anyone" >&2
    exit 1
  fi
  # A first start that fails half way leaves nothing behind, so the next start
  # initialises again instead of running a cluster without the database.
  trap 'pg_ctl -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true; rm -rf "${PGDATA:?}"/*' ERR
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # Socket only while setting up, so nothing connects over TCP before it is done.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$db" != postgres ]; then
    # psql quotes the name itself (:"db"), in a script read from stdin.
    psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres --set=db="$db" \
      >/dev/null <<<'CREATE DATABASE :"db";'
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  trap - ERR
  echo "postgres: initialised $PGDATA (user $user, database $db)"
fi

shift
exec postgres -c listen_addresses='*' "$@"
