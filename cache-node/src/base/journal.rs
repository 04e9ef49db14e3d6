//! The journal hook: how a change the store makes in memory reaches a durable log (the shared
//! volume today, replicas later) before the client is told it happened.
//!
//! # Protocol
//! 1. A write or delete is applied in memory under its key's shard lock, and under that same
//!    lock handed to [`Journal::append`]: the journal sees each key's changes in the order memory
//!    saw them, which is what lets a failed change be undone correctly (see below).
//! 2. The caller awaits the returned [`Commit`] and acknowledges the client only if it succeeds.
//! 3. If the change cannot be made durable, the journal undoes it in memory with
//!    [`Undo::revert`], so that nothing unacknowledged stays visible.
//!
//! A change is visible to readers between steps 1 and 2 (as in Redis): a reader may see a write
//! whose client has not been answered yet, and, if the node then crashes before the fsync,
//! never see it again. The alternative, applying after the fsync, would let two concurrent
//! compare-and-set writes both pass their precondition.

use std::fmt;

use bytes::Bytes;

use super::time::Timestamp;
use super::version::Version;

/// Where changes go to become durable. Implemented by the persistence log.
pub trait Journal: fmt::Debug + Send + Sync {
    /// Takes `change`, already applied in memory, and returns the commit to await. Called with
    /// the key's shard lock held: it must only enqueue, never block on I/O.
    fn append(&self, change: Change) -> Commit;
}

/// One change of one key, as applied in memory.
#[derive(Debug, Clone)]
pub struct Change {
    /// The key.
    pub key: Bytes,
    /// The version of the write, or the new version of the delete (the tombstone's).
    pub version: Version,
    /// The new value; `None` for a delete.
    pub value: Option<Bytes>,
    /// The new entry's expiry (a write only).
    pub expires_at: Option<Timestamp>,
    /// The bucket (fire time) the new entry is filed under (a write only).
    pub bucket: Option<Timestamp>,
    /// The live entry the change replaced or deleted: what a revert restores, and where a
    /// delete's tombstone must go so that it lives as long as the record it shadows.
    pub previous: Option<Previous>,
}

impl Change {
    /// Whether the change is a delete.
    pub fn is_delete(&self) -> bool {
        self.value.is_none()
    }
}

/// A live entry as it was before a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// Its value.
    pub value: Bytes,
    /// Its version.
    pub version: Version,
    /// Its expiry.
    pub expires_at: Option<Timestamp>,
    /// Its bucket.
    pub bucket: Option<Timestamp>,
}

/// Why a change could not be made durable. The change was reverted in memory; the client must
/// be told that nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CommitError {
    /// The volume has no space (or quota) left.
    #[error("the data volume is full: {0}")]
    DiskFull(String),
    /// Writing failed for another reason.
    #[error("writing to the data volume failed: {0}")]
    Io(String),
    /// An fsync failed earlier: the node no longer acknowledges writes and is restarting to
    /// recover from disk.
    #[error("persistence has stopped after a failed fsync; the node is restarting")]
    Stopped,
}

/// The outcome of a change that is on its way to the journal.
#[derive(Debug)]
pub struct Commit(CommitState);

#[derive(Debug)]
enum CommitState {
    /// Decided when appended (e.g. refused because the journal has stopped).
    Done(Result<(), CommitError>),
    /// Decided by the journal's writer later.
    Waiting(tokio::sync::oneshot::Receiver<Result<(), CommitError>>),
}

/// The journal's side of a [`Commit`]: decides it.
#[derive(Debug)]
pub struct CommitSender(tokio::sync::oneshot::Sender<Result<(), CommitError>>);

impl Commit {
    /// A commit the journal decides later through the returned sender.
    pub fn pending() -> (CommitSender, Commit) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (CommitSender(tx), Commit(CommitState::Waiting(rx)))
    }

    /// A commit decided already.
    pub fn done(result: Result<(), CommitError>) -> Commit {
        Commit(CommitState::Done(result))
    }

    /// Waits until the change is durable (as the fsync policy defines it) or has failed. A
    /// journal that went away without deciding counts as stopped.
    ///
    /// # Errors
    /// The [`CommitError`] the journal decided.
    pub async fn wait(self) -> Result<(), CommitError> {
        match self.0 {
            CommitState::Done(result) => result,
            CommitState::Waiting(rx) => rx.await.unwrap_or(Err(CommitError::Stopped)),
        }
    }
}

impl CommitSender {
    /// Decides the commit. A waiter that has gone away (client disconnected) is not an error.
    pub fn send(self, result: Result<(), CommitError>) {
        let _ = self.0.send(result);
    }
}

/// The result of a journaled write or delete: what memory did, and the commit to await before
/// acknowledging it.
#[derive(Debug)]
pub struct Journaled<T> {
    /// What the store did in memory.
    pub outcome: T,
    /// `None` when the store has no journal (memory only): acknowledge at once.
    pub commit: Option<Commit>,
}

impl<T> Journaled<T> {
    /// Waits for the commit, then yields the outcome.
    ///
    /// # Errors
    /// The [`CommitError`] of a change that did not become durable (already reverted).
    pub async fn durable(self) -> Result<T, CommitError> {
        if let Some(commit) = self.commit {
            commit.wait().await?;
        }
        Ok(self.outcome)
    }
}

/// What the journal needs from the store to undo a change that did not become durable.
pub trait Undo: fmt::Debug + Send + Sync {
    /// Undoes a change that could not be made durable, if memory still shows it: a write whose
    /// version is still the key's, or a delete whose key is still absent. The key then holds
    /// `restore` (the last durable state, which the journal tracks) or nothing.
    fn revert(&self, change: &Change, restore: Option<&Previous>);
    /// Called once a delete is durable: removes the key if memory holds a version older than
    /// the tombstone's, which only a revert of an earlier failed change can have put back.
    fn settle_delete(&self, key: &[u8], tombstone: Version);
}
