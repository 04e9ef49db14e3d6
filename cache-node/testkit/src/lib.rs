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

/// A port on 127.0.0.1 that nothing listens on now, for a server a test starts later (a TLS
/// listener, PostgreSQL). Taken below the kernel's ephemeral range (32768 and up by
/// default), where `bind(…:0)` never hands one out, so that the ports [`Cluster`] picks for
/// its nodes meanwhile cannot be the same; each port is handed out once per process.
///
/// # Panics
/// When no port of the range can be bound.
pub fn unused_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    // Processes running at once start at different places of the range.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = std::process::id() % u32::from(COUNT);
    for _ in 0..COUNT {
        let next = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let offset = u16::try_from((start + next) % u32::from(COUNT)).unwrap_or(0);
        let port = FIRST + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

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
