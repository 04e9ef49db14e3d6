//! The node: builds the [`Cache`] and the HTTP server from [`Settings`] and runs them until
//! shutdown. The binary's `main` only parses flags, sets up logging and calls
//! [`serve`]; tests call [`serve`] with their own listener and shutdown future.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::base::time::SystemClock;
use crate::cache::{Cache, CacheSettings, Peers};
use crate::config::{CapacitySource, PeerSource, ReplicationConfig, Settings};
use crate::http::{self, AppState};
use crate::replication::Discovery;
use crate::replication::endpoint_slices::EndpointSlicePeers;
use crate::replication::membership::{self, DnsPeers, StaticPeers};

/// How often `--peers-service` is resolved again.
const DNS_INTERVAL: Duration = Duration::from_secs(5);

/// Serves on `listener` with the wall clock until `shutdown` completes, then shuts down in
/// this order:
/// 1. stop accepting: `/readyz` turns 503 and the listener closes;
/// 2. drain: in-flight requests get up to the drain timeout to finish;
/// 3. stop replication: no record is sent to or applied from a peer any more;
/// 4. stop the sweeper, then sync and close the log.
///
/// With persistence, the data volume is loaded first (key requests answer 503 meanwhile).
///
/// # Errors
/// An I/O error of the listener; a data volume that cannot be loaded; a failed fsync (the
/// node stops at once so that it restarts and recovers from disk).
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listen = listener.local_addr()?;
    let peers = match &settings.replication {
        Some(config) => Some(peers(config, listen).await),
        None => None,
    };
    let cache = Arc::new(Cache::start(
        CacheSettings {
            store: settings.store.clone(),
            limits: settings.limits.clone(),
            persistence: settings.persistence.clone(),
            node_tag: settings.node_tag,
        },
        Arc::new(SystemClock),
        peers,
    ));
    let state = Arc::new(AppState::new(cache.clone()).with_auth(settings.auth.clone()));
    tracing::info!(
        listen = %listen,
        schedule = %cache.store().schedule(),
        capacity = %describe_capacity(&settings),
        eviction_policy = %settings.store.eviction_policy,
        "cache-node serving"
    );
    // The volume loads while HTTP already answers /healthz (a long load must not fail the
    // liveness probe); key requests and /readyz wait for it.
    let loading = cache.load();
    tokio::pin!(loading);
    let http = http::run(listener, state, shutdown, settings.drain_timeout);
    tokio::pin!(http);
    let mut loaded = false;
    let result = loop {
        tokio::select! {
            result = &mut http => break result,
            outcome = &mut loading, if !loaded => {
                loaded = true;
                if let Err(error) = outcome {
                    break Err(error);
                }
            }
            reason = cache.failed() => {
                tracing::error!(%reason, "persistence failed: exiting so that the node restarts and recovers from disk");
                break Err(io::Error::other(format!("persistence failed: {reason}")));
            }
        }
    };
    let closed = cache.close().await;
    tracing::info!(
        tasks_running_at_log_close = closed.tasks_running_at_log_close,
        log_closed = closed.log_closed,
        "cache-node stopped"
    );
    result
}

/// The peers of a replicated node: the static `--peers` list, or the headless Service's
/// EndpointSlices inside a cluster (its DNS name outside one).
async fn peers(config: &ReplicationConfig, listen: SocketAddr) -> Peers {
    let own = membership::own_addresses(listen).await;
    let discovery: Box<dyn Discovery> = match &config.peers {
        PeerSource::Static(list) => {
            Box::new(StaticPeers::resolved(list.iter().map(String::as_str), &own).await)
        }
        PeerSource::Service(service) => {
            match EndpointSlicePeers::in_cluster(service, listen.port(), &own).await {
                Some(watch) => Box::new(watch),
                None => Box::new(DnsPeers::new(service, listen.port(), own, DNS_INTERVAL)),
            }
        }
    };
    Peers {
        settings: config.settings.clone(),
        discovery,
    }
}

/// A future that completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives right after startup (a quick rollout, a test) is never lost and never
/// kills the process before it drains.
///
/// # Errors
/// The OS refused to install a signal handler.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

fn describe_capacity(settings: &Settings) -> String {
    let bytes = settings.store.capacity_bytes;
    match settings.capacity_source {
        CapacitySource::Flag => format!("{bytes} bytes (--max-memory)"),
        CapacitySource::Cgroup { limit } => {
            format!("{bytes} bytes (75% of the cgroup memory limit of {limit} bytes)")
        }
        CapacitySource::Unlimited => "unlimited (no --max-memory, no cgroup limit)".to_string(),
    }
}
