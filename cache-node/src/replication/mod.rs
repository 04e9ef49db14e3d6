//! Multi-pod synchronisation (contract 4): every write accepted by one node reaches every
//! other node, versions order writes the same way everywhere, and nodes that missed writes
//! repair themselves.
//!
//! # Layout
//! - `hlc`: the hybrid logical clock; a version is (clock value, node tag), last writer wins.
//! - `membership`: the peers, from `--peers` or the headless Service's DNS name.
//! - `placement`: which nodes hold a key (all of them, for now).
//! - `transport`: per-peer queues and batching over keep-alive HTTP connections.
//! - `ack`: `Tidecache-Ack: one|quorum|all` and the waiting for acknowledgements.
//! - `anti_entropy`: per-bucket digests compared with peers; the join catch-up.
//! - `wire`: batches in the disk contract's segment format; digests.
//! - `routes`: the internal routes peers call; `metrics`: lag, queues, retries, drops.
//!
//! # Guarantees
//! - Convergence: once writes stop and the network heals, every node holds the same version
//!   of every unexpired key within one anti-entropy interval (plus one pass's duration).
//! - Last writer wins everywhere: a record is applied only if its version is larger than the
//!   key's current one, tombstones included, so nodes that apply the same records in any
//!   order end in the same state, and a late or repeated record never undoes a newer write.
//! - An acknowledged write with `quorum` is in memory on a majority of nodes before the
//!   client hears success; see `docs/replication.md` for what that means with the shared
//!   volume and each fsync policy.
//!
//! # Assumptions
//! - Wall clocks are roughly synchronised (NTP): last-writer-wins orders concurrent writes
//!   by clock, so a node whose clock is ahead wins ties it should not. A peer more than a
//!   minute ahead is logged and does not move this node's clock.

pub mod ack;
pub mod anti_entropy;
pub mod endpoint_slices;
pub mod hlc;
pub mod membership;
pub mod metrics;
pub mod placement;
pub mod routes;
pub mod transport;
pub mod wire;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tidecache_contract::disk::{Record, RecordError, RecordRef};
use tokio::sync::watch;

pub use ack::{AckError, AckLevel};
pub use hlc::HybridClock;
pub use membership::{Discovery, DnsPeers, Peer, PeerList, StaticPeers};
pub use metrics::ReplicationMetrics;
pub use placement::Placement;
pub use transport::{Pending, Replicated, Transport, TransportSettings};
pub use wire::{BucketDigest, Cutoff};

use crate::clock::Clock;
use crate::http::auth::AuthToken;
use anti_entropy::{AntiEntropy, PassReport};

/// What replication needs from the local store.
pub trait Replica: std::fmt::Debug + Send + Sync + 'static {
    /// Applies a record from a peer if its version is larger than the key's current one
    /// (value or tombstone); an expired record changes nothing.
    fn apply(&self, record: Record) -> Applied;
    /// As [`Replica::apply`], and a record that changed the store is also written to this
    /// node's log, as if this node had accepted it. The join catch-up uses it: what peers
    /// send then is what the shared volume lacks (writes acknowledged by peers whose
    /// accepting node crashed before its fsync), and persisting it here makes it survive a
    /// later restart of every node.
    fn apply_durably(&self, record: Record) -> Applied {
        self.apply(record)
    }
    /// The digest of every key range of every bucket holding entries or tombstones with
    /// versions `cutoff` includes.
    fn digests(&self, cutoff: Cutoff) -> Vec<BucketDigest>;
    /// The entries and tombstones in the `(bucket, range)` pairs of `ranges` (see
    /// [`wire::NO_EXPIRY_BUCKET`]) with versions `cutoff` includes, found in one scan.
    fn range_records(&self, ranges: &HashSet<(i64, u16)>, cutoff: Cutoff) -> Vec<Record>;
}

/// What applying a received record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record was newer and is now the key's state.
    Changed,
    /// The key already holds this version or a newer one (or the record is expired).
    Stale,
    /// The store cannot hold it: no room under `noeviction`, or no bucket for its expiry.
    /// Anti-entropy will offer it again.
    Refused,
}

/// How replication behaves.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// The acknowledgement level of writes that do not ask for one.
    pub default_ack: AckLevel,
    /// How long a write waits for its acknowledgements.
    pub ack_timeout: Duration,
    /// Time between anti-entropy passes.
    pub anti_entropy_interval: Duration,
    /// How long the join catch-up may take before the node reports ready anyway.
    pub catch_up_timeout: Duration,
    /// Queues, batches and retries.
    pub transport: TransportSettings,
    /// The token sent to peers when the cluster requires one (their internal routes check
    /// it like the key routes).
    pub peer_token: Option<AuthToken>,
}

impl Default for ReplicationSettings {
    fn default() -> ReplicationSettings {
        ReplicationSettings {
            default_ack: AckLevel::One,
            ack_timeout: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(10),
            catch_up_timeout: Duration::from_secs(30),
            transport: TransportSettings::default(),
            peer_token: None,
        }
    }
}

/// Why a write could not be replicated as asked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The record could not be encoded (a request the HTTP layer should have refused).
    #[error("cannot encode the record: {0}")]
    Encode(#[from] RecordError),
    /// Too few acknowledgements.
    #[error(transparent)]
    Ack(#[from] AckError),
}

/// A node's replication: its clock, transport, anti-entropy and the local store.
#[derive(Debug)]
pub struct Replication {
    /// Versions of local writes.
    pub hlc: Arc<HybridClock>,
    /// The local store.
    replica: Arc<dyn Replica>,
    /// The wall clock.
    clock: Arc<dyn Clock>,
    /// Sends writes to peers.
    transport: Arc<Transport>,
    /// Repairs from peers.
    anti_entropy: AntiEntropy,
    /// Levels, timeouts, intervals.
    settings: ReplicationSettings,
    /// Counters.
    metrics: Arc<ReplicationMetrics>,
    /// Whether batches from peers are applied; off until the node has loaded the data volume,
    /// whose older versions would otherwise overwrite what peers sent meanwhile.
    accepting: AtomicBool,
}

impl Replication {
    /// Starts replication of `replica` for the node whose clock is `hlc`, following the
    /// peers `discovery` finds. Must be called inside a tokio runtime (it spawns the
    /// discovery and per-peer tasks).
    pub fn start(
        replica: Arc<dyn Replica>,
        hlc: Arc<HybridClock>,
        clock: Arc<dyn Clock>,
        discovery: Box<dyn Discovery>,
        settings: ReplicationSettings,
        metrics: Arc<ReplicationMetrics>,
    ) -> Arc<Replication> {
        let (peers_tx, peers_rx) = watch::channel(discovery.initial());
        tokio::spawn(discovery.run(peers_tx));
        let client = transport::http_client(settings.peer_token.as_ref());
        let transport = Transport::start(
            peers_rx,
            Placement::Full,
            settings.transport.clone(),
            client.clone(),
            metrics.clone(),
        );
        let anti_entropy = AntiEntropy {
            replica: replica.clone(),
            hlc: hlc.clone(),
            clock: clock.clone(),
            client,
            metrics: metrics.clone(),
            timeout: settings
                .transport
                .request_timeout
                .max(Duration::from_secs(5)),
        };
        Arc::new(Replication {
            hlc,
            replica,
            clock,
            transport,
            anti_entropy,
            settings,
            metrics,
            accepting: AtomicBool::new(false),
        })
    }

    /// Starts applying batches from peers (refused with 503 until then; peers retry, and
    /// anti-entropy repairs what they gave up on).
    pub fn accept_batches(&self) {
        self.accepting.store(true, Ordering::Release);
    }

    /// Whether batches from peers are applied.
    pub fn accepts_batches(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Sends a write (or, with no value, a delete) that the local store has applied to the
    /// key's other replicas and waits for `level` (the default if `None`).
    ///
    /// # Errors
    /// [`ReplicateError::Ack`] when `level` was not reached in time: the write stays applied
    /// locally and spreads by anti-entropy, but the client must not be told it is
    /// acknowledged.
    pub async fn replicate(
        &self,
        record: RecordRef<'_>,
        level: Option<AckLevel>,
    ) -> Result<Replicated, ReplicateError> {
        Ok(self.send(record, level).await?.wait().await?)
    }

    /// Queues a write for the key's other replicas without waiting for acknowledgements, so
    /// that many writes (a batch request) can be queued before any is waited for.
    ///
    /// # Errors
    /// [`ReplicateError::Encode`] for a record the format cannot hold.
    pub async fn send(
        &self,
        record: RecordRef<'_>,
        level: Option<AckLevel>,
    ) -> Result<Pending, ReplicateError> {
        let encoded: Bytes = wire::encode_record(record)?;
        let level = level.unwrap_or(self.settings.default_ack);
        Ok(self
            .transport
            .send(record.key, encoded, level, self.settings.ack_timeout)
            .await)
    }

    /// The join catch-up: waits briefly for discovery to find peers, then runs one
    /// anti-entropy pass, bounded by the catch-up timeout.
    pub async fn catch_up(&self) -> PassReport {
        let catch_up = async {
            let mut peers = self.transport.peers();
            for _ in 0..20 {
                if !peers.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                peers = self.transport.peers();
            }
            self.anti_entropy.pass(&peers, true).await
        };
        tokio::time::timeout(self.settings.catch_up_timeout, catch_up)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("catch-up from peers timed out; serving what is loaded");
                PassReport::default()
            })
    }

    /// Runs anti-entropy passes every interval until `shutdown` completes.
    pub async fn run_anti_entropy(&self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.settings.anti_entropy_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let peers = self.transport.peers();
            self.anti_entropy.pass(&peers, false).await;
        }
    }
}

#[cfg(test)]
mod tests;
