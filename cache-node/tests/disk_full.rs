//! A data volume that really runs full: a 256 KiB tmpfs mounted for the test (the suite runs
//! as root, as the end-to-end tests need). Writes are refused with 507 `disk_full` once the
//! file system has no room, nothing acknowledged before is lost, and a restart on the same
//! volume serves every acknowledged write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use cache_node::{
    AppState, Cache, CacheSettings, FsyncPolicy, Limits, PersistSettings, StoreConfig, SystemClock,
    app,
};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tidecache_contract::Schedule;
use tidecache_contract::disk::ObjectName;
use tower::ServiceExt;

/// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped.
struct SmallVolume {
    dir: tempfile::TempDir,
}

impl SmallVolume {
    fn mount(size: &str) -> SmallVolume {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root, as the end-to-end tests do"
        );
        SmallVolume { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn start(data_dir: PathBuf) -> Arc<AppState> {
    let settings = CacheSettings {
        store: StoreConfig::new(Schedule::every_minute()),
        limits: Limits::default(),
        persistence: Some(PersistSettings {
            data_dir,
            namespace: ObjectName::new("default").expect("name"),
            cluster: ObjectName::new("demo").expect("name"),
            node: ObjectName::new("node-0").expect("name"),
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 * 1024,
            compact_min_bytes: PersistSettings::DEFAULT_COMPACT_MIN_BYTES,
        }),
        node_tag: 0,
        backend: None,
    };
    let cache = Arc::new(Cache::start(settings, Arc::new(SystemClock), None));
    cache.load().await.expect("the volume loads");
    Arc::new(AppState::new(cache))
}

async fn call(
    state: &Arc<AppState>,
    method: Method,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
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
    (status, body.to_vec())
}

#[tokio::test]
async fn a_full_volume_refuses_writes_with_507_and_keeps_what_was_acknowledged() {
    let volume = SmallVolume::mount("256k");
    let state = start(volume.path().to_path_buf()).await;
    let value = vec![b'v'; 16 * 1024];
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..64 {
        let key = format!("/v1/keys/k{i}?ttl=1h");
        let (status, body) = call(&state, Method::PUT, &key, value.clone()).await;
        match status {
            StatusCode::CREATED => acknowledged.push(format!("/v1/keys/k{i}")),
            _ => {
                refusal = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refusal.expect("a 256 KiB volume fills before 1 MiB of values");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(json["error"], "disk_full", "{json}");
    assert!(
        acknowledged.len() >= 4,
        "writes were acknowledged before the volume filled: {}",
        acknowledged.len()
    );
    for key in &acknowledged {
        let (status, body) = call(&state, Method::GET, key, Vec::new()).await;
        assert_eq!((status, body.len()), (StatusCode::OK, value.len()), "{key}");
    }
    assert!(state.cache.close().await.log_closed);

    // What was acknowledged is on the volume: a restart serves all of it.
    let restarted = start(volume.path().to_path_buf()).await;
    for key in &acknowledged {
        let (status, body) = call(&restarted, Method::GET, key, Vec::new()).await;
        assert_eq!((status, body.len()), (StatusCode::OK, value.len()), "{key}");
    }
    assert!(restarted.cache.close().await.log_closed);
}
