//! Which schedule bucket an expiry belongs to (contract 1), with a one-interval cache: writes
//! with the same TTL land in the same bucket for a whole schedule period, so most writes skip
//! the schedule search.

use tidecache_contract::Schedule;

use crate::base::time::Timestamp;

/// The last schedule search's answer.
#[derive(Debug, Default)]
pub(super) struct BucketCache {
    /// `(from, fire)`: every expiry in `from..=fire` belongs to bucket `fire`. Writes with the
    /// same TTL land in the same bucket for a whole schedule period, so most writes skip the
    /// schedule search.
    last_bucket: Option<(Timestamp, Timestamp)>,
}

impl BucketCache {
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
        let mut index = BucketCache::default();
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
        let mut index = BucketCache::default();
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
            let mut index = BucketCache::default();
            for offset in offsets {
                let expiry = Timestamp::from_millis(base + offset);
                let expected = schedule
                    .bucket_for(expiry.to_datetime().expect("in range"))
                    .map(Timestamp::from_datetime);
                proptest::prop_assert_eq!(index.bucket_for(&schedule, expiry), expected);
            }
        }
    }
}
