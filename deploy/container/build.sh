#!/usr/bin/env bash
# Builds donjon's container image without pulling anything: the release binary, the shared
# libraries `ldd` names for it, the CA certificates of this machine and a passwd entry for
# UID/GID 333333 go into a root filesystem, which `buildah bud` turns into the image of
# deploy/container/Containerfile (no base image).
#   bash deploy/container/build.sh            # → localhost/donjon:<version>, :latest
#   OUT=/tmp/donjon.tar bash deploy/container/build.sh   # also a docker-archive (skopeo, podman load)
# BUILDAH_ARGS passes storage options (e.g. "--root DIR --runroot DIR --storage-driver vfs").
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v buildah >/dev/null || { echo "needs buildah: apt-get install buildah" >&2; exit 2; }
read -r -a storage <<< "${BUILDAH_ARGS:-}"

cargo build --release --locked -q --bin donjon
version="$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "donjon"))')"
bin=target/release/donjon
ctx=target/container
rm -rf "$ctx"
root="$ctx/rootfs"
mkdir -p "$root/etc/donjon" "$root/etc/ssl/certs" "$root/tmp" "$root/bin" "$ctx/data"

cp "$bin" "$root/donjon"
# Distribution's image runs `/bin/registry serve CONFIG`, and so does its Helm chart.
ln -s /donjon "$root/bin/registry"
# The dynamic loader and every library the binary needs, at the paths it looks for them.
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  cp -L --parents "$lib" "$root/"
done
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "needs $ca: apt-get install ca-certificates" >&2; exit 2; }
cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
cp deploy/container/config.yml "$root/etc/donjon/config.yml"
printf 'root:x:0:0:root:/:/sbin/nologin\ndonjon:x:333333:333333:donjon:/data:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\ndonjon:x:333333:\n' > "$root/etc/group"
# /etc/hosts first (localhost, host aliases), then DNS: glibc's default without this file
# asks DNS alone while it answers.
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chmod 750 "$ctx/data"
cp deploy/container/Containerfile "$ctx/Containerfile"

commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
buildah "${storage[@]}" bud -q --format docker --timestamp 0 \
  --label org.opencontainers.image.title=donjon \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$commit" \
  --label org.opencontainers.image.source=https://github.com/donjon-registry/donjon \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  -t "localhost/donjon:$version" -t localhost/donjon:latest "$ctx" >/dev/null
if [ -n "${OUT:-}" ]; then
  rm -f "$OUT"
  # The Docker format keeps the HEALTHCHECK (the OCI image config has none).
  buildah "${storage[@]}" push -q "localhost/donjon:$version" "docker-archive:$OUT:localhost/donjon:$version"
fi
size=$(du -sb "$root" | cut -f1)
echo "localhost/donjon:$version ($commit): $((size / 1024 / 1024)) MiB unpacked${OUT:+, archive $OUT}"
