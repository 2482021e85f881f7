#!/usr/bin/env bash
# Installs the real clients the end-to-end suite (tests/e2e/) drives: skopeo, containerd + ctr,
# runc, podman, buildah, docker (dockerd + CLI) and a static busybox for the test images.
# Idempotent and quiet: does nothing when every package is already installed; runs
# `apt-get update` only when something is missing. Debian 12, as root (or via sudo).
set -euo pipefail

PKGS=(
  skopeo                      # copy/inspect/list-tags/delete, and pushes the fixtures
  containerd                  # containerd + ctr (+ containerd-shim-runc-v2)
  runc                        # the OCI runtime of containerd, dockerd and podman
  crun                        # also installed, on purpose: the suites pin runc (crun refuses
                              # hosts whose cgroups are in hybrid mode), and this proves the pin
  podman                      # pulls uidmap, conmon, containers-common
  buildah
  docker.io                   # dockerd + Debian's docker CLI (/usr/bin/docker), tini
  busybox-static              # /bin/busybox, the fixture image's only binary
  iptables                    # dockerd's (a dependency of docker.io; the suite passes --iptables=false)
  containernetworking-plugins # podman's network backend (its dependency; the suite uses --network none)
  openssl                     # the TLS suite's self-signed certificate
  apache2-utils               # htpasswd -B: the auth suite writes its users as operators do
  ca-certificates
  chromium                    # the web page's browser tests (tests/browser, headless)
)
# playwright-core drives chromium from node. A node from elsewhere (NodeSource's nodejs carries
# its own npm, which Debian's npm package conflicts with) is used as it is.
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)

. "$(dirname "$0")/apt.sh"
if apt_install e2e-deps "${PKGS[@]}"; then
  # On a machine with systemd, installing docker.io and containerd also starts their system
  # services; the suites run private daemons on their own sockets and are not affected.
  echo "e2e-deps: done"
fi
# playwright-core, at the version tests/browser/package-lock.json pins (no browser download:
# the tests launch Debian's /usr/bin/chromium).
browser="$(dirname "$0")/../tests/browser"
if [ ! -d "$browser/node_modules/playwright-core" ]; then
  (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
