//! The operator → binary command line: what the operator puts into a pod spec so that
//! cache-node and the janitor start with the cluster's settings.
//!
//! Before this module the contract was a string written twice: the operator spelled flags and
//! environment variable names as literals, and each binary spelled them again in its clap
//! `Config`. Here each binary's input is one typed struct ([`NodeArgs`], [`JanitorArgs`])
//! that renders its own command line ([`Invocation::to_args`]) and environment
//! ([`Invocation::to_env`]), and the flag values (eviction policy, fsync policy, ack level,
//! log format) are enums defined once, whose spelling is both what the operator writes and
//! what the binaries' parsers accept (they implement [`clap::ValueEnum`]).
//!
//! Each binary's tests parse what these structs render with the binary's own parser, so a
//! flag or variable renamed on one side fails a unit test instead of a pod at start-up.
//!
//! # Layout
//! - `values`: the flag-value enums.
//! - `node`: [`NodeArgs`], cache-node's settings.
//! - `janitor`: [`JanitorArgs`], the janitor's settings.

mod janitor;
mod node;
mod values;

pub use janitor::JanitorArgs;
pub use node::{
    NodeArgs, NodeBackend, NodeTls, PEER_TOKEN_KEY, PEER_TOKEN_PREVIOUS_KEY, Partitioned,
};
pub use values::{
    AckLevel, BackendKind, BackendMode, EvictionPolicy, FsyncPolicy, LogFormat, ReplicationMode,
};

/// What the operator gives a binary when it starts it: flags and environment variables.
pub trait Invocation {
    /// The command-line arguments after the program name, each as `--flag=value`.
    fn to_args(&self) -> Vec<String>;

    /// The environment variables the binary reads, with where each value comes from.
    fn to_env(&self) -> Vec<EnvVar>;
}

/// One environment variable of a binary's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name, as the binary's parser reads it.
    pub name: &'static str,
    /// Where the kubelet takes its value from.
    pub source: EnvSource,
}

/// Where an environment variable's value comes from. A value that differs per pod, or that
/// must not appear in the pod spec, cannot be a flag: the pod template is shared by every pod
/// and readable by anyone who can read the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// A value known when the pod template is built.
    Value(String),
    /// A field of the pod itself (the downward API), known only once the pod exists.
    PodField(PodField),
    /// A key of a Secret in the pod's namespace, so that the value stays out of the pod spec.
    SecretKey(SecretKeyRef),
}

/// A field of the pod that the downward API can put into an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodField {
    /// The pod's name (for a StatefulSet pod, its stable identity).
    Name,
    /// The pod's namespace.
    Namespace,
}

impl PodField {
    /// The field path of the downward API, e.g. `metadata.name`.
    pub fn path(self) -> &'static str {
        match self {
            PodField::Name => "metadata.name",
            PodField::Namespace => "metadata.namespace",
        }
    }
}

/// A key of a Secret; the pod does not start until the Secret and its key exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key whose value is used.
    pub key: String,
}
