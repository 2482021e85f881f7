#!/usr/bin/env bash
# Installs what the S3 tests need: Garage (a single-node S3-compatible store, crate `garage`,
# built from crates.io), haproxy, and docker-registry (CNCF Distribution 2.8, for comparison).
# Idempotent and quiet: does nothing when all are present; runs `apt-get update` only when a
# Debian package is missing; prints the build/apt log only on failure. Debian 12, as root (or sudo).
#
# Building Garage takes ~15+ minutes on 2 cores (release build); it is done once per machine and
# lands in ~/.cargo/bin/garage.
set -euo pipefail

GARAGE_VERSION="2.5.0"
# sqlite only (no lmdb, k2v or metrics): the tests use db_engine = "sqlite". Saves build time.
GARAGE_FEATURES="bundled-libs,sqlite"

. "$(dirname "$0")/apt.sh"

# ---- Garage ----
garage_ok() {
  local bin="$1"
  [ -x "$bin" ] || return 1
  local v
  v="$("$bin" --version 2>/dev/null)" || return 1
  # e.g. "garage cargo:2.5.0 [features: bundled-libs, sqlite]"
  [[ "$v" == *"$GARAGE_VERSION"* && "$v" == *sqlite* ]]
}

have_garage=0
if command -v garage >/dev/null 2>&1 && garage_ok "$(command -v garage)"; then
  have_garage=1
elif garage_ok "$HOME/.cargo/bin/garage"; then
  have_garage=1
fi

if [ "$have_garage" -eq 0 ]; then
  echo "s3-deps: building garage $GARAGE_VERSION from crates.io (takes ~15+ minutes)"
  log="$(mktemp)"
  start=$(date +%s)
  if ! nice -n 19 cargo install garage --version "$GARAGE_VERSION" --locked \
      --no-default-features --features "$GARAGE_FEATURES" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "s3-deps: cargo install garage failed" >&2
    exit 1
  fi
  rm -f "$log"
  echo "s3-deps: garage installed in $(( $(date +%s) - start ))s: $("$HOME/.cargo/bin/garage" --version)"
fi

# ---- Debian packages ----
PKGS=(
  haproxy           # fronts the S3 backends in the S3 tests
  docker-registry   # CNCF Distribution 2.8 (/usr/bin/docker-registry)
  curl              # lists and reads the bucket in tests/e2e/ (--aws-sigv4: curl >= 7.75)
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
