#!/usr/bin/env bash
# The pull-through cache measured in one run: donjon's proxy and CNCF Distribution 2.8's proxy
# mode (Debian's docker-registry) in front of the same upstream (another docker-registry), with
# the load harness: cold pulls (each a blob the mirror never served), warm pulls, and direct
# pulls from the upstream for reference; upstream bytes per client byte from the upstream's
# access log. Needs docker-registry (apt) and curl; builds the release binaries.
#   bash benches/proxy.sh                 # SIZE=1GiB COLD=3 by default
# Everything listens on 127.0.0.1 and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-registry >/dev/null || { echo "needs docker-registry: apt-get install docker-registry" >&2; exit 2; }
SIZE="${SIZE:-1GiB}"; COLD="${COLD:-3}"
cargo build --release -q -p donjon --bin donjon
cargo build --release -q -p donjon-bench
B=target/release/donjon-bench
W=$(mktemp -d "${TMPDIR:-/tmp}/donjon-proxy-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

UP=127.0.0.1:5000; DP=127.0.0.1:5001; DJ=127.0.0.1:8000
cat > "$W/upstream.yml" <<YML
version: 0.1
log: {level: error, formatter: text}
storage: {filesystem: {rootdirectory: $W/upstream}, delete: {enabled: true}}
http: {addr: $UP}
YML
cat > "$W/distproxy.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/distproxy}}
http: {addr: $DP}
proxy: {remoteurl: http://$UP}
YML
cat > "$W/donjon.yml" <<YML
registry_proxies:
  registries:
    - {host: "$UP", insecure: true}
YML
env -u AWS_CA_BUNDLE docker-registry serve "$W/upstream.yml" >"$W/upstream.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://$UP/v2/" && break; sleep 0.1; done
# Distribution's proxy mode will not start while its upstream is down: the upstream first.
env -u AWS_CA_BUNDLE docker-registry serve "$W/distproxy.yml" >"$W/distproxy.log" 2>&1 & pids+=($!); DIST_PID=$!
RUST_LOG=warn target/release/donjon --bind $DJ -d "$W/donjon" --config-file "$W/donjon.yml" >"$W/donjon.log" 2>&1 & pids+=($!); DJ_PID=$!
for u in $UP $DP $DJ; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://$u/v2/" && break; sleep 0.1; done
done

# Bytes of blobs the upstream sent with a 200, from its access log.
upstream_bytes() { awk '/"GET \/v2\/[^ ]*\/blobs\/sha256:[^ ]* HTTP[^"]*" 200 / { for (i = 1; i < NF; i++) if ($i == "200") { s += $(i + 1); break } } END { printf "%.0f", s }' "$W/upstream.log"; }
size_bytes() { case "$SIZE" in *GiB) echo $(( ${SIZE%GiB} << 30 ));; *MiB) echo $(( ${SIZE%MiB} << 20 ));; *) echo "$SIZE";; esac; }
row() { # name, harness output file, client bytes, upstream bytes
  # The data row follows the header: kind requests errors req/s MB/s p50 p90 p99 max ttfb-p50 ttfb-p99.
  awk -v n="$1" -v c="$3" -v u="$4" '
    h && !done { t = $5; f = $10; done = 1 }
    /^kind / { h = 1 }
    END { printf "| %-34s | %10s | %10s | %8s |\n", n, f, t, (c > 0 ? sprintf("%.2f", u / c) : "-") }' "$2"
}

echo "== direct pulls from the upstream (reference)"
$B --threads 1 run --url http://$UP --workload pull --size "$SIZE" --concurrency 1 --count 3 | tee "$W/direct.txt"
for m in donjon-trow donjon-ns distribution; do
  case $m in
    donjon-trow) url=http://$DJ; path=trow; pid=$DJ_PID;;
    donjon-ns) url=http://$DJ; path=ns; pid=$DJ_PID;;
    distribution) url=http://$DP; path=same; pid=$DIST_PID;;
  esac
  before=$(upstream_bytes)
  echo "== cold pulls through $m ($COLD blobs of $SIZE, each new to the mirror)"
  $B --threads 1 run --url $url --upstream http://$UP --mirror-path $path --workload pull-cold --size "$SIZE" \
    --concurrency 1 --count "$COLD" --repo "bench/$m" --pid $pid | tee "$W/cold-$m.txt"
  after=$(upstream_bytes)
  echo "$(( after - before )) $(( COLD * $(size_bytes) ))" > "$W/bytes-$m.txt"
  echo "== warm pulls through $m"
  $B --threads 1 run --url $url --upstream http://$UP --mirror-path $path --workload pull-warm --size "$SIZE" \
    --concurrency 1 --count 3 --repo "bench/$m-warm" --pid $pid | tee "$W/warm-$m.txt"
done

echo
echo "| pull of $SIZE, one stream           | ttfb p50 ms | MB/s       | upstream bytes per client byte |"
echo "|------------------------------------|------------|------------|----------|"
row "direct from the upstream" "$W/direct.txt" 0 0
for m in donjon-trow donjon-ns distribution; do
  read -r up client < "$W/bytes-$m.txt"
  row "cold, through $m" "$W/cold-$m.txt" "$client" "$up"
  row "warm, through $m" "$W/warm-$m.txt" 0 0
done
