//! The cache with a PostgreSQL table behind it (docs/backend.md): reads that miss load the
//! row, writes reach the table (write-through: committed before the cache applies them;
//! write-behind: queued as the cache applies them), and the table's changes by other
//! applications refresh what the cache holds.
//!
//! # Protocol of a write that reaches the table
//! 1. Lock the changes' keys (striped, in one order, so batches cannot deadlock): while a
//!    change is between the table and the cache, no other write of its key through this
//!    node can come between.
//! 2. Check each value against its column, and read the current entry of every change
//!    that depends on it (a conditional write, a delete), loading it from the table on a
//!    miss: `If-Match` on a key the cache does not hold yet is decided by the row.
//! 3. Write-through: one statement for the changes whose conditions hold; a refusal of the
//!    database refuses them all, and the cache stays as it was. Write-behind: refuse the
//!    changes if the queue has no room for them.
//! 4. The write path's steps (`cache/write.rs`), queueing each applied change for the table
//!    in write-behind mode before the keys are unlocked.
//!
//! Loads and refreshes go through the write path too, but stay in the cache
//! (`Cache::put_cached_many`, `Cache::delete_cached_many`): a load is a create-only write (a client's write that came first
//! wins), a refresh is conditional on the version it checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, MutexGuard};

use super::Cache;
use super::error::{ReadError, WriteError};
use super::write::{Change, Write};
use crate::backend::{Backend, BackendError, BackendMode, Changed, Op, Row};
use crate::base::time::Timestamp;
use crate::base::version::Version;
use crate::replication::AckLevel;
use crate::store::{Hit, Preconditions};

/// A create-only write of a loaded row (or of a queued write-behind write).
fn write_of(key: Bytes, value: Bytes, expires_at: Option<Timestamp>) -> Write {
    Write {
        key,
        value,
        expires_at,
        conditions: Preconditions::create_only(),
    }
}

/// A row answered without being stored: no version of its own.
fn unstored(write: Write) -> Hit {
    Hit {
        value: write.value,
        version: Version::new(0),
        expires_at: write.expires_at,
    }
}

/// Lock stripes of the keys being written: enough that unrelated keys rarely share one.
const STRIPES: usize = 1024;

/// Keys checked against the table per query when everything may have changed.
const REVALIDATE_BATCH: usize = 1000;

/// The locks of keys whose writes are between the table and the cache, and a generation per
/// stripe that every such write and every refresh advances: a load whose stripe's generation
/// moved while it queried may hold a row older than the cache's knowledge, and is not stored.
pub(super) struct KeyLocks {
    stripes: Box<[(Mutex<()>, AtomicU64)]>,
}

impl std::fmt::Debug for KeyLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLocks").finish_non_exhaustive()
    }
}

/// The stripe of `key`.
fn stripe(key: &[u8]) -> usize {
    crc32c::crc32c(key) as usize % STRIPES
}

impl KeyLocks {
    pub(super) fn new() -> KeyLocks {
        KeyLocks {
            stripes: (0..STRIPES)
                .map(|_| (Mutex::new(()), AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Locks the stripes of `keys`, each once, in ascending order.
    pub(super) async fn lock_all<'k>(
        &self,
        keys: impl Iterator<Item = &'k Bytes>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(|key| stripe(key)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].0.lock().await);
        }
        guards
    }

    /// Advances the generation of the stripes of `keys`.
    pub(super) fn advance<'k>(&self, keys: impl Iterator<Item = &'k Bytes>) {
        for key in keys {
            self.stripes[stripe(key)].1.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The generation of `key`'s stripe now.
    fn generation(&self, key: &[u8]) -> u64 {
        self.stripes[stripe(key)].1.load(Ordering::Acquire)
    }
}

/// Whether the caller of a read already holds the keys' locks (a write's own check of the
/// current entries), so that storing loaded rows must not take them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locks {
    /// Take the locks to store the rows.
    Take,
    /// Held by the caller.
    Held,
}

impl Cache {
    /// The database behind the cache, when writes reach it (write-through, write-behind).
    pub(super) fn writing_backend(&self) -> Option<Arc<Backend>> {
        self.backend
            .as_ref()
            .filter(|backend| backend.mode() != BackendMode::ReadThrough)
            .cloned()
    }

    /// The key's live entry held here, loaded from the table on a miss.
    pub(super) async fn read_local(&self, key: &[u8]) -> Result<Option<Hit>, ReadError> {
        if let Some(hit) = self.store.get(key) {
            return Ok(Some(hit));
        }
        if self.backend.is_none() {
            return Ok(None);
        }
        let key = Bytes::copy_from_slice(key);
        self.read_local_many(std::slice::from_ref(&key))
            .await
            .pop()
            .unwrap_or(Ok(None))
    }

    /// The live entries of `keys` held here; the misses loaded from the table in one query
    /// (single-flight: keys another request is loading wait for that load) and stored.
    pub(super) async fn read_local_many(
        &self,
        keys: &[Bytes],
    ) -> Vec<Result<Option<Hit>, ReadError>> {
        self.read_through(keys, Locks::Take).await
    }

    /// [`Cache::read_local_many`], the keys' locks taken to store the loaded rows or held by
    /// the caller. A miss of a key with write-behind writes still queued is answered from the
    /// newest of them, never from the table, which does not have them yet. A loaded row is
    /// stored only if no write or refresh of its stripe came while it was read.
    pub(super) async fn read_through(
        &self,
        keys: &[Bytes],
        locks: Locks,
    ) -> Vec<Result<Option<Hit>, ReadError>> {
        let mut results: Vec<Result<Option<Hit>, ReadError>> =
            keys.iter().map(|key| Ok(self.store.get(key))).collect();
        let Some(backend) = &self.backend else {
            return results;
        };
        let now = self.now();
        let mut fills = Vec::new();
        let mut misses = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if !matches!(results[i], Ok(None)) {
                continue;
            }
            match self.outbox.get().and_then(|outbox| outbox.newest(key)) {
                // Deleted, and the delete not yet in the table.
                Some(Op { value: None, .. }) => {}
                Some(Op {
                    value: Some(value),
                    expires_at,
                    ..
                }) => {
                    if expires_at.is_none_or(|at| at > now) {
                        fills.push((i, write_of(key.clone(), value, expires_at), None));
                    }
                }
                None => misses.push(i),
            }
        }
        // Held until the rows are stored: reads arriving meanwhile take them, not a query.
        let mut _settle = None;
        if !misses.is_empty() {
            let missed: Vec<Bytes> = misses.iter().map(|&i| keys[i].clone()).collect();
            let generations: Vec<u64> = missed
                .iter()
                .map(|key| self.key_locks.generation(key))
                .collect();
            let (loaded, settle) = backend.load(&missed).await;
            _settle = Some(settle);
            for (((&i, key), generation), row) in
                misses.iter().zip(missed).zip(generations).zip(loaded)
            {
                match row {
                    Err(error) => results[i] = Err(error.into()),
                    Ok(None) => {}
                    Ok(Some(row)) => {
                        if let Some(expires_at) = self.expiry_of(&row, now) {
                            fills.push((i, write_of(key, row.value, expires_at), Some(generation)));
                        }
                    }
                }
            }
        }
        if fills.is_empty() {
            return results;
        }
        let guards = match locks {
            Locks::Take => {
                self.key_locks
                    .lock_all(fills.iter().map(|(_, write, _)| &write.key))
                    .await
            }
            Locks::Held => Vec::new(),
        };
        let mut stored = Vec::with_capacity(fills.len());
        let mut answers = Vec::new();
        for (i, write, generation) in fills {
            let current = generation.is_none_or(|generation| {
                locks == Locks::Held || self.key_locks.generation(&write.key) == generation
            });
            if current {
                stored.push((i, write));
            } else {
                // Read before a write or a change of the table that came while it was
                // read: the answer, not something to keep.
                answers.push((i, write));
            }
        }
        let (positions, writes): (Vec<usize>, Vec<Write>) = stored.into_iter().unzip();
        let outcomes = self.put_cached_many(writes.clone()).await;
        drop(guards);
        for ((i, write), outcome) in positions.into_iter().zip(writes).zip(outcomes) {
            results[i] = Ok(match outcome {
                Ok(written) => Some(Hit {
                    value: write.value,
                    version: written.version,
                    expires_at: write.expires_at,
                }),
                // A client's write came first (it is newer than the row read), or the
                // cache has no room: the row is still the answer.
                Err(_) => self.store.get(&write.key).or_else(|| Some(unstored(write))),
            });
        }
        for (i, write) in answers {
            results[i] = Ok(self.store.get(&write.key).or_else(|| Some(unstored(write))));
        }
        results
    }

    /// The expiry a row is cached with: its expiry column (no later than `--max-ttl`), else
    /// the default TTL; `None` when the row has expired.
    fn expiry_of(&self, row: &Row, now: Timestamp) -> Option<Option<Timestamp>> {
        let max = self.limits.max_ttl.and_then(|max| now.checked_add(max));
        let expires_at = match row.expires_at {
            Some(at) if at <= now => return None,
            Some(at) => Some(max.map_or(at, |max| at.min(max))),
            None => self
                .limits
                .default_ttl
                .or(self.limits.max_ttl)
                .and_then(|ttl| now.checked_add(ttl)),
        };
        Some(expires_at.and_then(|at| self.limits.check_expiry(at).ok().or(max)))
    }

    /// Steps 2 and 3 of the protocol (see the module documentation) for `changes`, whose
    /// keys are locked: those that may go on, and the refusals.
    pub(super) async fn prepare<C: Change>(
        &self,
        backend: &Arc<Backend>,
        changes: Vec<C>,
    ) -> Vec<Result<C, WriteError>> {
        let mut prepared: Vec<Result<C, WriteError>> = Vec::with_capacity(changes.len());
        for change in changes {
            let row = change.row();
            prepared.push(
                match backend.check(change.key(), row.as_ref().map(|row| &row.value[..])) {
                    Ok(()) => Ok(change),
                    Err(error) => Err(error.into()),
                },
            );
        }
        // The current entries of the changes that depend on them.
        let dependent: Vec<usize> = (0..prepared.len())
            .filter(|&i| matches!(&prepared[i], Ok(change) if change.conditions().is_some()))
            .collect();
        let keys: Vec<Bytes> = dependent
            .iter()
            .filter_map(|&i| prepared[i].as_ref().ok().map(|change| change.key().clone()))
            .collect();
        let current = self.read_through(&keys, Locks::Held).await;
        let mut passing = vec![true; prepared.len()];
        for (&i, current) in dependent.iter().zip(current) {
            let Ok(change) = &prepared[i] else {
                continue;
            };
            match current {
                Err(error) => prepared[i] = Err(error.into()),
                Ok(current) => {
                    let version = current.as_ref().map(|hit| hit.version);
                    let holds = change
                        .conditions()
                        .is_none_or(|conditions| conditions.hold(version));
                    // A delete of an absent key, or a change whose conditions fail, is
                    // refused by the store as it would be without a table.
                    passing[i] = holds && (change.row().is_some() || current.is_some());
                }
            }
        }
        let going: Vec<usize> = (0..prepared.len())
            .filter(|&i| passing[i] && prepared[i].is_ok())
            .collect();
        if going.is_empty() {
            return prepared;
        }
        let refusal = match backend.mode() {
            BackendMode::WriteThrough => {
                let mut rows = Vec::new();
                let mut deletes = Vec::new();
                for &i in &going {
                    if let Ok(change) = &prepared[i] {
                        match change.row() {
                            Some(row) => rows.push((change.key().clone(), row)),
                            None => deletes.push(change.key().clone()),
                        }
                    }
                }
                let upserted = if rows.is_empty() {
                    Ok(())
                } else {
                    backend.upsert(&rows).await
                };
                match upserted {
                    Ok(()) if !deletes.is_empty() => backend.remove(&deletes).await.err(),
                    Ok(()) => None,
                    Err(error) => Some(error),
                }
            }
            BackendMode::WriteBehind => match self.outbox.get() {
                None => Some(BackendError::Queue("the queue is not open yet".into())),
                Some(outbox) => {
                    let bytes = going
                        .iter()
                        .filter_map(|&i| prepared[i].as_ref().ok())
                        .map(|change| {
                            Op {
                                key: change.key().clone(),
                                value: change.row().map(|row| row.value),
                                expires_at: None,
                            }
                            .cost()
                        })
                        .sum();
                    outbox.check_room(going.len(), bytes).err()
                }
            },
            BackendMode::ReadThrough => None,
        };
        if let Some(error) = refusal {
            for i in going {
                prepared[i] = Err(error.clone().into());
            }
        }
        prepared
    }

    /// Checks the cached entries of `keys` against the table: a changed row replaces the
    /// entry, a deleted one deletes it, each conditional on the version checked and under
    /// the keys' locks (so that it cannot come between a write's statement and its apply).
    /// Keys not held here, and keys with write-behind writes still queued (the cache is
    /// ahead of the table), are left alone; loads of the keys running meanwhile are not
    /// stored (they may have read the row before the change).
    ///
    /// # Errors
    /// The query failed: nothing was checked.
    pub(super) async fn refresh(&self, keys: Vec<Bytes>) -> Result<(), BackendError> {
        let Some(backend) = &self.backend else {
            return Ok(());
        };
        self.key_locks.advance(keys.iter());
        let outbox = self.outbox.get();
        let held: Vec<(Bytes, Hit)> = keys
            .into_iter()
            .filter(|key| outbox.is_none_or(|outbox| !outbox.is_pending(key)))
            .filter_map(|key| {
                let hit = self.store.get(&key)?;
                Some((key, hit))
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let keys: Vec<Bytes> = held.iter().map(|(key, _)| key.clone()).collect();
        let rows = backend.select(keys).await?;
        let now = self.now();
        let max = self.limits.max_ttl.and_then(|max| now.checked_add(max));
        let has_expiry = backend.settings().expiry_column.is_some();
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for ((key, hit), row) in held.into_iter().zip(rows) {
            let conditions = Preconditions::if_version(hit.version);
            let Some(row) = row else {
                deletes.push((key, conditions));
                continue;
            };
            let Some(expires_at) = self.expiry_of(&row, now) else {
                deletes.push((key, conditions));
                continue;
            };
            // The cached lifetime stands unless the row sets another: no expiry column, a
            // NULL expiry (the cache's default applies), or one past --max-ttl (capped).
            let same_expiry = match row.expires_at {
                _ if !has_expiry => true,
                None => true,
                Some(at) if max.is_some_and(|max| at > max) => hit.expires_at.is_some(),
                Some(_) => expires_at == hit.expires_at,
            };
            if row.value == hit.value && same_expiry {
                backend.metrics().refreshed("unchanged");
                continue;
            }
            puts.push(Write {
                key,
                value: row.value,
                expires_at: if same_expiry {
                    hit.expires_at
                } else {
                    expires_at
                },
                conditions,
            });
        }
        let _locks = self
            .key_locks
            .lock_all(
                puts.iter()
                    .map(|write| &write.key)
                    .chain(deletes.iter().map(|(key, _)| key)),
            )
            .await;
        for outcome in self.put_cached_many(puts).await {
            if outcome.is_ok() {
                backend.metrics().refreshed("updated");
            }
        }
        for outcome in self.delete_cached_many(deletes, Some(AckLevel::One)).await {
            if outcome.is_ok() {
                backend.metrics().refreshed("deleted");
            }
        }
        Ok(())
    }

    /// Checks every cached key against the table, a batch at a time.
    ///
    /// # Errors
    /// A query failed; the check stops there.
    async fn revalidate_all(&self) -> Result<(), BackendError> {
        let started = std::time::Instant::now();
        let mut cursor = 0;
        let mut checked = 0;
        loop {
            let step = self.scan(cursor, REVALIDATE_BATCH);
            checked += step.keys.len();
            self.refresh(step.keys).await?;
            cursor = step.cursor;
            if cursor == 0 {
                break;
            }
        }
        tracing::info!(
            keys = checked,
            took = ?started.elapsed(),
            "cached keys checked against the backend table"
        );
        if let Some(backend) = &self.backend {
            backend.metrics().revalidated();
        }
        Ok(())
    }

    /// The locks a cache-only delete of `keys` takes with a table behind the cache that
    /// writes reach (a flush must not come between a write's statement and its apply).
    pub(super) async fn lock_for_cached<'k>(
        &self,
        keys: impl Iterator<Item = &'k Bytes>,
    ) -> Vec<MutexGuard<'_, ()>> {
        match self.writing_backend() {
            Some(_) => self.key_locks.lock_all(keys).await,
            None => Vec::new(),
        }
    }

    /// Starts refreshing from the table's changes (see `backend/listen.rs`), once the cache
    /// is loaded. Does nothing without a backend.
    pub fn watch_backend(self: &Arc<Cache>) {
        let Some(backend) = &self.backend else {
            return;
        };
        let mut changes = backend.listen(&self.tasks);
        let cache = Arc::downgrade(self);
        self.tasks.spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                while !cache.is_loaded() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // A failed check is tried again (the database may be back in a moment, or
                // the listener reconnects and checks everything anyway).
                let mut backoff = Duration::from_millis(100);
                loop {
                    let checked = match &change {
                        Changed::Keys(keys) => cache.refresh(keys.clone()).await,
                        Changed::All => cache.revalidate_all().await,
                    };
                    let Err(error) = checked else {
                        break;
                    };
                    tracing::warn!(%error, retry_in = ?backoff, "checking cached keys against the backend failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        });
    }
}
