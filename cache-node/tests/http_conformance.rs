//! HTTP conformance of the API in-process (`app(state).oneshot(request)`): weak ETags under
//! RFC 9110's comparison rules, the `Allow` list of each route's 405, the query parameters
//! each route accepts, and the 401 of every guarded route in `/openapi.json`.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use cache_node::{
    AppState, Cache, CacheSettings, Limits, ManualClock, StoreConfig, Timestamp, app,
};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tidecache_contract::Schedule;
use tower::ServiceExt;

/// 2026-11-19T00:00:20Z.
const START: i64 = 1_795_046_420_000;

struct Node {
    state: Arc<AppState>,
}

impl Node {
    fn new() -> Node {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
        let settings = CacheSettings {
            store: StoreConfig::new(Schedule::every_minute()),
            limits: Limits::default(),
            persistence: None,
            node_tag: 0,
            backend: None,
        };
        let cache = Arc::new(Cache::start(settings, clock, None));
        Node {
            state: Arc::new(AppState::new(cache)),
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: &'static str,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = app(self.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
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
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii"))
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The JSON error's message, after checking its status and code.
    fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        body["message"].as_str().expect("a message").to_string()
    }
}

#[tokio::test]
async fn weak_etags_match_in_if_none_match_and_never_in_if_match() {
    let node = Node::new();
    let created = node.send(Method::PUT, "/v1/keys/k", &[], "one").await;
    assert_eq!(created.status, StatusCode::CREATED);
    let etag = created.header(header::ETAG).to_string();
    let weak = format!("W/{etag}");

    // GET and HEAD: weak comparison, so W/"x" matches the current "x".
    for method in [Method::GET, Method::HEAD] {
        let reply = node
            .send(
                method.clone(),
                "/v1/keys/k",
                &[(header::IF_NONE_MATCH, &weak)],
                "",
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{method} {reply:?}");
        assert_eq!(reply.header(header::ETAG), etag);
        let listed = format!("W/\"1\", {weak}");
        let reply = node
            .send(
                method.clone(),
                "/v1/keys/k",
                &[(header::IF_NONE_MATCH, &listed)],
                "",
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{method} {reply:?}");
        let other = node
            .send(
                method.clone(),
                "/v1/keys/k",
                &[(header::IF_NONE_MATCH, "W/\"1\"")],
                "",
            )
            .await;
        assert_eq!(other.status, StatusCode::OK, "{method} {other:?}");
    }

    // A write's If-None-Match compares weakly too: the weak tag of the current version fails it.
    node.send(
        Method::PUT,
        "/v1/keys/k",
        &[(header::IF_NONE_MATCH, &weak)],
        "two",
    )
    .await
    .error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    // If-Match compares strongly: a weak tag never matches, even the current version's.
    for method in [Method::PUT, Method::DELETE] {
        let refused = node
            .send(
                method.clone(),
                "/v1/keys/k",
                &[(header::IF_MATCH, &weak)],
                "three",
            )
            .await;
        refused.error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
        assert_eq!(refused.header(header::ETAG), etag, "{method}");
    }
    let unchanged = node.send(Method::GET, "/v1/keys/k", &[], "").await;
    assert_eq!(unchanged.body, "one");
    assert_eq!(unchanged.header(header::ETAG), etag);
    // The strong tag itself still swaps.
    let swapped = node
        .send(
            Method::PUT,
            "/v1/keys/k",
            &[(header::IF_MATCH, &etag)],
            "four",
        )
        .await;
    assert_eq!(swapped.status, StatusCode::NO_CONTENT);
    // Malformed tags, weak or not, are still refused.
    for bad in ["W/1", "W/\"x\"", "w/\"1\"", "W/"] {
        node.send(
            Method::GET,
            "/v1/keys/k",
            &[(header::IF_NONE_MATCH, bad)],
            "",
        )
        .await
        .error(StatusCode::BAD_REQUEST, "bad_precondition");
    }
}

#[tokio::test]
async fn every_405_lists_the_methods_its_route_accepts() {
    let node = Node::new();
    for (method, uri, allow) in [
        (Method::PATCH, "/v1/keys/k", "GET,HEAD,PUT,DELETE"),
        (Method::POST, "/v1/keys/k", "GET,HEAD,PUT,DELETE"),
        (Method::POST, "/v1/keys/", "GET,HEAD,PUT,DELETE"),
        (Method::PATCH, "/v1/keys", "GET,HEAD,PUT,DELETE"),
        (Method::GET, "/v1/batch/get", "POST"),
        (Method::PUT, "/v1/batch/put", "POST"),
        (Method::DELETE, "/healthz", "GET,HEAD"),
        (Method::POST, "/readyz", "GET,HEAD"),
        (Method::PUT, "/metrics", "GET,HEAD"),
        (Method::DELETE, "/openapi.json", "GET,HEAD"),
    ] {
        let reply = node.send(method.clone(), uri, &[], "").await;
        let message = reply.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        let listed: String = reply
            .header(header::ALLOW)
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(listed, allow, "{method} {uri}");
        assert!(message.contains(method.as_str()), "{message}");
    }
}

#[tokio::test]
async fn every_route_refuses_query_parameters_it_does_not_accept() {
    let node = Node::new();
    for (method, uri, name, accepted) in [
        (Method::PUT, "/v1/keys/k?TTL=5", "TTL", "takes only ttl"),
        (
            Method::PUT,
            "/v1/keys/k?ttl=5&color=red",
            "color",
            "takes only ttl",
        ),
        (
            Method::PUT,
            "/v1/keys/k?expires=5",
            "expires",
            "takes only ttl",
        ),
        (Method::GET, "/v1/keys/k?ttl=5", "ttl", "takes no query"),
        (Method::HEAD, "/v1/keys/k?x", "x", "takes no query"),
        (
            Method::DELETE,
            "/v1/keys/k?force=1",
            "force",
            "takes no query",
        ),
        (Method::POST, "/v1/batch/put?ttl=5", "ttl", "takes no query"),
        (
            Method::POST,
            "/v1/batch/get?limit=1",
            "limit",
            "takes no query",
        ),
    ] {
        let body = if uri.starts_with("/v1/batch/put") {
            r#"{"entries":[{"key":"k","value":"AA=="}]}"#
        } else if uri.starts_with("/v1/batch/get") {
            r#"{"keys":["k"]}"#
        } else {
            "v"
        };
        let reply = node.send(method.clone(), uri, &[], body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {uri}");
        if method != Method::HEAD {
            let message = reply.error(StatusCode::BAD_REQUEST, "unknown_parameter");
            assert!(
                message.contains(&format!("\"{name}\"")) && message.contains(accepted),
                "{method} {uri}: {message}"
            );
        }
    }
    let repeated = node
        .send(Method::PUT, "/v1/keys/k?ttl=5&ttl=6", &[], "v")
        .await;
    let message = repeated.error(StatusCode::BAD_REQUEST, "repeated_parameter");
    assert!(message.contains("\"ttl\""), "{message}");
    let reply = node.send(Method::GET, "/v1/keys/k", &[], "").await;
    reply.error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        node.state.cache.store().stats().entries,
        0,
        "nothing stored"
    );

    // What is accepted still works, percent-encoded or not, and an empty query is no parameter.
    for uri in [
        "/v1/keys/k?ttl=90s",
        "/v1/keys/k?t%74l=9%30s",
        "/v1/keys/k?",
    ] {
        let reply = node.send(Method::PUT, uri, &[], "v").await;
        assert!(reply.status.is_success(), "{uri}: {reply:?}");
    }
    let reply = node.send(Method::GET, "/v1/keys/k?", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_documents_the_401_of_every_guarded_route() {
    let node = Node::new();
    let document = node
        .send(Method::GET, "/openapi.json", &[], "")
        .await
        .json();
    let paths = document["paths"].as_object().expect("paths");
    let error_ref = json!({ "$ref": "#/components/schemas/Error" });
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            if method == "parameters" {
                continue;
            }
            let unauthorized = &operation["responses"]["401"];
            if path.starts_with("/v1/") {
                // A HEAD answer has no body to describe.
                if method != "head" {
                    assert_eq!(
                        unauthorized["content"]["application/json"]["schema"], error_ref,
                        "{method} {path}: {unauthorized}"
                    );
                }
                assert!(
                    unauthorized["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("Bearer")),
                    "{method} {path}"
                );
            } else {
                assert!(unauthorized.is_null(), "{method} {path} is never guarded");
            }
        }
    }
}
