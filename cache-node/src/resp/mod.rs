//! The Redis protocol front end: RESP2 and RESP3 over TCP, on the same [`Cache`] as HTTP.
//!
//! # Layout
//! - this file: [`RespState`], what every connection shares, and [`run`], the accept loop
//!   and its drain.
//! - `connection`: one task per client: buffered reads, every complete request of a read
//!   executed in order (pipelining), the replies written once per read.
//! - `frame`: requests off the wire, with Redis' limits; `reply`: replies onto it.
//! - `cmd`: the command table and one file per group (`strings`, `keys`, `server`,
//!   `transaction`, `pubsub`); `glob`: `MATCH`/`KEYS` patterns; `notify`: keyspace
//!   notifications and a connection's subscriptions; `wait`: `WAIT` on replication
//!   acknowledgements; `clients`: `CLIENT LIST` and `INFO`
//!   figures; `error`: every refusal with Redis' error line; `nodes`: the RESP ports of the
//!   partitioned topology's nodes, for the Redis Cluster protocol (`cmd/cluster.rs`).
//!
//! Like HTTP's handlers, commands only translate: they parse arguments, call the [`Cache`]
//! (reads, [`Cache::put`], [`Cache::delete`], [`Cache::put_many`], and [`Cache::update`] for
//! read-modify-write) and render the outcome. There is no second write path.
//!
//! # Differences from Redis
//! Strings only (so `WRONGTYPE` never occurs), one database, no scripting; pub/sub carries
//! keyspace notifications of expired and evicted keys only (no `PUBLISH`); a
//! transaction's commands run in order after its `WATCH` check but other clients' commands
//! may interleave with them; `MSET` is not atomic across keys. `docs/resp.md` lists them.

mod clients;
mod cmd;
mod connection;
mod error;
mod frame;
mod glob;
mod nodes;
mod notify;
mod reply;
mod wait;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::base::auth::{AuthToken, PeerCredential};
use crate::base::node_info::RespPorts;
use crate::base::tasks::Tasks;
use crate::base::tls::ServerTls;
use crate::cache::Cache;
use clients::Clients;
pub use error::FrameError;
pub use frame::{FrameLimits, Parser};
use nodes::Directory;
use notify::Notify;
pub use notify::NotifyFlags;

/// How the RESP front end is set up, beyond the cache's own limits.
#[derive(Debug, Clone, Default)]
pub struct RespSettings {
    /// The cluster's token: `AUTH` must present it; `None` lets every client in.
    pub auth: Option<AuthToken>,
    /// Whether `FLUSHDB`/`FLUSHALL` may delete every key (`--resp-allow-flush`).
    pub allow_flush: bool,
    /// The keyspace notifications on at start (`--resp-notify-keyspace-events`).
    pub notify: NotifyFlags,
    /// Clients, timeouts.
    pub bounds: RespBounds,
    /// Whether key commands for slots this node does not own answer `-MOVED` and `CLUSTER`
    /// describes the topology (`--resp-cluster-mode`; partitioned mode only).
    pub cluster_mode: bool,
    /// The ports this node serves RESP on, which `CLUSTER SLOTS` and `-MOVED` name.
    pub ports: RespPorts,
    /// What this node presents to its peers when it asks them for their RESP ports.
    pub peer_credential: Option<PeerCredential>,
}

/// The RESP listener's bounds (`--resp-max-clients`, `--resp-request-timeout`,
/// `--resp-idle-timeout`, `--write-timeout`); `docs/limits.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespBounds {
    /// Clients served at once; the next one gets Redis' "max number of clients reached".
    pub max_clients: usize,
    /// How long a request may take from its first byte to its last.
    pub request_timeout: Duration,
    /// How long a client may send nothing, with no request pending; `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// How long a reply write may make no progress before the client is closed.
    pub write_timeout: Duration,
}

impl Default for RespBounds {
    fn default() -> RespBounds {
        RespBounds {
            max_clients: 10_000,
            request_timeout: Duration::from_secs(10),
            idle_timeout: None,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct RespState {
    /// The cache every command calls.
    cache: Arc<Cache>,
    /// Authentication and flush policy.
    settings: RespSettings,
    /// The request limits, derived from the cache's value and batch limits.
    limits: FrameLimits,
    /// The connected clients, for `CLIENT LIST` and `INFO clients`.
    clients: Clients,
    /// Counters for `INFO stats`.
    stats: Stats,
    /// When the front end started, for `INFO server`'s uptime.
    started: Instant,
    /// The listening address, for `INFO server` and `CONFIG GET port`.
    listen: SocketAddr,
    /// `notify-keyspace-events`, as set at start or by `CONFIG SET`.
    notify: Notify,
    /// One permit per client served: `--resp-max-clients`.
    slots: Arc<Semaphore>,
    /// The RESP ports of the other nodes (partitioned mode).
    directory: Directory,
}

/// Counters `INFO stats` reports.
#[derive(Debug, Default)]
struct Stats {
    /// Connections accepted.
    connections: AtomicU64,
    /// Commands executed (queued ones when `EXEC` runs them).
    commands: AtomicU64,
    /// Reads of a key that found it.
    hits: AtomicU64,
    /// Reads of a key that did not.
    misses: AtomicU64,
}

impl Stats {
    /// Counts one read of a key.
    fn read(&self, found: bool) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl RespState {
    /// State over `cache` for a listener on `listen`.
    pub fn new(cache: Arc<Cache>, settings: RespSettings, listen: SocketAddr) -> RespState {
        let limits = FrameLimits::for_values(
            cache.limits().max_value_bytes,
            cache.limits().max_batch_bytes,
        );
        let notify = Notify::default();
        notify.set(settings.notify, cache.store().events());
        RespState {
            slots: Arc::new(Semaphore::new(settings.bounds.max_clients)),
            directory: Directory::new(settings.ports, settings.peer_credential.as_ref()),
            cache,
            settings,
            limits,
            clients: Clients::default(),
            stats: Stats::default(),
            started: Instant::now(),
            listen,
            notify,
        }
    }
}

/// What a client beyond `--resp-max-clients` hears before it is closed: Redis' line.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// How long the loop waits after a failed accept (`EMFILE`): no spinning, no stall.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

impl RespState {
    /// A client slot for the socket just accepted, held while it is served; `None` (the
    /// client has heard Redis' "max number of clients reached" and is closed when the socket
    /// drops) when `--resp-max-clients` are connected.
    fn admit(&self, stream: &TcpStream) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            // Just accepted, the socket's send buffer has room: the write does not block.
            let _ = stream.try_write(MAX_CLIENTS_REACHED);
        }
        slot
    }
}

/// Serves RESP on `listener` until `shutdown` completes; then stops accepting, lets every
/// connection finish the requests it has read (idle ones close at once), and closes those
/// still busy after `drain`.
///
/// # Errors
/// None so far: a failed accept is logged and retried, so that one exhausted file table does
/// not stop the listener for good.
pub async fn run(
    listener: TcpListener,
    state: Arc<RespState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    serve(listener, None, state, shutdown, drain).await
}

/// [`run`] over TLS: each connection accepted on `listener` handshakes with `tls`'s current
/// certificate, then is served like a plain one.
///
/// # Errors
/// As [`run`].
pub async fn run_tls(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    state: Arc<RespState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    serve(listener, Some(tls), state, shutdown, drain).await
}

/// The accept loop of [`run`] and [`run_tls`], and its drain.
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    state: Arc<RespState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let connections = Tasks::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = state.admit(&stream) else {
                        continue;
                    };
                    state.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let serving =
                        serve_accepted(tls.clone(), state.clone(), stream, peer, stop.clone());
                    connections.spawn(async move {
                        serving.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "RESP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    stop.cancel();
    let cut = connections.drain(drain).await;
    if cut > 0 {
        tracing::warn!(
            connections = cut,
            "RESP drain timeout passed; closed the remaining connections"
        );
    }
    Ok(())
}

/// Serves one admitted client; over TLS when `tls` is given, after a handshake bounded by
/// its own timeout. The handshake runs in the client's task, under its slot, so a client slow
/// to finish one delays nobody else and counts against `--resp-max-clients`.
async fn serve_accepted(
    tls: Option<Arc<ServerTls>>,
    state: Arc<RespState>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let Some(tls) = tls else {
        return connection::serve(state, stream, peer, stop).await;
    };
    // Small replies must leave at once, and so must the handshake's flights.
    let _ = stream.set_nodelay(true);
    match tls.accept(stream).await {
        Ok(stream) => connection::serve_tls(state, stream, peer, stop).await,
        Err(error) => {
            state.cache.metrics().observe_tls_handshake_failure("resp");
            tracing::debug!(%peer, %error, "RESP TLS handshake failed");
        }
    }
}

#[cfg(test)]
mod tests;
