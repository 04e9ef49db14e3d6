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
//!   figures; `error`: every refusal with Redis' error line.
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
mod notify;
mod reply;
mod wait;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::base::auth::AuthToken;
use crate::base::tasks::Tasks;
use crate::cache::Cache;
use clients::Clients;
use frame::FrameLimits;
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
    let connections = Tasks::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    state.stats.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(connection::serve(state.clone(), stream, peer, stop.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "RESP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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

#[cfg(test)]
mod tests;
