//! Forwarding in partitioned mode: a node that does not own a key sends the request to an
//! owner and hands back the owner's answer, so that any pod serves any request. The owner
//! runs its ordinary read or write path (apply, durable, replicate among the owners,
//! acknowledge); this module only carries requests and answers.
//!
//! # Protocol
//! `POST /internal/v1/forward` with a [`Request`] (postcard), answered with a [`Response`]:
//! the results in request order, refusals as the owner's own [`WriteError`]. Batches are
//! split by owner and each owner's part is sent as one request, all owners at once.
//! The owners are tried in placement order (primary first); a read moves on to the next owner
//! on any failure. So do unconditional writes: the sender chooses their versions, so an owner
//! that applies one late (it stalled, and the next owner took the write) applies the same
//! version, which a newer write of the key supersedes. A conditional write or a delete moves
//! on only when the owner cannot have applied it (no connection, or the owner is still
//! loading), so that it is never applied twice under two versions: its outcome depends on
//! the state it is applied to.
//!
//! An owner serves a forwarded request locally even where its own view of the membership
//! says it is not an owner (views differ for a moment while a change spreads): a request is
//! forwarded at most once, never in a loop.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Cache;
use super::error::{ReadError, Unreachable, WriteError};
use super::write::{Removed, Write, Written};
use crate::backend::BackendError;
use crate::base::time::Timestamp;
use crate::base::version::Version;
use crate::replication::{AckLevel, Peer, Replicated, Route};
use crate::store::{Hit, Preconditions};

/// A request forwarded to an owner.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Reads of keys the owner holds.
    Get(Vec<Bytes>),
    /// Writes, acknowledged at the level given (the owner's default if `None`).
    Put {
        /// The writes.
        writes: Vec<Write>,
        /// The level.
        ack: Option<AckLevel>,
        /// One version per write, chosen by the sender, when every write is unconditional;
        /// empty otherwise (the owner issues them).
        versions: Vec<Version>,
    },
    /// Deletes with their conditions.
    Delete {
        /// The keys and conditions.
        deletes: Vec<(Bytes, Preconditions)>,
        /// The level.
        ack: Option<AckLevel>,
    },
}

/// An owner's answer, in request order.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The entries read (a miss loaded from the database behind the cache, or why it could
    /// not be).
    Get(Vec<Result<Option<Hit>, BackendError>>),
    /// The writes' outcomes.
    Put(Vec<Result<WrittenWire, WriteError>>),
    /// The deletes' outcomes.
    Delete(Vec<Result<RemovedWire, WriteError>>),
}

/// [`Written`] as it travels: the acknowledgements as counts (the owner follows the late
/// ones, not the forwarding node).
#[derive(Debug, Serialize, Deserialize)]
pub struct WrittenWire {
    created: bool,
    version: Version,
    expires_at: Option<Timestamp>,
    bucket: Option<Timestamp>,
    replicated: Option<(usize, usize)>,
}

/// [`Removed`] as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemovedWire {
    version: Version,
    replicated: Option<(usize, usize)>,
}

fn counts(replicated: Option<&Replicated>) -> Option<(usize, usize)> {
    replicated.map(|r| (r.acked, r.replicas))
}

fn replicated((acked, replicas): (usize, usize)) -> Replicated {
    Replicated {
        acked,
        replicas,
        watch: None,
    }
}

impl From<Written> for WrittenWire {
    fn from(written: Written) -> WrittenWire {
        WrittenWire {
            created: written.created,
            version: written.version,
            expires_at: written.expires_at,
            bucket: written.bucket,
            replicated: counts(written.replicated.as_ref()),
        }
    }
}

impl From<WrittenWire> for Written {
    fn from(wire: WrittenWire) -> Written {
        Written {
            created: wire.created,
            version: wire.version,
            expires_at: wire.expires_at,
            bucket: wire.bucket,
            replicated: wire.replicated.map(replicated),
        }
    }
}

impl From<Removed> for RemovedWire {
    fn from(removed: Removed) -> RemovedWire {
        RemovedWire {
            version: removed.version,
            replicated: counts(removed.replicated.as_ref()),
        }
    }
}

impl From<RemovedWire> for Removed {
    fn from(wire: RemovedWire) -> Removed {
        Removed {
            version: wire.version,
            replicated: wire.replicated.map(replicated),
        }
    }
}

/// Why a forwarded request from a peer was not served.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The body is not a forwarding request.
    #[error("not a forwarded request: {0}")]
    Malformed(#[from] postcard::Error),
    /// The request names a key of a partition this node neither owns nor keeps: the sender
    /// routed by a membership or holdings this node has moved on from, and tries the next
    /// owner.
    #[error("this node does not hold the partition of a forwarded key (it moved); ask its owners")]
    NotHeld,
    /// The request holds more entries than a batch may.
    #[error("a forwarded request holds {entries} entries, more than the batch limit {max}")]
    TooLarge {
        /// Entries in it.
        entries: usize,
        /// The limit.
        max: usize,
    },
}

/// Items of a batch grouped by the owners they are forwarded to, with their positions.
type Groups<T> = BTreeMap<Vec<Peer>, Vec<(usize, T)>>;

impl Cache {
    /// Where `key` is served from.
    pub fn route(&self, key: &[u8]) -> Route {
        self.replication
            .as_ref()
            .map_or(Route::Local, |replication| replication.route(key))
    }

    /// Sends `request` to the first of `owners` that takes it.
    async fn forward(&self, owners: &[Peer], request: &Request) -> Result<Response, Unreachable> {
        let unreachable = |reason: String| Unreachable {
            owners: addresses(owners),
            reason,
        };
        let Some(replication) = &self.replication else {
            return Err(unreachable("this node has no peers".into()));
        };
        let body = postcard::to_stdvec(request)
            .map_err(|error| unreachable(format!("cannot encode the request: {error}")))?;
        let idempotent = match request {
            Request::Get(_) => true,
            Request::Put { versions, .. } => !versions.is_empty(),
            Request::Delete { .. } => false,
        };
        let answer = replication
            .forward(owners, Bytes::from(body), idempotent)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        postcard::from_bytes(&answer)
            .map_err(|error| unreachable(format!("the owner's answer is malformed: {error}")))
    }

    /// Serves a request another node forwarded (see the module documentation): always
    /// locally.
    ///
    /// # Errors
    /// [`ForwardError`] for a body that is not a request or holds too many entries.
    pub async fn serve_forwarded(&self, body: &[u8]) -> Result<Bytes, ForwardError> {
        let request: Request = postcard::from_bytes(body)?;
        let entries = match &request {
            Request::Get(keys) => keys.len(),
            Request::Put { writes, .. } => writes.len(),
            Request::Delete { deletes, .. } => deletes.len(),
        };
        let max = self.limits.max_batch_entries.max(1);
        if entries > max {
            return Err(ForwardError::TooLarge { entries, max });
        }
        if let Some(replication) = &self.replication {
            let held = match &request {
                Request::Get(keys) => keys.iter().all(|key| replication.holds(key)),
                Request::Put { writes, .. } => writes.iter().all(|w| replication.holds(&w.key)),
                Request::Delete { deletes, .. } => {
                    deletes.iter().all(|(key, _)| replication.holds(key))
                }
            };
            if !held {
                return Err(ForwardError::NotHeld);
            }
        }
        let response = match request {
            Request::Get(keys) => Response::Get(
                self.read_local_many(&keys)
                    .await
                    .into_iter()
                    .map(|hit| hit.map_err(backend_only))
                    .collect(),
            ),
            Request::Put {
                writes,
                ack,
                versions,
            } => {
                let done = if versions.len() == writes.len() {
                    self.put_versioned_local_many(writes.into_iter().zip(versions).collect(), ack)
                        .await
                } else {
                    self.put_local_many(writes, ack).await
                };
                Response::Put(
                    done.into_iter()
                        .map(|result| result.map(WrittenWire::from))
                        .collect(),
                )
            }
            Request::Delete { deletes, ack } => Response::Delete(
                self.delete_local_many(deletes, ack)
                    .await
                    .into_iter()
                    .map(|result| result.map(RemovedWire::from))
                    .collect(),
            ),
        };
        Ok(Bytes::from(postcard::to_stdvec(&response)?))
    }

    /// The key's live entry, or `None` if absent or expired (even if not yet swept): from
    /// memory where this node holds the key (a miss loaded from the database behind the
    /// cache, if there is one), else from an owner.
    ///
    /// # Errors
    /// [`ReadError`]: the key lives elsewhere and no owner answered, or the database could
    /// not answer a miss.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Hit>, ReadError> {
        match self.route(key) {
            Route::Local => self.read_local(key).await,
            Route::Forward(owners) => {
                let request = Request::Get(vec![Bytes::copy_from_slice(key)]);
                match self.forward(&owners, &request).await? {
                    Response::Get(mut hits) if hits.len() == 1 => {
                        Ok(hits.pop().unwrap_or(Ok(None))?)
                    }
                    _ => Err(mismatch(&owners).into()),
                }
            }
        }
    }

    /// Reads every key of `keys`, in order; each owner's keys in one forwarded request, the
    /// misses of the keys held here in one query of the database behind the cache.
    pub async fn get_many(&self, keys: &[Bytes]) -> Vec<Result<Option<Hit>, ReadError>> {
        let n = keys.len();
        let (local, groups) = self.split(keys.to_vec(), |key| key);
        let (positions, local): (Vec<usize>, Vec<Bytes>) = local.into_iter().unzip();
        let sent = groups
            .into_iter()
            .map(|(owners, items)| self.get_group(owners, items));
        let (here, there) = futures::join!(
            self.read_local_many(&local),
            futures::future::join_all(sent)
        );
        let mut results: Vec<(usize, Result<Option<Hit>, ReadError>)> =
            positions.into_iter().zip(here).collect();
        for (positions, answer) in there {
            match answer {
                Ok(hits) => {
                    for (i, hit) in positions.into_iter().zip(hits) {
                        results.push((i, hit.map_err(ReadError::from)));
                    }
                }
                Err(error) => {
                    for i in positions {
                        results.push((i, Err(error.clone().into())));
                    }
                }
            }
        }
        super::write::in_order(n, results.into_iter())
    }

    /// Splits `items` by route: those held here, and the others grouped by their owners.
    pub(super) fn split<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> &[u8],
    ) -> (Vec<(usize, T)>, Groups<T>) {
        let mut local = Vec::new();
        let mut groups: Groups<T> = BTreeMap::new();
        for (i, item) in items.into_iter().enumerate() {
            match self.route(key(&item)) {
                Route::Local => local.push((i, item)),
                Route::Forward(owners) => groups.entry(owners).or_default().push((i, item)),
            }
        }
        (local, groups)
    }

    /// Forwards each owner's writes as one request, all owners at once; the outcomes by
    /// position.
    pub(super) async fn forward_puts(
        &self,
        groups: Groups<Write>,
        ack: Option<AckLevel>,
    ) -> Vec<(usize, Result<Written, WriteError>)> {
        let sent = groups
            .into_iter()
            .map(|(owners, items)| self.put_group(owners, items, ack));
        futures::future::join_all(sent)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// As [`Cache::forward_puts`], for deletes.
    pub(super) async fn forward_deletes(
        &self,
        groups: Groups<(Bytes, Preconditions)>,
        ack: Option<AckLevel>,
    ) -> Vec<(usize, Result<Removed, WriteError>)> {
        let sent = groups
            .into_iter()
            .map(|(owners, items)| self.delete_group(owners, items, ack));
        futures::future::join_all(sent)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One owner's part of a batch read: positions and hits.
    async fn get_group(
        &self,
        owners: Vec<Peer>,
        items: Vec<(usize, Bytes)>,
    ) -> (
        Vec<usize>,
        Result<Vec<Result<Option<Hit>, BackendError>>, Unreachable>,
    ) {
        let (positions, keys): (Vec<usize>, Vec<Bytes>) = items.into_iter().unzip();
        let answer = match self.forward(&owners, &Request::Get(keys)).await {
            Ok(Response::Get(hits)) if hits.len() == positions.len() => Ok(hits),
            Ok(_) => Err(mismatch(&owners)),
            Err(error) => Err(error),
        };
        (positions, answer)
    }

    /// One owner's part of a batch of writes: outcomes by position.
    async fn put_group(
        &self,
        owners: Vec<Peer>,
        items: Vec<(usize, Write)>,
        ack: Option<AckLevel>,
    ) -> Vec<(usize, Result<Written, WriteError>)> {
        let (positions, writes): (Vec<usize>, Vec<Write>) = items.into_iter().unzip();
        let n = positions.len();
        let versions = if writes.iter().all(|w| w.conditions == Preconditions::none()) {
            let versions = self.store.versions();
            writes
                .iter()
                .map(|_| Version::from(versions.next(self.store.clock().now())))
                .collect()
        } else {
            Vec::new()
        };
        let request = Request::Put {
            writes,
            ack,
            versions,
        };
        let outcomes: Vec<Result<Written, WriteError>> = match self.forward(&owners, &request).await
        {
            Ok(Response::Put(done)) if done.len() == n => {
                done.into_iter().map(|r| r.map(Written::from)).collect()
            }
            Ok(_) => vec![Err(mismatch(&owners).into()); n],
            Err(error) => vec![Err(error.into()); n],
        };
        positions.into_iter().zip(outcomes).collect()
    }

    /// One owner's part of a batch of deletes: outcomes by position.
    async fn delete_group(
        &self,
        owners: Vec<Peer>,
        items: Vec<(usize, (Bytes, Preconditions))>,
        ack: Option<AckLevel>,
    ) -> Vec<(usize, Result<Removed, WriteError>)> {
        let (positions, deletes): (Vec<usize>, Vec<(Bytes, Preconditions)>) =
            items.into_iter().unzip();
        let n = positions.len();
        let outcomes: Vec<Result<Removed, WriteError>> = match self
            .forward(&owners, &Request::Delete { deletes, ack })
            .await
        {
            Ok(Response::Delete(done)) if done.len() == n => {
                done.into_iter().map(|r| r.map(Removed::from)).collect()
            }
            Ok(_) => vec![Err(mismatch(&owners).into()); n],
            Err(error) => vec![Err(error.into()); n],
        };
        positions.into_iter().zip(outcomes).collect()
    }
}

/// What a forwarded read carries back: a local read fails only on the database.
fn backend_only(error: ReadError) -> BackendError {
    match error {
        ReadError::Backend(error) => error,
        ReadError::Unreachable(error) => BackendError::Unavailable(error.to_string()),
    }
}

/// An owner's answer of the wrong kind or length.
fn mismatch(owners: &[Peer]) -> Unreachable {
    Unreachable {
        owners: addresses(owners),
        reason: "the owner's answer does not match the request".into(),
    }
}

/// The owners' addresses, as a refusal names them.
fn addresses(owners: &[Peer]) -> String {
    owners
        .iter()
        .map(Peer::address)
        .collect::<Vec<_>>()
        .join(", ")
}
