//! The transport: one link per peer, each a bounded queue drained by one task that sends
//! batches of records over a persistent HTTP/1.1 connection (`POST /internal/v1/replicate`).
//!
//! # Guarantees
//! - Order: a link sends batches one at a time, in queue order, so a peer applies one node's
//!   writes in the order they were made (last-writer-wins makes order irrelevant for the
//!   result, but it keeps replication lag honest).
//! - Bounded memory: each queue holds at most `queue_capacity` records. A full queue pushes
//!   back on writers that wait for acknowledgements (they wait up to their deadline for room)
//!   and drops records for `ack=one` writers (counted in `replication_dropped`); anti-entropy
//!   repairs what was dropped.
//! - Retries: a failed batch is retried with exponential backoff up to `max_retries` times;
//!   then the link is marked down, its queue is dropped (waiters hear at once that the peer
//!   will not acknowledge) and it probes the peer until it answers again. Anti-entropy repairs
//!   the gap, so nothing is retried forever and a dead peer costs writers nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, mpsc, watch};

use super::ack::{AckError, AckLevel, AckWaiter, AckWatch};
use super::membership::{Peer, PeerList};
use super::metrics::ReplicationMetrics;
use super::placement::Placement;
use super::wire::{self, REPLICATE_PATH, SEGMENT_CONTENT_TYPE};
use crate::base::auth::PeerCredential;
use crate::base::tasks::Tasks;

/// The HTTP client every link and anti-entropy share: pooled keep-alive connections, and the
/// peers' credential on every request when the cluster has one.
#[derive(Debug, Clone)]
pub struct HttpClient {
    /// The pooled client.
    inner: Client<HttpConnector, Full<Bytes>>,
    /// `Authorization: Bearer <token>` values to present, in order: the current peer token,
    /// then the previous one, tried only when a peer answers 401 to the current one (it has
    /// not restarted since the rotation). Empty where peers require nothing.
    authorizations: Vec<HeaderValue>,
}

/// A client with keep-alive connections and `TCP_NODELAY` (batches are small and latency
/// bound; Nagle's algorithm would add up to 40 ms to every acknowledgement).
pub fn http_client(credential: Option<&PeerCredential>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    HttpClient {
        inner: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(4)
            .build(connector),
        authorizations: credential.map_or_else(Vec::new, PeerCredential::header_values),
    }
}

/// How links behave.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// Records a peer's queue holds.
    pub queue_capacity: usize,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Most bytes in one batch (a single larger record is sent alone).
    pub max_batch_bytes: usize,
    /// How long one batch request may take before it counts as failed.
    pub request_timeout: Duration,
    /// Retries of a failed batch before the peer is marked down.
    pub max_retries: u32,
    /// The first retry's delay; doubled for each further retry.
    pub retry_backoff: Duration,
    /// How often a down peer is probed.
    pub probe_interval: Duration,
}

impl Default for TransportSettings {
    fn default() -> TransportSettings {
        TransportSettings {
            queue_capacity: 16_384,
            max_batch_records: 512,
            max_batch_bytes: 4 << 20,
            request_timeout: Duration::from_secs(2),
            max_retries: 3,
            retry_backoff: Duration::from_millis(50),
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// One record on its way to one peer.
#[derive(Debug)]
struct Outgoing {
    /// The encoded record (shared by every peer's queue).
    record: Bytes,
    /// When it was queued, for the lag histogram.
    queued_at: Instant,
    /// Who counts the peer's acknowledgement.
    waiter: Option<Arc<AckWaiter>>,
}

impl Outgoing {
    fn give_up(self) {
        if let Some(waiter) = self.waiter {
            waiter.fail();
        }
    }
}

/// The sending side of one peer's link.
#[derive(Debug, Clone)]
struct Link {
    /// The peer's queue.
    queue: mpsc::Sender<Outgoing>,
    /// Set while the peer does not answer: writes skip it instead of queueing.
    down: Arc<AtomicBool>,
}

/// The result of replicating one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicated {
    /// Replicas that acknowledged (this node included) when the level was reached.
    pub acked: usize,
    /// Replicas of the key (the cluster size under full placement).
    pub replicas: usize,
    /// The peers' acknowledgements as they go on arriving; `None` when the key has no other
    /// replica.
    pub watch: Option<AckWatch>,
}

/// A write queued for its peers, not yet acknowledged at its level.
#[derive(Debug)]
#[must_use = "a write is acknowledged only once its level is reached"]
pub struct Pending {
    /// The peers' acknowledgements; `None` when the key has no other replica. Level `one`
    /// does not wait for them, but `WAIT` may.
    waiter: Option<Arc<AckWaiter>>,
    /// The level asked for.
    level: AckLevel,
    /// Replicas of the key.
    replicas: usize,
    /// When waiting stops.
    deadline: tokio::time::Instant,
}

impl Pending {
    /// Waits until the level is reached, cannot be, or the deadline passes.
    ///
    /// # Errors
    /// [`AckError`] with the count reached when the level is not.
    pub async fn wait(self) -> Result<Replicated, AckError> {
        let acked = match &self.waiter {
            Some(waiter) if self.level != AckLevel::One => {
                let left = self
                    .deadline
                    .saturating_duration_since(tokio::time::Instant::now());
                waiter.wait(self.level, self.replicas, left).await?
            }
            _ => 1,
        };
        Ok(Replicated {
            // Keepers may acknowledge besides the replicas.
            acked: acked.min(self.replicas),
            replicas: self.replicas,
            watch: self.waiter.map(AckWatch::new),
        })
    }
}

/// Sends this node's writes to its peers.
#[derive(Debug)]
pub struct Transport {
    /// The links by peer; replaced as membership changes.
    links: Mutex<HashMap<Peer, Link>>,
    /// The members in order (this node marked local), as discovery publishes them.
    peers: watch::Receiver<PeerList>,
    /// Which peers hold which key; follows the membership.
    placement: Arc<Placement>,
    /// Queue and batch sizes, timeouts.
    settings: TransportSettings,
    /// Shared HTTP client.
    client: HttpClient,
    /// Counters and gauges.
    metrics: Arc<ReplicationMetrics>,
    /// Where the membership watcher and the links run.
    tasks: Tasks,
    /// Woken when a peer that was marked down answers again.
    recovered: Arc<Notify>,
}

impl Transport {
    /// A transport following the membership in `peers`. Spawns one task per peer (and a task
    /// that adds and removes them as membership changes), so it must be created inside a
    /// tokio runtime.
    pub fn start(
        peers: watch::Receiver<PeerList>,
        placement: Arc<Placement>,
        settings: TransportSettings,
        client: HttpClient,
        metrics: Arc<ReplicationMetrics>,
        tasks: Tasks,
    ) -> Arc<Transport> {
        let transport = Arc::new(Transport {
            links: Mutex::new(HashMap::new()),
            peers: peers.clone(),
            placement,
            settings,
            client,
            metrics,
            tasks: tasks.clone(),
            recovered: Arc::new(Notify::new()),
        });
        transport.sync_links(&peers.borrow());
        let weak = Arc::downgrade(&transport);
        let mut changes = peers;
        tasks.spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(transport) = weak.upgrade() else {
                    return;
                };
                let current = changes.borrow_and_update().clone();
                transport.sync_links(&current);
            }
        });
        transport
    }

    /// Starts and stops links after the set of former members changed.
    pub fn refresh_links(&self) {
        let members = self.peers.borrow().clone();
        self.sync_links(&members);
    }

    /// The other nodes known now (this node left out).
    pub fn peers(&self) -> PeerList {
        self.peers
            .borrow()
            .iter()
            .filter(|peer| !peer.is_local())
            .cloned()
            .collect()
    }

    /// Waits until a peer that was marked down answers again (at once if one did since the
    /// last call). Records for it were dropped meanwhile, so anti-entropy should not wait for
    /// its interval: until it runs, the peer serves reads of keys it missed as absent.
    pub async fn recovered(&self) {
        self.recovered.notified().await;
    }

    /// Wakes [`Transport::recovered`]: a peer that did not answer does again.
    pub fn note_recovered(&self) {
        self.recovered.notify_one();
    }

    /// Whether `peer`'s link is marked down (it stopped answering and has not answered a
    /// probe since); a peer without a link is not.
    pub fn is_down(&self, peer: &Peer) -> bool {
        lock(&self.links)
            .get(peer)
            .is_some_and(|link| link.down.load(Ordering::Acquire))
    }

    /// The peers whose links are up now (a peer that stopped answering is marked down until
    /// it answers a probe again).
    pub fn live_peers(&self) -> usize {
        lock(&self.links)
            .values()
            .filter(|link| !link.down.load(Ordering::Acquire))
            .count()
    }

    /// Queues `record` (encoded, for `key`) for the key's peers; the returned [`Pending`]
    /// waits until `level` is reached or `timeout` (counted from now) passes. Waits only for
    /// room in a full queue (backpressure) when `level` needs peers' acknowledgements.
    pub async fn send(
        &self,
        key: &[u8],
        record: Bytes,
        level: AckLevel,
        timeout: Duration,
    ) -> Pending {
        let peers = self.peers();
        let targets = self.placement.targets(key, &peers);
        let replicas = targets.count();
        // Keepers of a moving partition get the write too, and their acknowledgements count:
        // a keeper holds the partition until every new owner has pulled it, so a write it
        // holds reaches them (the new owners of a partition may not be up yet).
        let links: Vec<(Peer, Option<Link>)> = {
            let links = lock(&self.links);
            targets
                .replicas
                .iter()
                .chain(&targets.keepers)
                .map(|peer| (peer.clone(), links.get(peer).cloned()))
                .collect()
        };
        let waiter = (!links.is_empty()).then(|| Arc::new(AckWaiter::new(links.len())));
        let backpressure = level != AckLevel::One;
        let deadline = tokio::time::Instant::now() + timeout;
        for (peer, link) in links {
            let outgoing = Outgoing {
                record: record.clone(),
                queued_at: Instant::now(),
                waiter: waiter.clone(),
            };
            let Some(link) = link.filter(|l| !l.down.load(Ordering::Acquire)) else {
                self.metrics.dropped(peer.address(), 1);
                outgoing.give_up();
                continue;
            };
            let sent = match link.queue.try_send(outgoing) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(outgoing)) if backpressure => {
                    // Backpressure: a writer that waits for acknowledgements waits for room.
                    match tokio::time::timeout_at(deadline, link.queue.reserve()).await {
                        Ok(Ok(permit)) => {
                            permit.send(outgoing);
                            Ok(())
                        }
                        _ => Err(outgoing),
                    }
                }
                Err(
                    mpsc::error::TrySendError::Full(outgoing)
                    | mpsc::error::TrySendError::Closed(outgoing),
                ) => Err(outgoing),
            };
            match sent {
                Ok(()) => self.metrics.queued(peer.address(), 1),
                Err(outgoing) => {
                    self.metrics.dropped(peer.address(), 1);
                    outgoing.give_up();
                }
            }
        }
        Pending {
            waiter,
            level,
            replicas,
            deadline,
        }
    }

    /// Follows a new membership: the placement first, then links started to new peers and
    /// stopped to peers that left (but not to former members that still keep partitions
    /// moving away from them).
    fn sync_links(&self, members: &[Peer]) {
        self.placement.update(members);
        let former = self.placement.moves().former();
        let peers: Vec<&Peer> = members
            .iter()
            .filter(|peer| !peer.is_local())
            .chain(&former)
            .collect();
        let mut links = lock(&self.links);
        links.retain(|peer, _| peers.contains(&peer));
        for peer in peers {
            if links.contains_key(peer) {
                continue;
            }
            let (queue, receiver) = mpsc::channel(self.settings.queue_capacity.max(1));
            self.metrics.link_started(peer.address());
            let down = Arc::new(AtomicBool::new(false));
            links.insert(
                peer.clone(),
                Link {
                    queue,
                    down: down.clone(),
                },
            );
            let sender = LinkTask {
                peer: peer.clone(),
                receiver,
                down,
                settings: self.settings.clone(),
                client: self.client.clone(),
                metrics: self.metrics.clone(),
                recovered: self.recovered.clone(),
            };
            self.tasks.spawn(sender.run());
        }
    }
}

/// The task that drains one peer's queue.
struct LinkTask {
    peer: Peer,
    receiver: mpsc::Receiver<Outgoing>,
    down: Arc<AtomicBool>,
    settings: TransportSettings,
    client: HttpClient,
    metrics: Arc<ReplicationMetrics>,
    recovered: Arc<Notify>,
}

impl LinkTask {
    /// Sends batches until the link is removed (its sender dropped) and drained.
    async fn run(mut self) {
        let address = self.peer.address().to_string();
        while let Some(first) = self.receiver.recv().await {
            let batch = self.collect(first);
            self.metrics.dequeued(&address, batch.len());
            let body = wire::batch(batch.iter().map(|o| &o.record));
            match self.send_with_retries(body).await {
                Delivery::Applied => {
                    for outgoing in batch {
                        self.metrics
                            .observe_lag(&address, outgoing.queued_at.elapsed());
                        if let Some(waiter) = outgoing.waiter {
                            waiter.ack();
                        }
                    }
                    continue;
                }
                Delivery::Refused(error) => {
                    // The peer is up but holds its records to other limits (or this node's
                    // clock is ahead of its): the writes are not acknowledged by it, and the
                    // link carries on with the next batch.
                    tracing::warn!(peer = %address, %error, "peer refused a batch");
                    self.metrics.dropped(&address, batch.len());
                    batch.into_iter().for_each(Outgoing::give_up);
                    continue;
                }
                Delivery::Unreachable => {}
            }
            tracing::warn!(peer = %address, "peer unreachable: marked down, anti-entropy will repair");
            self.metrics.dropped(&address, batch.len());
            batch.into_iter().for_each(Outgoing::give_up);
            self.down.store(true, Ordering::Release);
            self.wait_until_up().await;
            tracing::info!(peer = %address, "peer answers again");
            self.down.store(false, Ordering::Release);
            self.recovered.notify_one();
        }
    }

    /// `first` and whatever else is queued, up to the batch limits.
    fn collect(&mut self, first: Outgoing) -> Vec<Outgoing> {
        let mut bytes = first.record.len();
        let mut batch = vec![first];
        while batch.len() < self.settings.max_batch_records && bytes < self.settings.max_batch_bytes
        {
            match self.receiver.try_recv() {
                Ok(next) => {
                    bytes += next.record.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Posts `body`, retrying with backoff; whether the peer applied it.
    async fn send_with_retries(&self, body: Bytes) -> Delivery {
        let mut backoff = self.settings.retry_backoff;
        for attempt in 0..=self.settings.max_retries {
            if attempt > 0 {
                self.metrics.retried(self.peer.address());
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            match post(
                &self.client,
                &self.peer,
                REPLICATE_PATH,
                body.clone(),
                self.settings.request_timeout,
            )
            .await
            {
                Ok(()) => return Delivery::Applied,
                Err(
                    error @ PeerError::Status {
                        status: http::StatusCode::UNPROCESSABLE_ENTITY,
                        ..
                    },
                ) => return Delivery::Refused(error),
                Err(error) => {
                    tracing::debug!(peer = %self.peer, attempt, %error, "replication batch failed");
                }
            }
        }
        Delivery::Unreachable
    }

    /// Drops everything queued while the peer is down and probes it until it answers.
    async fn wait_until_up(&mut self) {
        let address = self.peer.address().to_string();
        loop {
            let mut dropped = 0;
            while let Ok(outgoing) = self.receiver.try_recv() {
                dropped += 1;
                outgoing.give_up();
            }
            if dropped > 0 {
                self.metrics.dequeued(&address, dropped);
                self.metrics.dropped(&address, dropped);
            }
            let probe = wire::batch(std::iter::empty());
            if post(
                &self.client,
                &self.peer,
                REPLICATE_PATH,
                probe,
                self.settings.request_timeout,
            )
            .await
            .is_ok()
            {
                return;
            }
            if self.receiver.is_closed() && self.receiver.is_empty() {
                return;
            }
            tokio::time::sleep(self.settings.probe_interval).await;
        }
    }
}

/// What became of a batch sent to a peer.
enum Delivery {
    /// The peer applied it (or its records lost to newer versions there).
    Applied,
    /// The peer refused its records (422, see `admit`): sending it again cannot succeed.
    Refused(PeerError),
    /// The peer did not answer, or failed, on every retry.
    Unreachable,
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The URI could not be built from the peer's address.
    #[error("bad peer address {peer}: {source}")]
    Address {
        /// The peer.
        peer: String,
        /// Why.
        source: http::Error,
    },
    /// Connecting, sending or receiving failed.
    #[error("request to {peer} failed: {source}")]
    Request {
        /// The peer.
        peer: String,
        /// Why.
        source: hyper_util::client::legacy::Error,
    },
    /// Reading the response body failed.
    #[error("reading the response of {peer} failed: {source}")]
    Body {
        /// The peer.
        peer: String,
        /// Why.
        source: hyper::Error,
    },
    /// There was no peer to ask.
    #[error("no peer to ask")]
    NoPeer,
    /// No answer in time.
    #[error("{peer} did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The peer.
        peer: String,
        /// The limit.
        timeout: Duration,
    },
    /// An answer other than success.
    #[error("{peer} answered {status}: {body}")]
    Status {
        /// The peer.
        peer: String,
        /// The status.
        status: http::StatusCode,
        /// The start of the body (its error message).
        body: String,
    },
}

impl PeerError {
    /// Whether the peer cannot have served the request: it was never connected to, or it
    /// answered that it is still loading.
    pub fn not_served(&self) -> bool {
        match self {
            PeerError::Address { .. } | PeerError::NoPeer => true,
            PeerError::Request { source, .. } => source.is_connect(),
            PeerError::Status { status, .. } => *status == http::StatusCode::SERVICE_UNAVAILABLE,
            PeerError::Body { .. } | PeerError::Timeout { .. } => false,
        }
    }
}

/// `POST`s a segment to `path` on `peer`; `Ok` on a 2xx answer.
pub async fn post(
    client: &HttpClient,
    peer: &Peer,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(), PeerError> {
    post_returning(client, peer, path, SEGMENT_CONTENT_TYPE, body, timeout)
        .await
        .map(drop)
}

/// `POST`s `body` of `content_type` to `path` on `peer`; the body of a 2xx answer.
pub async fn post_returning(
    client: &HttpClient,
    peer: &Peer,
    path: &str,
    content_type: &'static str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, PeerError> {
    let request = http::Request::post(format!("http://{}{path}", peer.address()))
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .map_err(|source| PeerError::Address {
            peer: peer.to_string(),
            source,
        })?;
    send(client, peer, request, timeout).await
}

/// `GET`s `path` from `peer`; the body of a 2xx answer.
pub async fn get(
    client: &HttpClient,
    peer: &Peer,
    path: &str,
    timeout: Duration,
) -> Result<Bytes, PeerError> {
    let request = http::Request::get(format!("http://{}{path}", peer.address()))
        .body(Full::new(Bytes::new()))
        .map_err(|source| PeerError::Address {
            peer: peer.to_string(),
            source,
        })?;
    send(client, peer, request, timeout).await
}

/// Sends `request` with the current peer token; after a 401, once more with each further
/// token of the credential (see [`HttpClient::authorizations`]).
async fn send(
    client: &HttpClient,
    peer: &Peer,
    request: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Bytes, PeerError> {
    let Some((last, earlier)) = client.authorizations.split_last() else {
        return send_once(client, peer, request, timeout).await;
    };
    for authorization in earlier {
        let mut attempt = copy_request(&request);
        attempt
            .headers_mut()
            .insert(http::header::AUTHORIZATION, authorization.clone());
        match send_once(client, peer, attempt, timeout).await {
            Err(PeerError::Status { status, .. }) if status == http::StatusCode::UNAUTHORIZED => {}
            outcome => return outcome,
        }
    }
    let mut request = request;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, last.clone());
    send_once(client, peer, request, timeout).await
}

/// A copy of a request whose body is already in memory (`http::Request` is not `Clone`).
fn copy_request(request: &http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

async fn send_once(
    client: &HttpClient,
    peer: &Peer,
    request: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Bytes, PeerError> {
    let exchange = async {
        let response =
            client
                .inner
                .request(request)
                .await
                .map_err(|source| PeerError::Request {
                    peer: peer.to_string(),
                    source,
                })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| PeerError::Body {
                peer: peer.to_string(),
                source,
            })?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            Err(PeerError::Status {
                peer: peer.to_string(),
                status,
                body: text,
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| PeerError::Timeout {
            peer: peer.to_string(),
            timeout,
        })?
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
