#!/usr/bin/env bash
# Issue 6's budget, measured in one run against CNCF Distribution 2.8 (Debian's docker-registry)
# on the same disk, with the load harness. Needs: docker-registry (apt), a release build.
#   bash benches/vs-distribution.sh            # writes benches/results/*.json and prints tables
# Both registries listen on 127.0.0.1 only and are stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-registry >/dev/null || { echo "needs docker-registry: apt-get install docker-registry" >&2; exit 2; }
cargo build --release -q -p donjon --bin donjon
cargo build --release -q -p donjon-bench
B=target/release/donjon-bench
W=$(mktemp -d "${TMPDIR:-/tmp}/donjon-vs-dist.XXXXXX")
OUT=benches/results; mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

cat > "$W/dist.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $W/dist}
  delete: {enabled: true}
http: {addr: 127.0.0.1:5000}
YML
env -u AWS_CA_BUNDLE docker-registry serve "$W/dist.yml" >"$W/dist.log" 2>&1 & pids+=($!); DIST_PID=$!
RUST_LOG=warn target/release/donjon --bind 127.0.0.1:8000 -d "$W/donjon" >"$W/donjon.log" 2>&1 & pids+=($!); DJ_PID=$!
for u in 127.0.0.1:5000 127.0.0.1:8000; do
  for _ in $(seq 100); do curl -sf "http://$u/v2/" >/dev/null && break; sleep 0.1; done
done
A=http://127.0.0.1:5000; D=http://127.0.0.1:8000

echo "== single-core SHA-256"
$B sha256 --size 1GiB --json "$OUT/sha256.json"
if [ -z "${SKIP_BLOBS:-}" ]; then
# One stream: the client runs on one thread (--threads 1) so that it takes as little of the two
# cores as it can; the server CPU per GB (from the PIDs) is each registry's own cost.
echo "== pull of a stored 1 GiB blob, one stream (A = Distribution, B = donjon)"
$B --threads 1 compare --a $A --b $D --workload pull --size 1GiB --concurrency 1 --count 4 --pairs 5 \
  --pid-a $DIST_PID --pid-b $DJ_PID --json "$OUT/pull-1g.json"
echo "== monolithic push of a 1 GiB blob"
echo "   the disk's durable write rate now: $(dd if=/dev/zero of="$W/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')"
rm -f "$W/dd"
$B --threads 1 compare --a $A --b $D --workload push-mono --size 1GiB --concurrency 1 --count 2 --pairs 3 \
  --pid-a $DIST_PID --pid-b $DJ_PID --json "$OUT/push-1g.json"
echo "   the disk's durable write rate now: $(dd if=/dev/zero of="$W/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')"
rm -f "$W/dd"
# This machine is a VM whose host backs guest memory on first touch: writing a GiB into page
# cache that was never used costs ~2 s of CPU, whoever writes it. Deleting the last blobs first
# gives both registries page cache to reuse, as a long-running host has.
echo "== monolithic push of 1 GiB with page cache to reuse"
for r in 1 2 3; do
  for u in $A $D; do
    rm -rf "$W/dist/docker/registry/v2/blobs" "$W/donjon/docker/registry/v2/blobs"; sync
    p=$DJ_PID; [ $u = $A ] && p=$DIST_PID
    $B --threads 1 run -q --url $u --workload push-mono --size 1GiB --concurrency 1 --count 1 --pid $p \
      | awk -v u=$u '/^push / {mb=$5} /server CPU/ {print "  " u ": " mb " MB/s, " $(NF-2) " CPU ms/GB"}'
  done
done
fi
echo "== manifest GET by tag, 64 clients"
$B compare --a $A --b $D --workload manifest-get-tag --concurrency 64 --duration 10s --pairs 3 \
  --pid-a $DIST_PID --pid-b $DJ_PID
echo "== 100 concurrent pulls of a 64 MiB blob (donjon's RSS)"
$B run --url $D --workload pull --size 64MiB --concurrency 100 --count 300 --pid $DJ_PID --json "$OUT/pull64-c100.json"
echo "== scaling: manifest GET by tag, donjon"
$B scale --url $D --workload manifest-get-tag --levels 1,4,16,64,256 --duration 10s --pid $DJ_PID
echo "== scaling: manifest GET by tag, Distribution"
$B scale --url $A --workload manifest-get-tag --levels 1,4,16,64,256 --duration 10s --pid $DIST_PID
echo "== ready to serve on a data dir of 10,000 repositories and 100,000 blobs"
python3 - "$W/big" <<'PY'
import hashlib, os, sys
root = os.path.join(sys.argv[1], "docker/registry/v2")
for i in range(100_000):
    h = hashlib.sha256(str(i).encode()).hexdigest()
    d = os.path.join(root, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "data"), "w").write(str(i))
    r = os.path.join(root, "repositories", f"org{i % 100}/repo{i % 10_000}", "_layers/sha256", h)
    os.makedirs(r, exist_ok=True)
    open(os.path.join(r, "link"), "w").write("sha256:" + h)
PY
for run in 1 2 3; do
  t0=$(date +%s%N)
  RUST_LOG=warn target/release/donjon --bind 127.0.0.1:8001 -d "$W/big" >"$W/big.log" 2>&1 & p=$!
  until curl -sf http://127.0.0.1:8001/v2/ >/dev/null; do sleep 0.002; done
  t1=$(date +%s%N)
  echo "run $run: ready in $(( (t1 - t0) / 1000000 )) ms (process start to first 200 on /v2/)"
  kill $p; wait $p 2>/dev/null || true
done
