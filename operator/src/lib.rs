//! The tidecache operator as a library, so that the binaries stay thin and every step is
//! testable without an API server.
//!
//! # Layout
//! The reconcile pipeline follows the data: [`crd`] (what the admin writes) →
//! [`validate`] (one [`validate::ValidatedCluster`] or a message saying what to fix) →
//! [`build`] (pure functions from the validated cluster to the child objects) →
//! [`controller`] (server-side apply of what differs, the sweep of children no longer built,
//! the observation, then status) → [`status`] (pure computation of the status and its
//! conditions). [`labels`] owns every label key and child
//! name; [`crdgen`] renders the CRD YAML checked into `crds/`. The process around it —
//! leader election ([`leader`]), metrics and health ([`telemetry`]), the admission webhook
//! ([`webhook`]) — is
//! wired in `main.rs`.

pub mod build;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod labels;
pub mod leader;
pub mod status;
pub mod telemetry;
pub mod validate;
pub mod webhook;

#[cfg(test)]
mod fixtures;

/// An error and its causes on one line, for logs, Events and conditions. Causes that the error's
/// own message already contains (kube's errors print theirs) are not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
