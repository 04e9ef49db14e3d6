//! node-redis (from npm, installed under `target/` from `tests/resp/node/package-lock.json`)
//! running `tests/resp/node/scenario.mjs` against a real cache-node process. Fails, naming
//! what to install, when node or npm is missing.

mod resp_support;

use std::path::Path;
use std::process::Command;

use resp_support::{Server, installed, require, run, run_scenario};

const TOKEN: &str = "resp-node-token";

#[test]
fn node_redis_runs_the_scenario() {
    require(
        "node",
        "apt-get install -y nodejs (Node.js 20 or newer, which brings npm)",
    );
    require(
        "npm",
        "apt-get install -y nodejs (Node.js 20 or newer, which brings npm)",
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/node");
    let read = |file: &str| std::fs::read_to_string(source.join(file)).expect(file);
    let lockfiles = read("package.json") + &read("package-lock.json");
    // `npm ci` into the target directory, so that no node_modules lands in the source tree.
    let dir = installed("resp-node", &lockfiles, |dir| {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file)).expect(file);
        }
        run(Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(dir));
    });
    // Beside its node_modules, where node resolves the script's import of @redis/client.
    let script = dir.join("scenario.mjs");
    std::fs::copy(source.join("scenario.mjs"), &script).expect("scenario.mjs");
    let node = Server::cache_node(&[&format!("--auth-token={TOKEN}")]);
    run_scenario("node-redis", Command::new("node").arg(script), &node, TOKEN);
}
