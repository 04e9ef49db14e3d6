//! The hybrid logical clock that versions every write (contract 4).
//!
//! A clock value packs wall-clock milliseconds into the upper 48 bits and a logical counter
//! into the lower 16: it stays close to real time (so "last writer wins" means what a person
//! expects when clocks are roughly in sync), never goes backwards on one node (a step of the
//! wall clock only stops the physical half, the counter keeps increasing), and after a node
//! has seen a version from a peer every later local version is larger (causality: a write
//! made after reading or receiving another wins over it, whatever the clocks say).
//!
//! Ties between two nodes' writes with the same clock value are broken by the node tag, the
//! second half of [`Version`], identically everywhere.

use std::sync::atomic::{AtomicU64, Ordering};

use tidecache_contract::disk::Version;

use crate::base::time::Timestamp;

/// Bits of a clock value that hold the logical counter.
const LOGICAL_BITS: u32 = 16;

/// How far ahead of our wall clock a version may be. Beyond it a received version does not
/// move our clock (a peer with a badly wrong clock, or a forged version, cannot drag every
/// later version on this node into the future), replication refuses the record (counted in
/// `tidecache_replication_refused_records_total{reason="future_version"}`), and a local entry
/// holding such a version gives way to a peer's record (see `store::replica`). A constant,
/// not a flag: every node must draw the line at the same place, or they would disagree on
/// which records exist.
pub const MAX_FORWARD_SKEW_MILLIS: i64 = 60_000;

/// Whether clock value `hlc` is more than [`MAX_FORWARD_SKEW_MILLIS`] ahead of `now`.
pub fn is_beyond_skew(hlc: u64, now: Timestamp) -> bool {
    millis_of(hlc) > now.as_millis().saturating_add(MAX_FORWARD_SKEW_MILLIS)
}

/// The clock value of wall-clock instant `now` with a zero counter.
pub fn physical(now: Timestamp) -> u64 {
    u64::try_from(now.as_millis()).unwrap_or(0) << LOGICAL_BITS
}

/// The wall-clock milliseconds a clock value carries (its physical half).
pub fn millis_of(hlc: u64) -> i64 {
    i64::try_from(hlc >> LOGICAL_BITS).unwrap_or(i64::MAX)
}

/// One node's hybrid logical clock. Shared by every writer on the node; lock-free.
#[derive(Debug)]
pub struct HybridClock {
    /// The largest clock value issued or observed.
    last: AtomicU64,
    /// This node's tag (the second half of every version it issues).
    node: u64,
}

impl HybridClock {
    /// A clock for the node tagged `node` (see `ObjectName::tag` in the disk contract).
    pub fn new(node: u64) -> HybridClock {
        HybridClock {
            last: AtomicU64::new(0),
            node,
        }
    }

    /// This node's tag.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// A version larger than every one issued or observed before, at least `now`.
    pub fn next(&self, now: Timestamp) -> Version {
        let floor = physical(now);
        let mut issued = 0;
        // The closure always returns Some, so fetch_update only retries on contention.
        let _ = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                issued = floor.max(last.saturating_add(1));
                Some(issued)
            });
        Version {
            hlc: issued,
            node: self.node,
        }
    }

    /// Takes a version received from a peer (or loaded from disk) into account, so that
    /// every later local version is larger. Returns `false`, leaving the clock alone, when the
    /// version is more than [`MAX_FORWARD_SKEW_MILLIS`] ahead of `now`.
    pub fn observe(&self, seen: Version, now: Timestamp) -> bool {
        if is_beyond_skew(seen.hlc, now) {
            return false;
        }
        self.last.fetch_max(seen.hlc, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    #[test]
    fn versions_follow_the_wall_clock_and_never_go_back() {
        let clock = HybridClock::new(7);
        let first = clock.next(at(1_000));
        assert_eq!(first.hlc, physical(at(1_000)));
        assert_eq!(first.node, 7);
        let same_millisecond = clock.next(at(1_000));
        let clock_stepped_back = clock.next(at(10));
        assert!(first < same_millisecond && same_millisecond < clock_stepped_back);
        assert_eq!(millis_of(clock_stepped_back.hlc), 1_000);
        assert_eq!(clock.next(at(2_000)).hlc, physical(at(2_000)));
    }

    #[test]
    fn a_version_seen_from_a_peer_orders_later_local_writes_after_it() {
        let fast = HybridClock::new(1);
        let slow = HybridClock::new(2);
        let remote = fast.next(at(5_000));
        assert!(slow.observe(remote, at(4_000)));
        let local = slow.next(at(4_000));
        assert!(local > remote, "{local:?} must follow {remote:?}");
    }

    #[test]
    fn a_peer_far_in_the_future_does_not_drag_the_clock_along() {
        let clock = HybridClock::new(1);
        let future = Version {
            hlc: physical(at(1_000 + MAX_FORWARD_SKEW_MILLIS + 1)),
            node: 9,
        };
        assert!(!clock.observe(future, at(1_000)));
        assert!(!clock.observe(
            Version {
                hlc: u64::MAX,
                node: 9
            },
            at(1_000)
        ));
        assert!(is_beyond_skew(u64::MAX, at(1_000)));
        assert!(!is_beyond_skew(
            physical(at(1_000 + MAX_FORWARD_SKEW_MILLIS)),
            at(1_000)
        ));
        assert_eq!(clock.next(at(1_000)).hlc, physical(at(1_000)));
    }

    #[test]
    fn equal_clock_values_are_ordered_by_node_tag() {
        let a = HybridClock::new(1).next(at(1_000));
        let b = HybridClock::new(2).next(at(1_000));
        assert_eq!(a.hlc, b.hlc);
        assert!(a < b);
    }
}
