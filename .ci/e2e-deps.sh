#!/usr/bin/env bash
# Installs the real clients the end-to-end suite (tests/e2e.rs) drives: skopeo, containerd + ctr,
# runc, podman, buildah, docker (dockerd + CLI) and a static busybox for the test images.
# Idempotent and quiet: does nothing when every package is already installed; runs
# `apt-get update` only when something is missing. Debian 12, as root (or via sudo).
set -euo pipefail

PKGS=(
  skopeo
  containerd
  runc
  podman
  buildah
  docker.io
  busybox-static
  uidmap
  fuse-overlayfs
  iptables
  containernetworking-plugins
  ca-certificates
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "e2e-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# --no-install-recommends keeps the footprint small; the suites need nothing recommended.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Installing docker.io / containerd on a machine with systemd may start their system services;
# the suite runs its own private daemons and needs none of them. Nothing to do here either way.
echo "e2e-deps: done"
