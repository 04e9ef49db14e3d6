//! go-redis (from the Go module proxy, pinned by `tests/resp/go/go.sum`) running
//! `tests/resp/go/main.go` against a real cache-node process. Fails, naming what to install,
//! when Go is missing.

mod resp_support;

use std::path::Path;
use std::process::Command;

use resp_support::{Server, require, run_scenario};

const TOKEN: &str = "resp-go-token";

#[test]
fn go_redis_runs_the_scenario() {
    require(
        "go",
        "put Go 1.26 or newer on PATH (Debian's golang-go is older; CI machines have it in /usr/local/go/bin)",
    );
    let node = Server::cache_node(&[&format!("--auth-token={TOKEN}")]);
    // `go run` keeps its build in Go's cache, so only the first run compiles; readonly:
    // a go.mod or go.sum that does not match the imports fails instead of being rewritten.
    let mut go = Command::new("go");
    go.args(["run", "."])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/go"))
        .env("GOFLAGS", "-mod=readonly");
    run_scenario("go-redis", &mut go, &node, TOKEN);
}
