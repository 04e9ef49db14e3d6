//! The HTTP API in-process: every route, status, header and rejection path, driven through
//! `app(state).oneshot(request)` with a manual clock, plus one test over a real socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use cache_node::AuthToken;
use cache_node::{AppState, app, run};
use cache_node::{Cache, CacheSettings, Limits};
use cache_node::{EvictionPolicy, StoreConfig};
use cache_node::{ManualClock, Timestamp};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tidecache_contract::Schedule;
use tower::ServiceExt;

/// 2026-11-19T00:00:20Z: twenty seconds into a minute.
const START: i64 = 1_795_046_420_000;

struct Node {
    state: Arc<AppState>,
    clock: Arc<ManualClock>,
}

impl Node {
    fn new() -> Node {
        Node::with(Limits::default(), u64::MAX, EvictionPolicy::Clock)
    }

    fn with(limits: Limits, capacity: u64, policy: EvictionPolicy) -> Node {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
        let settings = CacheSettings {
            store: StoreConfig {
                schedule: Schedule::every_minute(),
                capacity_bytes: capacity,
                eviction_policy: policy,
                shards: 8,
            },
            limits,
            persistence: None,
            node_tag: 0,
            backend: None,
        };
        let cache = Arc::new(Cache::start(settings, clock.clone(), None));
        Node {
            state: Arc::new(AppState::new(cache)),
            clock,
        }
    }

    fn app(&self) -> Router {
        app(self.state.clone())
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        self.send(request(method, uri).body(body.into()).expect("request"))
            .await
    }

    async fn put(&self, uri: &str, value: &'static str) -> Reply {
        self.call(Method::PUT, uri, value).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Body::empty()).await
    }
}

fn request(method: Method, uri: &str) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: impl header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii"))
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts a JSON error with `status` and `code`.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header(header::CONTENT_TYPE), "application/json");
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn put_get_head_delete_round_trip() {
    let node = Node::new();
    let created = node.put("/v1/keys/greeting?ttl=90s", "hello").await;
    assert_eq!(created.status, StatusCode::CREATED);
    let etag = created.header(header::ETAG).to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(
        created.header(header::EXPIRES),
        "Thu, 19 Nov 2026 00:01:50 GMT"
    );
    assert_eq!(created.header("tidecache-ttl"), "90");
    assert_eq!(created.header("tidecache-bucket"), "20261119T000200Z");

    let got = node.get("/v1/keys/greeting").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "hello");
    assert_eq!(got.header(header::ETAG), etag);
    assert_eq!(got.header(header::EXPIRES), "Thu, 19 Nov 2026 00:01:50 GMT");
    assert_eq!(got.header(header::CONTENT_TYPE), "application/octet-stream");
    node.clock.advance(Duration::from_secs(30));
    let head = node
        .call(Method::HEAD, "/v1/keys/greeting", Body::empty())
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header(header::CONTENT_LENGTH), "5");
    assert_eq!(head.header("tidecache-ttl"), "60");

    let replaced = node.put("/v1/keys/greeting", "bye").await;
    assert_eq!(replaced.status, StatusCode::NO_CONTENT);
    assert_ne!(replaced.header(header::ETAG), etag);
    assert_eq!(replaced.header(header::EXPIRES), "", "no ttl, no default");
    assert_eq!(node.get("/v1/keys/greeting").await.body, "bye");

    let deleted = node
        .call(Method::DELETE, "/v1/keys/greeting", Body::empty())
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    node.get("/v1/keys/greeting")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let head = node
        .call(Method::HEAD, "/v1/keys/greeting", Body::empty())
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    node.call(Method::DELETE, "/v1/keys/greeting", Body::empty())
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn lifetimes_from_ttl_expires_and_defaults() {
    let node = Node::new();
    for (ttl, secs) in [("90s", "90"), ("15m", "900"), ("2h", "7200"), ("45", "45")] {
        let reply = node.put(&format!("/v1/keys/k?ttl={ttl}"), "v").await;
        assert!(reply.status.is_success(), "{reply:?}");
        assert_eq!(reply.header("tidecache-ttl"), secs);
    }
    let with_expires = node
        .send(
            request(Method::PUT, "/v1/keys/dated")
                .header(header::EXPIRES, "Thu, 19 Nov 2026 00:05:00 GMT")
                .body(Body::from("v"))
                .expect("request"),
        )
        .await;
    assert_eq!(with_expires.status, StatusCode::CREATED);
    assert_eq!(with_expires.header("tidecache-ttl"), "280");
    assert_eq!(with_expires.header("tidecache-bucket"), "20261119T000500Z");

    let defaults = Node::with(
        Limits {
            default_ttl: Some(Duration::from_secs(60)),
            max_ttl: Some(Duration::from_secs(3600)),
            ..Limits::default()
        },
        u64::MAX,
        EvictionPolicy::Clock,
    );
    let reply = defaults.put("/v1/keys/k", "v").await;
    assert_eq!(reply.header("tidecache-ttl"), "60");
    defaults
        .put("/v1/keys/k?ttl=2h", "v")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "ttl_over_max");
    assert_eq!(
        defaults.get("/v1/keys/k").await.header("tidecache-ttl"),
        "60",
        "a refused write changes nothing"
    );
    let required = Node::with(
        Limits {
            max_ttl: Some(Duration::from_secs(3600)),
            ..Limits::default()
        },
        u64::MAX,
        EvictionPolicy::Clock,
    );
    required
        .put("/v1/keys/k", "v")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "ttl_required");
}

#[tokio::test]
async fn lifetime_rejections() {
    let node = Node::new();
    for ttl in ["abc", "0", "1.5h", "-1", "3d", ""] {
        node.put(&format!("/v1/keys/k?ttl={ttl}"), "v")
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_ttl");
    }
    let with_expires = |value: &'static str, uri: &'static str| {
        request(Method::PUT, uri)
            .header(header::EXPIRES, value)
            .body(Body::from("v"))
            .expect("request")
    };
    node.send(with_expires("soon", "/v1/keys/k"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_expires");
    node.send(with_expires("Thu, 19 Nov 2026 00:00:00 GMT", "/v1/keys/k"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "expires_in_past");
    node.send(with_expires(
        "Thu, 19 Nov 2026 00:05:00 GMT",
        "/v1/keys/k?ttl=5s",
    ))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "ttl_and_expires");
    assert_eq!(node.get("/v1/keys/k").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_entries_are_never_served() {
    let node = Node::new();
    node.put("/v1/keys/k?ttl=5s", "v").await;
    node.clock.advance(Duration::from_millis(4_999));
    assert_eq!(node.get("/v1/keys/k").await.status, StatusCode::OK);
    node.clock.advance(Duration::from_millis(1));
    node.get("/v1/keys/k")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // A write over an expired entry creates.
    assert_eq!(
        node.put("/v1/keys/k", "new").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn conditional_writes() {
    let node = Node::new();
    let create_only = |value: &'static str| {
        request(Method::PUT, "/v1/keys/k")
            .header(header::IF_NONE_MATCH, "*")
            .body(Body::from(value))
            .expect("request")
    };
    let created = node.send(create_only("one")).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let etag = created.header(header::ETAG).to_string();
    let conflict = node.send(create_only("two")).await;
    conflict.assert_error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(conflict.header(header::ETAG), etag);

    let if_match = |tag: &str, method: Method, value: &'static str| {
        request(method, "/v1/keys/k")
            .header(header::IF_MATCH, tag)
            .body(Body::from(value))
            .expect("request")
    };
    node.send(if_match("\"1\"", Method::PUT, "stale"))
        .await
        .assert_error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let swapped = node.send(if_match(&etag, Method::PUT, "three")).await;
    assert_eq!(swapped.status, StatusCode::NO_CONTENT);
    let new_etag = swapped.header(header::ETAG).to_string();
    node.send(if_match(&etag, Method::DELETE, ""))
        .await
        .assert_error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    // (A weak tag is no malformed one: tests/http_conformance.rs.)
    for bad in ["1", "\"x\"", "\"1"] {
        node.send(if_match(bad, Method::PUT, "bad"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_precondition");
    }
    assert_eq!(node.get("/v1/keys/k").await.body, "three");

    let not_modified = node
        .send(
            request(Method::GET, "/v1/keys/k")
                .header(header::IF_NONE_MATCH, new_etag.as_str())
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());

    let deleted = node.send(if_match(&new_etag, Method::DELETE, "")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    node.send(if_match(&new_etag, Method::PUT, "gone"))
        .await
        .assert_error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
}

#[tokio::test]
async fn keys_are_any_bytes_within_the_limit() {
    let node = Node::with(
        Limits {
            max_key_bytes: 8,
            ..Limits::default()
        },
        u64::MAX,
        EvictionPolicy::Clock,
    );
    assert_eq!(
        node.put("/v1/keys/a%2Fb", "slash").await.status,
        StatusCode::CREATED
    );
    assert_eq!(node.get("/v1/keys/a%2fb").await.body, "slash");
    assert_eq!(node.get("/v1/keys/a%2Fb").await.body, "slash");
    assert_eq!(
        node.put("/v1/keys/%00%FF%20", "binary").await.status,
        StatusCode::CREATED
    );
    assert_eq!(node.get("/v1/keys/%00%ff%20").await.body, "binary");
    assert_eq!(
        node.put("/v1/keys/12345678", "max").await.status,
        StatusCode::CREATED
    );
    node.put("/v1/keys/123456789", "long")
        .await
        .assert_error(StatusCode::URI_TOO_LONG, "key_too_long");
    node.put("/v1/keys/%41%41%41%41%41%41%41%41%41", "long")
        .await
        .assert_error(StatusCode::URI_TOO_LONG, "key_too_long");
    for uri in ["/v1/keys/", "/v1/keys"] {
        node.put(uri, "empty")
            .await
            .assert_error(StatusCode::BAD_REQUEST, "empty_key");
        node.get(uri)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "empty_key");
    }
    node.put("/v1/keys/a%zz", "bad")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_key_encoding");
}

#[tokio::test]
async fn oversized_values_are_refused_and_change_nothing() {
    let node = Node::with(
        Limits {
            max_value_bytes: 16,
            ..Limits::default()
        },
        u64::MAX,
        EvictionPolicy::Clock,
    );
    node.put("/v1/keys/k", "0123456789abcdef").await;
    let declared = request(Method::PUT, "/v1/keys/k")
        .header(header::CONTENT_LENGTH, "17")
        .body(Body::from("0123456789abcdefg"))
        .expect("request");
    node.send(declared)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    // Declared as huge: refused from the header alone.
    let lying = request(Method::PUT, "/v1/keys/k")
        .header(header::CONTENT_LENGTH, "1000000000")
        .body(Body::empty())
        .expect("request");
    node.send(lying)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    // Undeclared: refused once it passes the limit.
    node.call(Method::PUT, "/v1/keys/k", vec![b'x'; 100])
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    assert_eq!(node.get("/v1/keys/k").await.body, "0123456789abcdef");
}

#[tokio::test]
async fn noeviction_answers_507_when_full() {
    let capacity = 64 * 1024;
    let node = Node::with(Limits::default(), capacity, EvictionPolicy::NoEviction);
    let mut stored = 0;
    let refused = loop {
        let reply = node.put(&format!("/v1/keys/k{stored}"), "0123456789").await;
        if reply.status != StatusCode::CREATED {
            break reply;
        }
        stored += 1;
        assert!(stored < 100_000, "never full");
    };
    refused.assert_error(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage");
    assert!(stored > 100, "only {stored} small entries fit in 64 KiB");
    for i in 0..stored {
        assert_eq!(node.get(&format!("/v1/keys/k{i}")).await.body, "0123456789");
    }

    let evicting = Node::with(Limits::default(), capacity, EvictionPolicy::Clock);
    for i in 0..stored * 3 {
        assert_eq!(
            evicting
                .put(&format!("/v1/keys/k{i}"), "0123456789")
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let last = stored * 3 - 1;
    assert_eq!(
        evicting.get(&format!("/v1/keys/k{last}")).await.status,
        StatusCode::OK
    );
}

async fn post_json(node: &Node, uri: &str, body: &Value) -> Reply {
    node.send(
        request(Method::POST, uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn batch_put_and_get() {
    let node = Node::new();
    let existing = node.put("/v1/keys/taken", "old").await;
    let reply = post_json(
        &node,
        "/v1/batch/put",
        &json!({ "entries": [
            { "key": "a", "value": "AAE=", "ttl": "90s" },
            { "key": "b/c", "value": "aGk=" },
            { "key": "taken", "value": "bmV3", "if_none_match": "*" },
            { "key": "taken", "value": "bmV3", "if_match": existing.header(header::ETAG) },
        ]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let results = reply.json()["results"].clone();
    assert_eq!(results[0]["status"], 201);
    assert_eq!(results[0]["expires"], "Thu, 19 Nov 2026 00:01:50 GMT");
    assert_eq!(results[1]["status"], 201);
    assert_eq!(results[2]["status"], 412);
    assert_eq!(results[2]["error"], "precondition_failed");
    assert_eq!(results[3]["status"], 204);

    let reply = post_json(
        &node,
        "/v1/batch/get",
        &json!({ "keys": ["a", "b/c", "missing", "taken"] }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let entries = reply.json()["entries"].clone();
    assert_eq!(entries[0]["value"], "AAE=");
    assert_eq!(entries[0]["ttl_seconds"], 90);
    assert_eq!(entries[0]["etag"], results[0]["etag"]);
    assert_eq!(entries[1]["value"], "aGk=");
    assert_eq!(entries[1].get("expires"), None);
    assert_eq!(entries[2], json!({ "key": "missing", "found": false }));
    assert_eq!(entries[3]["value"], "bmV3");
    assert_eq!(node.get("/v1/keys/b%2Fc").await.body, "hi");
}

#[tokio::test]
async fn batch_rejections_store_nothing() {
    let node = Node::with(
        Limits {
            max_batch_entries: 2,
            max_batch_bytes: 256,
            max_value_bytes: 4,
            ..Limits::default()
        },
        u64::MAX,
        EvictionPolicy::Clock,
    );
    let put = |entries: Value| json!({ "entries": entries });
    for (body, code) in [
        (
            put(json!([{ "key": "a", "value": "AA==" }, { "key": "", "value": "AA==" }])),
            "bad_batch_entry",
        ),
        (
            put(json!([{ "key": "a", "value": "not base64!" }])),
            "bad_batch_entry",
        ),
        (
            put(json!([{ "key": "a", "value": "AAAAAAAA" }])),
            "bad_batch_entry",
        ),
        (
            put(json!([{ "key": "a", "value": "AA==", "ttl": "soon" }])),
            "bad_batch_entry",
        ),
        (
            put(json!([{ "key": "a", "value": "AA==", "if_match": "nope" }])),
            "bad_batch_entry",
        ),
        (
            put(json!([{ "key": "a", "value": "AA==", "color": "red" }])),
            "bad_json",
        ),
        (json!({ "keys": ["a"] }), "bad_json"),
    ] {
        post_json(&node, "/v1/batch/put", &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, code);
    }
    post_json(
        &node,
        "/v1/batch/put",
        &put(json!([{ "key": "a", "value": "" }, { "key": "b", "value": "" }, { "key": "c", "value": "" }])),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "too_many_entries");
    post_json(
        &node,
        "/v1/batch/get",
        &json!({ "keys": ["x".repeat(300)] }),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    node.send(
        request(Method::POST, "/v1/batch/get")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("{}"))
            .expect("request"),
    )
    .await
    .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    node.call(Method::POST, "/v1/batch/get", "{not json")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_json");
    assert_eq!(node.get("/v1/keys/a").await.status, StatusCode::NOT_FOUND);
    assert_eq!(node.state.cache.store().stats().entries, 0);
}

#[tokio::test]
async fn wrong_methods_and_unknown_routes() {
    let node = Node::new();
    for (method, uri) in [
        (Method::PATCH, "/v1/keys/k"),
        (Method::POST, "/v1/keys/k"),
        (Method::GET, "/v1/batch/get"),
        (Method::DELETE, "/healthz"),
        (Method::POST, "/v1/keys/"),
    ] {
        let reply = node.call(method, uri, Body::empty()).await;
        reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert!(!reply.header(header::ALLOW).is_empty());
    }
    node.get("/v2/keys/k")
        .await
        .assert_error(StatusCode::NOT_FOUND, "no_route");
}

#[tokio::test]
async fn probes_metrics_and_openapi() {
    let node = Node::new();
    let health = node.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    assert_eq!(node.get("/readyz").await.status, StatusCode::OK);
    node.state.cache.start_draining();
    node.get("/readyz")
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");

    node.put("/v1/keys/k?ttl=5s", "v").await;
    node.get("/v1/keys/nope").await;
    node.clock.advance(Duration::from_secs(40));
    node.state.cache.store().evict_expired();
    let metrics = node.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header(header::CONTENT_TYPE)
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(metrics.body.to_vec()).expect("utf-8");
    for line in [
        "tidecache_http_requests_total{route=\"/v1/keys/{key}\",method=\"PUT\",status=\"201\"} 1",
        "tidecache_http_requests_total{route=\"/v1/keys/{key}\",method=\"GET\",status=\"404\"} 1",
        "tidecache_http_request_duration_seconds_count{route=\"/v1/keys/{key}\",method=\"GET\"} 1",
        "tidecache_entries 0",
        "tidecache_memory_used_bytes 0",
        "tidecache_evictions_total{reason=\"expired\"} 1",
        "tidecache_evictions_total{reason=\"capacity\"} 0",
        "# TYPE tidecache_sweep_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    let openapi = node.get("/openapi.json").await;
    assert_eq!(openapi.status, StatusCode::OK);
    let document = openapi.json();
    assert_eq!(document["openapi"], "3.1.0");
    for (path, methods) in [
        ("/v1/keys/{key}", &["get", "head", "put", "delete"][..]),
        ("/v1/batch/get", &["post"]),
        ("/v1/batch/put", &["post"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        for method in methods {
            assert!(
                document["paths"][path][method].is_object(),
                "{method} {path} undocumented"
            );
        }
    }
    assert_eq!(document["paths"].as_object().map(|p| p.len()), Some(7));
}

#[tokio::test]
async fn serves_a_real_socket_and_drains_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let node = Node::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        node.state.clone(),
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));

    let exchange = |raw: String| async move {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream.write_all(raw.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    };
    let put = exchange(
        "PUT /v1/keys/socket?ttl=1h HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_string(),
    )
    .await;
    assert!(put.starts_with("HTTP/1.1 201 Created"), "{put}");
    let get = exchange(
        "GET /v1/keys/socket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
    )
    .await;
    assert!(
        get.starts_with("HTTP/1.1 200 OK") && get.ends_with("hello"),
        "{get}"
    );
    assert!(get.to_ascii_lowercase().contains("etag: \""), "{get}");
    // A chunked body over the limit is refused while streaming.
    let chunk = "x".repeat(1 << 20);
    let oversized = exchange(format!(
        "PUT /v1/keys/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n1\r\ny\r\n0\r\n\r\n",
        len = chunk.len()
    ))
    .await;
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
    assert!(oversized.contains("value_too_large"), "{oversized}");

    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server ends cleanly");
    assert!(!node.state.cache.is_serving());
}

#[tokio::test]
async fn shutdown_turns_unready_at_once_finishes_requests_in_flight_and_refuses_new_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let node = Node::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let drain = Duration::from_secs(2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        node.state.clone(),
        async move {
            let _ = stopped.await;
        },
        drain,
    ));
    // Two PUTs in flight: their bodies are half sent. One will finish, one never does.
    let mut finishing = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut stalled = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    for (stream, key) in [(&mut finishing, "finishing"), (&mut stalled, "stalled")] {
        let head = format!(
            "PUT /v1/keys/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
    }
    // Let the server start reading both requests before the signal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node.get("/readyz").await.status, StatusCode::OK);

    let signalled = tokio::time::Instant::now();
    let _ = stop.send(());
    let deadline = signalled + Duration::from_secs(1);
    while node.get("/readyz").await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(tokio::time::Instant::now() < deadline, "/readyz still 200");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The listener is closed: a new connection is refused.
    let deadline = signalled + Duration::from_secs(1);
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections still accepted while draining"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The request in flight completes and is stored.
    finishing.write_all(b"world").await.expect("write");
    let mut response = String::new();
    finishing.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 201 Created"), "{response}");
    assert_eq!(
        &node.get("/v1/keys/finishing").await.body[..],
        b"helloworld"
    );
    // The stalled one is cut at the drain timeout, and the server ends.
    server
        .await
        .expect("server task")
        .expect("server ends cleanly");
    let took = signalled.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_secs(5),
        "the server ended {took:?} after the signal, drain timeout {drain:?}"
    );
    assert_eq!(
        node.get("/v1/keys/stalled").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_token_guards_key_routes_but_not_probes() {
    let node = Node::new();
    let token = AuthToken::new("s3cret").expect("valid token");
    let state = Arc::new(AppState::new(node.state.cache.clone()).with_auth(Some(token)));
    let guarded = Node {
        state,
        clock: node.clock.clone(),
    };
    let refused = guarded.put("/v1/keys/k", "v").await;
    refused.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        refused.header(header::WWW_AUTHENTICATE),
        "Bearer realm=\"tidecache\""
    );
    assert_eq!(
        guarded.get("/v1/keys/k").await.status,
        StatusCode::UNAUTHORIZED
    );
    let batch = guarded
        .send(
            request(Method::POST, "/v1/batch/get")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"keys":["k"]}"#))
                .expect("request"),
        )
        .await;
    assert_eq!(batch.status, StatusCode::UNAUTHORIZED);
    let stored = guarded
        .send(
            request(Method::PUT, "/v1/keys/k")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::from("v"))
                .expect("request"),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(guarded.get(path).await.status, StatusCode::OK, "{path}");
    }
    // Only the authorised write is stored.
    assert_eq!(&node.get("/v1/keys/k").await.body[..], b"v");
}
