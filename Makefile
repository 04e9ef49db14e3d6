# The two commands of the README, and the checks CI runs.
.PHONY: run test fmt-check clippy unit

## Run a cache-node on 127.0.0.1:8080, memory only, expiry schedule "* * * * *" in UTC.
run:
	cargo run --release -p cache-node

## Everything CI checks: formatting, lints, and every test of the workspace.
test: fmt-check clippy unit

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked
