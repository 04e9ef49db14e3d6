//! Replication metrics: per peer queue depth, lag (queued to acknowledged), retries and
//! drops; records applied from peers; anti-entropy repairs and pass durations. Peer labels
//! are bounded by the cluster size.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The label of per-peer metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    /// The peer's `host:port`.
    peer: String,
}

/// The label of refused records: why (a fixed set, see `admit::Refusal::reason`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    /// `key_length`, `value_size`, `lifetime` or `future_version`.
    reason: &'static str,
}

/// The label of the partition gauge: a partition's state on this node (a fixed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    /// `owned`, `complete`, `gaining` or `kept`.
    state: &'static str,
}

type LagFamily = Family<PeerLabel, Histogram, fn() -> Histogram>;

fn lag_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// The replication metrics; cheap to update from any task.
#[derive(Debug, Clone)]
pub struct ReplicationMetrics {
    queue_depth: Family<PeerLabel, Gauge>,
    lag: LagFamily,
    retries: Family<PeerLabel, Counter>,
    dropped: Family<PeerLabel, Counter>,
    applied: Counter,
    stale: Counter,
    repaired: Counter,
    refused: Family<ReasonLabel, Counter>,
    anti_entropy: Histogram,
    partitions: Family<StateLabel, Gauge>,
    moves: Counter,
    move_seconds: Histogram,
    discarded: Counter,
}

impl Default for ReplicationMetrics {
    fn default() -> ReplicationMetrics {
        ReplicationMetrics {
            queue_depth: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            retries: Family::default(),
            dropped: Family::default(),
            applied: Counter::default(),
            stale: Counter::default(),
            repaired: Counter::default(),
            refused: Family::default(),
            anti_entropy: Histogram::new(exponential_buckets(0.000_1, 4.0, 12)),
            partitions: Family::default(),
            moves: Counter::default(),
            // 10 ms .. ~10 min
            move_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            discarded: Counter::default(),
        }
    }
}

impl ReplicationMetrics {
    /// Adds every metric to `registry` (under its `tidecache_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "partitions",
            "Partitions by their state on this node (partitioned mode): owned; complete (owned \
             and holding all their data); gaining (owned, data still arriving); kept (moved \
             away, kept until the new owners hold them)",
            self.partitions.clone(),
        );
        registry.register(
            "partition_moves",
            "Partitions this node finished gaining",
            self.moves.clone(),
        );
        registry.register_with_unit(
            "partition_move",
            "Time from this node becoming a partition's owner to holding all its data",
            Unit::Seconds,
            self.move_seconds.clone(),
        );
        registry.register(
            "partition_discarded_entries",
            "Entries dropped from memory because their partitions moved to other nodes",
            self.discarded.clone(),
        );
        registry.register(
            "replication_queue_depth",
            "Records queued for a peer and not yet sent",
            self.queue_depth.clone(),
        );
        registry.register_with_unit(
            "replication_lag",
            "Time from a write being queued for a peer to the peer acknowledging it",
            Unit::Seconds,
            self.lag.clone(),
        );
        registry.register(
            "replication_retries",
            "Batches sent again to a peer after a failure",
            self.retries.clone(),
        );
        registry.register(
            "replication_dropped",
            "Records not delivered to a peer (queue full, peer down); anti-entropy repairs them",
            self.dropped.clone(),
        );
        registry.register(
            "replication_applied",
            "Records received from peers that changed this node's store",
            self.applied.clone(),
        );
        registry.register(
            "replication_stale",
            "Records received from peers that lost to a newer local version (last writer wins)",
            self.stale.clone(),
        );
        registry.register(
            "anti_entropy_repaired",
            "Records fetched from peers by anti-entropy or catch-up that changed this node's store",
            self.repaired.clone(),
        );
        registry.register(
            "replication_refused_records",
            "Records received from peers (batches or anti-entropy) refused by this node's limits \
             or for a version too far ahead of its clock; nothing of them was stored",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "anti_entropy_pass_duration",
            "Time one anti-entropy pass over all peers took",
            Unit::Seconds,
            self.anti_entropy.clone(),
        );
    }

    fn peer(address: &str) -> PeerLabel {
        PeerLabel {
            peer: address.to_string(),
        }
    }

    /// Exports a new peer's queue depth, retries and drops at 0 when its link starts, so that
    /// a peer that goes down shows as an increase of its drops (`rate()` sees nothing in a
    /// series born at its first drop).
    pub(crate) fn link_started(&self, peer: &str) {
        let peer = Self::peer(peer);
        self.queue_depth.get_or_create(&peer).inc_by(0);
        self.retries.get_or_create(&peer).inc_by(0);
        self.dropped.get_or_create(&peer).inc_by(0);
    }

    pub(crate) fn queued(&self, peer: &str, records: usize) {
        self.queue_depth
            .get_or_create(&Self::peer(peer))
            .inc_by(i64::try_from(records).unwrap_or(i64::MAX));
    }

    pub(crate) fn dequeued(&self, peer: &str, records: usize) {
        self.queue_depth
            .get_or_create(&Self::peer(peer))
            .dec_by(i64::try_from(records).unwrap_or(i64::MAX));
    }

    pub(crate) fn observe_lag(&self, peer: &str, lag: Duration) {
        self.lag
            .get_or_create(&Self::peer(peer))
            .observe(lag.as_secs_f64());
    }

    pub(crate) fn retried(&self, peer: &str) {
        self.retries.get_or_create(&Self::peer(peer)).inc();
    }

    pub(crate) fn dropped(&self, peer: &str, records: usize) {
        self.dropped
            .get_or_create(&Self::peer(peer))
            .inc_by(records as u64);
    }

    pub(crate) fn applied(&self, changed: u64, stale: u64) {
        self.applied.inc_by(changed);
        self.stale.inc_by(stale);
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn repaired(&self, records: u64) {
        self.repaired.inc_by(records);
    }

    pub(crate) fn observe_anti_entropy(&self, elapsed: Duration) {
        self.anti_entropy.observe(elapsed.as_secs_f64());
    }

    /// Sets the partition gauges.
    pub(crate) fn partitions(&self, owned: usize, complete: usize, gaining: usize, kept: usize) {
        for (state, count) in [
            ("owned", owned),
            ("complete", complete),
            ("gaining", gaining),
            ("kept", kept),
        ] {
            self.partitions
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts a partition gained, `elapsed` after this node became its owner.
    pub(crate) fn moved(&self, elapsed: Duration) {
        self.moves.inc();
        self.move_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts entries dropped from memory after their partitions moved away.
    pub(crate) fn discarded(&self, entries: u64) {
        self.discarded.inc_by(entries);
    }
}
