# lifeline: the two commands a newcomer needs.
#   make run    set up, then show lifeline's main job
#   make test   set up, then run every check CI runs
SHELL := /bin/bash
CARGO ?= cargo
# C and C++ through ccache (installed by `setup`): RocksDB's sources compile
# once, however many feature sets cargo resolves (see scripts/setup.sh).
export CC = ccache cc
export CXX = ccache c++
# Seconds each fuzz target runs in `make test` (longer runs: `make fuzz FUZZ_SECONDS=600`).
FUZZ_SECONDS ?= 15
# Options for the devnet of `make run`, e.g. `make run DEVNET="--nodes 12 --authorities 5"`.
DEVNET ?=

.PHONY: run test setup fmt demo clippy unit doc fuzz-smoke fuzz bench sim

# lifeline's main job: a local network of real nodes, a guided tour of what
# they do, then it keeps running (Ctrl-C stops it and cleans up).
# The build shows its progress: the first one compiles RocksDB's C++ for
# about 25 minutes on two cores, and a quiet `cargo run -q` looked hung.
run: setup
	@echo "make run: building lifeline (the first build compiles RocksDB's C++: about 25 minutes on 2 cores; later ones take seconds)"
	$(CARGO) build --locked -p lifeline
	$(CARGO) run --locked -q -p lifeline -- devnet $(DEVNET)

test: setup fmt clippy doc demo fuzz-smoke unit sim
	@echo "make test: all checks passed"

setup:
	@scripts/setup.sh

fmt:
	$(CARGO) fmt --all -- --check

# The main job must keep working: the devnet's tour checks each of its steps
# (--once: then it stops), and so does the offline key workflow.
demo:
	$(CARGO) run --locked -q -p lifeline -- devnet --once >/dev/null
	@scripts/keys-demo.sh >/dev/null

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# --all-targets also runs each benchmark once in test mode, so benches keep working.
unit:
	@scripts/test.sh

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

# The simulator on about 1,000 nodes, with assertions on delivery, P0 latency
# and control traffic (it exits non-zero if one fails). Same dev profile as the tests.
SIM_OUT ?= $(or $(CARGO_TARGET_DIR),target)/sim
sim:
	$(CARGO) run --locked -q -p lifeline -- sim run simulator/scenarios/ci-1000.toml --out $(SIM_OUT)

fuzz-smoke:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# Figures for the closing notes: release build, full criterion runs.
bench:
	$(CARGO) bench --locked -p lifeline-crypto --bench envelope
	$(CARGO) bench --locked -p lifeline-consensus --bench import
	$(CARGO) bench --locked -p lifeline-routing --bench forwarding
	$(CARGO) bench --locked -p lifeline-node --bench daemons
	$(CARGO) bench --locked -p lifeline --bench line_latency
	$(CARGO) bench --locked -p lifeline-simulator --bench scale
