//! Anti-entropy: compare per-bucket digests with every peer and pull the buckets that differ.
//!
//! Each node only pulls; since every node runs the same pass against every other, a bucket
//! that differs is repaired in both directions within one interval. Records are applied by
//! last-writer-wins, so pulling a whole bucket is idempotent and never undoes a newer write;
//! tombstones travel like values, so a delete is never undone by a peer that missed it.
//!
//! The same pass, run once before a starting node reports ready, is the join catch-up: the
//! node has loaded the shared volume, and fetches from its peers what is not there yet
//! (writes of the last moments before a crash that were not yet synced, and everything made
//! while it was away).
//!
//! # Cost
//! A pass costs one digest request per peer (one digest per key range of each bucket, 64 ranges
//! per bucket) plus, per differing range, a transfer of that range's records. Buckets are one
//! schedule period wide (a minute by default), so after a partition only the ranges of the
//! buckets written during it move. Buckets that have expired are skipped: the sweep removes
//! them anyway. A periodic pass compares only versions older than one second on both sides, so
//! that a steady stream of writes still on their way does not make every range differ.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidecache_contract::placement::partition_of;

use super::admit::{self, RecordLimits};
use super::holdings::PartitionSet;
use super::membership::Peer;
use super::metrics::ReplicationMetrics;
use super::placement::Placement;
use super::transport::{self, HttpClient, PeerError};
use super::wire::{self, DIGESTS_PATH, FETCH_PATH, Fetch};
use crate::base::digest::{BucketDigest, Cutoff, NO_EXPIRY_BUCKET, RANGES};
use crate::base::hlc::{self, HybridClock};
use crate::base::replica::{Applied, Replica};
use crate::base::time::{Clock, Timestamp};

/// How old a version must be before a periodic pass compares it: replication normally
/// delivers a write in well under a millisecond, so a difference older than this is one the
/// transport dropped (peer down, queue full), not one still on its way.
pub const IN_FLIGHT_GRACE_MILLIS: i64 = 1_000;

/// Why one peer could not be synchronised with.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The request failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The digest list was not valid JSON (or the fetch request could not be written).
    #[error("the digests of {peer} are not valid: {source}")]
    Digests {
        /// The peer.
        peer: Peer,
        /// Why.
        source: serde_json::Error,
    },
    /// The records fetched were damaged.
    #[error("the records of {ranges} key ranges from {peer} are damaged: {source}")]
    Fetch {
        /// The peer.
        peer: Peer,
        /// How many ranges were asked for.
        ranges: usize,
        /// Why.
        source: wire::BatchError,
    },
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Peers synchronised with.
    pub peers_ok: usize,
    /// Peers that could not be reached or answered badly.
    pub peers_failed: usize,
    /// Key ranges of buckets fetched because their digests differed.
    pub buckets_fetched: usize,
    /// Records that changed this node's store.
    pub repaired: u64,
}

/// What one synchronisation with a peer covers.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// The periodic pass: versions older than the in-flight grace, of the ranges both nodes
    /// hold; persisted only in partitioned mode (in full mode the accepting node did).
    Periodic,
    /// The join catch-up: every version, persisted.
    CatchUp,
    /// A partition move: every version of these partitions, persisted.
    Pull(&'a PartitionSet),
}

/// Runs anti-entropy passes against peers.
#[derive(Debug, Clone)]
pub struct AntiEntropy {
    /// Which partitions this node and each peer own (partitioned mode).
    pub(super) placement: Arc<Placement>,
    /// What fetched records are held to.
    pub(super) limits: RecordLimits,
    /// The local store.
    pub(super) replica: Arc<dyn Replica>,
    /// The node's clock, moved past every version received.
    pub(super) hlc: Arc<HybridClock>,
    /// Wall clock, to skip expired buckets.
    pub(super) clock: Arc<dyn Clock>,
    /// Shared HTTP client.
    pub(super) client: HttpClient,
    /// Counters.
    pub(super) metrics: Arc<ReplicationMetrics>,
    /// Per request limit.
    pub(super) timeout: Duration,
}

impl AntiEntropy {
    /// One pass over `peers`: a failing peer is logged and skipped. With `persist` (the join
    /// catch-up), records that change the store are written to this node's log too.
    pub async fn pass(&self, peers: &[Peer], persist: bool) -> PassReport {
        let started = Instant::now();
        let mut report = PassReport::default();
        for peer in peers {
            let scope = if persist {
                Scope::CatchUp
            } else {
                Scope::Periodic
            };
            match self.sync_with(peer, scope, &mut report).await {
                Ok(()) => report.peers_ok += 1,
                Err(error) => {
                    report.peers_failed += 1;
                    tracing::debug!(%peer, %error, "anti-entropy skipped a peer");
                }
            }
        }
        self.metrics.observe_anti_entropy(started.elapsed());
        if report.repaired > 0 {
            tracing::info!(
                repaired = report.repaired,
                buckets = report.buckets_fetched,
                "anti-entropy repaired records"
            );
        }
        report
    }

    /// Pulls from `peer` the data of `partitions` (partitioned mode) this node lacks: a pass
    /// restricted to them, over every version, persisted as the owner's own. Returns the
    /// records that changed this node's store.
    ///
    /// # Errors
    /// [`SyncError`] when the peer could not be asked or answered badly: the partitions are
    /// then not complete from it.
    pub async fn pull(&self, peer: &Peer, partitions: &PartitionSet) -> Result<u64, SyncError> {
        let mut report = PassReport::default();
        self.sync_with(peer, Scope::Pull(partitions), &mut report)
            .await?;
        Ok(report.repaired)
    }

    async fn sync_with(
        &self,
        peer: &Peer,
        scope: Scope<'_>,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        // Both sides summarise the same versions: those older than the grace (writes still on
        // their way through the transport are not differences). The catch-up and pulls take
        // everything.
        let now = self.clock.now();
        let every_version = !matches!(scope, Scope::Periodic);
        // Owners persist what they hold (partitioned mode), repairs included.
        let persist = every_version || self.placement.mode() != super::Mode::Full;
        let cutoff = Cutoff {
            ranges: self.placement.key_ranges(),
            before: if every_version {
                u64::MAX
            } else {
                hlc::physical(Timestamp::from_millis(
                    now.as_millis().saturating_sub(IN_FLIGHT_GRACE_MILLIS),
                ))
            },
        };
        let query = format!("?before={}", cutoff.before);
        let path = format!("{DIGESTS_PATH}{query}");
        let body = transport::get(&self.client, peer, &path, self.timeout).await?;
        let theirs: Vec<BucketDigest> =
            serde_json::from_slice(&body).map_err(|source| SyncError::Digests {
                peer: peer.clone(),
                source,
            })?;
        let ours: HashMap<(i64, u16), BucketDigest> = self
            .replica
            .digests(cutoff)
            .into_iter()
            .map(|digest| ((digest.bucket, digest.range), digest))
            .collect();
        // In partitioned mode a range is a partition, and only those both nodes own are
        // compared (the others are not this node's to hold, or not the peer's to give), or
        // in a pull those asked for.
        let topology = self.placement.topology();
        let shared = |range: u16| match (&topology, scope) {
            (None, _) => true,
            (Some(_), Scope::Pull(partitions)) => partitions.contains(usize::from(range)),
            (Some(topology), Scope::Periodic | Scope::CatchUp) => {
                let partition = usize::from(range);
                topology.owns_partition(partition)
                    && topology
                        .nodes
                        .iter()
                        .position(|node| node.address() == peer.address())
                        .is_some_and(|index| topology.assignment.owns(index, partition))
            }
        };
        let differing: Vec<(i64, u16)> = theirs
            .into_iter()
            .filter(|digest| {
                let expired = digest.bucket != NO_EXPIRY_BUCKET && digest.bucket <= now.as_millis();
                !expired
                    && shared(digest.range)
                    && ours.get(&(digest.bucket, digest.range)) != Some(digest)
            })
            .map(|digest| (digest.bucket, digest.range))
            .collect();
        // One request (one scan of the peer's store) per chunk of ranges, so that a response
        // stays a bounded share of the store.
        for chunk in differing.chunks(usize::from(RANGES)) {
            let fetch = Fetch {
                before: cutoff.before,
                ranges: chunk.to_vec(),
            };
            let body = serde_json::to_vec(&fetch).map_err(|source| SyncError::Digests {
                peer: peer.clone(),
                source,
            })?;
            let bytes = transport::post_returning(
                &self.client,
                peer,
                FETCH_PATH,
                "application/json",
                body.into(),
                self.timeout,
            )
            .await?;
            let records = wire::decode_batch(&bytes).map_err(|source| SyncError::Fetch {
                peer: peer.clone(),
                ranges: chunk.len(),
                source,
            })?;
            report.buckets_fetched += chunk.len();
            // A refused record is skipped, the others applied: fetched records are not a
            // batch the peer retries, and the good ones repair what they can.
            let (mut records, refusals) =
                admit::admit(&self.limits, records, self.clock.now(), &self.metrics);
            match (&topology, scope) {
                (None, _) => {}
                (Some(_), Scope::Pull(partitions)) => {
                    records.retain(|record| partitions.contains(partition_of(&record.key)));
                }
                (Some(topology), Scope::Periodic | Scope::CatchUp) => {
                    records.retain(|record| topology.owns(&record.key));
                }
            }
            if let Some(first) = refusals.first() {
                tracing::warn!(
                    %peer,
                    refused = refusals.len(),
                    error = %first,
                    "anti-entropy refused records fetched from a peer"
                );
            }
            let (changed, _) = apply_all(&*self.replica, &self.hlc, &*self.clock, records, persist);
            report.repaired += changed;
            self.metrics.repaired(changed);
        }
        Ok(())
    }
}

/// Applies records received from a peer (and admitted, see [`admit`]), moving the clock past
/// their versions; returns how many changed the store and how many lost to newer local
/// versions.
pub(super) fn apply_all(
    replica: &dyn Replica,
    hlc: &HybridClock,
    clock: &dyn Clock,
    records: Vec<tidecache_contract::disk::Record>,
    persist: bool,
) -> (u64, u64) {
    let now = clock.now();
    let (mut changed, mut stale) = (0, 0);
    for record in records {
        // Admitted records are within the clock bound, so this moves the clock.
        hlc.observe(record.version, now);
        let applied = if persist {
            replica.apply_durably(record)
        } else {
            replica.apply(record)
        };
        match applied {
            Applied::Changed => changed += 1,
            Applied::Stale | Applied::Refused => stale += 1,
        }
    }
    (changed, stale)
}
