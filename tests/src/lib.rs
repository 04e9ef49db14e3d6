//! End-to-end harness (see the local-cluster issue).
