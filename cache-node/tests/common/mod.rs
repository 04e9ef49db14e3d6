//! The multi-process harness under the name `benches/replication.rs` includes it by
//! (`#[path = "../tests/common/mod.rs"]`). The harness itself is the `cache-node-testkit`
//! crate, which the tests use directly; this file goes once the benchmark does too.

pub use cache_node_testkit::{Client, Cluster};
