//! The harness of cache-node's multi-process tests and benchmarks: real `cache-node`
//! processes on loopback ([`Cluster`], configured by a [`Builder`]), one keep-alive HTTP
//! client ([`Client`]), and a data volume that can lose what a machine crash loses
//! ([`Volume`]), and a real PostgreSQL server ([`Postgres`]).
//!
//! It is a crate of its own rather than a module under `cache-node/tests/` because every
//! integration test is compiled as a separate crate: a shared module would be compiled into
//! each test, and whatever one test does not call would be dead code there. As a library its
//! public items are its interface, used by some test or another.

mod client;
mod cluster;
mod postgres;
mod volume;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use client::{Client, Reply};
pub use cluster::{Builder, Cluster, PEER_TOKEN};
pub use postgres::Postgres;
pub use volume::Volume;

/// A command running the `cache-node` binary cargo built for the running test or benchmark.
pub fn cache_node() -> Command {
    Command::new(binary())
}

/// The path of the `cache-node` binary.
///
/// Cargo builds a package's binaries before its integration tests and benchmarks. Since
/// cargo 1.94 it passes `CARGO_BIN_EXE_cache-node` to the running test; before, only to the
/// compiler (for `env!`, which this library cannot use, not being the test), and the binary is
/// in the profile directory whose `deps/` holds the test executable.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_cache-node") {
        return path.into();
    }
    let test = std::env::current_exe().expect("the test executable's path");
    let beside = test
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("cache-node"));
    match beside {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "no cache-node binary for {}: run the test through `cargo test -p cache-node`",
            test.display()
        ),
    }
}
