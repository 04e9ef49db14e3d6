//! Placement's promises, checked over random memberships: zone-distinct owners, balanced
//! loads, few moves on a change, and the same answer whatever order members arrive in.

use proptest::prelude::*;

use super::*;

fn members(n: usize, zones: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let zone = format!("zone-{}", i % zones.max(1));
            Member::new(format!("cache-{i}"), (zones > 0).then_some(zone.as_str()))
        })
        .collect()
}

fn loads(assignment: &Assignment) -> Vec<usize> {
    (0..assignment.members().len())
        .map(|m| assignment.partitions_of(m).count())
        .collect()
}

#[test]
fn three_members_in_three_zones_own_two_thirds_each() {
    let assignment = Assignment::compute(members(3, 3), 2);
    assert_eq!(assignment.width(), 2);
    let loads = loads(&assignment);
    assert!(loads.iter().all(|&l| (660..=705).contains(&l)), "{loads:?}");
    assert_eq!(loads.iter().sum::<usize>(), 2 * PARTITIONS);
    for partition in 0..PARTITIONS {
        let owners: Vec<usize> = assignment.owners(partition).collect();
        assert_ne!(owners[0], owners[1]);
    }
}

#[test]
fn fewer_members_than_the_factor_own_everything() {
    let assignment = Assignment::compute(members(2, 2), 3);
    assert_eq!(assignment.width(), 2);
    assert!(loads(&assignment).iter().all(|&l| l == PARTITIONS));
    assert_eq!(Assignment::compute(Vec::new(), 2).owners(0).len(), 0);
}

#[test]
fn a_zone_with_one_member_owns_a_copy_of_everything() {
    // Zones a and b have one member each, zone c four: with R = 3 every partition needs all
    // three zones, so the lone members own every partition, over their load bound.
    let mut list = vec![Member::new("a", Some("a")), Member::new("b", Some("b"))];
    list.extend((0..4).map(|i| Member::new(format!("c{i}"), Some("c"))));
    let assignment = Assignment::compute(list, 3);
    let loads = loads(&assignment);
    assert_eq!(&loads[..2], &[PARTITIONS, PARTITIONS]);
    assert_eq!(loads[2..].iter().sum::<usize>(), PARTITIONS);
}

#[test]
fn slot_ranges_cover_every_slot_once_in_order() {
    let assignment = Assignment::compute(members(6, 3), 2);
    let ranges = assignment.slot_ranges();
    let mut next = 0u32;
    for (first, last, owners) in &ranges {
        assert_eq!(u32::from(*first), next);
        assert!(last >= first);
        assert_eq!(owners.len(), 2);
        next = u32::from(*last) + 1;
    }
    assert_eq!(next, u32::from(SLOTS));
    assert!(ranges.len() <= PARTITIONS);
}

#[test]
fn adding_a_member_moves_about_its_share() {
    for (n, zones, r) in [(3, 3, 2), (5, 3, 2), (6, 3, 3), (9, 3, 2), (20, 4, 2)] {
        let before = Assignment::compute(members(n, zones), r);
        let after = Assignment::compute(members(n + 1, zones), r);
        let share = PARTITIONS * r.min(n + 1) / (n + 1);
        let moves = before.moves_to(&after);
        // The new member takes about its share (less where its zone is crowded); the bounded
        // loads move a little more.
        assert!(
            moves >= share * 3 / 4 && moves <= share + share / 2,
            "n={n} zones={zones} r={r}: {moves} moves for a share of {share}"
        );
    }
}

#[test]
fn removing_a_member_moves_only_what_it_owned_and_a_little() {
    for (n, zones, r) in [(4, 3, 2), (6, 3, 2), (6, 3, 3), (10, 3, 2)] {
        let before = Assignment::compute(members(n, zones), r);
        let after = Assignment::compute(members(n - 1, zones), r);
        let owned = before.partitions_of(n - 1).count();
        let moves = before.moves_to(&after);
        assert!(
            moves >= owned && moves <= owned + owned / 2,
            "n={n} zones={zones} r={r}: {moves} moves for {owned} owned"
        );
    }
}

fn membership() -> impl Strategy<Value = Vec<Member>> {
    proptest::collection::vec(
        ("[a-z]{1,6}-[0-9]{1,3}", proptest::option::of(0u8..5)),
        1..16,
    )
    .prop_map(|list| {
        list.into_iter()
            .map(|(id, zone)| Member {
                id,
                zone: zone.map(|z| format!("zone-{z}")),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn owners_are_distinct_zone_spread_and_bounded(list in membership(), r in 1usize..4) {
        let assignment = Assignment::compute(list, r);
        let n = assignment.members().len();
        let width = r.min(n);
        prop_assert_eq!(assignment.width(), width);
        let zones: std::collections::BTreeSet<_> =
            assignment.members().iter().map(|m| m.zone.clone()).collect();
        let mut zone_members: std::collections::BTreeMap<_, usize> = Default::default();
        for m in assignment.members() {
            *zone_members.entry(m.zone.clone()).or_default() += 1;
        }
        for partition in 0..PARTITIONS {
            let owners: Vec<usize> = assignment.owners(partition).collect();
            prop_assert_eq!(owners.len(), width);
            let distinct: std::collections::BTreeSet<_> = owners.iter().collect();
            prop_assert_eq!(distinct.len(), width);
            let owner_zones: std::collections::BTreeSet<_> =
                owners.iter().map(|&m| assignment.members()[m].zone.clone()).collect();
            prop_assert_eq!(owner_zones.len(), width.min(zones.len()));
        }
        // Balanced where zones do not force otherwise: with every zone as large as the
        // others, no member exceeds its bound.
        let even = zone_members.values().all(|&c| c == n / zones.len()) && n.is_multiple_of(zones.len());
        if even {
            let cap = assign::load_bound(PARTITIONS * width, n);
            for load in loads(&assignment) {
                prop_assert!(load <= cap, "load {} over cap {}", load, cap);
            }
        }
    }

    #[test]
    fn the_order_members_arrive_in_does_not_matter(list in membership(), r in 1usize..4) {
        let mut reversed = list.clone();
        reversed.reverse();
        let (forward, backward) = (Assignment::compute(list, r), Assignment::compute(reversed, r));
        prop_assert_eq!(forward.fingerprint(), backward.fingerprint());
        prop_assert_eq!(forward, backward);
    }
}

#[test]
fn the_fingerprint_changes_with_members_zones_and_width() {
    let base = Assignment::compute(members(3, 3), 2).fingerprint();
    assert_eq!(base, Assignment::compute(members(3, 3), 2).fingerprint());
    assert_ne!(base, Assignment::compute(members(4, 3), 2).fingerprint());
    assert_ne!(base, Assignment::compute(members(3, 2), 2).fingerprint());
    assert_ne!(base, Assignment::compute(members(3, 3), 3).fingerprint());
    // Ids and zones are length-delimited: moving a character between them is a change.
    let shifted =
        |id: &str, zone: &str| Assignment::compute([Member::new(id, Some(zone))], 1).fingerprint();
    assert_ne!(shifted("ab", "c"), shifted("a", "bc"));
}
