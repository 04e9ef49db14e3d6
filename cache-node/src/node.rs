//! The node: builds the store, metrics, sweeper and HTTP server from [`Settings`] and runs
//! them until shutdown. The binary's `main` only parses flags, sets up logging and calls
//! [`serve`]; tests call [`serve`] with their own listener and shutdown future.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::{CapacitySource, PeerSource, Settings};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::persist::{self, Log, PersistSettings};
use crate::replication::endpoint_slices::EndpointSlicePeers;
use crate::replication::membership::{self, DnsPeers, StaticPeers};
use crate::replication::{Discovery, HybridClock, Replication};
use crate::store::Store;
use crate::sweeper;

/// How often `--peers-service` is resolved again.
const DNS_INTERVAL: Duration = Duration::from_secs(5);

/// Serves on `listener` with the wall clock until `shutdown` completes, then drains
/// requests (up to the drain timeout), stops the sweeper and syncs and closes the log. With
/// persistence, the data volume is loaded first (key requests answer 503 meanwhile).
///
/// # Errors
/// An I/O error of the listener; a data volume that cannot be loaded; a failed fsync (the
/// node stops at once so that it restarts and recovers from disk).
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Replicated versions carry the node's tag so that concurrent writes of two nodes are
    // ordered the same way everywhere.
    let node_tag = if settings.replication.is_some() {
        settings.node_tag
    } else {
        0
    };
    let versions = Arc::new(HybridClock::new(node_tag));
    let store = Arc::new(Store::with_versions(
        settings.store.clone(),
        clock.clone(),
        versions.clone(),
        settings.replication.is_some(),
    ));
    let metrics = Arc::new(Metrics::new(store.clone()));
    let listen = listener.local_addr()?;
    let replication = match settings.replication.clone() {
        Some(config) => {
            let discovery: Box<dyn Discovery> = match &config.peers {
                PeerSource::Static(list) => Box::new(
                    StaticPeers::resolved(
                        list.iter().map(String::as_str),
                        &membership::own_addresses(listen).await,
                    )
                    .await,
                ),
                PeerSource::Service(service) => {
                    let own = membership::own_addresses(listen).await;
                    match EndpointSlicePeers::in_cluster(service, listen.port(), &own).await {
                        Some(watch) => Box::new(watch),
                        None => Box::new(DnsPeers::new(service, listen.port(), own, DNS_INTERVAL)),
                    }
                }
            };
            Some(Replication::start(
                store.clone(),
                versions,
                clock,
                discovery,
                config.settings,
                metrics.replication().clone(),
            ))
        }
        None => None,
    };
    let mut app_state = AppState::new(store.clone(), settings.limits.clone(), metrics.clone())
        .with_auth(settings.auth.clone());
    if let Some(replication) = &replication {
        app_state = app_state.with_replication(replication.clone());
    }
    let state = Arc::new(app_state);
    tracing::info!(
        listen = %listener.local_addr()?,
        schedule = %store.schedule(),
        capacity = %describe_capacity(&settings),
        eviction_policy = %settings.store.eviction_policy,
        "cache-node serving"
    );
    let (stop_sweeper, sweeper_stopped) = tokio::sync::oneshot::channel::<()>();
    let sweeper = tokio::spawn(sweeper::run(store.clone(), metrics.clone(), async move {
        let _ = sweeper_stopped.await;
    }));
    let persistence = settings.persistence.clone();
    if persistence.is_some() || replication.is_some() {
        state.loaded.store(false, Ordering::Release);
    }
    // The volume loads while HTTP already answers /healthz (a long load must not fail the
    // liveness probe); key requests and /readyz wait for it.
    let (stop_anti_entropy, anti_entropy_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut starting = Box::pin(start(
        persistence,
        replication,
        store,
        metrics,
        state.clone(),
        async move {
            let _ = anti_entropy_stopped.await;
        },
    ));
    let http = http::run(listener, state, shutdown, settings.drain_timeout);
    tokio::pin!(http);
    let mut log: Option<Arc<Log>> = None;
    let mut started = false;
    let result = loop {
        let stopped = async {
            match &log {
                Some(log) => log.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut http => break result,
            outcome = &mut starting, if !started => {
                started = true;
                match outcome {
                    Ok(opened) => log = opened,
                    Err(error) => break Err(error),
                }
            }
            reason = stopped => {
                tracing::error!(%reason, "persistence failed: exiting so that the node restarts and recovers from disk");
                break Err(io::Error::other(format!("persistence failed: {reason}")));
            }
        }
    };
    let _ = stop_sweeper.send(());
    let _ = stop_anti_entropy.send(());
    if let Err(error) = sweeper.await {
        tracing::error!(%error, "the sweeper task failed");
    }
    if let Some(log) = log {
        match tokio::task::spawn_blocking(move || log.close()).await {
            Ok(()) => tracing::info!("the log is synced and closed"),
            Err(error) => tracing::error!(%error, "closing the log failed"),
        }
    }
    tracing::info!("cache-node stopped");
    result
}

/// Loads the data volume into `store`, then starts the log, attaches it as the store's
/// journal. `None` without persistence (nothing to wait for).
///
/// # Errors
/// An I/O error if the volume cannot be listed or the log cannot start: the node must not
/// serve without the data it is supposed to hold.
async fn start_persistence(
    settings: Option<PersistSettings>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) -> io::Result<Option<Arc<Log>>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    tracing::info!(
        root = %settings.root().path().display(),
        node = %settings.node,
        fsync = %settings.fsync,
        "persistence on"
    );
    let log = tokio::task::spawn_blocking(move || {
        let root = settings.root();
        persist::warm_start(&root, &store, metrics.persistence())
            .map_err(|error| io::Error::other(format!("warm start failed: {error}")))?;
        let log = Arc::new(Log::start(
            &settings,
            store.clone(),
            metrics.persistence().clone(),
        )?);
        store.attach_journal(log.clone());
        Ok::<_, io::Error>(log)
    })
    .await
    .map_err(io::Error::other)??;
    tracing::info!("the data volume is loaded");
    Ok(Some(log))
}

/// Loads the data volume (with persistence), then catches up from the peers (with
/// replication) and starts the periodic anti-entropy pass, and only then lets key requests in
/// and reports ready.
///
/// # Errors
/// As [`start_persistence`].
async fn start(
    persistence: Option<PersistSettings>,
    replication: Option<Arc<Replication>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    state: Arc<AppState>,
    stop_anti_entropy: impl Future<Output = ()> + Send + 'static,
) -> io::Result<Option<Arc<Log>>> {
    let log = start_persistence(persistence, store, metrics).await?;
    if let Some(replication) = replication {
        // Batches from peers are applied from now on: last-writer-wins makes their order
        // with the catch-up irrelevant, but the warm start's loads must come first.
        replication.accept_batches();
        let report = replication.catch_up().await;
        tracing::info!(
            peers = report.peers_ok,
            unreachable = report.peers_failed,
            buckets = report.buckets_fetched,
            repaired = report.repaired,
            "caught up from peers"
        );
        tokio::spawn(async move { replication.run_anti_entropy(stop_anti_entropy).await });
    }
    state.loaded.store(true, Ordering::Release);
    tracing::info!("ready");
    Ok(log)
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
