//! The cache service: the one type every front end calls. It owns the store, the log on the
//! shared volume, replication, the sweeper and readiness, and is the only place that
//! implements reads, writes, deletes, batches and conditional writes.
//!
//! # Layout
//! - this file: [`Cache`], its start (load the volume, catch up from peers), its shutdown,
//!   reads and the calls peers make.
//! - `write`: the write path (apply, durable, replicate, acknowledge).
//! - `update`: read-modify-write as compare-and-set over the write path; the key walk, flush.
//! - `error`: [`WriteError`]; `limits`: [`Limits`].
//!
//! # Lifecycle
//! 1. [`Cache::start`] builds the store, starts replication and the sweeper. Key requests are
//!    not served yet ([`Cache::is_loaded`] is false) when there is a volume to load or peers
//!    to catch up from.
//! 2. [`Cache::load`] loads the volume, starts the log, catches up from the peers and starts
//!    anti-entropy; then the cache is loaded.
//! 3. [`Cache::close`], after the front ends have drained: stops replication (no record is
//!    sent or applied after it), then the sweeper, then syncs and closes the log. Nothing that
//!    could touch the store still runs when the log closes.

mod backed;
mod budget;
mod error;
mod forward;
mod limits;
mod update;
mod write;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tidecache_contract::placement;

pub use budget::{Budget, Charge};
pub use error::{ReadError, Unreachable, WriteError};
pub use forward::ForwardError;
pub use limits::{Lifetime, LifetimeError, Limits};
pub use update::{Edit, UpdateError};
pub use write::Write;

use crate::backend::{Backend, BackendMode, BackendSettings, Outbox};
use crate::base::digest::{BucketDigest, Cutoff};
use crate::base::hlc::HybridClock;
use crate::base::tasks::Tasks;
use crate::base::time::{Clock, Timestamp};
use crate::metrics::Metrics;
use crate::persist::{self, Log, PersistSettings};
use crate::replication::wire::Fetch;
use crate::replication::{
    Discovery, Holdings, ReceiveError, Received, RecordLimits, Replication, ReplicationSettings,
    Topology,
};
use crate::store::{Store, StoreConfig};
use crate::sweeper;

/// How long a stopping node keeps flushing its write-behind queue to the table; what is left
/// stays on disk for its next start.
const OUTBOX_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What a cache is made of, apart from its peers.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// The store's setup (schedule, capacity, policy, shards).
    pub store: StoreConfig,
    /// Limits every front end enforces.
    pub limits: Limits,
    /// Persistence to the shared volume; `None` keeps entries in memory only.
    pub persistence: Option<PersistSettings>,
    /// The tag of this node's name, the second half of every version it issues when it is
    /// replicated (a single node's versions carry 0).
    pub node_tag: u64,
    /// The PostgreSQL table behind the cache (docs/backend.md); `None`: the cache alone.
    pub backend: Option<BackendSettings>,
}

/// The other nodes a cache replicates to, and how.
pub struct Peers {
    /// Levels, timeouts, intervals.
    pub settings: ReplicationSettings,
    /// Where the peers come from.
    pub discovery: Box<dyn Discovery>,
}

/// How the shutdown went, for the log and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Background tasks still running when the log was closed: 0, or something could still
    /// change the store after its last sync.
    pub tasks_running_at_log_close: usize,
    /// Whether there was a log to close.
    pub log_closed: bool,
}

/// The cache service (see the module documentation). Share it behind an `Arc`.
#[derive(Debug)]
pub struct Cache {
    /// The entries.
    store: Arc<Store>,
    /// Limits every front end enforces.
    limits: Limits,
    /// Request bodies and responses in flight, against `limits.max_inflight_bytes`.
    inflight: Budget,
    /// The metrics registry.
    metrics: Arc<Metrics>,
    /// Replication to the other nodes; `None` on a node without peers.
    replication: Option<Arc<Replication>>,
    /// Where the volume is, until [`Cache::load`] takes it.
    persistence: Option<PersistSettings>,
    /// The log, once the volume is loaded.
    log: OnceLock<Arc<Log>>,
    /// Whether key requests are served: false while the volume loads and the catch-up runs,
    /// so that no request sees (or writes over) a half-loaded store.
    loaded: AtomicBool,
    /// Whether the node takes new traffic: cleared when draining starts.
    serving: AtomicBool,
    /// The sweeper, and the parent of replication's tasks.
    tasks: Tasks,
    /// The database behind the cache, if any.
    backend: Option<Arc<Backend>>,
    /// The write-behind queue, once [`Cache::load`] opened it (write-behind mode only).
    outbox: OnceLock<Arc<Outbox>>,
    /// Keys whose writes are between the table and the cache (`cache/backed.rs`).
    key_locks: backed::KeyLocks,
}

impl Cache {
    /// Builds the store and starts replication (with `peers`) and the sweeper. Must be called
    /// inside a tokio runtime. Without persistence and peers the cache is loaded at once.
    pub fn start(settings: CacheSettings, clock: Arc<dyn Clock>, peers: Option<Peers>) -> Cache {
        let tasks = Tasks::new();
        let replicated = peers.is_some();
        // Replicated versions carry the node's tag so that concurrent writes of two nodes are
        // ordered the same way everywhere.
        let versions = Arc::new(HybridClock::new(if replicated {
            settings.node_tag
        } else {
            0
        }));
        let store = Arc::new(Store::with_versions(
            settings.store,
            clock.clone(),
            versions.clone(),
            replicated,
        ));
        let metrics = Arc::new(Metrics::new(store.clone()));
        let replication = peers.map(|peers| {
            // Peers are held to the limits clients are.
            let records = RecordLimits {
                max_key_bytes: settings.limits.max_key_bytes,
                max_value_bytes: settings.limits.max_value_bytes,
                max_ttl: settings.limits.max_ttl,
            };
            Replication::start(
                store.clone(),
                versions,
                clock,
                peers.discovery,
                ReplicationSettings {
                    records,
                    ..peers.settings
                },
                metrics.replication().clone(),
                tasks.child(),
            )
        });
        tasks.spawn(sweeper::run(store.clone(), metrics.clone()));
        let backend = settings
            .backend
            .map(|backend| Backend::new(backend, metrics.backend().clone()));
        let write_behind = backend
            .as_ref()
            .is_some_and(|backend| backend.mode() == BackendMode::WriteBehind);
        let loaded = settings.persistence.is_none() && replication.is_none() && !write_behind;
        Cache {
            store,
            inflight: Budget::new(settings.limits.max_inflight_bytes),
            limits: settings.limits,
            metrics,
            replication,
            persistence: settings.persistence,
            log: OnceLock::new(),
            loaded: AtomicBool::new(loaded),
            serving: AtomicBool::new(true),
            tasks,
            backend,
            outbox: OnceLock::new(),
            key_locks: backed::KeyLocks::new(),
        }
    }

    /// Loads the data volume (with persistence) and starts the log, then catches up from the
    /// peers and starts anti-entropy (with replication); only then are key requests served.
    ///
    /// # Errors
    /// The volume cannot be listed or the log cannot start: the node must not serve without
    /// the data it is supposed to hold.
    pub async fn load(&self) -> io::Result<()> {
        if let Some(settings) = self.persistence.clone() {
            self.open_log(settings).await?;
        }
        self.open_outbox().await?;
        if let Some(replication) = &self.replication {
            // Batches from peers are applied from now on: last-writer-wins makes their order
            // with the catch-up irrelevant, but the warm start's loads must come first.
            replication.accept_batches();
            let report = replication.catch_up().await;
            tracing::info!(
                peers = report.peers_ok,
                unreachable = report.peers_failed,
                buckets = report.buckets_fetched,
                repaired = report.repaired,
                "caught up from peers"
            );
            replication.start_anti_entropy();
        }
        self.loaded.store(true, Ordering::Release);
        tracing::info!("ready");
        Ok(())
    }

    /// Loads the volume into the store, starts the log and attaches it as the store's journal.
    async fn open_log(&self, settings: PersistSettings) -> io::Result<()> {
        tracing::info!(
            root = %settings.root().path().display(),
            node = %settings.node,
            fsync = %settings.fsync,
            "persistence on"
        );
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        // Partitioned mode: only this node's partitions, where the membership already says
        // which they are (the rest of the shared volume is other nodes' to load).
        let owned = self
            .replication
            .as_ref()
            .and_then(|replication| replication.owned_partitions());
        let log = tokio::task::spawn_blocking(move || {
            let root = settings.root();
            let wanted =
                |key: &[u8]| owned.is_none_or(|owned| owned.contains(placement::partition_of(key)));
            persist::warm_start_keys(&root, &*store, metrics.persistence(), &wanted)
                .map_err(|error| io::Error::other(format!("warm start failed: {error}")))?;
            let log = Arc::new(Log::start(
                &settings,
                store.clone(),
                store.clock().clone(),
                metrics.persistence().clone(),
            )?);
            store.attach_journal(log.clone());
            Ok::<_, io::Error>(log)
        })
        .await
        .map_err(io::Error::other)??;
        let _ = self.log.set(log);
        tracing::info!("the data volume is loaded");
        Ok(())
    }

    /// Write-behind: opens the queue (reading back the writes not yet in the table) and
    /// starts flushing it.
    async fn open_outbox(&self) -> io::Result<()> {
        let Some(backend) = self.writing_backend() else {
            return Ok(());
        };
        let Some(queue) = backend.settings().queue.clone() else {
            return Ok(());
        };
        tracing::info!(dir = %queue.dir.display(), "write-behind queue on");
        let metrics = backend.metrics().clone();
        let outbox = tokio::task::spawn_blocking(move || Outbox::open(queue, metrics))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        let outbox = Arc::new(outbox);
        outbox.start(backend, &self.tasks);
        let _ = self.outbox.set(outbox);
        Ok(())
    }

    /// Completes with the reason when the log (or the write-behind queue) has stopped after
    /// a failed write: the node must exit so that it restarts and recovers from disk. Never
    /// completes otherwise.
    pub async fn failed(&self) -> String {
        let log = async {
            match self.log.get() {
                Some(log) => log.stopped().await,
                None => std::future::pending().await,
            }
        };
        let outbox = async {
            match self.outbox.get() {
                Some(outbox) => outbox.failed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            reason = log => reason,
            reason = outbox => reason,
        }
    }

    /// Stops replication, then the sweeper, then syncs and closes the log, in that order (see
    /// the module documentation). Call it once the front ends have drained.
    pub async fn close(&self) -> Closed {
        if let Some(outbox) = self.outbox.get() {
            let left = outbox.drain(OUTBOX_DRAIN).await;
            if left > 0 {
                tracing::warn!(
                    writes = left,
                    "write-behind writes not yet in the table at shutdown: they stay queued on \
                     disk and are flushed when the node starts again"
                );
            }
        }
        if let Some(replication) = &self.replication {
            replication.stop().await;
        }
        self.tasks.stop().await;
        let tasks_running_at_log_close = self.running_tasks();
        let log_closed = match self.log.get().cloned() {
            Some(log) => match tokio::task::spawn_blocking(move || log.close()).await {
                Ok(()) => {
                    tracing::info!("the log is synced and closed");
                    true
                }
                Err(error) => {
                    tracing::error!(%error, "closing the log failed");
                    false
                }
            },
            None => false,
        };
        Closed {
            tasks_running_at_log_close,
            log_closed,
        }
    }

    /// Background tasks running now (the sweeper, replication's).
    pub fn running_tasks(&self) -> usize {
        self.tasks.running()
            + self
                .replication
                .as_ref()
                .map_or(0, |replication| replication.running_tasks())
    }

    /// Now, on the cache's clock: what expiries and remaining lifetimes are measured from.
    pub fn now(&self) -> Timestamp {
        self.store.clock().now()
    }

    /// The limits every front end enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The budget every front end charges request bodies and responses in flight to.
    pub fn inflight(&self) -> &Budget {
        &self.inflight
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store, for front ends' statistics and for tests.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether key requests are served (the volume is loaded and the catch-up done).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Whether the node takes new traffic (false once draining started).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Starts draining: readiness turns false so that new traffic goes elsewhere.
    pub fn start_draining(&self) {
        self.serving.store(false, Ordering::Release);
    }

    /// Whether writes are persisted to the shared volume.
    pub fn is_persistent(&self) -> bool {
        self.persistence.is_some()
    }

    /// Whether the node replicates (and serves the peers' internal calls).
    pub fn is_replicated(&self) -> bool {
        self.replication.is_some()
    }

    /// The peers this node replicates to now and reaches (0 without replication).
    pub fn live_peers(&self) -> usize {
        self.replication
            .as_ref()
            .map_or(0, |replication| replication.live_peers())
    }

    /// The partitioned topology now (owners per partition, the node behind each member, this
    /// node's member index); `None` in full mode and on a node without peers.
    pub fn topology(&self) -> Option<Arc<Topology>> {
        self.replication.as_ref()?.topology()
    }

    /// Applies a batch of records a peer sent.
    ///
    /// # Errors
    /// [`PeerError`]: no replication here, still loading, or a damaged batch.
    pub fn receive(&self, batch: &[u8]) -> Result<Received, PeerError> {
        Ok(self.replication()?.receive(batch)?)
    }

    /// This node's digests, for a peer's anti-entropy.
    ///
    /// # Errors
    /// [`PeerError::NotReplicated`].
    pub fn digests(&self, cutoff: Cutoff) -> Result<Vec<BucketDigest>, PeerError> {
        Ok(self.replication()?.digests(cutoff))
    }

    /// The records of the key ranges a peer's anti-entropy asks for, as a batch.
    ///
    /// # Errors
    /// [`PeerError::NotReplicated`].
    pub fn fetch(&self, fetch: Fetch) -> Result<Bytes, PeerError> {
        Ok(self.replication()?.fetch(fetch))
    }

    /// What this node holds of each partition, for a peer's moves (partitioned mode).
    ///
    /// # Errors
    /// [`PeerError::NotReplicated`]; [`PeerError::NotPartitioned`] in full mode.
    pub fn holdings(&self) -> Result<Holdings, PeerError> {
        self.replication()?
            .holdings()
            .ok_or(PeerError::NotPartitioned)
    }

    /// Hands this node's partitions over to their new owners before it stops (partitioned
    /// mode; see [`Replication::hand_over`]).
    pub async fn hand_over(&self) {
        if let Some(replication) = &self.replication {
            replication.hand_over().await;
        }
    }

    fn replication(&self) -> Result<&Replication, PeerError> {
        self.replication.as_deref().ok_or(PeerError::NotReplicated)
    }
}

/// Why a peer's call was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// This node has no peers.
    #[error("this node does not replicate")]
    NotReplicated,
    /// The node holds every key (full mode): no partitions to tell of.
    #[error("this node is not partitioned")]
    NotPartitioned,
    /// Still loading, or a damaged batch.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
}
