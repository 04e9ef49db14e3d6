//! Which members own which partitions: computed from the membership alone, the same on every
//! node and in the operator, with no stored state to agree on.
//!
//! # The rules, in priority order
//! 1. Each partition has `min(R, members)` distinct owners.
//! 2. The owners of a partition are in distinct zones whenever there are enough zones.
//! 3. Every member owns at most its even share `P·R / N` plus 1/32 (bounded load), so that
//!    the partitions are spread evenly whatever the hashes say.
//! 4. Otherwise each partition prefers the members with the highest rendezvous score
//!    (a hash of member and partition), so that a membership change moves few partitions:
//!    a partition changes owner only where the new member scores highest, where a removed
//!    member owned it, or where a load bound pushes it on.
//!
//! Partitions are decided in order, each against the loads the earlier ones left, which is
//! what makes the bounded loads deterministic.

use std::collections::BTreeMap;

use super::{PARTITIONS, SLOTS_PER_PARTITION};

/// A member of the cluster as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The member's stable identity: the pod's name in a cluster (it survives the pod being
    /// replaced), the advertised address locally.
    pub id: String,
    /// The member's zone (`topology.kubernetes.io/zone` of its node); `None` if unknown.
    pub zone: Option<String>,
}

impl Member {
    /// A member with the given identity and zone.
    pub fn new(id: impl Into<String>, zone: Option<&str>) -> Member {
        Member {
            id: id.into(),
            zone: zone.map(str::to_string),
        }
    }
}

/// The owners of every partition for one membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The members, sorted by id; owners are indices into this.
    members: Vec<Member>,
    /// Owners per partition (`width` each, the primary first), partition by partition.
    owners: Vec<u16>,
    /// Owners per partition: `min(R, members)`.
    width: usize,
}

impl Assignment {
    /// The assignment of `members` with `replication_factor` owners per partition. Duplicate
    /// ids count once (the first zone given wins); no members gives no owners.
    pub fn compute(members: impl IntoIterator<Item = Member>, replication_factor: usize) -> Self {
        let mut by_id: BTreeMap<String, Option<String>> = BTreeMap::new();
        for member in members {
            by_id.entry(member.id).or_insert(member.zone);
        }
        let members: Vec<Member> = by_id
            .into_iter()
            .map(|(id, zone)| Member { id, zone })
            .collect();
        let n = members.len().min(usize::from(u16::MAX));
        let members = members.into_iter().take(n).collect::<Vec<_>>();
        let width = replication_factor.max(1).min(n);
        let mut owners = Vec::with_capacity(PARTITIONS * width);
        if width > 0 {
            let zone_ids = zone_ids(&members);
            let zones = zone_ids.iter().copied().max().map_or(0, |z| z + 1);
            let cap = load_bound(PARTITIONS * width, n);
            let primary_cap = load_bound(PARTITIONS, n);
            let seeds: Vec<u64> = members.iter().map(|m| fnv1a(m.id.as_bytes())).collect();
            let mut load = vec![0usize; n];
            let mut primaries = vec![0usize; n];
            let mut ranked: Vec<usize> = (0..n).collect();
            let mut chosen = Vec::with_capacity(width);
            for partition in 0..PARTITIONS {
                let scores: Vec<u64> = seeds.iter().map(|&seed| score(seed, partition)).collect();
                ranked.sort_unstable_by(|&a, &b| scores[b].cmp(&scores[a]).then(a.cmp(&b)));
                chosen.clear();
                let distinct_zones = zones.min(width);
                // Pass 1: distinct zones, under the load bound; pass 2: distinct zones even
                // over it (zones outrank balance); passes 3 and 4: the same for the rest.
                for (zoned, bounded) in [(true, true), (true, false), (false, true), (false, false)]
                {
                    for &m in &ranked {
                        let enough = if zoned { distinct_zones } else { width };
                        if chosen.len() >= enough {
                            break;
                        }
                        if chosen.contains(&m)
                            || (bounded && load[m] >= cap)
                            || (zoned && chosen.iter().any(|&c| zone_ids[c] == zone_ids[m]))
                        {
                            continue;
                        }
                        chosen.push(m);
                    }
                }
                // The primary: the best-ranked owner that has not yet reached its share of
                // primaries, so that writes of cluster-aware clients spread evenly too.
                let primary = chosen
                    .iter()
                    .position(|&m| primaries[m] < primary_cap)
                    .unwrap_or(0);
                chosen.swap(0, primary);
                chosen[1..].sort_unstable_by(|&a, &b| scores[b].cmp(&scores[a]));
                primaries[chosen[0]] += 1;
                for &m in &chosen {
                    load[m] += 1;
                    owners.push(u16::try_from(m).unwrap_or(u16::MAX));
                }
            }
        }
        Assignment {
            members,
            owners,
            width,
        }
    }

    /// A digest of what the assignment was computed from (its members, their zones and the
    /// width), the same on every platform and version: nodes compare it to tell whether they
    /// place keys by the same membership, which a partition move waits for.
    pub fn fingerprint(&self) -> u64 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(self.width as u64).to_le_bytes());
        for member in &self.members {
            for part in [
                member.id.as_bytes(),
                member.zone.as_deref().unwrap_or("").as_bytes(),
            ] {
                bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
                bytes.extend_from_slice(part);
            }
        }
        fnv1a(&bytes)
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The index of the member with `id` in [`Assignment::members`].
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
    }

    /// Owners per partition: the replication factor, or fewer if there are fewer members.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The owners of `partition` as indices into [`Assignment::members`], the primary first;
    /// empty without members.
    pub fn owners(&self, partition: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        let start = partition * self.width;
        self.owners
            .get(start..start + self.width)
            .unwrap_or(&[])
            .iter()
            .map(|&m| usize::from(m))
    }

    /// Whether member `member` owns `partition`.
    pub fn owns(&self, member: usize, partition: usize) -> bool {
        self.owners(partition).any(|m| m == member)
    }

    /// The partitions member `member` owns.
    pub fn partitions_of(&self, member: usize) -> impl Iterator<Item = usize> + '_ {
        (0..PARTITIONS).filter(move |&p| self.owns(member, p))
    }

    /// Runs of consecutive partitions with the same owners in the same order, as slot
    /// ranges: `(first slot, last slot, owners)`, the shape of `CLUSTER SLOTS`.
    pub fn slot_ranges(&self) -> Vec<(u16, u16, Vec<usize>)> {
        let mut ranges: Vec<(u16, u16, Vec<usize>)> = Vec::new();
        for partition in 0..PARTITIONS {
            let owners: Vec<usize> = self.owners(partition).collect();
            if owners.is_empty() {
                continue;
            }
            let first = partition_first_slot(partition);
            let last = first + (SLOTS_PER_PARTITION - 1);
            match ranges.last_mut() {
                Some((_, end, previous)) if *previous == owners && *end + 1 == first => {
                    *end = last;
                }
                _ => ranges.push((first, last, owners)),
            }
        }
        ranges
    }

    /// How many (partition, owner) pairs of `other` are not in `self`: the copies a change
    /// from `self` to `other` makes, members matched by id.
    pub fn moves_to(&self, other: &Assignment) -> usize {
        (0..PARTITIONS)
            .map(|partition| {
                let ours: Vec<&str> = self
                    .owners(partition)
                    .map(|m| self.members[m].id.as_str())
                    .collect();
                other
                    .owners(partition)
                    .filter(|&m| !ours.contains(&other.members[m].id.as_str()))
                    .count()
            })
            .sum()
    }
}

/// The most of `total` partitions one of `n` members may own: the even share plus 1/32 of
/// it, the slack that lets partitions decided last still find an owner under the bound.
pub(super) fn load_bound(total: usize, n: usize) -> usize {
    let share = total.div_ceil(n);
    share + share.div_ceil(32)
}

/// The first slot of `partition`.
fn partition_first_slot(partition: usize) -> u16 {
    u16::try_from(partition).unwrap_or(u16::MAX) * SLOTS_PER_PARTITION
}

/// Each member's zone as a small number; members without a zone share one.
fn zone_ids(members: &[Member]) -> Vec<usize> {
    let mut ids: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for member in members {
        let next = ids.len();
        ids.entry(member.zone.as_deref()).or_insert(next);
    }
    members.iter().map(|m| ids[&m.zone.as_deref()]).collect()
}

/// FNV-1a: a member id's seed, the same on every platform and version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The rendezvous score of a member (by its seed) for `partition`: SplitMix64's finaliser,
/// so that neighbouring partitions rank members independently.
fn score(seed: u64, partition: usize) -> u64 {
    let mut z = seed ^ (partition as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
