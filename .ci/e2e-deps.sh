#!/usr/bin/env bash
# Installs the real clients the end-to-end suite (tests/e2e.rs) drives: skopeo, containerd + ctr,
# runc, podman, buildah, docker (dockerd + CLI) and a static busybox for the test images.
# Idempotent and quiet: does nothing when every package is already installed; runs
# `apt-get update` only when something is missing. Debian 12, as root (or via sudo).
set -euo pipefail

PKGS=(
  skopeo                      # copy/inspect/list-tags/delete, and pushes the fixtures
  containerd                  # containerd + ctr (+ containerd-shim-runc-v2)
  runc                        # the OCI runtime of containerd, dockerd and podman
  podman                      # pulls uidmap, conmon, containers-common
  buildah
  docker.io                   # dockerd + Debian's docker CLI (/usr/bin/docker), tini
  busybox-static              # /bin/busybox, the fixture image's only binary
  iptables                    # dockerd's (a dependency of docker.io; the suite passes --iptables=false)
  containernetworking-plugins # podman's network backend (its dependency; the suite uses --network none)
  openssl                     # the TLS suite's self-signed certificate
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
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Quiet unless it fails. No recommends: the suites need none of them.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "e2e-deps: apt-get failed" >&2
  exit 1
fi
# On a machine with systemd, installing docker.io and containerd also starts their system
# services; the suites run private daemons on their own sockets and are not affected.
echo "e2e-deps: done"
