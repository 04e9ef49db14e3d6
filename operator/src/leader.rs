//! Leader election on a `coordination.k8s.io/v1` Lease (through `kube-lease-manager`), so that
//! two operator replicas never reconcile at the same time: only the holder of the Lease runs the
//! controller, and a replica that loses the Lease stops reconciling at once.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Seconds a Lease is valid without renewal: how long a crashed leader blocks a successor.
pub const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the holder renews.
pub const RENEW_GRACE_SECONDS: u64 = 5;

/// Why leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be created or read.
    #[error("failed to set up the leader Lease {namespace}/{name}")]
    Setup {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The cause.
        #[source]
        source: LeaseManagerError,
    },
    /// The background task that holds the Lease stopped.
    #[error("the leader election task stopped")]
    Stopped,
    /// Releasing the Lease on shutdown failed (a successor then waits for it to expire).
    #[error("failed to release the leader Lease")]
    Release(#[source] LeaseManagerError),
}

/// This replica's candidacy: a background task keeps trying to take and renew the Lease.
pub struct Candidacy {
    /// `true` while this replica holds the Lease.
    leading: watch::Receiver<bool>,
    /// The task holding the Lease; it releases the Lease when `leading` is dropped.
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Candidacy {
    /// Starts competing for the Lease `namespace/name` as `identity`.
    ///
    /// # Errors
    /// [`LeaderError::Setup`] if the Lease cannot be created or read (RBAC, API down).
    pub async fn start(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
    ) -> Result<Candidacy, LeaderError> {
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(RENEW_GRACE_SECONDS)
            .with_field_manager(crate::labels::MANAGER)
            .build()
            .await
            .map_err(|source| LeaderError::Setup {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source,
            })?;
        let (leading, task) = manager.watch().await;
        Ok(Candidacy { leading, task })
    }

    /// Waits until this replica holds the Lease.
    ///
    /// # Errors
    /// [`LeaderError::Stopped`] if the election task ended.
    pub async fn acquired(&mut self) -> Result<(), LeaderError> {
        self.leading
            .wait_for(|leading| *leading)
            .await
            .map(|_| ())
            .map_err(|_| LeaderError::Stopped)
    }

    /// Completes when this replica no longer holds the Lease (or the election task ended).
    pub async fn lost(&mut self) {
        // An error means the task ended, which also means the Lease is no longer renewed.
        let _ = self.leading.wait_for(|leading| !*leading).await;
    }

    /// Gives the Lease up so that a successor can take over at once.
    ///
    /// # Errors
    /// [`LeaderError::Release`] if the Lease could not be released, [`LeaderError::Stopped`] if
    /// the task panicked.
    pub async fn release(self) -> Result<(), LeaderError> {
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(LeaderError::Release(error)),
            Err(_) => Err(LeaderError::Stopped),
        }
    }
}
