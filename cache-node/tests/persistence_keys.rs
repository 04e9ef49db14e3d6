//! Hostile keys through the HTTP API of a persisting node (`../x`, `/etc/passwd`, NUL bytes,
//! percent-encoded dots and slashes, very long keys; property-tested): nothing is created
//! outside the data directory, everything inside it is a name of the format, and every key
//! reads back the same before and after a restart.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use cache_node::StoreConfig;
use cache_node::SystemClock;
use cache_node::{AppState, app};
use cache_node::{Cache, CacheSettings, Limits};
use cache_node::{FsyncPolicy, PersistSettings};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tidecache_contract::Schedule;
use tidecache_contract::disk::{Area, ObjectName, SegmentId};
use tower::ServiceExt;

/// A node persisting under `data_dir`.
struct Node {
    state: Arc<AppState>,
}

fn settings(data_dir: &Path) -> PersistSettings {
    PersistSettings {
        data_dir: data_dir.to_path_buf(),
        namespace: ObjectName::new("default").expect("name"),
        cluster: ObjectName::new("demo").expect("name"),
        node: ObjectName::new("node-0").expect("name"),
        fsync: FsyncPolicy::Never,
        segment_bytes: PersistSettings::DEFAULT_SEGMENT_BYTES,
        compact_min_bytes: PersistSettings::DEFAULT_COMPACT_MIN_BYTES,
    }
}

impl Node {
    async fn start(data_dir: &Path) -> Node {
        let settings = CacheSettings {
            store: StoreConfig::new(Schedule::every_minute()),
            limits: Limits {
                max_key_bytes: 4096,
                ..Limits::default()
            },
            persistence: Some(settings(data_dir)),
            node_tag: 0,
            backend: None,
        };
        let cache = Arc::new(Cache::start(settings, Arc::new(SystemClock), None));
        cache.load().await.expect("the volume loads");
        Node {
            state: Arc::new(AppState::new(cache)),
        }
    }

    async fn call(&self, method: Method, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_vec()))
            .expect("request");
        let response = app(self.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        (status, body.to_bytes().to_vec())
    }

    async fn stop(self) {
        assert!(self.state.cache.close().await.log_closed);
    }
}

/// A key as it appears in the URL: fragments that mean something to a file system.
fn hostile_key() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("../".to_string()),
        Just("..".to_string()),
        Just("/".to_string()),
        Just("//".to_string()),
        Just("/etc/passwd".to_string()),
        Just("%2e%2e%2f".to_string()),
        Just("%2E%2E/".to_string()),
        Just(".%2e/".to_string()),
        Just("%2fetc%2fpasswd".to_string()),
        Just("%00".to_string()),
        Just("x%00y".to_string()),
        Just("%5c..%5c".to_string()),
        Just("%25".to_string()),
        Just("~".to_string()),
        Just(".".to_string()),
        Just("%ff%fe".to_string()),
        "[a-z0-9]{1,6}",
        (1usize..1200).prop_map(|n| "%2e".repeat(n)),
    ];
    prop::collection::vec(fragment, 1..6).prop_map(|parts| parts.concat())
}

/// The key a request path names: percent-decoded.
fn decoded(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut key = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                key.push(byte);
                at += 3;
            }
            (byte, _) => {
                key.push(byte);
                at += 1;
            }
        }
    }
    key
}

/// Every path under `dir` must be `default/demo/<area>/<node>/<segment>`.
fn assert_only_format_names(data_dir: &Path) {
    let mut pending = vec![(data_dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name().into_string().expect("UTF-8 name");
            let kind = entry.file_type().expect("type");
            let ours = match depth {
                0 => name == "default" && kind.is_dir(),
                1 => name == "demo" && kind.is_dir(),
                2 => Area::from_dir_name(&name).is_some() && kind.is_dir(),
                3 => ObjectName::new(&name).is_ok() && kind.is_dir(),
                4 => SegmentId::from_file_name(&name).is_some() && kind.is_file(),
                _ => false,
            };
            assert!(
                ours,
                "unexpected {} at depth {depth}",
                entry.path().display()
            );
            if kind.is_dir() {
                pending.push((entry.path(), depth + 1));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn hostile_keys_never_reach_a_path(keys in prop::collection::vec(hostile_key(), 1..12)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let outer = tempfile::tempdir().expect("tempdir");
        let data_dir = outer.path().join("data");
        runtime.block_on(async {
            let node = Node::start(&data_dir).await;
            let mut stored = Vec::new();
            for (index, key) in keys.iter().enumerate() {
                let path = format!("/v1/keys/{key}");
                let ttl = if index % 2 == 0 { "?ttl=1h" } else { "" };
                let value = format!("value-{index}");
                let (status, _) = node
                    .call(Method::PUT, &format!("{path}{ttl}"), value.as_bytes())
                    .await;
                if status.is_success() {
                    stored.push((path, value));
                } else {
                    // Only refusals of the key itself, never of the disk.
                    prop_assert!(
                        status == StatusCode::URI_TOO_LONG || status == StatusCode::BAD_REQUEST,
                        "PUT {path}: {status}"
                    );
                }
            }
            // Two paths can name one key (`.` and `%2e`): the later write wins.
            let mut last = std::collections::HashMap::new();
            for (path, value) in stored {
                last.insert(decoded(&path), (path, value));
            }
            let last: Vec<(String, String)> = last.into_values().collect();
            for (path, value) in &last {
                let (status, body) = node.call(Method::GET, path, b"").await;
                prop_assert_eq!(status, StatusCode::OK, "GET {}", path);
                prop_assert_eq!(&body, value.as_bytes());
            }
            node.stop().await;

            let entries: Vec<_> = std::fs::read_dir(outer.path())
                .expect("list")
                .map(|entry| entry.expect("entry").file_name())
                .collect();
            prop_assert_eq!(entries, vec![std::ffi::OsString::from("data")]);
            assert_only_format_names(&data_dir);

            let node = Node::start(&data_dir).await;
            for (path, value) in &last {
                let (status, body) = node.call(Method::GET, path, b"").await;
                prop_assert_eq!(status, StatusCode::OK, "GET {} after restart", path);
                prop_assert_eq!(&body, value.as_bytes());
            }
            node.stop().await;
            Ok(())
        })?;
    }
}
