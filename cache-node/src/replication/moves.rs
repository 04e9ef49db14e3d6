//! The mover (partitioned mode): the task that carries out the move protocol of
//! [`holdings`](super::holdings) — it polls the peers' holdings, pulls the partitions this
//! node gains, and clears from memory the partitions that moved away once their new owners
//! hold them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tidecache_contract::placement::partition_of;

use super::anti_entropy::AntiEntropy;
use super::holdings::Holdings;
use super::membership::Peer;
use super::metrics::ReplicationMetrics;
use super::placement::{Placement, Topology};
use super::transport::{self, HttpClient, Transport};
use super::wire::PARTITIONS_PATH;
use crate::base::replica::Replica;

/// How often the mover polls while a move is going on (anywhere in the cluster it can see)
/// or the membership has not settled.
const BUSY_INTERVAL: Duration = Duration::from_millis(200);

/// How often it polls otherwise: reads of a partition are routed by what peers said, so
/// this bounds how stale that is once moves ended.
const IDLE_INTERVAL: Duration = Duration::from_secs(2);

/// How partitions move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveSettings {
    /// At most this many partitions are pulled in one round (the rate limit on concurrent
    /// moves): a round is one digest request per source and one fetch per chunk of key
    /// ranges, so this bounds what a joining node asks of its peers at once. Each request
    /// scans the source's whole store, so fewer, larger rounds cost the sources less.
    pub max_concurrent: usize,
    /// How long a stopping node that the membership dropped waits for its partitions' new
    /// owners to hold them (below the pod's termination grace period).
    pub handoff_timeout: Duration,
}

impl Default for MoveSettings {
    fn default() -> MoveSettings {
        MoveSettings {
            max_concurrent: 256,
            handoff_timeout: Duration::from_secs(40),
        }
    }
}

/// The mover's parts.
#[derive(Debug)]
pub(super) struct Mover {
    pub(super) placement: Arc<Placement>,
    pub(super) anti_entropy: AntiEntropy,
    pub(super) transport: Arc<Transport>,
    pub(super) replica: Arc<dyn Replica>,
    pub(super) client: HttpClient,
    pub(super) metrics: Arc<ReplicationMetrics>,
    pub(super) settings: MoveSettings,
    pub(super) poll_timeout: Duration,
    /// The peers whose last poll failed: one that answers again was cut off or stalled, and
    /// this node pulls what it missed at once (see [`Transport::recovered`]).
    pub(super) silent: Mutex<HashSet<Peer>>,
}

impl Mover {
    /// Runs rounds until the node stops: often while anything moves, rarely otherwise, and
    /// at once after a membership change.
    pub(super) async fn run(self) {
        loop {
            let busy = self.round().await;
            let pause = if busy { BUSY_INTERVAL } else { IDLE_INTERVAL };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.placement.membership_changed() => {}
            }
        }
    }

    /// One round: poll, pull, drop. Returns whether a move is going on.
    async fn round(&self) -> bool {
        let Some(topology) = self.placement.topology() else {
            return false;
        };
        let peers = self.placement.moves().peers();
        // All at once: a peer that does not answer costs one timeout per round, not one each.
        let holdings = futures::future::join_all(peers.iter().map(|peer| self.poll(peer))).await;
        let answers: Vec<(Peer, Option<Holdings>)> = peers.into_iter().zip(holdings).collect();
        self.note_silence(&answers);
        let forgot = self
            .placement
            .moves_mut()
            .heard(&topology, answers, Instant::now());
        if forgot {
            self.transport.refresh_links();
        }
        self.pull(&topology).await;
        self.drop_moved(&topology);
        let moves = self.placement.moves();
        let (owned, complete, gaining, kept) = moves.counts(&topology);
        self.metrics.partitions(owned, complete, gaining, kept);
        moves.busy(&topology, Instant::now())
    }

    /// Remembers which peers did not answer, and wakes anti-entropy when one answers again.
    fn note_silence(&self, answers: &[(Peer, Option<Holdings>)]) {
        let mut silent = self.silent.lock().unwrap_or_else(PoisonError::into_inner);
        let mut back = false;
        for (peer, answer) in answers {
            if answer.is_some() {
                back |= silent.remove(peer);
            } else {
                silent.insert(peer.clone());
            }
        }
        if back {
            self.transport.note_recovered();
        }
    }

    /// What `peer` holds, or `None` if it did not answer well.
    async fn poll(&self, peer: &Peer) -> Option<Holdings> {
        let body = transport::get(&self.client, peer, PARTITIONS_PATH, self.poll_timeout)
            .await
            .map_err(|error| tracing::debug!(%peer, %error, "holdings not polled"))
            .ok()?;
        serde_json::from_slice(&body)
            .map_err(|error| tracing::warn!(%peer, %error, "a peer's holdings are not valid"))
            .ok()
    }

    /// Pulls the next round of gaining partitions from the nodes that hold them, and marks
    /// complete those every holder gave.
    async fn pull(&self, topology: &Topology) {
        let plan =
            self.placement
                .moves()
                .plan(topology, self.settings.max_concurrent, Instant::now());
        let Some(plan) = plan else {
            return;
        };
        let mut failed = Vec::new();
        let mut pulled = 0;
        for (source, partitions) in &plan.sources {
            match self.anti_entropy.pull(source, partitions).await {
                Ok(records) => pulled += records,
                Err(error) => {
                    tracing::warn!(%source, %error, "a partition pull failed; retrying");
                    failed.push(source.address().to_string());
                }
            }
        }
        let durations = self.placement.record_pulls(&plan, &failed, Instant::now());
        if !durations.is_empty() {
            tracing::info!(
                partitions = durations.len(),
                sources = plan.sources.len(),
                records = pulled,
                longest_ms = durations.iter().max().map(Duration::as_millis),
                "partitions gained"
            );
        }
        for elapsed in durations {
            self.metrics.moved(elapsed);
        }
    }

    /// Drops from memory the kept partitions whose new owners all hold them, and (once per
    /// settled membership) whatever this node neither owns nor keeps.
    fn drop_moved(&self, topology: &Topology) {
        let (droppable, sweep) = {
            let mut moves = self.placement.moves_mut();
            let droppable = moves.droppable(topology);
            moves.dropped(&droppable);
            (droppable, moves.sweep_due(topology, Instant::now()))
        };
        if droppable.is_empty() && !sweep {
            return;
        }
        let retained = self.placement.moves().retained(topology);
        let discarded = self
            .replica
            .discard(&|key| retained.contains(partition_of(key)));
        self.metrics.discarded(discarded);
        if discarded > 0 || !droppable.is_empty() {
            tracing::info!(
                partitions = droppable.len(),
                entries = discarded,
                "dropped partitions that moved to other nodes"
            );
        }
    }
}
