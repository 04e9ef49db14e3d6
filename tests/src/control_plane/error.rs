//! The one error type of the harness: every variant says which step failed and carries
//! what is needed to debug it (the command, the path, or the tail of a component's log),
//! because a failing end-to-end test is read long after the processes are gone.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why the local control plane could not be built, started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `build.sh` failed or printed no directory.
    #[error("building the control plane with {script}: {reason}")]
    Build {
        /// The build script that was run.
        script: PathBuf,
        /// What went wrong (exit status, or missing output).
        reason: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key generation failed.
    #[error("generating {what}: {source}")]
    Certificate {
        /// Which certificate or key.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// The admin kubeconfig could not be loaded into a client configuration.
    #[error("loading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Api {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// A component exited while it should have been running.
    #[error("{component} exited unexpectedly ({status}); last lines of its log:\n{log_tail}")]
    Exited {
        /// The component's name.
        component: &'static str,
        /// How it ended.
        status: ExitStatus,
        /// The end of its log file.
        log_tail: String,
    },
    /// A pod asks for something the test kubelet does not provide.
    #[error("pod {pod}: {what}")]
    Unsupported {
        /// `namespace/name` of the pod.
        pod: String,
        /// What it asked for.
        what: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}; last observed: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// The last state or error seen, to tell "slow" from "stuck".
        last: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn api(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;
