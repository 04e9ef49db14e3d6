//! What each node holds while partitions move (partitioned mode), and the decisions of the
//! move protocol, as plain state: no I/O here, so that every rule is unit-tested.
//!
//! # The protocol
//! When the membership changes, every node computes the new assignment on its own. For each
//! partition a node is then in one of four states:
//! - **complete**: it owns the partition and holds all of its data; it serves it;
//! - **gaining**: it owns it, but its data is still arriving;
//! - **kept**: it owned it before and no longer does; it keeps the data, takes the
//!   partition's writes and serves them until every new owner is complete;
//! - nothing at all.
//!
//! Every node publishes its [`Holdings`] (`GET /internal/v1/partitions`) and polls its peers'
//! (members, and former members until they hold nothing). A gaining node waits until every
//! peer it can reach places keys by the same membership (the same assignment fingerprint)
//! and has done so for [`SETTLE`]: from then on every write of the partition reaches it,
//! because every node sends each write to the key's current owners. It then pulls the
//! partition from every node that holds some of it (an anti-entropy pass restricted to the
//! partition: digests, then the differing key ranges), and when each of those pulls
//! succeeded it is complete. A kept partition is dropped from memory once every current
//! owner reports it complete. The hand-over is atomic per partition in the sense that
//! matters to clients: a read is sent to a complete owner if one is known, else to a node
//! that keeps the partition, so it never lands on a node that is still receiving its data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidecache_contract::placement::PARTITIONS;

use super::membership::Peer;
use super::placement::Topology;

const WORDS: usize = PARTITIONS / 64;

/// How long a membership must have been agreed on before a gaining node takes the pull that
/// completes a partition: writes accepted just before the change are on their way to the
/// nodes that held the partition then, and this lets them arrive there first.
pub const SETTLE: Duration = Duration::from_secs(1);

/// How many polls in a row a former member may fail before it is forgotten: it is gone, and
/// whatever it kept is gone with it (its co-owners had the same data).
const FORGET_AFTER: u32 = 3;

/// A set of partitions, as a bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionSet([u64; WORDS]);

impl PartitionSet {
    /// Whether `partition` is in the set.
    pub fn contains(&self, partition: usize) -> bool {
        partition < PARTITIONS && (self.0[partition / 64] >> (partition % 64)) & 1 == 1
    }

    /// Adds `partition`.
    pub fn insert(&mut self, partition: usize) {
        if partition < PARTITIONS {
            self.0[partition / 64] |= 1 << (partition % 64);
        }
    }

    /// Removes `partition`.
    pub fn remove(&mut self, partition: usize) {
        if partition < PARTITIONS {
            self.0[partition / 64] &= !(1 << (partition % 64));
        }
    }

    /// How many partitions the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    /// The partitions in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..PARTITIONS).filter(|&partition| self.contains(partition))
    }

    /// The partitions in both sets.
    #[must_use]
    pub fn and(&self, other: &PartitionSet) -> PartitionSet {
        let mut both = *self;
        for (word, theirs) in both.0.iter_mut().zip(other.0) {
            *word &= theirs;
        }
        both
    }
}

impl FromIterator<usize> for PartitionSet {
    fn from_iter<I: IntoIterator<Item = usize>>(partitions: I) -> PartitionSet {
        let mut set = PartitionSet::default();
        for partition in partitions {
            set.insert(partition);
        }
        set
    }
}

/// What a node says of its partitions, for its peers' moves and routing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Holdings {
    /// The fingerprint of the assignment it places keys by.
    pub fingerprint: u64,
    /// The partitions it owns and holds all the data of: it serves them.
    pub complete: PartitionSet,
    /// The partitions it has data of: those it owns (complete or gaining) and those it
    /// keeps after they moved away.
    pub held: PartitionSet,
}

impl Holdings {
    /// Whether the node is in the middle of a move: gaining or keeping a partition.
    pub fn moving(&self) -> bool {
        self.held != self.complete
    }
}

/// A peer as polling last found it.
#[derive(Debug, Clone)]
struct PeerView {
    peer: Peer,
    /// Whether the current membership lists it (else it is a former member that may still
    /// keep partitions).
    member: bool,
    /// What it said the last time it answered.
    holdings: Option<Holdings>,
    /// Polls failed in a row.
    failures: u32,
}

impl PeerView {
    /// What it holds, if it answered the last poll.
    fn fresh(&self) -> Option<&Holdings> {
        self.holdings.as_ref().filter(|_| self.failures == 0)
    }
}

/// The pulls a gaining node takes in one round: which partitions, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The fingerprint of the membership the plan was made for: a change on the way voids it.
    pub fingerprint: u64,
    /// The partitions to complete.
    pub partitions: PartitionSet,
    /// Each node holding some of them, with the ones it holds.
    pub sources: Vec<(Peer, PartitionSet)>,
}

/// The move state of this node and what it knows of its peers'.
#[derive(Debug, Default)]
pub struct Moves {
    /// Owned partitions whose data is all here.
    complete: PartitionSet,
    /// Partitions moved away whose data is kept until their new owners are complete.
    kept: PartitionSet,
    /// When each gaining partition started gaining, for the move durations.
    gaining_since: BTreeMap<usize, Instant>,
    /// Members and former members, by address.
    peers: BTreeMap<String, PeerView>,
    /// Since when every peer that answered places by this node's membership.
    converged_since: Option<Instant>,
    /// The fingerprint of the membership under which memory was last cleared of partitions
    /// this node neither owns nor keeps.
    swept: Option<u64>,
}

impl Moves {
    /// Follows a membership change from `old` to `next`: partitions owned no longer are
    /// kept, partitions owned newly start gaining, and peers that left are remembered.
    pub fn changed(&mut self, old: &Topology, next: &Topology, now: Instant) {
        for partition in 0..PARTITIONS {
            let (before, after) = (
                old.owns_partition(partition),
                next.owns_partition(partition),
            );
            if before && !after {
                // Kept even if it was still gaining: some of its data (writes it took) may
                // be here only.
                self.kept.insert(partition);
                self.complete.remove(partition);
                self.gaining_since.remove(&partition);
            } else if after && !before {
                // A kept partition coming back may have missed writes while kept by the old
                // membership's rules: it gains again (the pull is cheap when little differs).
                self.kept.remove(partition);
                self.complete.remove(partition);
                self.gaining_since.insert(partition, now);
            }
        }
        for view in self.peers.values_mut() {
            view.member = false;
        }
        for node in next.nodes.iter().filter(|node| !node.is_local()) {
            let view = self
                .peers
                .entry(node.address().to_string())
                .or_insert_with(|| PeerView {
                    peer: node.clone(),
                    member: true,
                    holdings: None,
                    failures: 0,
                });
            view.peer = node.clone();
            view.member = true;
        }
        self.converged_since = None;
    }

    /// The peers to poll: members and former members.
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.values().map(|view| view.peer.clone()).collect()
    }

    /// Former members still remembered: they may keep partitions, so writes of those
    /// partitions reach them too.
    pub fn former(&self) -> Vec<Peer> {
        self.peers
            .values()
            .filter(|view| !view.member)
            .map(|view| view.peer.clone())
            .collect()
    }

    /// Records a round of polls (`None`: no answer) under `topology`; returns whether a
    /// former member was forgotten.
    pub fn heard(
        &mut self,
        topology: &Topology,
        answers: Vec<(Peer, Option<Holdings>)>,
        now: Instant,
    ) -> bool {
        for (peer, answer) in answers {
            let Some(view) = self.peers.get_mut(peer.address()) else {
                continue;
            };
            match answer {
                Some(holdings) => {
                    view.holdings = Some(holdings);
                    view.failures = 0;
                }
                None => view.failures = view.failures.saturating_add(1),
            }
        }
        let before = self.peers.len();
        self.peers.retain(|_, view| {
            view.member
                || (view.failures < FORGET_AFTER
                    && view.holdings.as_ref().is_none_or(|h| !h.held.is_empty()))
        });
        // Peers that do not answer are not waited for: a dead node takes no writes.
        let converged = self
            .peers
            .values()
            .filter_map(PeerView::fresh)
            .all(|holdings| holdings.fingerprint == topology.fingerprint);
        self.converged_since = if converged {
            Some(self.converged_since.unwrap_or(now))
        } else {
            None
        };
        self.peers.len() != before
    }

    /// Whether every peer that answered has placed by `topology` for [`SETTLE`].
    fn settled(&self, now: Instant) -> bool {
        self.converged_since
            .is_some_and(|since| now.saturating_duration_since(since) >= SETTLE)
    }

    /// The owned partitions whose data is still arriving.
    fn gaining(&self, topology: &Topology) -> PartitionSet {
        (0..PARTITIONS)
            .filter(|&p| topology.owns_partition(p) && !self.complete.contains(p))
            .collect()
    }

    /// The next round of pulls under `topology`, at most `max` partitions (the rate limit on
    /// concurrent moves); `None` when nothing is gaining or the membership has not settled.
    pub fn plan(&self, topology: &Topology, max: usize, now: Instant) -> Option<Plan> {
        if !self.settled(now) {
            return None;
        }
        let partitions: PartitionSet = self.gaining(topology).iter().take(max.max(1)).collect();
        if partitions.is_empty() {
            return None;
        }
        let sources = self
            .peers
            .values()
            .filter_map(|view| {
                let holds = view.fresh()?.held.and(&partitions);
                (!holds.is_empty()).then(|| (view.peer.clone(), holds))
            })
            .collect();
        Some(Plan {
            fingerprint: topology.fingerprint,
            partitions,
            sources,
        })
    }

    /// Records a round of pulls: each planned partition is complete unless a source that
    /// holds it failed (`failed`, by address) or the membership changed meanwhile. Returns
    /// how long each completed partition took.
    pub fn pulled(
        &mut self,
        topology: &Topology,
        plan: &Plan,
        failed: &[String],
        now: Instant,
    ) -> Vec<Duration> {
        if plan.fingerprint != topology.fingerprint {
            return Vec::new();
        }
        let mut durations = Vec::new();
        for partition in plan.partitions.iter() {
            let missed = plan.sources.iter().any(|(source, holds)| {
                holds.contains(partition) && failed.iter().any(|f| f == source.address())
            });
            if missed || !topology.owns_partition(partition) || self.complete.contains(partition) {
                continue;
            }
            self.complete.insert(partition);
            let since = self.gaining_since.remove(&partition).unwrap_or(now);
            durations.push(now.saturating_duration_since(since));
        }
        durations
    }

    /// Kept partitions every current owner reports complete under `topology`: their data
    /// may leave this node's memory.
    pub fn droppable(&self, topology: &Topology) -> PartitionSet {
        if self.converged_since.is_none() {
            return PartitionSet::default();
        }
        self.kept
            .iter()
            .filter(|&partition| {
                let mut owners = topology.owners_of(partition).peekable();
                owners.peek().is_some()
                    && owners.all(|owner| self.peer_complete(owner, partition, topology))
            })
            .collect()
    }

    /// Forgets kept partitions whose data left memory.
    pub fn dropped(&mut self, partitions: &PartitionSet) {
        for partition in partitions.iter() {
            self.kept.remove(partition);
        }
    }

    /// Whether memory should be cleared of the partitions this node neither owns nor keeps
    /// (left over from the volume's warm start, or from writes sent under an older
    /// membership): once per membership, after it has settled.
    pub fn sweep_due(&mut self, topology: &Topology, now: Instant) -> bool {
        if topology.local.is_none()
            || !self.settled(now)
            || self.swept == Some(topology.fingerprint)
        {
            return false;
        }
        self.swept = Some(topology.fingerprint);
        true
    }

    /// The partitions whose data this node must keep: owned or kept.
    pub fn retained(&self, topology: &Topology) -> PartitionSet {
        (0..PARTITIONS)
            .filter(|&p| topology.owns_partition(p) || self.kept.contains(p))
            .collect()
    }

    /// What this node publishes.
    pub fn holdings(&self, topology: &Topology) -> Holdings {
        Holdings {
            fingerprint: topology.fingerprint,
            complete: self.complete,
            held: self.retained(topology),
        }
    }

    /// Partitions owned, complete, gaining and kept, for the gauges.
    pub fn counts(&self, topology: &Topology) -> (usize, usize, usize, usize) {
        let owned = (0..PARTITIONS)
            .filter(|&p| topology.owns_partition(p))
            .count();
        // Counted against `topology`, which may be a round's copy older than this state.
        let complete = (0..PARTITIONS)
            .filter(|&p| topology.owns_partition(p) && self.complete.contains(p))
            .count();
        (owned, complete, owned - complete, self.kept.len())
    }

    /// Whether this node or a peer it heard from is in the middle of a move, or the
    /// membership has not settled: polls then come often.
    pub fn busy(&self, topology: &Topology, now: Instant) -> bool {
        !self.settled(now)
            || !self.kept.is_empty()
            || !self.gaining(topology).is_empty()
            || self
                .peers
                .values()
                .filter_map(|view| view.holdings.as_ref())
                .any(Holdings::moving)
    }

    /// Whether this node holds all the data of `partition`.
    pub fn is_complete(&self, partition: usize) -> bool {
        self.complete.contains(partition)
    }

    /// Whether this node keeps `partition` after it moved away.
    pub fn is_kept(&self, partition: usize) -> bool {
        self.kept.contains(partition)
    }

    /// Whether `peer` said (in its last answer, under the same membership) that it holds
    /// all of `partition`.
    pub fn peer_complete(&self, peer: &Peer, partition: usize, topology: &Topology) -> bool {
        self.peers
            .get(peer.address())
            .and_then(PeerView::fresh)
            .is_some_and(|h| {
                h.fingerprint == topology.fingerprint && h.complete.contains(partition)
            })
    }

    /// The peers that keep `partition` after it moved away from them (by their last
    /// answer), owners of it left out.
    pub fn keepers<'a>(
        &'a self,
        partition: usize,
        topology: &'a Topology,
    ) -> impl Iterator<Item = &'a Peer> + 'a {
        self.peers
            .values()
            .filter(move |view| {
                view.fresh().is_some_and(|h| h.held.contains(partition))
                    && !topology
                        .owners_of(partition)
                        .any(|owner| owner.address() == view.peer.address())
            })
            .map(|view| &view.peer)
    }
}

#[cfg(test)]
mod tests;
