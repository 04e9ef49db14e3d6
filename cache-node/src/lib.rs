//! cache-node: the tidecache cache server.
//!
//! # Layout
//! The modules form a stack; each depends only on those below it (a test in
//! `tests/module_graph.rs` fails on a cycle):
//!
//! ```text
//! node, config          wiring: flags → settings → a running node
//! http                  the HTTP API: translates requests into Cache calls
//! cache                 the service: reads, the write path, readiness, shutdown
//! sweeper, metrics      background eviction; the Prometheus registry
//! persist | replication the shared volume; the other nodes
//! store                 the in-memory entries
//! base                  time, versions, the HLC, the auth token, journal and replica traits, tasks
//! ```
//!
//! `store`, `persist` and `replication` are siblings: none imports another, and where one
//! must call another it does so through a narrow trait in [`base`] (the store is the
//! persistence log's [`Undo`](base::journal::Undo) and replication's
//! [`Replica`](base::replica::Replica)).
//!
//! Durations and sizes are parsed by `tidecache_contract::units`, the same parser the
//! janitor and the operator use.

#![deny(clippy::unwrap_used)]

pub mod base;
pub mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod replication;
pub mod store;
mod sweeper;
