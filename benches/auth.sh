#!/usr/bin/env bash
# What authentication costs, measured with the load harness in one run:
#   1. manifest GET by tag at 64 clients with a Bearer token (the anonymous token flow), as a
#      ratio of the same registry without auth;
#   2. the same with Basic credentials on every request (bcrypt once, then cached);
#   3. a pull of 200 blobs of 1 MiB with Basic credentials, against CNCF Distribution 2.8
#      (Debian's docker-registry) with the same htpasswd file.
# Needs: docker-registry and htpasswd (apt: docker-registry apache2-utils), a release build.
#   bash benches/auth.sh
# Every server listens on 127.0.0.1 only and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in docker-registry htpasswd; do
  command -v $t >/dev/null || { echo "needs $t: apt-get install docker-registry apache2-utils" >&2; exit 2; }
done
cargo build --release -q -p donjon --bin donjon
cargo build --release -q -p donjon-bench
B=target/release/donjon-bench
D=target/release/donjon
W=$(mktemp -d "${TMPDIR:-/tmp}/donjon-auth-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

htpasswd -B -b -c "$W/htpasswd" alice alice-pw 2>/dev/null
printf 'auth:\n  access:\n    - {repository: "**", who: anyone, actions: [pull, push]}\n' >"$W/anonymous.yml"
printf 'auth:\n  htpasswd: {realm: bench, path: %s}\n' "$W/htpasswd" >"$W/htpasswd.yml"
cat >"$W/dist.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/dist}, delete: {enabled: true}}
http: {addr: 127.0.0.1:5103}
auth: {htpasswd: {realm: bench, path: $W/htpasswd}}
YML
RUST_LOG=error $D --bind 127.0.0.1:5100 -d "$W/open" >"$W/open.log" 2>&1 & pids+=($!); OPEN=$!
RUST_LOG=error $D --bind 127.0.0.1:5101 -d "$W/token" --config-file "$W/anonymous.yml" >"$W/token.log" 2>&1 & pids+=($!); TOKEN=$!
RUST_LOG=error $D --bind 127.0.0.1:5102 -d "$W/basic" --config-file "$W/htpasswd.yml" >"$W/basic.log" 2>&1 & pids+=($!); BASIC=$!
env -u AWS_CA_BUNDLE docker-registry serve "$W/dist.yml" >"$W/dist.log" 2>&1 & pids+=($!); DIST=$!
for p in 5100 5101 5102 5103; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/v2/" && break; sleep 0.1; done
done

echo "== manifest GET by tag, 64 clients: A = no auth, B = Bearer tokens (anonymous token flow)"
$B compare --a http://127.0.0.1:5100 --b http://127.0.0.1:5101 --workload manifest-get-tag \
  --concurrency 64 --duration 10s --pairs 3 --pid-a $OPEN --pid-b $TOKEN | tail -9
echo "== manifest GET by tag, 64 clients: A = no auth, B = Basic credentials on every request"
$B compare --a http://127.0.0.1:5100 --b http://127.0.0.1:5102 --workload manifest-get-tag \
  --concurrency 64 --duration 10s --pairs 3 --user alice --password alice-pw --pid-a $OPEN --pid-b $BASIC | tail -9
echo "== pull of 200 blobs of 1 MiB with Basic credentials: A = Distribution (htpasswd), B = donjon"
$B compare --a http://127.0.0.1:5103 --b http://127.0.0.1:5102 --workload pull --size 1MiB --count 200 \
  --pairs 3 --user alice --password alice-pw --pid-a $DIST --pid-b $BASIC | tail -9
