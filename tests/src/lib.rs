//! End-to-end harness for tidecache: a real Kubernetes control plane built from its Go
//! modules, started on loopback with zone-labelled fake nodes, a test kubelet that runs
//! their pods as local processes, against which the operator, the cache nodes and the
//! janitor are tested (see `tests/README.md`).

pub mod cluster;
pub mod console;
pub mod control_plane;
pub mod hosts;
pub mod http;
pub mod kubelet;
pub mod prometheus;
pub mod real_kubelet;
