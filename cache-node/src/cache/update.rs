//! Read-modify-write over the one write path: commands whose new value depends on the
//! current one (RESP's `INCR`, `APPEND`, `SETRANGE`, `SET ... GET`/`KEEPTTL`, `EXPIRE`,
//! `PERSIST`, `GETDEL`), and the key walk and flush built on the store's cursor.
//!
//! # Protocol
//! Read the key's live entry, let the caller decide from it, then write (or delete) on the
//! condition that the entry is still the one read: `If-Match` its version, or create-only
//! when there was none. A concurrent writer makes the condition fail; the read and the
//! decision are then repeated. The write itself is an ordinary [`Cache::put`] or
//! [`Cache::delete`], so persistence, replication and acknowledgements are the same as for
//! any other write, and no second write protocol exists.

use bytes::Bytes;

use super::Cache;
use super::error::WriteError;
use super::write::{Removed, Write, Written};
use crate::base::time::Timestamp;
use crate::replication::Replicated;
use crate::store::{DeleteError, Hit, LiveKeys, Preconditions, PutError, ScanStep};

/// How many times a read-modify-write is retried when other writers keep changing the key
/// between its read and its write: far more than any real contention needs, a bound only so
/// that a key rewritten in a tight loop cannot hold a client forever.
const MAX_ROUNDS: usize = 10_000;

/// How many deletes a flush sends through the write path at a time: a batch shares group
/// commits and peer batches without holding every key of a large cache in memory at once.
const FLUSH_BATCH: usize = 1_000;

/// What a read-modify-write does with the key, decided from its current entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Store this value with this expiry.
    Put {
        /// The new value.
        value: Bytes,
        /// The new expiry; `None` = never.
        expires_at: Option<Timestamp>,
    },
    /// Delete the key (nothing happens if it is absent).
    Delete,
    /// Leave the key as it is.
    Keep,
}

/// What a read-modify-write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The value was stored.
    Written(Written),
    /// The key was deleted.
    Removed(Removed),
    /// Nothing changed.
    Kept,
}

impl Updated {
    /// Who acknowledged the change; `None` when nothing changed or nothing replicates.
    pub fn replicated(&self) -> Option<&Replicated> {
        match self {
            Updated::Written(written) => written.replicated.as_ref(),
            Updated::Removed(removed) => removed.replicated.as_ref(),
            Updated::Kept => None,
        }
    }
}

/// Why a read-modify-write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError<E> {
    /// The caller's decision refused the current value (not a number, say).
    #[error(transparent)]
    Decide(E),
    /// The write path refused the write.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Other writers changed the key between every read and write.
    #[error("the key kept changing under concurrent writes; try again")]
    Contended,
}

impl Cache {
    /// Reads `key`, lets `decide` choose an [`Edit`] (and a result for the caller) from its
    /// live entry, and applies it only if the entry is still the one read, repeating from
    /// the read otherwise (see the module documentation).
    ///
    /// # Errors
    /// [`UpdateError`]: `decide` refused, the write path refused, or the key was contended
    /// for [`MAX_ROUNDS`] rounds.
    pub async fn update<T, E>(
        &self,
        key: &Bytes,
        mut decide: impl FnMut(Option<&Hit>) -> Result<(Edit, T), E>,
    ) -> Result<(Updated, T), UpdateError<E>> {
        for _ in 0..MAX_ROUNDS {
            let current = self.get(key).await.map_err(WriteError::from)?;
            let (edit, result) = decide(current.as_ref()).map_err(UpdateError::Decide)?;
            let conditions = current
                .as_ref()
                .map_or_else(Preconditions::create_only, |hit| {
                    Preconditions::if_version(hit.version)
                });
            let outcome = match edit {
                Edit::Keep => return Ok((Updated::Kept, result)),
                Edit::Delete if current.is_none() => return Ok((Updated::Kept, result)),
                Edit::Put { value, expires_at } => {
                    let write = Write {
                        key: key.clone(),
                        value,
                        expires_at,
                        conditions,
                    };
                    self.put(write, None).await.map(Updated::Written)
                }
                Edit::Delete => self
                    .delete(key.clone(), conditions, None)
                    .await
                    .map(Updated::Removed),
            };
            match outcome {
                Ok(updated) => return Ok((updated, result)),
                Err(
                    WriteError::Put(PutError::PreconditionFailed { .. })
                    | WriteError::Delete(
                        DeleteError::PreconditionFailed { .. } | DeleteError::NotFound,
                    ),
                ) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(UpdateError::Contended)
    }

    /// One step of a walk over the live keys from `cursor` (0 starts one; the step's cursor
    /// is 0 when it is complete): at least `count` keys unless the walk ends. Every key live
    /// for the whole walk comes exactly once.
    pub fn scan(&self, cursor: u64, count: usize) -> ScanStep {
        self.store.scan(cursor, count)
    }

    /// A live key chosen by `seed`, or `None` when there is none.
    pub fn random_key(&self, seed: u64) -> Option<Bytes> {
        self.store.random_key(seed)
    }

    /// How many live keys there are, and how many of them expire (expired but unswept
    /// entries and tombstones left out).
    pub fn key_count(&self) -> LiveKeys {
        self.store.live_keys()
    }

    /// Deletes every live key held here through the write path (never from a table behind
    /// the cache), in batches; each delete is conditional
    /// on the version the walk saw, so a key written again meanwhile survives. Returns how
    /// many keys were deleted; `removed` hears of each delete (RESP's `WAIT` follows their
    /// acknowledgements).
    ///
    /// # Errors
    /// The first refusal of the write path other than a key that changed or vanished (a
    /// delete that could not be made durable, too few acknowledgements).
    pub async fn flush(&self, mut removed: impl FnMut(&Removed)) -> Result<u64, WriteError> {
        let mut cursor = 0;
        let mut deleted = 0;
        loop {
            let step = self.scan(cursor, FLUSH_BATCH);
            let deletes: Vec<(Bytes, Preconditions)> = step
                .keys
                .into_iter()
                .filter_map(|key| {
                    let version = self.store.get(&key)?.version;
                    Some((key, Preconditions::if_version(version)))
                })
                .collect();
            // The cache only: with a table behind it, a flush empties the cache, not the table.
            let keys: Vec<Bytes> = deletes.iter().map(|(key, _)| key.clone()).collect();
            let locks = self.lock_for_cached(keys.iter()).await;
            let results = self.delete_cached_many(deletes, None).await;
            drop(locks);
            for result in results {
                match result {
                    Ok(delete) => {
                        removed(&delete);
                        deleted += 1;
                    }
                    Err(WriteError::Delete(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            cursor = step.cursor;
            if cursor == 0 {
                return Ok(deleted);
            }
        }
    }
}
