#!/usr/bin/env bash
# Checks deploy/systemd/donjon.service: `systemd-analyze verify` (syntax, directives, the
# binary it starts: this checkout's, target/debug/donjon, stands in for /usr/local/bin/donjon)
# and `systemd-analyze security --offline`, whose exposure must stay at or under 2.0 ("OK").
# Needs systemd's tools (Debian's systemd package), not a running systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
}
bin="$PWD/target/debug/donjon"
[ -x "$bin" ] || cargo build --locked -q --bin donjon
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/donjon|$bin|" deploy/systemd/donjon.service > "$dir/donjon.service"
systemd-analyze verify "$dir/donjon.service"
systemd-analyze security --offline=yes --threshold=20 "$dir/donjon.service" | tail -1
echo "systemd: deploy/systemd/donjon.service verifies; exposure within 2.0"
