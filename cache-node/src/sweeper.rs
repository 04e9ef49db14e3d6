//! The sweeper: one task that wakes at each fire time of the schedule and evicts the buckets
//! that are due (contract 1). Reads already hide expired entries; the sweeper is what gives
//! their memory back, at a cost proportional to what expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::time::Timestamp;
use crate::metrics::Metrics;
use crate::store::Store;

/// The longest the sweeper sleeps before looking at the wall clock again. Sleeps run on the
/// monotonic clock while fire times are wall-clock times, so a long sleep would miss a
/// wall-clock step (NTP correction, suspend); naps bound the error.
const MAX_NAP: Duration = Duration::from_secs(30);

/// Sweeps `store` at every fire time of its schedule; runs in the node's [`Tasks`](crate::base::tasks::Tasks),
/// which stop it between sweeps.
pub async fn run(store: Arc<Store>, metrics: Arc<Metrics>) {
    // Anything already due (e.g. loaded from disk by a later version) goes first.
    sweep(&store, &metrics, None);
    loop {
        let Some(mut next) = next_fire(&store) else {
            tracing::error!(
                schedule = %store.schedule(),
                "the schedule has no further fire time; expired entries stay hidden but are \
                 no longer swept"
            );
            return;
        };
        loop {
            let now = store.clock().now();
            if now >= next {
                break;
            }
            // A wall clock stepped back makes an earlier fire time the next one.
            if let Some(earlier) = next_fire(&store).filter(|earlier| *earlier < next) {
                next = earlier;
            }
            let nap = now.until(next).min(MAX_NAP);
            tokio::time::sleep(nap).await;
        }
        sweep(&store, &metrics, Some(next));
    }
}

/// The first fire time of the store's schedule after its clock's now.
fn next_fire(store: &Store) -> Option<Timestamp> {
    let now = store.clock().now().to_datetime()?;
    store
        .schedule()
        .next_fire_after(now)
        .map(Timestamp::from_datetime)
}

fn sweep(store: &Store, metrics: &Metrics, fire_time: Option<Timestamp>) {
    let started = Instant::now();
    let report = store.evict_expired();
    let elapsed = started.elapsed();
    metrics.observe_sweep(elapsed);
    tracing::debug!(
        fire_time = fire_time.map(|t| t.to_string()),
        buckets = report.buckets,
        evicted = report.evicted,
        elapsed_us = elapsed.as_micros() as u64,
        "swept expired buckets"
    );
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tidecache_contract::Schedule;

    use super::*;
    use crate::base::tasks::Tasks;
    use crate::base::time::ManualClock;
    use crate::store::{Preconditions, StoreConfig};

    #[tokio::test(start_paused = true)]
    async fn sweeps_at_the_fire_time_and_stops_on_shutdown() {
        // Twenty seconds into a minute.
        let start = Timestamp::from_millis(1_795_046_420_000);
        let clock = Arc::new(ManualClock::new(start));
        let store = Arc::new(Store::new(
            StoreConfig::new(Schedule::every_minute()),
            clock.clone(),
        ));
        let metrics = Arc::new(Metrics::new(store.clone()));
        let expiry = start.checked_add(Duration::from_secs(5));
        store
            .put(
                Bytes::from_static(b"k"),
                Bytes::new(),
                expiry,
                &Preconditions::none(),
            )
            .expect("stored");
        let tasks = Tasks::new();
        tasks.spawn(run(store.clone(), metrics.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(store.stats().entries, 1, "not due yet");
        clock.advance(Duration::from_secs(40)); // exactly the fire time
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.stats().entries, 0);
        assert_eq!(store.stats().evicted_expired, 1);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains("tidecache_sweep_duration_seconds_count 2"),
            "{text}"
        );
        tasks.stop().await;
        assert_eq!(tasks.running(), 0, "the sweeper stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_stepped_back_does_not_postpone_sweeps() {
        let start = Timestamp::from_millis(1_795_046_420_000);
        let clock = Arc::new(ManualClock::new(start));
        let store = Arc::new(Store::new(
            StoreConfig::new(Schedule::every_minute()),
            clock.clone(),
        ));
        let metrics = Arc::new(Metrics::new(store.clone()));
        let task = tokio::spawn(run(store.clone(), metrics));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The clock steps back an hour; an entry expires in the minute that is now current.
        let stepped = Timestamp::from_millis(start.as_millis() - 3_600_000);
        clock.set(stepped);
        let expiry = stepped.checked_add(Duration::from_secs(5));
        store
            .put(
                Bytes::from_static(b"k"),
                Bytes::new(),
                expiry,
                &Preconditions::none(),
            )
            .expect("stored");
        tokio::time::sleep(Duration::from_secs(30)).await;
        clock.advance(Duration::from_secs(40)); // the fire time after the step
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(store.stats().entries, 0, "swept at the earlier fire time");
        task.abort();
    }
}
