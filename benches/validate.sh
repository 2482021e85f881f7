#!/usr/bin/env bash
# What the validating webhook costs, measured with the load harness in one run: POST
# /validate-image with an AdmissionReview of a Deployment of 10 containers, 16 concurrent
# callers, over HTTPS as the API server calls it (a CA and a server certificate made here),
# then over plain HTTP to show what TLS adds. Half the images are allowed, half refused.
#   bash benches/validate.sh [DURATION]      (default 15s per run)
# Needs openssl and a release build. The server listens on 127.0.0.1 only and is stopped by
# PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15s}"
cargo build --release -q -p donjon --bin donjon
cargo build --release -q -p donjon-bench
B=target/release/donjon-bench
D=target/release/donjon
W=$(mktemp -d "${TMPDIR:-/tmp}/donjon-validate-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=donjon.donjon.svc \
  -keyout "$W/key.pem" -out "$W/req.pem" 2>/dev/null
printf 'subjectAltName=DNS:donjon.donjon.svc,IP:127.0.0.1\n' >"$W/ext"
openssl x509 -req -in "$W/req.pem" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -days 1 \
  -extfile "$W/ext" -out "$W/cert.pem" 2>/dev/null
printf 'image_validation:\n  default: Deny\n  allow: [quay.io/]\n  deny: [docker.io/library/]\n' >"$W/config.yml"

RUST_LOG=error $D --bind 127.0.0.1:5110 -d "$W/tls" --config-file "$W/config.yml" \
  --tls "$W/cert.pem,$W/key.pem" >"$W/tls.log" 2>&1 & pids+=($!); TLS=$!
RUST_LOG=error $D --bind 127.0.0.1:5111 -d "$W/plain" --config-file "$W/config.yml" >"$W/plain.log" 2>&1 & pids+=($!); PLAIN=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:5111/v2/" && break; sleep 0.1; done
for _ in $(seq 100); do curl -s -o /dev/null --cacert "$W/ca.pem" "https://127.0.0.1:5110/v2/" && break; sleep 0.1; done

echo "== HTTPS (as the API server calls it)"
$B run --url https://127.0.0.1:5110 --ca-cert "$W/ca.pem" --workload admission --concurrency 16 --duration "$duration" --pid $TLS
echo "== plain HTTP"
$B run --url http://127.0.0.1:5111 --workload admission --concurrency 16 --duration "$duration" --pid $PLAIN
