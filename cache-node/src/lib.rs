//! cache-node: the tidecache cache server.
//!
//! # Layout
//! - [`store`]: the sharded in-memory store (values, versions, expiry buckets, capacity).
//! - [`clock`]: the injectable clock everything time-dependent reads.

#![deny(clippy::unwrap_used)]

pub mod clock;
pub mod store;
