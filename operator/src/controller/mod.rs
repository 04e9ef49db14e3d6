//! The reconciler: validate → build → apply → observe → status, the only part of the operator
//! that talks to the API.
//!
//! # Layout
//! - `driver`: the watches that trigger reconciles, and the retry backoff after a failure.
//! - `pipeline`: one reconcile, step by step, and how a failure or an invalid spec is
//!   reported (status, Events).
//! - `apply`: the apply engine: server-side apply of what differs, then one sweep that deletes
//!   the children no longer built, by label, for every child kind, from the caches of the
//!   driver's watches.
//! - `caches`: the caches of the children's watches (read by the sweep), and which of their
//!   events start a reconcile.
//! - `observe`: the reads the status is computed from (pods, nodes, the janitor's Jobs, and in
//!   Partitioned mode the pods' partition holdings).
//! - `holdings`: asks the cache pods of a Partitioned cluster which partitions are moving.
//! - `peer_token`: the generated Secret the cache pods authenticate to each other with
//!   (created once, rotated on request; the one write that is not a server-side apply).
//! - `update_status`: the status write, skipped when the status did not change.
//! - `context`: what reconciles share: the client, the Event recorder, metrics, the clock and
//!   the failure counts.
//!
//! # Guarantees
//! - Every write is a server-side apply under the one field manager
//!   [`crate::labels::MANAGER`],
//!   except the deletion of a child the spec no longer asks for.
//! - A child is written only when it differs from what was built (its applied-hash annotation
//!   differs, or one of the built fields was changed by someone else), and the status only
//!   when it differs from the stored one: reconciling an unchanged CacheCluster makes no
//!   writes, so the watch on the children cannot loop.
//! - Drift is undone: the controller watches the children it owns, and a deleted or edited
//!   child no longer matches what was built.
//! - A child that is no longer built is deleted, whatever its kind, but only if this cluster
//!   owns it: a same-named object of someone else, or a retained volume, stays.
//! - An invalid spec writes `Ready=False` with reason `InvalidSpec`, publishes a Warning Event
//!   when the message is new, and waits for the next change of the resource.
//!
//! # Assumptions
//! - Children are removed by garbage collection through their ownerReferences, so deletion of
//!   the cluster needs no finalizer (a retained volume deliberately has no ownerReference).
//! - Quantities in `spec.resources` are written in canonical form; a non-canonical one (such
//!   as `0.5`) is re-applied on each reconcile, which is harmless but not free.
//! - The operator may delete only the kinds `deploy/rbac.yaml` lets it delete (today the
//!   PodDisruptionBudget, the only child that can stop being built); deleting another kind
//!   fails the reconcile with the API server's refusal in `Degraded`.

mod apply;
mod caches;
mod context;
mod driver;
mod holdings;
mod observe;
mod peer_token;
mod pipeline;
mod update_status;

pub use context::Context;
pub use driver::run;

use crate::validate::ValidationError;

/// Why a reconcile failed. Each variant names the step and object, and is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks metadata the API server always sets.
    #[error("CacheCluster cannot be reconciled")]
    Metadata(#[source] ValidationError),
    /// The operating system's random generator failed (generating a peer token).
    #[error("cannot generate a peer token: {0}")]
    Random(String),
    /// Reading a child failed.
    #[error("failed to read {kind} {name}")]
    Get {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Applying a child failed.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The watch of one kind of child, whose cache the sweep reads, has stopped (the operator
    /// is shutting down).
    #[error("the watch of the {kind} children has stopped")]
    Watch {
        /// The children's kind.
        kind: String,
    },
    /// Deleting a child that is no longer wanted failed.
    #[error("failed to delete {kind} {name}")]
    Delete {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing the pods, nodes or Jobs that status is computed from failed.
    #[error("failed to observe {what} of CacheCluster {cluster}")]
    Observe {
        /// What was being read.
        what: &'static str,
        /// The CacheCluster.
        cluster: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("failed to write the status of CacheCluster {name}")]
    Status {
        /// The CacheCluster.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A built object could not be serialised (a bug: the types always serialise).
    #[error("failed to serialise {kind} {name}")]
    Serialize {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The variant's name, used as the failure metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Metadata(_) => "Metadata",
            Error::Random(_) => "Random",
            Error::Get { .. } => "Get",
            Error::Apply { .. } => "Apply",
            Error::Watch { .. } => "Watch",
            Error::Delete { .. } => "Delete",
            Error::Observe { .. } => "Observe",
            Error::Status { .. } => "Status",
            Error::Serialize { .. } => "Serialize",
        }
    }
}

#[cfg(test)]
mod tests;
