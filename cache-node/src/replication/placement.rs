//! Placement: which nodes hold a key. In full mode every node holds every key, so that any
//! pod can answer any read from memory; in partitioned mode each key has R owners, chosen
//! from the membership by the contract's [`Assignment`] (zone-distinct, balanced, few moves
//! on a change). The transport, acknowledgements, anti-entropy and the cache's routing ask
//! this module and nothing else.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tidecache_contract::placement::{self, Assignment, Member};

use super::holdings::{Holdings, Moves, Plan};
use super::membership::Peer;
use crate::base::digest::KeyRanges;

/// Which nodes hold a key (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every node holds every key.
    #[default]
    Full,
    /// Each key has `replication_factor` owners, chosen by its hash slot.
    Partitioned {
        /// Owners per key.
        replication_factor: usize,
    },
}

/// The partitioned membership as this node sees it now: the assignment, the node behind
/// each member, and which member this node is.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Owners per partition.
    pub assignment: Assignment,
    /// The node of each member of the assignment, by member index.
    pub nodes: Vec<Peer>,
    /// This node's member index; `None` while discovery does not list this node (it then
    /// owns nothing and forwards every key).
    pub local: Option<usize>,
    /// Counts membership changes seen, from 1: the "epoch" cluster-aware clients compare.
    pub epoch: u64,
    /// The assignment's fingerprint: nodes that agree on it place keys alike.
    pub fingerprint: u64,
}

impl Topology {
    /// The topology of `members` (this node marked local) with `replication_factor` owners
    /// per partition. Of several entries with one id the first counts.
    pub(super) fn compute(members: &[Peer], replication_factor: usize, epoch: u64) -> Topology {
        let assignment = Assignment::compute(
            members
                .iter()
                .map(|peer| Member::new(peer.id(), peer.zone())),
            replication_factor,
        );
        let mut nodes: Vec<Option<Peer>> = vec![None; assignment.members().len()];
        for peer in members {
            if let Some(index) = assignment.index_of(peer.id())
                && nodes[index].is_none()
            {
                nodes[index] = Some(peer.clone());
            }
        }
        let nodes: Vec<Peer> = nodes.into_iter().flatten().collect();
        let local = nodes.iter().position(Peer::is_local);
        Topology {
            fingerprint: assignment.fingerprint(),
            assignment,
            nodes,
            local,
            epoch,
        }
    }

    /// The owners of `key`'s partition, the primary first.
    pub fn owners(&self, key: &[u8]) -> impl Iterator<Item = &Peer> {
        self.owners_of(placement::partition_of(key))
    }

    /// The owners of `partition`, the primary first.
    pub fn owners_of(&self, partition: usize) -> impl Iterator<Item = &Peer> {
        self.assignment
            .owners(partition)
            .map(|member| &self.nodes[member])
    }

    /// Whether this node owns `key`.
    pub fn owns(&self, key: &[u8]) -> bool {
        self.local
            .is_some_and(|local| self.assignment.owns(local, placement::partition_of(key)))
    }

    /// Whether this node owns `partition`.
    pub fn owns_partition(&self, partition: usize) -> bool {
        self.local
            .is_some_and(|local| self.assignment.owns(local, partition))
    }
}

/// Where a key is served from, as the cache routes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node holds the key.
    Local,
    /// Other nodes own it: the owners, the primary first.
    Forward(Vec<Peer>),
}

/// How keys are placed on nodes: the mode, and in partitioned mode the topology of the
/// current membership, replaced on every change.
#[derive(Debug)]
pub struct Placement {
    mode: Mode,
    /// This node's zone where discovery does not say it (`--zone`).
    zone: Option<String>,
    topology: RwLock<Arc<Topology>>,
    /// The partition moves: what this node and its peers hold.
    moves: RwLock<Moves>,
    /// Wakes the mover when the membership changed.
    changed: tokio::sync::Notify,
}

/// The peers a write is sent to, and what its acknowledgement level counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// The other replicas (in partitioned mode the key's other owners): their
    /// acknowledgements count.
    pub replicas: Vec<Peer>,
    /// Nodes that keep the key's partition while it moves to new owners: they get the
    /// write so that what they serve meanwhile stays current, and their acknowledgements
    /// count in place of new owners that are not up yet (the new owners pull it from them).
    pub keepers: Vec<Peer>,
}

impl Targets {
    /// How many nodes hold the key: the replicas and this node.
    pub fn count(&self) -> usize {
        self.replicas.len() + 1
    }
}

impl Placement {
    /// The placement of `mode` over an empty membership, for a node in `zone` where
    /// discovery does not say.
    pub fn new(mode: Mode, zone: Option<String>) -> Placement {
        let width = match mode {
            Mode::Full => 1,
            Mode::Partitioned { replication_factor } => replication_factor,
        };
        Placement {
            mode,
            zone,
            topology: RwLock::new(Arc::new(Topology::compute(&[], width, 0))),
            moves: RwLock::new(Moves::default()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How digests group keys in this mode.
    pub fn key_ranges(&self) -> KeyRanges {
        match self.mode {
            Mode::Full => KeyRanges::Hashed,
            Mode::Partitioned { .. } => KeyRanges::Partitions,
        }
    }

    /// Follows a new membership (this node marked local in `members`).
    pub fn update(&self, members: &[Peer]) {
        let Mode::Partitioned { replication_factor } = self.mode else {
            return;
        };
        let mut topology = self
            .topology
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let members: Vec<Peer> = members
            .iter()
            .map(|peer| match (&self.zone, peer.zone()) {
                (Some(zone), None) if peer.is_local() => peer.clone().in_zone(Some(zone.clone())),
                _ => peer.clone(),
            })
            .collect();
        let next = Topology::compute(&members, replication_factor, topology.epoch + 1);
        if next.assignment != topology.assignment || next.nodes != topology.nodes {
            tracing::info!(
                members = next.nodes.len(),
                local = ?next.local.map(|m| next.nodes[m].id().to_string()),
                partitions = next.local.map_or(0, |m| next.assignment.partitions_of(m).count()),
                "partition owners changed"
            );
            self.moves_mut().changed(&topology, &next, Instant::now());
            *topology = Arc::new(next);
            self.changed.notify_one();
        }
    }

    /// The move state, to read.
    pub(super) fn moves(&self) -> RwLockReadGuard<'_, Moves> {
        self.moves
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The move state, to change. Taken after the topology's lock where both are held.
    pub(super) fn moves_mut(&self) -> RwLockWriteGuard<'_, Moves> {
        self.moves
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a round of partition pulls ([`Moves::pulled`]) against the topology as it is
    /// now, holding its lock meanwhile: a membership change during the pulls makes the
    /// round count for nothing, instead of marking complete partitions the new membership
    /// no longer gives this node.
    pub(super) fn record_pulls(
        &self,
        plan: &Plan,
        failed: &[String],
        now: Instant,
    ) -> Vec<Duration> {
        let topology = self
            .topology
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.moves_mut().pulled(&topology, plan, failed, now)
    }

    /// Completes when the membership changed since the last call (or at once if it did
    /// before it was first called).
    pub(super) async fn membership_changed(&self) {
        self.changed.notified().await;
    }

    /// What this node publishes of its partitions; `None` in full mode.
    pub fn holdings(&self) -> Option<Holdings> {
        let topology = self.topology()?;
        Some(self.moves().holdings(&topology))
    }

    /// Whether this node has data of `key`'s partition (owns or keeps it), i.e. may answer a
    /// request another node forwarded for it. Always in full mode.
    pub fn holds(&self, key: &[u8]) -> bool {
        match self.topology() {
            None => true,
            Some(topology) => {
                let partition = placement::partition_of(key);
                topology.owns_partition(partition) || self.moves().is_kept(partition)
            }
        }
    }

    /// The topology now; `None` in full mode.
    pub fn topology(&self) -> Option<Arc<Topology>> {
        match self.mode {
            Mode::Full => None,
            Mode::Partitioned { .. } => Some(
                self.topology
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
        }
    }

    /// Where `key` is served from: this node if it holds all of the key's partition; else a
    /// complete owner; else, while the partition moves, the node that keeps it (this one if
    /// it does, so that the data it took is served); else the owners.
    pub fn route(&self, key: &[u8]) -> Route {
        let Some(topology) = self.topology() else {
            return Route::Local;
        };
        let partition = placement::partition_of(key);
        let moves = self.moves();
        if moves.is_complete(partition) {
            return Route::Local;
        }
        let owners: Vec<&Peer> = topology
            .owners_of(partition)
            .filter(|peer| !peer.is_local())
            .collect();
        let (complete, gaining): (Vec<&Peer>, Vec<&Peer>) = owners
            .iter()
            .partition(|owner| moves.peer_complete(owner, partition, &topology));
        let ordered = |first: Vec<&Peer>, then: Vec<&Peer>| {
            Route::Forward(first.into_iter().chain(then).cloned().collect())
        };
        if !complete.is_empty() {
            return ordered(complete, gaining);
        }
        if moves.is_kept(partition) {
            return Route::Local;
        }
        let keepers: Vec<&Peer> = moves.keepers(partition, &topology).collect();
        if !keepers.is_empty() {
            return ordered(keepers, gaining);
        }
        if topology.owns_partition(partition) {
            return Route::Local;
        }
        ordered(gaining, Vec::new())
    }

    /// The peers (other than this node) a write of `key` is sent to. `peers` are the other
    /// nodes, in full mode all of them.
    pub fn targets(&self, key: &[u8], peers: &[Peer]) -> Targets {
        let Some(topology) = self.topology() else {
            return Targets {
                replicas: peers.to_vec(),
                keepers: Vec::new(),
            };
        };
        let partition = placement::partition_of(key);
        let replicas: Vec<Peer> = topology
            .owners_of(partition)
            .filter(|peer| !peer.is_local())
            .cloned()
            .collect();
        let keepers = self
            .moves()
            .keepers(partition, &topology)
            .filter(|peer| !peer.is_local())
            .cloned()
            .collect();
        Targets { replicas, keepers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Peer> {
        (0..4)
            .map(|i| {
                let peer = Peer::new(format!("10.0.0.{i}:8080"))
                    .with_id(format!("cache-{i}"))
                    .in_zone(Some(format!("zone-{}", i % 3)));
                if i == 0 { peer.local() } else { peer }
            })
            .collect()
    }

    #[test]
    fn full_placement_puts_every_key_on_every_node() {
        let peers = vec![Peer::new("a:1"), Peer::new("b:1")];
        let placement = Placement::new(Mode::Full, None);
        let targets = placement.targets(b"k", &peers);
        assert_eq!(
            (targets.replicas.clone(), targets.count()),
            (peers.clone(), 3)
        );
        assert!(targets.keepers.is_empty());
        assert_eq!(placement.targets(b"k", &[]).count(), 1);
        assert_eq!(placement.route(b"k"), Route::Local);
        assert!(placement.topology().is_none());
    }

    #[test]
    fn partitioned_placement_routes_to_the_owners_and_replicates_among_them() {
        let placement = Placement::new(
            Mode::Partitioned {
                replication_factor: 2,
            },
            None,
        );
        placement.update(&members());
        let topology = placement.topology().expect("partitioned");
        assert_eq!(topology.local, Some(0));
        let (mut owned, mut forwarded) = (0, 0);
        for i in 0..2000 {
            let key = format!("key-{i}");
            let owners: Vec<&Peer> = topology.owners(key.as_bytes()).collect();
            assert_eq!(owners.len(), 2);
            assert_ne!(
                owners[0].zone(),
                owners[1].zone(),
                "owners in distinct zones"
            );
            match placement.route(key.as_bytes()) {
                Route::Local => {
                    owned += 1;
                    let targets = placement.targets(key.as_bytes(), &[]);
                    assert_eq!(targets.count(), 2);
                    assert_eq!(targets.replicas.len(), 1);
                    assert!(!targets.replicas[0].is_local());
                }
                Route::Forward(to) => {
                    forwarded += 1;
                    assert!(to.iter().all(|peer| !peer.is_local()));
                }
            }
        }
        // Four members, two owners each: this node owns about half the keys.
        assert!(
            (800..1200).contains(&owned),
            "{owned} owned, {forwarded} forwarded"
        );
    }

    #[test]
    fn a_moving_partition_is_read_from_its_keeper_until_an_owner_is_complete() {
        use super::super::holdings::PartitionSet;
        let placement = Placement::new(
            Mode::Partitioned {
                replication_factor: 2,
            },
            None,
        );
        placement.update(&members());
        let topology = placement.topology().expect("partitioned");
        let partition = (0..placement::PARTITIONS)
            .find(|&p| !topology.owns_partition(p))
            .expect("a partition node 0 does not own");
        let key = (0..)
            .map(|i| format!("key-{i}"))
            .find(|key| placement::partition_of(key.as_bytes()) == partition)
            .expect("a key of it");
        let owners: Vec<Peer> = topology.owners_of(partition).cloned().collect();
        let keeper = topology
            .nodes
            .iter()
            .find(|node| !node.is_local() && !owners.contains(node))
            .expect("a third node")
            .clone();
        let only: PartitionSet = [partition].into_iter().collect();
        let says = |complete: bool| Holdings {
            fingerprint: topology.fingerprint,
            complete: if complete {
                only
            } else {
                PartitionSet::default()
            },
            held: only,
        };
        let hear = |first_owner_complete: bool| {
            placement.moves_mut().heard(
                &topology,
                vec![
                    (owners[0].clone(), Some(says(first_owner_complete))),
                    (owners[1].clone(), Some(says(false))),
                    (keeper.clone(), Some(says(false))),
                ],
                Instant::now(),
            );
        };
        // Both owners still gaining: the keeper serves, the owners after it.
        hear(false);
        let expected = vec![keeper.clone(), owners[0].clone(), owners[1].clone()];
        assert_eq!(placement.route(key.as_bytes()), Route::Forward(expected));
        // Writes reach the keeper too, without counting towards the level.
        let targets = placement.targets(key.as_bytes(), &[]);
        assert_eq!(
            (targets.replicas, targets.keepers),
            (owners.clone(), vec![keeper.clone()])
        );
        assert!(
            !placement.holds(key.as_bytes()),
            "node 0 neither owns nor keeps it"
        );
        // One owner complete: reads go to it first.
        hear(true);
        let expected = vec![owners[0].clone(), owners[1].clone()];
        assert_eq!(placement.route(key.as_bytes()), Route::Forward(expected));
    }

    #[test]
    fn a_node_the_membership_does_not_list_owns_nothing() {
        let placement = Placement::new(
            Mode::Partitioned {
                replication_factor: 2,
            },
            None,
        );
        let others: Vec<Peer> = members().into_iter().skip(1).collect();
        placement.update(&others);
        assert_eq!(placement.topology().expect("partitioned").local, None);
        assert!(matches!(placement.route(b"k"), Route::Forward(to) if to.len() == 2));
    }
}
