#!/usr/bin/env bash
# Builds the compose stack's images on a machine with a Docker engine but no image
# registry (nothing can be pulled), from what this machine has:
#   shoal-offline/debian:bookworm   a Debian base made by debootstrap (built once,
#                                   then kept by the engine as the cache);
#   shoal-offline/nats:<version>    the pinned nats-server of scripts/deps.sh;
#   shoal-offline/postgres:15       Debian's PostgreSQL, with an entrypoint that
#                                   honours POSTGRES_USER/PASSWORD/DB as the
#                                   official image's does;
#   shoal-offline/shoal:local       the release binaries built on this host.
# docker-compose.offline.yml swaps these in for the published images.
#
# Usage: compose/offline/build-images.sh   (from anywhere; builds the release
# binaries first if missing. SHOAL_DEBIAN_MIRROR overrides the Debian mirror.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
say() { printf 'images: %s\n' "$*"; }
started=$(date +%s)

base=shoal-offline/debian:bookworm
nats_version="${SHOAL_NATS_SERVER_VERSION:-2.15.1}"
mirror="${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

docker info >/dev/null 2>&1 || { echo "images: no Docker engine answers (docker info failed)" >&2; exit 1; }

if docker image inspect "$base" >/dev/null 2>&1; then
  say "$base present"
else
  if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (apt-get install debootstrap)"
    [ "$(id -u)" -eq 0 ] || { echo "images: debootstrap is missing; run: sudo apt-get install -y debootstrap" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  fi
  tmp="$(mktemp -d /var/tmp/shoal-debootstrap.XXXXXX)"
  trap 'rm -rf "$tmp"' EXIT
  say "debootstrap bookworm (minbase, with postgresql-15 and wget) from $mirror: about a minute"
  debootstrap --variant=minbase --include=postgresql-15,wget,ca-certificates \
    bookworm "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
  # The package's own cluster is not used (the entrypoint makes one in PGDATA);
  # caches and docs are dead weight in an image.
  rm -rf "$tmp/root/etc/postgresql/15" "$tmp/root/var/lib/postgresql/15" \
    "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"* \
    "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/share/info"
  tar -C "$tmp/root" -c . | docker import -c 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$tmp"
  trap - EXIT
  say "$base imported"
fi

# build TAG DOCKERFILE FILE...: a context of just FILEs, built with the classic
# builder (BuildKit's frontend image cannot be pulled here).
build() {
  local tag="$1" dockerfile="$2"; shift 2
  local ctx; ctx="$(mktemp -d /var/tmp/shoal-image.XXXXXX)"
  cp "$dockerfile" "$ctx/Dockerfile"
  cp "$@" "$ctx/"
  local out
  if ! out="$(DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$base" -t "$tag" "$ctx" 2>&1)"; then
    rm -rf "$ctx"
    printf '%s\nimages: building %s failed\n' "$out" "$tag" >&2
    exit 1
  fi
  rm -rf "$ctx"
  say "$tag built"
}

"$root/scripts/deps.sh" >/dev/null
build "shoal-offline/nats:$nats_version" "$here/nats.Dockerfile" "$root/.shoal/tools/nats-server-$nats_version/bin/nats-server"
build shoal-offline/postgres:15 "$here/postgres.Dockerfile" "$here/postgres-entrypoint.sh"

bins=(shoal-registry shoal-balancer shoal-coordinator shoal-announcer shoal-gateway shoal)
if [ "${SHOAL_SKIP_CARGO_BUILD:-}" != 1 ]; then
  say "cargo build --release (the service binaries and the CLI)"
  (cd "$root" && cargo build --release -q -p shoal-registry -p shoal-balancer \
    -p shoal-coordinator -p shoal-announcer -p shoal-gateway -p shoal-cli)
fi
# Where cargo put them: CARGO_TARGET_DIR or a cargo config may move target/.
target="$(cd "$root" && cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
build shoal-offline/shoal:local "$here/shoal.Dockerfile" "${bins[@]/#/$target/release/}"
say "done in $(( $(date +%s) - started )) s"
