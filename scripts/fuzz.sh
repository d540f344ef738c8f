#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS each (default 15). Installs
# cargo-fuzz if it is missing. Runs on the stable toolchain: cargo-fuzz needs
# nightly flags, which RUSTC_BOOTSTRAP=1 allows.
#   FUZZ_SECONDS=600 scripts/fuzz.sh            every target, ten minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh node_id     one target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-15}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once per machine)"
  cargo install --locked cargo-fuzz
fi

# Reuse one build folder across runs (CI sets CARGO_TARGET_DIR outside the clone).
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# No sanitizer: the crates forbid unsafe code, so what fuzzing finds is panics,
# hangs and runaway allocation, which libFuzzer reports without one.
flags=(--fuzz-dir fuzz --sanitizer none --target-dir "$target_dir")
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
  corpus="$target_dir/corpus/$t"
  mkdir -p "$corpus"
  echo "fuzz: $t for ${seconds}s"
  log="$target_dir/$t.log"
  status=0
  # Committed seeds (fuzz/seeds/TARGET), if any, start the search; new finds go to $corpus.
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  # The CAP test alerts, shaped like real agencies' alerts, seed the CAP reader.
  [ "$t" = cap_alert ] && seeds+=("consensus/tests/cap")
  cargo fuzz run "${flags[@]}" "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed 's/^/  /' || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t FAILED (exit $status); the crashing input is under fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a failure"
