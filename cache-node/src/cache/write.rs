//! The write path: the one place where a write or delete becomes an acknowledged one. Every
//! front end (the HTTP key and batch routes, the RESP commands) calls it; none repeats its
//! steps. Read-modify-write (`update`) is a compare-and-set loop over it.
//!
//! # Protocol
//! 1. **Apply** in memory under the key's shard lock, checking preconditions and capacity
//!    ([`Store::put_journaled`](crate::store::Store::put_journaled)); the change is handed to
//!    the log in the same step.
//! 2. **Durable**: wait for the log's commit (as `--fsync` defines it). A change that could
//!    not be made durable has been reverted in memory; the client hears the refusal.
//! 3. **Replicate**: queue the record for the key's other replicas.
//! 4. **Acknowledge**: wait until the acknowledgement level is reached.
//!
//! A batch runs each step for all its writes before the next step, so the batch shares group
//! commits and the peers' batches instead of paying one round per entry. A write refused at
//! one step skips the later ones; the others go on.

use std::collections::BTreeMap;

use bytes::Bytes;
use tidecache_contract::disk::RecordRef;

use super::Cache;
use super::error::WriteError;
use std::sync::Arc;

use crate::backend::{Op, Outbox, Row};
use crate::base::journal::Journaled;
use crate::base::time::Timestamp;
use crate::base::version::Version;
use crate::replication::{AckLevel, Pending, Replicated, Route};
use crate::store::{Deleted, Preconditions, PutOutcome, Store};

/// One write: a key, its value and expiry, and the preconditions it is conditional on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Write {
    /// The key (already checked against the key limits).
    pub key: Bytes,
    /// The value (already checked against the value limit).
    pub value: Bytes,
    /// When the entry expires; `None` = never.
    pub expires_at: Option<Timestamp>,
    /// `If-Match` / `If-None-Match`.
    pub conditions: Preconditions,
}

/// An acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Whether the key had no live entry before.
    pub created: bool,
    /// The new entry's version (its ETag).
    pub version: Version,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// The bucket (fire time) it is filed under, if it expires.
    pub bucket: Option<Timestamp>,
    /// How many replicas acknowledged; `None` on a node without replication.
    pub replicated: Option<Replicated>,
}

/// An acknowledged delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The version of the entry deleted.
    pub version: Version,
    /// How many replicas acknowledged; `None` on a node without replication.
    pub replicated: Option<Replicated>,
}

/// A delete: the key and the preconditions it is conditional on.
#[derive(Debug, Clone)]
struct Delete {
    key: Bytes,
    conditions: Preconditions,
}

/// What memory did for one change: the record it replicates, and what the client hears.
pub(super) struct Applied<T> {
    key: Bytes,
    /// `None` for a delete.
    value: Option<Bytes>,
    /// The write's version, or the delete's tombstone's.
    version: Version,
    /// The entry's expiry (a delete: the deleted entry's, which its tombstone keeps).
    expires_at: Option<Timestamp>,
    /// The store's own report.
    outcome: T,
    /// Whether the change took effect (a forwarded write a newer one superseded did not).
    effective: bool,
}

/// A change the protocol carries: a write or a delete. Only step 1 differs between them.
pub(super) trait Change {
    /// What the store reports for it.
    type Outcome;
    /// Step 1: applies the change in memory and hands it to the log.
    fn apply(self, store: &Store) -> Result<Journaled<Applied<Self::Outcome>>, WriteError>;
    /// The key it changes.
    fn key(&self) -> &Bytes;
    /// The preconditions it must meet; `None` when it applies whatever the key holds.
    fn conditions(&self) -> Option<&Preconditions>;
    /// The row it leaves in the database behind the cache; `None` for a delete.
    fn row(&self) -> Option<Row>;
}

impl Change for Write {
    type Outcome = PutOutcome;

    fn apply(self, store: &Store) -> Result<Journaled<Applied<PutOutcome>>, WriteError> {
        let journaled = store.put_journaled(
            self.key.clone(),
            self.value.clone(),
            self.expires_at,
            &self.conditions,
        )?;
        Ok(map_journaled(journaled, |outcome| Applied {
            key: self.key,
            value: Some(self.value),
            version: outcome.version,
            expires_at: self.expires_at,
            outcome,
            effective: true,
        }))
    }

    fn key(&self) -> &Bytes {
        &self.key
    }

    fn conditions(&self) -> Option<&Preconditions> {
        (self.conditions != Preconditions::none()).then_some(&self.conditions)
    }

    fn row(&self) -> Option<Row> {
        Some(Row {
            value: self.value.clone(),
            expires_at: self.expires_at,
        })
    }
}

/// An unconditional write with the version the node that forwarded it chose (see
/// [`Store::put_versioned_journaled`]).
struct Versioned {
    write: Write,
    version: Version,
}

impl Change for Versioned {
    type Outcome = PutOutcome;

    fn apply(self, store: &Store) -> Result<Journaled<Applied<PutOutcome>>, WriteError> {
        let Versioned { write, version } = self;
        let journaled = store.put_versioned_journaled(
            write.key.clone(),
            write.value.clone(),
            write.expires_at,
            version,
        )?;
        Ok(map_journaled(journaled, |outcome| Applied {
            key: write.key,
            value: Some(write.value),
            effective: outcome.version == version,
            version: outcome.version,
            expires_at: write.expires_at,
            outcome,
        }))
    }

    fn key(&self) -> &Bytes {
        &self.write.key
    }

    fn conditions(&self) -> Option<&Preconditions> {
        None
    }

    fn row(&self) -> Option<Row> {
        self.write.row()
    }
}

impl Change for Delete {
    type Outcome = Deleted;

    fn apply(self, store: &Store) -> Result<Journaled<Applied<Deleted>>, WriteError> {
        let journaled = store.delete_journaled(&self.key, &self.conditions)?;
        Ok(map_journaled(journaled, |deleted| Applied {
            key: self.key,
            value: None,
            version: deleted.tombstone,
            expires_at: deleted.expires_at,
            outcome: deleted,
            effective: true,
        }))
    }

    fn key(&self) -> &Bytes {
        &self.key
    }

    /// A delete always depends on the key's entry: there must be one.
    fn conditions(&self) -> Option<&Preconditions> {
        Some(&self.conditions)
    }

    fn row(&self) -> Option<Row> {
        None
    }
}

/// A change through the whole protocol: what memory did, and who acknowledged it.
type Acknowledged<T> = Result<(Applied<T>, Option<Replicated>), WriteError>;

impl Cache {
    /// Stores `write`, acknowledged at `ack` (the cluster default if `None`); in
    /// partitioned mode on an owner of the key, forwarded to one from any other node.
    ///
    /// # Errors
    /// [`WriteError`]: a failed precondition, a refused expiry or capacity, a write that did
    /// not become durable (undone), too few acknowledgements (the write stays applied here
    /// and spreads by anti-entropy, but is not acknowledged), or no owner reachable.
    pub async fn put(&self, write: Write, ack: Option<AckLevel>) -> Result<Written, WriteError> {
        match self.route(&write.key) {
            Route::Local => self.one(write, ack).await.map(written),
            Route::Forward(owners) => only(
                self.forward_puts(BTreeMap::from([(owners, vec![(0, write)])]), ack)
                    .await,
            ),
        }
    }

    /// Deletes `key` if `conditions` hold, acknowledged at `ack`.
    ///
    /// # Errors
    /// As [`Cache::put`]; [`WriteError::Delete`] when the key is absent.
    pub async fn delete(
        &self,
        key: Bytes,
        conditions: Preconditions,
        ack: Option<AckLevel>,
    ) -> Result<Removed, WriteError> {
        match self.route(&key) {
            Route::Local => {
                let (applied, replicated) = self.one(Delete { key, conditions }, ack).await?;
                Ok(Removed {
                    version: applied.outcome.version,
                    replicated,
                })
            }
            Route::Forward(owners) => only(
                self.forward_deletes(
                    BTreeMap::from([(owners, vec![(0, (key, conditions))])]),
                    ack,
                )
                .await,
            ),
        }
    }

    /// Deletes every key of a batch if its conditions hold, each on its own, sharing group
    /// commits and peer batches (each owner's part forwarded as one request); results in
    /// request order.
    pub async fn delete_many(
        &self,
        deletes: Vec<(Bytes, Preconditions)>,
        ack: Option<AckLevel>,
    ) -> Vec<Result<Removed, WriteError>> {
        let n = deletes.len();
        let (local, groups) = self.split(deletes, |(key, _)| key);
        let (positions, local): (Vec<usize>, Vec<_>) = local.into_iter().unzip();
        let (here, there) = futures::join!(
            self.delete_local_many(local, ack),
            self.forward_deletes(groups, ack)
        );
        in_order(n, positions.into_iter().zip(here).chain(there))
    }

    /// Stores every write of a batch, each on its own (one refused write does not stop the
    /// others), sharing group commits and peer batches (each owner's part forwarded as one
    /// request); results in request order.
    pub async fn put_many(
        &self,
        writes: Vec<Write>,
        ack: Option<AckLevel>,
    ) -> Vec<Result<Written, WriteError>> {
        let n = writes.len();
        let (local, groups) = self.split(writes, |write| &write.key);
        let (positions, local): (Vec<usize>, Vec<_>) = local.into_iter().unzip();
        let (here, there) = futures::join!(
            self.put_local_many(local, ack),
            self.forward_puts(groups, ack)
        );
        in_order(n, positions.into_iter().zip(here).chain(there))
    }

    /// Stores every write of a batch on this node, whoever owns the keys: the protocol
    /// itself, which forwarded batches run.
    pub(super) async fn put_local_many(
        &self,
        writes: Vec<Write>,
        ack: Option<AckLevel>,
    ) -> Vec<Result<Written, WriteError>> {
        self.run(writes, ack)
            .await
            .into_iter()
            .map(|result| result.map(written))
            .collect()
    }

    /// As [`Cache::put_local_many`] for unconditional writes forwarded with their versions.
    pub(super) async fn put_versioned_local_many(
        &self,
        writes: Vec<(Write, Version)>,
        ack: Option<AckLevel>,
    ) -> Vec<Result<Written, WriteError>> {
        let writes = writes
            .into_iter()
            .map(|(write, version)| Versioned { write, version })
            .collect();
        self.run(writes, ack)
            .await
            .into_iter()
            .map(|result| result.map(written))
            .collect()
    }

    /// Deletes every key of a batch on this node, whoever owns the keys.
    pub(super) async fn delete_local_many(
        &self,
        deletes: Vec<(Bytes, Preconditions)>,
        ack: Option<AckLevel>,
    ) -> Vec<Result<Removed, WriteError>> {
        let deletes = deletes
            .into_iter()
            .map(|(key, conditions)| Delete { key, conditions })
            .collect();
        self.run(deletes, ack)
            .await
            .into_iter()
            .map(|result| result.map(removed))
            .collect()
    }

    /// Stores every write of a batch in this node's cache only (never in the table behind
    /// it): loads from the table and refreshes after its changes.
    pub(super) async fn put_cached_many(
        &self,
        writes: Vec<Write>,
    ) -> Vec<Result<Written, WriteError>> {
        self.run_cached(writes, Some(AckLevel::One))
            .await
            .into_iter()
            .map(|result| result.map(written))
            .collect()
    }

    /// Deletes every key of a batch from this node's cache only (never from the table behind
    /// it), each if its conditions hold: refreshes after the table's changes, and flushes.
    pub(super) async fn delete_cached_many(
        &self,
        deletes: Vec<(Bytes, Preconditions)>,
        ack: Option<AckLevel>,
    ) -> Vec<Result<Removed, WriteError>> {
        let deletes = deletes
            .into_iter()
            .map(|(key, conditions)| Delete { key, conditions })
            .collect();
        self.run_cached(deletes, ack)
            .await
            .into_iter()
            .map(|result| result.map(removed))
            .collect()
    }

    /// The protocol for a single change: the same four steps as [`Cache::run`], without the
    /// per-step vectors a batch needs (a single write is the hot path of every front end).
    /// With a database behind the cache that writes reach, the batch protocol runs instead.
    async fn one<C: Change>(&self, change: C, ack: Option<AckLevel>) -> Acknowledged<C::Outcome> {
        if self.writing_backend().is_some() {
            let mut done = self.run(vec![change], ack).await;
            return done
                .pop()
                .unwrap_or_else(|| Err(WriteError::Encode("no outcome".into())));
        }
        // 1. Apply. 2. Durable.
        let applied = change.apply(&self.store)?.durable().await?;
        // 3. Replicate. 4. Acknowledge.
        let replicated = match self.send(&applied, ack).await? {
            Some(pending) => Some(pending.wait().await?),
            None => None,
        };
        Ok((applied, replicated))
    }

    /// The protocol (see the module documentation), step by step over all of `changes`,
    /// with the database behind the cache where writes reach it (`cache/backed.rs`): the
    /// changes' keys locked, then committed in the table first (write-through) or queued
    /// for it as they are applied (write-behind).
    pub(super) async fn run<C: Change>(
        &self,
        changes: Vec<C>,
        ack: Option<AckLevel>,
    ) -> Vec<Acknowledged<C::Outcome>> {
        match self.writing_backend() {
            None => {
                let changes = changes.into_iter().map(Ok).collect();
                self.steps(changes, ack, None, Vec::<()>::new()).await
            }
            Some(backend) => {
                let locks = self
                    .key_locks
                    .lock_all(changes.iter().map(Change::key))
                    .await;
                // Loads of these keys running now read the table before this write.
                self.key_locks.advance(changes.iter().map(Change::key));
                let prepared = self.prepare(&backend, changes).await;
                self.steps(prepared, ack, self.outbox.get(), locks).await
            }
        }
    }

    /// As [`Cache::run`], for changes that stay in the cache: loads from the database,
    /// refreshes after its changes, and flushes of the cache.
    async fn run_cached<C: Change>(
        &self,
        changes: Vec<C>,
        ack: Option<AckLevel>,
    ) -> Vec<Acknowledged<C::Outcome>> {
        let changes = changes.into_iter().map(Ok).collect();
        self.steps(changes, ack, None, Vec::<()>::new()).await
    }

    /// The four steps over `changes` (those already refused skip them); each change applied
    /// is queued in `outbox` (write-behind) while `locks` are held, which are released after
    /// step 1.
    async fn steps<C: Change, L>(
        &self,
        changes: Vec<Result<C, WriteError>>,
        ack: Option<AckLevel>,
        outbox: Option<&Arc<Outbox>>,
        locks: Vec<L>,
    ) -> Vec<Acknowledged<C::Outcome>> {
        // 1. Apply (and queue for the table).
        let applied: Vec<_> = changes
            .into_iter()
            .map(|change| {
                let journaled = change.and_then(|change| change.apply(&self.store))?;
                let queued = match outbox {
                    Some(outbox) if journaled.outcome.effective => {
                        Some(outbox.enqueue(op_of(&journaled.outcome))?)
                    }
                    _ => None,
                };
                Ok((journaled, queued))
            })
            .collect();
        drop(locks);
        // 2. Durable (in the log, and in the write-behind queue).
        let mut durable = Vec::with_capacity(applied.len());
        for journaled in applied {
            durable.push(match journaled {
                Ok((journaled, queued)) => match journaled.durable().await {
                    Ok(applied) => match queued {
                        Some(queued) => queued
                            .durable()
                            .await
                            .map(|()| applied)
                            .map_err(WriteError::from),
                        None => Ok(applied),
                    },
                    Err(error) => Err(WriteError::from(error)),
                },
                Err(error) => Err(error),
            });
        }
        // 3. Replicate.
        let mut sent = Vec::with_capacity(durable.len());
        for applied in durable {
            sent.push(match applied {
                Ok(applied) => self
                    .send(&applied, ack)
                    .await
                    .map(|pending| (applied, pending)),
                Err(error) => Err(error),
            });
        }
        // 4. Acknowledge.
        let mut done = Vec::with_capacity(sent.len());
        for sent in sent {
            done.push(match sent {
                Ok((applied, Some(pending))) => match pending.wait().await {
                    Ok(replicated) => Ok((applied, Some(replicated))),
                    Err(error) => Err(error.into()),
                },
                Ok((applied, None)) => Ok((applied, None)),
                Err(error) => Err(error),
            });
        }
        done
    }

    /// Step 3: queues the record of `applied` for the other replicas; `None` without
    /// replication.
    async fn send<T>(
        &self,
        applied: &Applied<T>,
        ack: Option<AckLevel>,
    ) -> Result<Option<Pending>, WriteError> {
        let Some(replication) = &self.replication else {
            return Ok(None);
        };
        let record = RecordRef {
            key: &applied.key,
            version: applied.version.to_disk(),
            expiry_unix_nanos: applied.expires_at.and_then(Timestamp::to_unix_nanos),
            value: applied.value.as_deref(),
        };
        Ok(Some(replication.send(record, ack).await?))
    }
}

/// The one outcome of a forwarded single change.
fn only<T>(mut outcomes: Vec<(usize, Result<T, WriteError>)>) -> Result<T, WriteError> {
    outcomes.pop().map_or_else(
        || {
            Err(WriteError::Unreachable(super::error::Unreachable {
                owners: String::new(),
                reason: "no answer for the change".into(),
            }))
        },
        |(_, outcome)| outcome,
    )
}

/// Outcomes by position, back in request order.
pub(super) fn in_order<T>(n: usize, outcomes: impl Iterator<Item = (usize, T)>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (i, outcome) in outcomes {
        slots[i] = Some(outcome);
    }
    slots.into_iter().flatten().collect()
}

/// The write-behind queue's record of an applied change.
fn op_of<T>(applied: &Applied<T>) -> Op {
    Op {
        key: applied.key.clone(),
        value: applied.value.clone(),
        expires_at: applied.expires_at,
    }
}

fn map_journaled<T, U>(journaled: Journaled<T>, f: impl FnOnce(T) -> U) -> Journaled<U> {
    Journaled {
        outcome: f(journaled.outcome),
        commit: journaled.commit,
    }
}

fn removed((applied, replicated): (Applied<Deleted>, Option<Replicated>)) -> Removed {
    Removed {
        version: applied.outcome.version,
        replicated,
    }
}

fn written((applied, replicated): (Applied<PutOutcome>, Option<Replicated>)) -> Written {
    Written {
        created: applied.outcome.created,
        version: applied.outcome.version,
        expires_at: applied.expires_at,
        bucket: applied.outcome.bucket,
        replicated,
    }
}
