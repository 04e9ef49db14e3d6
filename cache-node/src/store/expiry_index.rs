//! The expiry index of one shard: schedule bucket (fire time) to the hashes of the entries
//! filed under it.
//!
//! The sweeper takes every due bucket out in one `BTreeMap` split and then removes just those
//! entries, so a sweep costs what expires, not what is stored. The index holds hashes, not
//! keys, to cost eight bytes per entry; an entry that was overwritten into another bucket or
//! deleted leaves a stale hash behind, which the sweep skips (the entry's own `bucket` field
//! decides) and [`ExpiryIndex::compact`] drops when stale hashes outnumber live entries.

use std::collections::BTreeMap;

use tidecache_contract::Schedule;

use crate::base::time::Timestamp;

/// Bucket fire time to entry hashes, plus a one-interval cache of the schedule search.
#[derive(Debug, Default)]
pub(super) struct ExpiryIndex {
    /// The buckets, ordered by fire time so the due ones split off the front.
    buckets: BTreeMap<Timestamp, Vec<u64>>,
    /// How many hashes the buckets hold, live or stale.
    len: usize,
    /// `(from, fire)`: every expiry in `from..=fire` belongs to bucket `fire`. Writes with the
    /// same TTL land in the same bucket for a whole schedule period, so most writes skip the
    /// schedule search.
    last_bucket: Option<(Timestamp, Timestamp)>,
}

impl ExpiryIndex {
    /// The bucket of an entry expiring at `expiry` (contract 1: the first fire time at or
    /// after it); `None` if the schedule never fires after it, or if records cannot hold
    /// `expiry` (after [`Timestamp::LAST_IN_UNIX_NANOS`]). The front ends refuse such
    /// expiries first, with a clearer message (`Limits::expiry`); this makes the store refuse
    /// one from any other caller (`PutError::NoBucket`) rather than keep an entry that the
    /// log and replication would write as having no expiry.
    pub(super) fn bucket_for(
        &mut self,
        schedule: &Schedule,
        expiry: Timestamp,
    ) -> Option<Timestamp> {
        // Before the cache: a cached interval can reach past the last representable instant.
        expiry.to_unix_nanos()?;
        if let Some((from, fire)) = self.last_bucket
            && from <= expiry
            && expiry <= fire
        {
            return Some(fire);
        }
        let fire = Timestamp::from_datetime(schedule.bucket_for(expiry.to_datetime()?)?);
        self.last_bucket = match self.last_bucket {
            // No fire time lies in `expiry..fire`, so the cached interval can grow down.
            Some((from, cached)) if cached == fire && expiry < from => Some((expiry, fire)),
            _ => Some((expiry, fire)),
        };
        Some(fire)
    }

    /// Files the entry with `hash` under `bucket`.
    pub(super) fn file(&mut self, bucket: Timestamp, hash: u64) {
        self.buckets.entry(bucket).or_default().push(hash);
        self.len += 1;
    }

    /// Takes out every bucket whose fire time is at or before `now`, oldest first.
    pub(super) fn take_due(&mut self, now: Timestamp) -> Vec<(Timestamp, Vec<u64>)> {
        let Some(after_now) = now.as_millis().checked_add(1).map(Timestamp::from_millis) else {
            return Vec::new();
        };
        let later = self.buckets.split_off(&after_now);
        let due = std::mem::replace(&mut self.buckets, later);
        let due: Vec<_> = due.into_iter().collect();
        self.len -= due.iter().map(|(_, hashes)| hashes.len()).sum::<usize>();
        due
    }

    /// Whether stale hashes have grown past the live entries enough to be worth a pass.
    pub(super) fn needs_compaction(&self, live_entries: usize) -> bool {
        self.len > 2 * live_entries + 1024
    }

    /// Keeps only the `(bucket, hash)` pairs for which `is_live` holds.
    pub(super) fn compact(&mut self, mut is_live: impl FnMut(Timestamp, u64) -> bool) {
        let mut len = 0;
        self.buckets.retain(|bucket, hashes| {
            hashes.retain(|hash| is_live(*bucket, *hash));
            hashes.dedup();
            len += hashes.len();
            !hashes.is_empty()
        });
        self.len = len;
    }

    /// How many hashes are filed, live or stale.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_millis(seconds * 1_000)
    }

    #[test]
    fn buckets_follow_the_schedule_and_the_cache_agrees_with_it() {
        let schedule = Schedule::every_minute();
        let mut index = ExpiryIndex::default();
        let base = 1_795_000_040; // 20 s past a minute
        let minute_end = at(base + 40);
        assert_eq!(index.bucket_for(&schedule, at(base)), Some(minute_end));
        assert_eq!(index.bucket_for(&schedule, at(base + 10)), Some(minute_end));
        assert_eq!(index.bucket_for(&schedule, at(base - 5)), Some(minute_end));
        assert_eq!(index.bucket_for(&schedule, minute_end), Some(minute_end));
        let just_after = Timestamp::from_millis(minute_end.as_millis() + 1);
        assert_eq!(
            index.bucket_for(&schedule, just_after),
            Some(at(base + 100))
        );
        assert_eq!(
            index.bucket_for(&schedule, at(base - 30)),
            Some(at(base - 20))
        );
    }

    #[test]
    fn no_bucket_holds_an_expiry_records_cannot() {
        let schedule = Schedule::every_minute();
        let mut index = ExpiryIndex::default();
        let last = Timestamp::LAST_IN_UNIX_NANOS;
        let fire = index.bucket_for(&schedule, last).expect("a bucket");
        assert!(fire > last, "the bucket of the last expiry lies after it");
        let after = Timestamp::from_millis(last.as_millis() + 1);
        assert_eq!(index.bucket_for(&schedule, after), None);
        assert_eq!(index.bucket_for(&schedule, fire), None);
    }

    proptest::proptest! {
        /// The one-interval cache never changes an answer of the schedule, whatever the
        /// order of the expiries asked about, including across DST changes.
        #[test]
        fn the_bucket_cache_agrees_with_the_schedule(
            schedule in proptest::sample::select(vec![
                ("* * * * *", "UTC"),
                ("*/5 * * * *", "UTC"),
                ("0 * * * *", "UTC"),
                ("30 2 * * *", "Europe/Berlin"),
                ("0 1,2,3 * * *", "America/New_York"),
            ]),
            offsets in proptest::collection::vec(
                proptest::prop_oneof![0_i64..3 * 86_400_000, 90_000_000_i64..90_600_000],
                1..60,
            ),
        ) {
            let schedule = Schedule::new(schedule.0, Some(schedule.1)).expect("valid");
            // 2026-10-24T00:00:00Z: three days across the European DST change.
            let base = 1_792_800_000_000;
            let mut index = ExpiryIndex::default();
            for offset in offsets {
                let expiry = Timestamp::from_millis(base + offset);
                let expected = schedule
                    .bucket_for(expiry.to_datetime().expect("in range"))
                    .map(Timestamp::from_datetime);
                proptest::prop_assert_eq!(index.bucket_for(&schedule, expiry), expected);
            }
        }
    }

    #[test]
    fn due_buckets_come_out_oldest_first_and_later_ones_stay() {
        let mut index = ExpiryIndex::default();
        index.file(at(120), 1);
        index.file(at(60), 2);
        index.file(at(60), 3);
        index.file(at(180), 4);
        let due = index.take_due(at(120));
        assert_eq!(due, vec![(at(60), vec![2, 3]), (at(120), vec![1])]);
        assert_eq!(index.len(), 1);
        assert!(index.take_due(at(179)).is_empty());
        assert_eq!(index.take_due(at(180)), vec![(at(180), vec![4])]);
    }

    #[test]
    fn compaction_drops_stale_hashes() {
        let mut index = ExpiryIndex::default();
        for hash in 0..2_000 {
            index.file(at(60), hash);
        }
        assert!(index.needs_compaction(10));
        index.compact(|_, hash| hash < 10);
        assert_eq!(index.len(), 10);
        assert!(!index.needs_compaction(10));
    }
}
