//! Leader election on a `coordination.k8s.io/v1` Lease (through `kube-lease-manager`), so that
//! two operator replicas never reconcile at the same time: only the holder of the Lease runs the
//! controller, and a replica that loses the Lease stops reconciling at once.
//!
//! # Task ownership
//! The Lease is held by one task spawned on the caller's [`TaskTracker`], so the process waits
//! for it at shutdown like for every other task. It is stopped by a [`CancellationToken`] that
//! [`Candidacy`] owns: [`Candidacy::release`] (or dropping the candidacy) cancels it, and the
//! task then releases the Lease before it ends, so a successor can take over at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Seconds a Lease is valid without renewal: how long a crashed leader blocks a successor.
pub const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the holder renews.
pub const RENEW_GRACE_SECONDS: u64 = 5;
/// First pause after the Lease could not be read or written; doubled per failure in a row.
const RETRY_START: Duration = Duration::from_secs(1);
/// Longest pause between attempts after failures (kube-lease-manager's own watcher's limit).
const RETRY_MAX: Duration = Duration::from_secs(30);

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

/// This replica's candidacy: a task keeps trying to take and renew the Lease until the
/// candidacy is released.
pub struct Candidacy {
    /// `true` while this replica holds the Lease.
    leading: watch::Receiver<bool>,
    /// Stops the Lease task when released or dropped.
    stop: DropGuard,
    /// The Lease task; its result says whether the Lease was released.
    task: JoinHandle<Result<(), LeaderError>>,
}

impl Candidacy {
    /// Starts competing for the Lease `namespace/name` as `identity`, in a task on `tasks`.
    ///
    /// # Errors
    /// [`LeaderError::Setup`] if the Lease cannot be created or read (RBAC, API down).
    pub async fn start(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        tasks: &TaskTracker,
    ) -> Result<Candidacy, LeaderError> {
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(RENEW_GRACE_SECONDS)
            // One field manager per candidate: the library detects two candidates taking an
            // expired Lease at once by the server-side-apply conflict between their managers,
            // which one shared manager name would hide.
            .with_field_manager(format!("{}-{identity}", crate::labels::MANAGER))
            .build()
            .await
            .map_err(|source| LeaderError::Setup {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source,
            })?;
        let (sender, leading) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tasks.spawn(hold(manager, sender, stop.clone()));
        Ok(Candidacy {
            leading,
            stop: stop.drop_guard(),
            task,
        })
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

    /// Stops competing and gives the Lease up so that a successor can take over at once;
    /// returns when the Lease task has ended.
    ///
    /// # Errors
    /// [`LeaderError::Release`] if the Lease could not be released, [`LeaderError::Stopped`] if
    /// the task panicked.
    pub async fn release(self) -> Result<(), LeaderError> {
        drop(self.stop);
        self.task.await.unwrap_or(Err(LeaderError::Stopped))
    }
}

/// The Lease task: takes the Lease when it is free and renews it while held, publishing each
/// change in `leading`, until `stop`; then releases the Lease. Errors of the API are retried
/// with backoff, as kube-lease-manager's own watcher does.
async fn hold(
    manager: LeaseManager,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) -> Result<(), LeaderError> {
    let mut retry = RETRY_START;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            changed = manager.changed() => match changed {
                Ok(state) => {
                    retry = RETRY_START;
                    leading.send_replace(state);
                }
                Err(error) => {
                    warn!(%error, retry = ?retry, "cannot update the leader Lease");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = retry.saturating_mul(2).min(RETRY_MAX);
                }
            },
        }
    }
    manager.release().await.map_err(LeaderError::Release)
}
