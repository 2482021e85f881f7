#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 60) each; any crash fails. Installs
# cargo-fuzz from crates.io when missing; needs the nightly toolchain (rustup's `nightly`).
# New inputs go to a temporary corpus; the committed seeds (fuzz/corpus/<target>) are read only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds="${FUZZ_SECONDS:-60}"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

cargo +nightly fuzz build -O
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$work/$target"
  echo "fuzz: $target for ${seconds}s"
  if ! cargo +nightly fuzz run -O "$target" "$work/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=0 >"$work/$target.log" 2>&1; then
    # The panic's message first (the stack trace after it pushes it out of a tail).
    grep -m1 -A4 "panicked at" "$work/$target.log" || true
    tail -60 "$work/$target.log"
    echo "fuzz: $target found a crash; its input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done' "$work/$target.log" || true
done
echo "fuzz: every target ran ${seconds}s without a crash"
