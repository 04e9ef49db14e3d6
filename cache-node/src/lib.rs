//! cache-node: the tidecache cache server.
//!
//! # Layout
//! - [`store`]: the sharded in-memory store (values, versions, expiry buckets, capacity).
//! - [`sweeper`]: the task that evicts due buckets at each fire time of the schedule.
//! - [`http`]: the HTTP API (routes, errors, headers) and the server loop.
//! - [`metrics`]: the Prometheus registry.
//! - [`config`]: flags and `TIDECACHE_*` variables, validated into [`config::Settings`].
//! - [`replication`]: multi-pod synchronisation (HLC versions, transport, acknowledgements,
//!   discovery, anti-entropy).
//! - [`persist`]: persistence on the shared volume (segment log with group commit and fsync
//!   policies, warm start, compaction of the persistent area).
//! - [`node`]: wires the pieces together and runs them until a shutdown signal.
//! - [`clock`]: injectable time. Durations and sizes are parsed by
//!   `tidecache_contract::units`, the same parser the janitor and the operator use.
//!
//! Persistence and replication plug in at the [`store`] boundary: the store owns versions
//! and expiry, the HTTP layer only translates requests.

#![deny(clippy::unwrap_used)]

pub mod clock;
pub mod config;
pub mod http;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod replication;
pub mod store;
pub mod sweeper;
