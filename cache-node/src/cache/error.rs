//! Why a write or delete was not acknowledged: one type for every front end, which each
//! translates into its protocol's refusal (an HTTP status and JSON body, a RESP error).

use tidecache_contract::disk::RecordError;

use crate::backend::BackendError;
use crate::base::journal::CommitError;
use crate::replication::AckError;
use crate::store::{DeleteError, PutError};

/// A write or delete the cache did not acknowledge. Except for [`WriteError::Ack`], nothing
/// changed; with `Ack` the change is applied on this node and spreads by anti-entropy, but
/// the level asked for was not reached in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    /// The store refused the write: a failed precondition, an expiry not in the future or
    /// past the schedule, or no room.
    #[error(transparent)]
    Put(#[from] PutError),
    /// The store refused the delete: a failed precondition, or no such key.
    #[error(transparent)]
    Delete(#[from] DeleteError),
    /// The change could not be made durable and was undone.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Too few replicas acknowledged in time.
    #[error(transparent)]
    Ack(#[from] AckError),
    /// The record could not be encoded for the replicas: a write the limits should have
    /// refused before it reached the store. (The reason as text, so that a forwarded write
    /// carries it back.)
    #[error("cannot encode the record for the replicas: {0}")]
    Encode(String),
    /// Partitioned mode: no owner of the key could be reached to forward the change to.
    /// Nothing changed unless the owner applied it before the connection failed; retrying is
    /// safe for unconditional writes.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// The database behind the cache did not take the change (write-through), its queue is
    /// full or broken (write-behind), or the key's current row could not be read for a
    /// conditional change. Nothing changed in the cache.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<ReadError> for WriteError {
    fn from(error: ReadError) -> WriteError {
        match error {
            ReadError::Unreachable(error) => WriteError::Unreachable(error),
            ReadError::Backend(error) => WriteError::Backend(error),
        }
    }
}

/// Why a read was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ReadError {
    /// Partitioned mode: no owner of the key answered.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// A miss the database behind the cache could not answer.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<RecordError> for WriteError {
    fn from(error: RecordError) -> WriteError {
        WriteError::Encode(error.to_string())
    }
}

/// No owner of a key answered a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("no owner of the key answered (tried {owners}): {reason}")]
pub struct Unreachable {
    /// The owners tried, by address.
    pub owners: String,
    /// Why the last one failed.
    pub reason: String,
}
