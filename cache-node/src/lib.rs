//! cache-node: the tidecache cache server.
//!
//! # Layout
//! The modules form a stack; each depends only on those below it (a test in
//! `tests/module_graph.rs` fails on a cycle):
//!
//! ```text
//! node, config          wiring: flags → settings → a running node
//! http | resp           the HTTP API and the Redis protocol: translate requests into Cache calls
//! cache                 the service: reads, the write path, readiness, shutdown
//! sweeper, metrics      background eviction; the Prometheus registry
//! persist | replication the shared volume; the other nodes
//! | backend             the PostgreSQL table behind the cache
//! store                 the in-memory entries
//! base                  time, versions, the HLC, the auth token, journal and replica traits, tasks
//! ```
//!
//! `store`, `persist`, `replication` and `backend` are siblings: none imports another, and where one
//! must call another it does so through a narrow trait in [`base`] (the store is the
//! persistence log's [`Undo`](base::journal::Undo) and replication's
//! [`Replica`](base::replica::Replica)).
//!
//! Durations and sizes are parsed by `tidecache_contract::units`, the same parser the
//! janitor and the operator use.

#![deny(clippy::unwrap_used)]

pub(crate) mod backend;
pub(crate) mod base;
pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod persist;
pub(crate) mod replication;
pub(crate) mod resp;
pub(crate) mod store;
mod sweeper;

// The public surface: what the binary, the integration tests and the benchmarks use.

/// The database behind the cache, as the settings describe it.
pub use backend::{BackendMode, BackendSettings, QueueSettings};
/// Time and the cluster's token, as the service takes them.
pub use base::auth::{AuthToken, PeerCredential};
pub use base::time::{Clock, ManualClock, SystemClock, Timestamp};
/// Where the TLS listeners' certificate is read from.
pub use base::tls::TlsFiles;
/// The service and what it is made of.
pub use cache::{Cache, CacheSettings, Limits};
/// Flags and environment, validated into settings.
pub use config::{CapacitySource, Config, LogFormat, PeerSource, Settings, TlsSettings};
/// The HTTP API over a cache, for in-process tests and benchmarks.
pub use http::{AppState, app, run};
/// The metrics registry.
pub use metrics::Metrics;
/// Running a node until a shutdown signal.
pub use node::{serve, shutdown_signal};
/// Persistence, for benchmarks that drive the log directly.
pub use persist::{FsyncPolicy, Log, PersistSettings, warm_start};
/// Which nodes hold a key (`--mode`).
pub use replication::Mode;
/// The store, for benchmarks and tests that measure it alone.
pub use store::{EvictionPolicy, Preconditions, Store, StoreConfig};

/// The parsers of untrusted bytes, public only so that the fuzz targets in `fuzz/`
/// (docs/fuzzing.md) can drive them without a socket: they are internal to the front ends
/// otherwise, and nothing else should call them.
pub mod parsers {
    /// `If-Match`/`If-None-Match` lists and the expiry of a write (`?ttl=`, `Expires`).
    pub use crate::http::{ApiError, expiry, preconditions};
    /// RESP requests off a connection's read buffer.
    pub use crate::resp::{FrameError, FrameLimits, Parser};
    /// What `preconditions` yields.
    pub use crate::store::EtagMatch;
}
