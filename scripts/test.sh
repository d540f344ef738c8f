#!/usr/bin/env bash
# Runs every test (doc tests, then unit, property, integration and multi-process
# tests, and each benchmark once in test mode), keeping cargo's output, and
# closes with the totals of cargo's own summary lines.
set -uo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --doc --locked 2>&1 | tee -a "$log" || status=1
[ "$status" -eq 0 ] && { cargo test --workspace --all-targets --locked 2>&1 | tee -a "$log" || status=1; }
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
