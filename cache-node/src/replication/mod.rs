//! Multi-pod synchronisation (contract 4): every write accepted by one node reaches every
//! other node, versions order writes the same way everywhere, and nodes that missed writes
//! repair themselves.
//!
//! # Layout
//! - `hlc`: the hybrid logical clock; a version is (clock value, node tag), last writer wins.
//! - `membership`: the peers, from `--peers` or the headless Service's DNS name.
//! - `placement`: which nodes hold a key: all of them, or (partitioned mode) its owners.
//! - `holdings`, `moves`: partitioned mode's moves: what each node holds while partitions
//!   move to new owners, and the task that moves them.
//! - `transport`: per-peer queues and batching over keep-alive HTTP connections.
//! - `ack`: `Tidecache-Ack: one|quorum|all` and the waiting for acknowledgements.
//! - `anti_entropy`: per-bucket digests compared with peers; the join catch-up.
//! - `wire`: batches in the disk contract's segment format; digests.
//! - `admit`: what is accepted from a peer: the node's own limits, versions at most a minute
//!   ahead of its clock.
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
//!   by clock, so a node whose clock is ahead wins ties it should not. A record more than a
//!   minute ahead of this node's clock is refused and counted, and does not move the clock.

pub mod ack;
mod admit;
mod anti_entropy;
pub mod endpoint_slices;
mod holdings;
pub mod membership;
mod metrics;
mod moves;
mod placement;
pub use holdings::{Holdings, PartitionSet};
pub use moves::MoveSettings;
pub use placement::Mode;
mod transport;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tidecache_contract::disk::{RecordError, RecordRef};
use tokio::sync::watch;

pub use ack::{AckError, AckLevel, AckWatch};
pub use admit::{RecordLimits, Refusal};
pub use membership::{Discovery, Peer};
pub use metrics::ReplicationMetrics;
pub use transport::{PeerError as PeerRequestError, Pending, Replicated, TransportSettings};

use crate::base::auth::PeerCredential;
use crate::base::digest::{BucketDigest, Cutoff};
use crate::base::hlc::HybridClock;
use crate::base::replica::Replica;
use crate::base::tasks::Tasks;
use crate::base::time::Clock;
use anti_entropy::{AntiEntropy, PassReport};
use placement::Placement;
pub use placement::{Route, Topology};
use transport::Transport;
use wire::{BatchError, Fetch};

/// The longest a poll of a peer's holdings may take: a peer that does not answer within it
/// is taken as unreachable (its partitions are served by others) for that round.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// The second anti-entropy pass after a peer answers again comes this long after the first:
/// past the one second of versions a pass leaves out, and past a link's probe (every 500 ms,
/// each up to the request timeout) that lets records flow again.
const RECOVERY_FOLLOW_UP: Duration = Duration::from_secs(4);

/// How long a stopping node waits to be dropped from the membership before it stops as a
/// member (a restart, not a departure: its partitions stay its own).
const LEAVE_NOTICE: Duration = Duration::from_secs(2);

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
    /// The peers' credential: presented to peers, and required on this node's internal
    /// routes; `None` where they are open (no authentication at all).
    pub peer_credential: Option<PeerCredential>,
    /// The limits records from peers are held to: the cache sets the node's own request
    /// limits here when it starts replication.
    pub records: RecordLimits,
    /// Which nodes hold a key.
    pub mode: Mode,
    /// This node's zone when discovery cannot tell it (`--zone`).
    pub zone: Option<String>,
    /// How partitions move (partitioned mode).
    pub moves: MoveSettings,
}

impl Default for ReplicationSettings {
    fn default() -> ReplicationSettings {
        ReplicationSettings {
            default_ack: AckLevel::One,
            ack_timeout: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(10),
            catch_up_timeout: Duration::from_secs(30),
            transport: TransportSettings::default(),
            peer_credential: None,
            records: RecordLimits::default(),
            mode: Mode::Full,
            zone: None,
            moves: MoveSettings::default(),
        }
    }
}

/// Why a batch from a peer was not applied. The peer retries; anti-entropy repairs what it
/// gives up on.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// This node is still loading the data volume.
    #[error("the node is loading the data volume; retry later")]
    NotAccepting,
    /// The batch is damaged; nothing of it was applied.
    #[error(transparent)]
    Damaged(#[from] BatchError),
    /// Records of the batch are beyond this node's limits or too far in the future; nothing
    /// of the batch was applied. Sending it again cannot succeed.
    #[error("{refused} of {records} records refused, nothing applied; the first: {first}")]
    Refused {
        /// Why the first refused record was refused.
        first: Refusal,
        /// How many were refused.
        refused: usize,
        /// How many the batch held.
        records: usize,
    },
}

/// What a received batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Records that changed the store.
    pub applied: u64,
    /// Records that lost to newer local versions (or could not be held).
    pub stale: u64,
}

/// A node's replication: its clock, transport, anti-entropy and the local store.
#[derive(Debug)]
pub struct Replication {
    /// Versions of local writes.
    pub hlc: Arc<HybridClock>,
    /// Which nodes hold which key.
    placement: Arc<Placement>,
    /// The peers' HTTP client, for forwarded requests.
    client: transport::HttpClient,
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
    /// Discovery, the membership watcher, the per-peer links and anti-entropy.
    tasks: Tasks,
}

impl Replication {
    /// Starts replication of `replica` for the node whose clock is `hlc`, following the
    /// peers `discovery` finds. Its tasks (discovery, the per-peer links) run in `tasks`
    /// until [`Replication::stop`]; must be called inside a tokio runtime.
    pub fn start(
        replica: Arc<dyn Replica>,
        hlc: Arc<HybridClock>,
        clock: Arc<dyn Clock>,
        discovery: Box<dyn Discovery>,
        settings: ReplicationSettings,
        metrics: Arc<ReplicationMetrics>,
        tasks: Tasks,
    ) -> Arc<Replication> {
        let (peers_tx, peers_rx) = watch::channel(discovery.initial());
        tasks.spawn(discovery.run(peers_tx));
        let client = transport::http_client(settings.peer_credential.as_ref());
        let forward_client = client.clone();
        let placement = Arc::new(Placement::new(settings.mode, settings.zone.clone()));
        let transport = Transport::start(
            peers_rx,
            placement.clone(),
            settings.transport.clone(),
            client.clone(),
            metrics.clone(),
            tasks.clone(),
        );
        let anti_entropy = AntiEntropy {
            placement: placement.clone(),
            limits: settings.records.clone(),
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
            placement,
            client: forward_client,
            replica,
            clock,
            transport,
            anti_entropy,
            settings,
            metrics,
            accepting: AtomicBool::new(false),
            tasks,
        })
    }

    /// Starts applying batches from peers (refused with 503 until then; peers retry, and
    /// anti-entropy repairs what they gave up on).
    pub fn accept_batches(&self) {
        self.accepting.store(true, Ordering::Release);
    }

    /// Applies a batch a peer sent (the segment bytes of [`wire::batch`]) by
    /// last-writer-wins, all of it or, when a record is refused, none of it.
    ///
    /// # Errors
    /// [`ReceiveError`]: not accepting yet, a damaged batch, or a record beyond this node's
    /// limits or too far ahead of its clock (nothing applied; each refusal counted).
    pub fn receive(&self, batch: &[u8]) -> Result<Received, ReceiveError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(ReceiveError::NotAccepting);
        }
        let records = wire::decode_batch(batch)?;
        let total = records.len();
        let (records, refusals) = admit::admit(
            &self.settings.records,
            records,
            self.clock.now(),
            &self.metrics,
        );
        if let Some(first) = refusals.first() {
            tracing::warn!(
                refused = refusals.len(),
                records = total,
                error = %first,
                "refused a batch from a peer"
            );
            return Err(ReceiveError::Refused {
                first: first.clone(),
                refused: refusals.len(),
                records: total,
            });
        }
        // In partitioned mode a key lives on its owners only, so each owner persists what
        // it receives, as the accepting node does: the volume then holds every key even if
        // the accepting node's log was lost.
        let persist = self.placement.mode() != Mode::Full;
        let (applied, stale) =
            anti_entropy::apply_all(&*self.replica, &self.hlc, &*self.clock, records, persist);
        self.metrics.applied(applied, stale);
        Ok(Received { applied, stale })
    }

    /// This node's digests of the versions `cutoff` includes, for a peer's anti-entropy.
    pub fn digests(&self, cutoff: Cutoff) -> Vec<BucketDigest> {
        self.replica.digests(Cutoff {
            ranges: self.placement.key_ranges(),
            ..cutoff
        })
    }

    /// The records (values and tombstones) of the key ranges `fetch` names, as a batch.
    pub fn fetch(&self, fetch: Fetch) -> Bytes {
        let ranges: HashSet<(i64, u16)> = fetch.ranges.into_iter().collect();
        let cutoff = Cutoff {
            before: fetch.before,
            ranges: self.placement.key_ranges(),
        };
        let mut encoded = Vec::new();
        for record in self.replica.range_records(&ranges, cutoff) {
            match wire::encode_record(record.borrowed()) {
                Ok(bytes) => encoded.push(bytes),
                Err(error) => tracing::error!(%error, "a stored record cannot be encoded"),
            }
        }
        wire::batch(&encoded)
    }

    /// Queues a write for the key's other replicas without waiting for acknowledgements, so
    /// that many writes (a batch request) can be queued before any is waited for.
    ///
    /// # Errors
    /// A [`RecordError`] for a record the format cannot hold.
    pub async fn send(
        &self,
        record: RecordRef<'_>,
        level: Option<AckLevel>,
    ) -> Result<Pending, RecordError> {
        let encoded: Bytes = wire::encode_record(record)?;
        let level = level.unwrap_or(self.settings.default_ack);
        Ok(self
            .transport
            .send(record.key, encoded, level, self.settings.ack_timeout)
            .await)
    }

    /// Where `key` is served from: here, or (partitioned mode) by its owners.
    pub fn route(&self, key: &[u8]) -> Route {
        self.placement.route(key)
    }

    /// The partitioned topology now; `None` in full mode.
    pub fn topology(&self) -> Option<Arc<Topology>> {
        self.placement.topology()
    }

    /// Sends a forwarded request (`body`) to the first of `owners` that serves it, and
    /// returns its answer. A request that is not `idempotent` moves on to the next owner
    /// only when the one tried cannot have served it (no connection, or it is loading).
    ///
    /// # Errors
    /// The last owner's failure.
    pub async fn forward(
        &self,
        owners: &[Peer],
        body: Bytes,
        idempotent: bool,
    ) -> Result<Bytes, PeerRequestError> {
        let timeout = self.settings.ack_timeout + self.settings.transport.request_timeout;
        // Owners that stopped answering go last: a node cut off would otherwise hold every
        // request it is first for until the timeout.
        let mut owners = owners.to_vec();
        owners.sort_by_key(|owner| self.transport.is_down(owner));
        let mut last = None;
        for owner in &owners {
            match transport::post_returning(
                &self.client,
                owner,
                wire::FORWARD_PATH,
                wire::FORWARD_CONTENT_TYPE,
                body.clone(),
                timeout,
            )
            .await
            {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    let next = idempotent || error.not_served();
                    tracing::debug!(owner = %owner, %error, retry = next, "forwarding failed");
                    last = Some(error);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or(PeerRequestError::NoPeer))
    }

    /// The peers known now whose links are up.
    pub fn live_peers(&self) -> usize {
        self.transport.live_peers()
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

    /// Starts the periodic anti-entropy pass, and in partitioned mode the mover, which run
    /// until [`Replication::stop`].
    pub fn start_anti_entropy(self: &Arc<Self>) {
        let replication = self.clone();
        self.tasks
            .spawn(async move { replication.run_anti_entropy().await });
        if self.placement.mode() != Mode::Full {
            let mover = moves::Mover {
                placement: self.placement.clone(),
                anti_entropy: self.anti_entropy.clone(),
                transport: self.transport.clone(),
                replica: self.replica.clone(),
                client: self.client.clone(),
                metrics: self.metrics.clone(),
                settings: self.settings.moves,
                poll_timeout: self.settings.transport.request_timeout.min(POLL_TIMEOUT),
                silent: Mutex::default(),
            };
            self.tasks.spawn(mover.run());
        }
    }

    /// What this node holds of each partition (partitioned mode; `None` in full mode), for
    /// its peers' moves.
    pub fn holdings(&self) -> Option<Holdings> {
        self.placement.holdings()
    }

    /// The partitions this node owns (partitioned mode, once the membership lists it).
    pub fn owned_partitions(&self) -> Option<PartitionSet> {
        let topology = self.placement.topology()?;
        topology.local?;
        Some(
            (0..tidecache_contract::placement::PARTITIONS)
                .filter(|&partition| topology.owns_partition(partition))
                .collect(),
        )
    }

    /// Whether this node may answer a request forwarded for `key`: it owns or keeps the
    /// key's partition (always in full mode).
    pub fn holds(&self, key: &[u8]) -> bool {
        self.placement.holds(key)
    }

    /// Hands this node's partitions over before it stops (partitioned mode): if the
    /// membership no longer lists this node (Kubernetes marks a deleted pod's endpoint
    /// terminating within moments of the signal), waits until no partition is kept here any
    /// more, i.e. the new owners hold everything this node held, at most the hand-over
    /// timeout. Returns the partitions still kept when it stopped waiting.
    pub async fn hand_over(&self) -> usize {
        if self.placement.mode() == Mode::Full {
            return 0;
        }
        let within = self.settings.moves.handoff_timeout;
        let started = tokio::time::Instant::now();
        let deadline = started + within;
        // The membership's word that this node leaves may come just after the signal.
        let listed_until = started + within.min(LEAVE_NOTICE);
        loop {
            let listed = self
                .placement
                .topology()
                .is_some_and(|topology| topology.local.is_some());
            let kept = self
                .placement
                .holdings()
                .map_or(0, |h| h.held.len() - h.held.and(&h.complete).len());
            let now = tokio::time::Instant::now();
            if (listed && now >= listed_until) || (!listed && kept == 0) || now >= deadline {
                if kept > 0 {
                    tracing::warn!(kept, "stopping with partitions not yet handed over");
                } else if !listed {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis(),
                        "partitions handed over"
                    );
                }
                return kept;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs anti-entropy passes every interval, and at once when a peer that did not answer
    /// does again (one side missed the records dropped meanwhile, and is back to serving
    /// reads), then once more [`RECOVERY_FOLLOW_UP`] later: the first pass leaves out the
    /// last second's versions, and records the other side dropped until its link's probe
    /// went through.
    async fn run_anti_entropy(&self) {
        let mut ticker = tokio::time::interval(self.settings.anti_entropy_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut follow_up = false;
        loop {
            let recovered = tokio::select! {
                _ = ticker.tick() => false,
                () = self.transport.recovered() => true,
                () = tokio::time::sleep(RECOVERY_FOLLOW_UP), if follow_up => false,
            };
            follow_up = recovered;
            if recovered {
                ticker.reset();
            }
            let peers = self.transport.peers();
            self.anti_entropy.pass(&peers, false).await;
        }
    }

    /// Replication tasks running now.
    pub fn running_tasks(&self) -> usize {
        self.tasks.running()
    }

    /// Stops every replication task (discovery, links, anti-entropy) and waits until each
    /// has ended: nothing is sent or applied afterwards.
    pub async fn stop(&self) {
        self.tasks.stop().await;
    }
}

#[cfg(test)]
mod tests;
