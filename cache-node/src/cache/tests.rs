//! The service on its own: batches through the write path, and the shutdown order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidecache_contract::Schedule;
use tidecache_contract::disk::ObjectName;

use super::*;
use crate::base::time::{ManualClock, Timestamp};
use crate::persist::FsyncPolicy;
use crate::replication::TransportSettings;
use crate::replication::membership::StaticPeers;
use crate::store::{Preconditions, PutError};

/// 2026-11-19T00:00:20Z: twenty seconds into a minute.
const START: i64 = 1_795_046_420_000;

fn settings(persistence: Option<PersistSettings>) -> CacheSettings {
    CacheSettings {
        store: StoreConfig::new(Schedule::every_minute()),
        limits: Limits::default(),
        persistence,
        node_tag: 7,
        backend: None,
    }
}

fn write(key: &'static str, value: &'static str, conditions: Preconditions) -> Write {
    Write {
        key: Bytes::from_static(key.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
        expires_at: None,
        conditions,
    }
}

#[tokio::test]
async fn a_batch_acknowledges_each_write_on_its_own_in_order() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let cache = Cache::start(settings(None), clock, None);
    let first = cache
        .put(write("a", "1", Preconditions::none()), None)
        .await
        .expect("stored");
    assert!(first.created);
    let results = cache
        .put_many(
            vec![
                write("a", "2", Preconditions::if_version(first.version)),
                write("b", "1", Preconditions::create_only()),
                write("a", "3", Preconditions::if_version(first.version)),
            ],
            None,
        )
        .await;
    let second = results[0].as_ref().expect("the precondition held");
    assert!(!second.created && second.version > first.version);
    assert!(results[1].as_ref().expect("b was absent").created);
    assert_eq!(
        results[2],
        Err(WriteError::Put(PutError::PreconditionFailed {
            current: Some(second.version)
        })),
        "the third write saw the first one's change"
    );
    assert_eq!(
        cache.get(b"a").await.expect("local").map(|hit| hit.value),
        Some(Bytes::from("2"))
    );
    let removed = cache
        .delete(Bytes::from_static(b"a"), Preconditions::none(), None)
        .await
        .expect("deleted");
    assert_eq!(removed.version, second.version);
    assert_eq!(cache.get(b"a").await.expect("local"), None);
}

#[tokio::test]
async fn shutdown_stops_every_task_before_the_log_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let persistence = PersistSettings {
        data_dir: dir.path().to_path_buf(),
        namespace: ObjectName::new("default").expect("name"),
        cluster: ObjectName::new("demo").expect("name"),
        node: ObjectName::new("node-a").expect("name"),
        fsync: FsyncPolicy::Always,
        segment_bytes: PersistSettings::DEFAULT_SEGMENT_BYTES,
        compact_min_bytes: PersistSettings::DEFAULT_COMPACT_MIN_BYTES,
    };
    // A peer nobody listens on: its link retries and anti-entropy keeps trying it, so both
    // are busy when the shutdown comes.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let peers = Peers {
        settings: ReplicationSettings {
            anti_entropy_interval: Duration::from_millis(10),
            catch_up_timeout: Duration::from_secs(2),
            transport: TransportSettings {
                request_timeout: Duration::from_millis(200),
                retry_backoff: Duration::from_millis(5),
                probe_interval: Duration::from_millis(10),
                ..TransportSettings::default()
            },
            ..ReplicationSettings::default()
        },
        discovery: Box::new(StaticPeers::new([dead.as_str()], "127.0.0.1:1")),
    };
    let cache = Cache::start(
        settings(Some(persistence)),
        Arc::new(crate::base::time::SystemClock),
        Some(peers),
    );
    cache.load().await.expect("loads");
    cache
        .put(write("k", "v", Preconditions::none()), None)
        .await
        .expect("acknowledged at one");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let running = cache.running_tasks();
    assert!(
        running >= 3,
        "the sweeper, the peer's link and anti-entropy run before the shutdown: {running}"
    );
    let closed = cache.close().await;
    assert_eq!(
        closed,
        Closed {
            tasks_running_at_log_close: 0,
            log_closed: true,
        }
    );
    assert_eq!(cache.running_tasks(), 0);
}
