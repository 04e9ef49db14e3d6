//! The bottom layer: the nouns every other layer shares, and nothing that uses them. It
//! depends on `tidecache-contract` only; `store`, `persist` and `replication` depend on it
//! and never on each other.
//!
//! # Layout
//! - `time`: [`Timestamp`](time::Timestamp) and the injectable [`Clock`](time::Clock).
//! - `version`: [`Version`](version::Version), what an ETag names; `hlc`: the clock that
//!   issues versions.
//! - `auth`: the clients' [`AuthToken`](auth::AuthToken) and the peers' [`PeerCredential`](auth::PeerCredential).
//! - `journal`: how a change becomes durable before it is acknowledged ([`Journal`](journal::Journal)
//!   and [`Commit`](journal::Commit)), and how the store undoes one that did not.
//! - `replica`: what replication and the warm start need from the store.
//! - `digest`: key-range digests anti-entropy compares.
//! - `tasks`: who owns a background task, and how it is stopped.
//! - `tls`: the certificate clients are served with, and its reload.
//! - `events`: the keys the store removes on its own (expired, evicted), for notifications.
//! - `node_info`: what a node tells its peers about itself (its RESP ports).

pub mod auth;
pub mod digest;
pub mod events;
pub mod hlc;
pub mod journal;
pub mod node_info;
pub mod replica;
pub mod tasks;
pub mod time;
pub mod tls;
pub mod version;
