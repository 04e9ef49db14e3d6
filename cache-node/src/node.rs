//! The node: builds the store, metrics, sweeper and HTTP server from [`Settings`] and runs
//! them until shutdown. The binary's `main` only parses flags, sets up logging and calls
//! [`serve`]; tests call [`serve`] with their own listener and shutdown future.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::{CapacitySource, Settings};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::persist::{self, Log, PersistSettings};
use crate::store::Store;
use crate::sweeper;

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
    let store = Arc::new(Store::new(settings.store.clone(), clock));
    let metrics = Arc::new(Metrics::new(store.clone()));
    let state = Arc::new(AppState::new(
        store.clone(),
        settings.limits.clone(),
        metrics.clone(),
    ));
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
    if persistence.is_some() {
        state.loaded.store(false, Ordering::Release);
    }
    // The volume loads while HTTP already answers /healthz (a long load must not fail the
    // liveness probe); key requests and /readyz wait for it.
    let mut starting = Box::pin(start_persistence(
        persistence,
        store,
        metrics,
        state.clone(),
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
/// journal and lets key requests in. `None` without persistence (nothing to wait for).
///
/// # Errors
/// An I/O error if the volume cannot be listed or the log cannot start: the node must not
/// serve without the data it is supposed to hold.
async fn start_persistence(
    settings: Option<PersistSettings>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    state: Arc<AppState>,
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
    state.loaded.store(true, Ordering::Release);
    tracing::info!("ready: the data volume is loaded");
    Ok(Some(log))
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
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
