# The two commands of the README, and the checks CI runs.
.PHONY: run demo test fmt-check clippy unit

## Run a cache-node on 127.0.0.1:8080 (HTTP) and 127.0.0.1:6379 (Redis protocol), memory
## only, expiry schedule "* * * * *" in UTC.
run:
	cargo run --release -p cache-node -- --resp-listen 127.0.0.1:6379

## The local cluster (real control plane, 3 zones x 2 fake nodes, the test kubelet; needs
## root for network namespaces), the operator from deploy/ and the sample CacheCluster;
## prints how to reach the cache and use kubectl; Ctrl-C tears everything down.
demo:
	cargo run --locked -p tidecache-e2e --bin demo

## Everything CI checks: formatting, lints, and every test of the workspace.
test: fmt-check clippy unit

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked
