//! The move protocol's rules, step by step, over real assignments.

use super::*;

const NOW: Duration = Duration::from_secs(1000);

fn peer(i: usize) -> Peer {
    Peer::new(format!("10.0.0.{i}:8080"))
        .with_id(format!("cache-{i}"))
        .in_zone(Some(format!("zone-{}", i % 3)))
}

/// The topology of members `ids` as node `local` sees it, R = 2.
fn topology(ids: &[usize], local: usize) -> Topology {
    let members: Vec<Peer> = ids
        .iter()
        .map(|&i| if i == local { peer(i).local() } else { peer(i) })
        .collect();
    Topology::compute(&members, 2, 1)
}

/// What node `i` would publish, complete in everything it owns under `topology`.
fn settled_holdings(i: usize, ids: &[usize]) -> Holdings {
    let theirs = topology(ids, i);
    let owned: PartitionSet = (0..PARTITIONS)
        .filter(|&p| theirs.owns_partition(p))
        .collect();
    Holdings {
        fingerprint: theirs.fingerprint,
        complete: owned,
        held: owned,
    }
}

fn at(offset: Duration) -> Instant {
    // Instants cannot be made from a number; one base for the whole test is enough.
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now) + offset
}

/// Node 0 of `ids`, complete in everything it owns, with every peer heard settled.
fn settled(ids: &[usize]) -> (Moves, Topology) {
    let mut moves = Moves::default();
    let empty = Topology::compute(&[], 2, 0);
    let topology = topology(ids, 0);
    moves.changed(&empty, &topology, at(NOW));
    let answers = ids[1..]
        .iter()
        .map(|&i| (peer(i), Some(settled_holdings(i, ids))))
        .collect();
    moves.heard(&topology, answers, at(NOW));
    let plan = moves
        .plan(&topology, PARTITIONS, at(NOW + SETTLE))
        .expect("a plan");
    moves.pulled(&topology, &plan, &[], at(NOW + SETTLE));
    (moves, topology)
}

#[test]
fn a_new_owner_pulls_only_after_the_membership_settled_then_completes() {
    let ids = [0, 1, 2];
    let mut moves = Moves::default();
    let empty = Topology::compute(&[], 2, 0);
    let topology = topology(&ids, 0);
    moves.changed(&empty, &topology, at(NOW));
    let (owned, complete, gaining, kept) = moves.counts(&topology);
    assert_eq!((complete, gaining, kept), (0, owned, 0));
    assert!(owned > 600, "{owned}");
    // Nothing heard yet: no plan.
    assert_eq!(moves.plan(&topology, PARTITIONS, at(NOW + SETTLE)), None);
    let answers = vec![
        (peer(1), Some(settled_holdings(1, &ids))),
        (peer(2), Some(settled_holdings(2, &ids))),
    ];
    moves.heard(&topology, answers, at(NOW));
    // Agreed on, but not for long enough.
    assert_eq!(moves.plan(&topology, PARTITIONS, at(NOW)), None);
    let plan = moves
        .plan(&topology, PARTITIONS, at(NOW + SETTLE))
        .expect("a plan");
    assert_eq!(plan.partitions.len(), owned);
    // Every gaining partition has a co-owner among the sources.
    for partition in plan.partitions.iter() {
        assert!(
            plan.sources
                .iter()
                .any(|(_, holds)| holds.contains(partition)),
            "{partition}"
        );
    }
    let durations = moves.pulled(&topology, &plan, &[], at(NOW + SETTLE * 2));
    assert_eq!(durations.len(), owned);
    assert!(durations.iter().all(|&d| d == SETTLE * 2));
    assert_eq!(moves.counts(&topology), (owned, owned, 0, 0));
    assert!(!moves.busy(&topology, at(NOW + SETTLE * 2)));
}

#[test]
fn a_round_pulls_at_most_the_rate_limit() {
    let ids = [0, 1, 2];
    let mut moves = Moves::default();
    let topology = topology(&ids, 0);
    moves.changed(&Topology::compute(&[], 2, 0), &topology, at(NOW));
    moves.heard(&topology, Vec::new(), at(NOW));
    let plan = moves.plan(&topology, 64, at(NOW + SETTLE)).expect("plan");
    assert_eq!(plan.partitions.len(), 64);
}

#[test]
fn a_failed_source_leaves_its_partitions_gaining() {
    let ids = [0, 1, 2];
    let mut moves = Moves::default();
    let topology = topology(&ids, 0);
    moves.changed(&Topology::compute(&[], 2, 0), &topology, at(NOW));
    let answers = vec![
        (peer(1), Some(settled_holdings(1, &ids))),
        (peer(2), Some(settled_holdings(2, &ids))),
    ];
    moves.heard(&topology, answers, at(NOW));
    let plan = moves
        .plan(&topology, PARTITIONS, at(NOW + SETTLE))
        .expect("plan");
    let failed = vec![peer(1).address().to_string()];
    moves.pulled(&topology, &plan, &failed, at(NOW + SETTLE));
    let from_one = &plan
        .sources
        .iter()
        .find(|(p, _)| p == &peer(1))
        .expect("1")
        .1;
    for partition in plan.partitions.iter() {
        assert_eq!(
            moves.is_complete(partition),
            !from_one.contains(partition),
            "{partition}"
        );
    }
}

#[test]
fn a_peer_on_another_membership_holds_moves_back() {
    let ids = [0, 1, 2];
    let mut moves = Moves::default();
    let topology = topology(&ids, 0);
    moves.changed(&Topology::compute(&[], 2, 0), &topology, at(NOW));
    // Peer 2 still places by the membership without node 0.
    let stale = settled_holdings(2, &[1, 2]);
    let answers = vec![
        (peer(1), Some(settled_holdings(1, &ids))),
        (peer(2), Some(stale)),
    ];
    moves.heard(&topology, answers, at(NOW));
    assert_eq!(
        moves.plan(&topology, PARTITIONS, at(NOW + SETTLE * 10)),
        None
    );
    // A peer that does not answer is not waited for.
    let answers = vec![(peer(1), Some(settled_holdings(1, &ids))), (peer(2), None)];
    moves.heard(&topology, answers, at(NOW));
    assert!(
        moves
            .plan(&topology, PARTITIONS, at(NOW + SETTLE))
            .is_some()
    );
}

#[test]
fn a_partition_moved_away_is_kept_until_every_new_owner_is_complete() {
    let (mut moves, three) = settled(&[0, 1, 2]);
    let four_ids = [0, 1, 2, 3];
    let four = topology(&four_ids, 0);
    moves.changed(&three, &four, at(NOW * 2));
    let (_, _, gaining, kept) = moves.counts(&four);
    // Bounded-load placement moves a few partitions between old members too.
    assert!(gaining < 32, "{gaining} gaining");
    assert!(kept > 100, "{kept} kept");
    let kept_set: PartitionSet = (0..PARTITIONS).filter(|&p| moves.is_kept(p)).collect();
    // Its own holdings say it still has them, but is not complete in them.
    let mine = moves.holdings(&four);
    for partition in kept_set.iter() {
        assert!(mine.held.contains(partition) && !mine.complete.contains(partition));
    }
    assert!(mine.moving());
    // The new node has not pulled yet: nothing can be dropped.
    let mut newcomer = settled_holdings(3, &four_ids);
    newcomer.complete = PartitionSet::default();
    let answers = |newcomer: &Holdings| {
        vec![
            (peer(1), Some(settled_holdings(1, &four_ids))),
            (peer(2), Some(settled_holdings(2, &four_ids))),
            (peer(3), Some(newcomer.clone())),
        ]
    };
    moves.heard(&four, answers(&newcomer), at(NOW * 2));
    assert!(moves.droppable(&four).is_empty());
    // Reads of a kept partition go to this node meanwhile (see the placement tests); once
    // the newcomer is complete, everything kept can go.
    newcomer.complete = newcomer.held;
    moves.heard(&four, answers(&newcomer), at(NOW * 2));
    assert_eq!(moves.droppable(&four), kept_set);
    moves.dropped(&kept_set);
    assert_eq!(moves.counts(&four).3, 0);
    assert!(moves.holdings(&four).held.and(&kept_set).is_empty());
}

#[test]
fn a_former_member_is_a_source_until_it_holds_nothing_or_is_gone() {
    let (mut moves, three) = settled(&[0, 1, 2]);
    let two_ids = [0, 1];
    let two = topology(&two_ids, 0);
    moves.changed(&three, &two, at(NOW * 2));
    assert_eq!(moves.former(), vec![peer(2)]);
    let (owned, complete, gaining, _) = moves.counts(&two);
    assert_eq!(
        owned, PARTITIONS,
        "two members, R = 2: node 0 owns everything"
    );
    assert!(gaining > 0 && complete + gaining == owned);
    // Node 2 left and keeps what it owned: the plan pulls from it.
    let mut leaving = settled_holdings(2, &[0, 1, 2]);
    leaving.fingerprint = two.fingerprint;
    leaving.complete = PartitionSet::default();
    moves.heard(
        &two,
        vec![
            (peer(1), Some(settled_holdings(1, &two_ids))),
            (peer(2), Some(leaving.clone())),
        ],
        at(NOW * 2),
    );
    let plan = moves
        .plan(&two, PARTITIONS, at(NOW * 2 + SETTLE))
        .expect("plan");
    assert!(plan.sources.iter().any(|(p, _)| p == &peer(2)));
    // Three failed polls in a row: forgotten.
    for round in 0..3 {
        let forgot = moves.heard(&two, vec![(peer(2), None)], at(NOW * 3));
        assert_eq!(forgot, round == 2, "round {round}");
    }
    assert!(moves.former().is_empty());
}

/// A polling round counts its gauges with the topology it started with; if the membership
/// grew meanwhile (fewer partitions owned), the state is newer than that topology. Found in
/// CI: `owned - complete` overflowed and the round's task died, so moves stopped.
#[test]
fn counts_against_an_older_topology_stay_within_what_it_owns() {
    let (mut moves, three) = settled(&[0, 1, 2]);
    let (owned, complete, _, _) = moves.counts(&three);
    assert_eq!(complete, owned);
    let six = topology(&[0, 1, 2, 3, 4, 5], 0);
    moves.changed(&three, &six, at(NOW + SETTLE * 3));
    // The round's copy is `six`, the state moved back to `three`: complete holds what
    // `three` gives and `six` does not.
    moves.changed(&six, &three, at(NOW + SETTLE * 4));
    let answers = [1, 2]
        .iter()
        .map(|&i| (peer(i), Some(settled_holdings(i, &[0, 1, 2]))))
        .collect();
    moves.heard(&three, answers, at(NOW + SETTLE * 4));
    let plan = moves
        .plan(&three, PARTITIONS, at(NOW + SETTLE * 6))
        .expect("a plan");
    moves.pulled(&three, &plan, &[], at(NOW + SETTLE * 6));
    let (owned, complete, gaining, _) = moves.counts(&six);
    assert!(complete <= owned, "{complete} complete of {owned} owned");
    assert_eq!(owned - complete, gaining);
}
