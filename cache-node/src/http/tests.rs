//! The HTTP layer over a persisting cache: what clients see while the volume loads and when a
//! write cannot be made durable.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tidecache_contract::Schedule;
use tidecache_contract::disk::{Area, ObjectName};
use tower::ServiceExt;

use super::{AppState, app};
use crate::base::time::{Clock, ManualClock, Timestamp};
use crate::cache::{Cache, CacheSettings, Limits};
use crate::persist::{FsyncPolicy, PersistSettings};
use crate::store::StoreConfig;

/// 2026-11-19T00:00:20Z: twenty seconds into a minute.
const START: i64 = 1_795_046_420_000;

async fn call(
    state: &Arc<AppState>,
    method: Method,
    uri: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .expect("request");
    let response = app(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn key_requests_wait_for_the_volume_and_a_refused_write_keeps_the_old_value() {
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
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let settings = CacheSettings {
        store: StoreConfig::new(Schedule::every_minute()),
        limits: Limits::default(),
        persistence: Some(persistence.clone()),
        node_tag: 0,
        backend: None,
    };
    let cache = Arc::new(Cache::start(settings, clock.clone(), None));
    let state = Arc::new(AppState::new(cache.clone()));

    // Until the volume is loaded, key requests and readiness wait; liveness does not.
    let (status, body) = call(&state, Method::GET, "/v1/keys/k", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("loading the data volume"), "{body}");
    let (status, _) = call(&state, Method::PUT, "/v1/keys/k", "early").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        call(&state, Method::GET, "/readyz", "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(&state, Method::GET, "/healthz", "").await.0,
        StatusCode::OK
    );
    cache.load().await.expect("loads");
    assert_eq!(
        call(&state, Method::GET, "/readyz", "").await.0,
        StatusCode::OK
    );
    let (status, _) = call(&state, Method::PUT, "/v1/keys/k", "durable").await;
    assert_eq!(status, StatusCode::CREATED);

    // Block the directory of the bucket a one-hour lifetime lands in.
    let later = clock
        .now()
        .checked_add(Duration::from_secs(3600))
        .expect("time");
    let bucket = Schedule::every_minute()
        .bucket_for(later.to_datetime().expect("time"))
        .and_then(tidecache_contract::Bucket::new)
        .expect("bucket");
    fs::write(
        persistence.root().area_dir(Area::Bucket(bucket)),
        b"in the way",
    )
    .expect("block");
    let (status, body) = call(&state, Method::PUT, "/v1/keys/k?ttl=1h", "lost").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(json["error"], "persistence_failed");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("nothing was stored")),
        "{json}"
    );
    let (status, body) = call(&state, Method::GET, "/v1/keys/k", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "durable"));
    assert!(cache.close().await.log_closed);
}
