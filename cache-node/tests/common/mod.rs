//! A local cluster of real `cache-node` processes for the replication tests: fixed loopback
//! ports chosen up front (every node is given the same `--peers` list), a shared data
//! directory standing in for the RWX volume, and a small HTTP client.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// One node: its address, its flags and its process while running.
pub struct Node {
    /// `127.0.0.1:port`.
    pub address: String,
    /// The name it persists under (`--node-id`).
    pub id: String,
    /// Flags beyond the common ones.
    extra: Vec<String>,
    /// The process, while running.
    child: Option<Child>,
    /// Where its stderr goes.
    log: PathBuf,
}

/// Several nodes that know each other.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The shared volume.
    pub data: tempfile::TempDir,
    /// Every node's address, the `--peers` value.
    peers: String,
}

/// Picks `count` free loopback ports. The sockets are closed before the nodes bind them, so
/// another process could take one in between; on a test machine that does not happen.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

impl Cluster {
    /// `size` nodes with `extra` flags each (e.g. `--ack=quorum`), started and ready. Anti-entropy
    /// runs every second unless `extra` says otherwise.
    pub fn start(size: usize, extra: &[&str]) -> Cluster {
        let data = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(size);
        let peers = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Node {
                address: format!("127.0.0.1:{port}"),
                id: format!("cache-{i}"),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
                log: data.path().join(format!("cache-{i}.log")),
            })
            .collect();
        let mut cluster = Cluster { nodes, data, peers };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_ready(i);
        }
        cluster
    }

    /// The node's address.
    pub fn address(&self, i: usize) -> &str {
        &self.nodes[i].address
    }

    /// Starts node `i` (not waiting for it to be ready).
    pub fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cache-node"))
            .arg(format!("--listen={}", node.address))
            .arg(format!("--peers={}", self.peers))
            .arg(format!("--node-id={}", node.id))
            .arg(format!("--data-dir={}", self.data.path().display()))
            .arg("--drain-timeout=1s")
            .args(&node.extra)
            .args(
                (!node
                    .extra
                    .iter()
                    .any(|a| a.starts_with("--anti-entropy-interval")))
                .then_some("--anti-entropy-interval=1s"),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cache-node starts");
        self.nodes[i].child = Some(child);
    }

    /// Waits until node `i` answers `/readyz` with 200 (it has loaded the volume and caught
    /// up from its peers).
    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {i} exited with {status} before it was ready:\n{}",
                    self.log(i)
                );
            }
            if blocking_status(&self.nodes[i].address, "/readyz") == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} not ready in 60 s:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops node `i` with `signal` (`KILL` for a crash, `TERM` for a clean stop) and waits
    /// for it to exit.
    pub fn stop(&mut self, i: usize, signal: &str) {
        if let Some(mut child) = self.nodes[i].child.take() {
            send_signal(&child, signal);
            let _ = child.wait();
        }
    }

    /// Pauses (`STOP`) or resumes (`CONT`) node `i`: a partition in which the node's sockets
    /// stay open but nothing answers.
    pub fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.nodes[i].child {
            send_signal(child, signal);
        }
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// The shared data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // A paused node must be resumed to die of SIGKILL promptly on every kernel.
            self.signal(i, "CONT");
            self.stop(i, "KILL");
        }
    }
}

fn send_signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
}

/// The status of a `GET` of `path`, or `None` if nothing answers (blocking, for start-up).
fn blocking_status(address: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

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
}

/// A keep-alive HTTP client.
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
    /// Sends a request; `Err` if the node does not answer within 10 s.
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
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Reply {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("{address} did not answer in 10 s"))?
    }

    /// `PUT /v1/keys/{key}` with `headers`.
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

    /// `GET /v1/keys/{key}`: the value, or `None` on 404.
    pub async fn get(&self, address: &str, key: &str) -> Result<Option<String>, String> {
        let reply = self
            .send(Method::GET, address, &format!("/v1/keys/{key}"), &[], "")
            .await?;
        match reply.status {
            StatusCode::OK => Ok(Some(String::from_utf8_lossy(&reply.body).into_owned())),
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

    /// Polls until `check` holds for the value of `key` on `address`, up to `limit`.
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
}
