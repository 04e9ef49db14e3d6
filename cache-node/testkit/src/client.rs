//! One keep-alive HTTP/1.1 client for every test: the API, the internal routes and
//! `/metrics`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one exchange may take before it counts as unanswered: long enough for a loaded
/// machine, short enough that a hung node fails the test instead of stalling it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header as text ("" if absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pool of keep-alive connections to any number of nodes. Cloning shares the pool.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Client {
    /// Sends a request; `Err` if the node cannot be reached, drops the connection, or does not
    /// answer within 10 s.
    pub async fn send(
        &self,
        method: Method,
        address: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{address}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| format!("{address}{path}: {e}"))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{address}{path}: {e}"))?
                .to_bytes();
            Ok(Reply {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{address}{path} did not answer in {EXCHANGE_TIMEOUT:?}"))?
    }

    /// `PUT /v1/keys/{key}` (the key may carry a query, e.g. `k?ttl=1h`).
    pub async fn put(
        &self,
        address: &str,
        key: &str,
        value: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        self.send(
            Method::PUT,
            address,
            &format!("/v1/keys/{key}"),
            headers,
            value.to_string(),
        )
        .await
    }

    /// `GET /v1/keys/{key}`: the value, or `None` on 404; `Err` on any other answer.
    pub async fn get(&self, address: &str, key: &str) -> Result<Option<String>, String> {
        let reply = self
            .send(Method::GET, address, &format!("/v1/keys/{key}"), &[], "")
            .await?;
        match reply.status {
            StatusCode::OK => Ok(Some(reply.text())),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(format!("GET {key} on {address}: {other}")),
        }
    }

    /// `DELETE /v1/keys/{key}`.
    pub async fn delete(
        &self,
        address: &str,
        key: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        self.send(
            Method::DELETE,
            address,
            &format!("/v1/keys/{key}"),
            headers,
            "",
        )
        .await
    }

    /// Polls until `check` holds for the value of `key` on `address`, up to `limit`; returns
    /// the last value read, for the caller to assert on.
    pub async fn eventually(
        &self,
        address: &str,
        key: &str,
        limit: Duration,
        check: impl Fn(Option<&str>) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.get(address, key).await.ok().flatten();
            if check(value.as_deref()) || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of the `/metrics` sample `sample` (the full name with its labels, e.g.
    /// `tidecache_replication_queue_depth{peer="127.0.0.1:8081"}`).
    ///
    /// # Panics
    ///
    /// If the scrape fails or has no such sample, with the sample's name and the scrape: a
    /// renamed or unregistered metric must fail the test that relies on it, not read as 0.
    pub async fn metric(&self, address: &str, sample: &str) -> f64 {
        let reply = self
            .send(Method::GET, address, "/metrics", &[], "")
            .await
            .unwrap_or_else(|e| panic!("scraping {sample} from {address}: {e}"));
        let text = reply.text();
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "scraping {sample} from {address}:\n{text}"
        );
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics of {address}:\n{text}"))
    }
}
