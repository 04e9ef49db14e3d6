# The two commands of the README, and the checks CI runs.
.PHONY: run demo test fmt-check clippy unit fuzz-tools fuzz-build fuzz-check fuzz-soak

## Run a cache-node on 127.0.0.1:8080 (HTTP) and 127.0.0.1:6379 (Redis protocol), memory
## only, expiry schedule "* * * * *" in UTC.
run:
	cargo run --release -p cache-node -- --resp-listen 127.0.0.1:6379

## The local cluster (real control plane, 3 zones x 2 fake nodes, the test kubelet; needs
## root for network namespaces), the operator from deploy/ and the sample CacheCluster;
## prints how to reach the cache and use kubectl; Ctrl-C tears everything down.
demo:
	cargo run --locked -p tidecache-e2e --bin demo

## Everything CI checks: formatting, lints, every test of the workspace, and a bounded fuzz run.
test: fmt-check clippy unit fuzz-check

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked

## Fuzzing (docs/fuzzing.md): AFL++ through cargo-afl on stable Rust. The targets are the
## crate fuzz/ (a workspace of its own), built instrumented into target/fuzz.
FUZZ_TARGETS := segment resp headers schedule
CARGO_AFL_VERSION := 0.18.2
## Seconds per target: fuzz-check (CI) and fuzz-soak.
FUZZ_CHECK_SECONDS ?= 30
FUZZ_SOAK_SECONDS ?= 600

## cargo-afl in ~/.cargo/bin and its AFL++ build in ~/.local/share/afl.rs (make and a C
## compiler; no LLVM), installed once per machine and rebuilt only for a new rustc.
fuzz-tools:
	@cargo afl --version 2>/dev/null | grep -qF "$(CARGO_AFL_VERSION)" || \
	  cargo install cargo-afl --locked --version $(CARGO_AFL_VERSION)
	@if cargo afl fuzz -h 2>&1 | grep -q "was not built"; then cargo afl config --build; fi

## Not --locked: fuzz/Cargo.lock (started from the root one) gains whatever a new dependency
## of cache-node or the contract needs, instead of failing until someone updates it.
fuzz-build: fuzz-tools
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	CARGO_TARGET_DIR=target/fuzz cargo afl build --release --manifest-path fuzz/Cargo.toml

## Every target for FUZZ_CHECK_SECONDS; fails on a crash.
fuzz-check: fuzz-build
	@for target in $(FUZZ_TARGETS); do fuzz/run $$target $(FUZZ_CHECK_SECONDS) || exit 1; done

## Every target for FUZZ_SOAK_SECONDS (10 minutes each by default), on one core at low priority.
fuzz-soak: fuzz-build
	@for target in $(FUZZ_TARGETS); do nice -n 19 fuzz/run $$target $(FUZZ_SOAK_SECONDS) || exit 1; done
