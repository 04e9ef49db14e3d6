//! The node: builds the store, metrics, sweeper and HTTP server from [`Settings`] and runs
//! them until shutdown. The binary's `main` only parses flags, sets up logging and calls
//! [`serve`]; tests call [`serve`] with their own listener and shutdown future.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::{CapacitySource, Settings};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sweeper;

/// Serves on `listener` with the wall clock until `shutdown` completes, then drains
/// requests (up to the drain timeout) and stops the sweeper.
///
/// # Errors
/// An I/O error of the listener.
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
    let sweeper = tokio::spawn(sweeper::run(store, metrics, async move {
        let _ = sweeper_stopped.await;
    }));
    let result = http::run(listener, state, shutdown, settings.drain_timeout).await;
    let _ = stop_sweeper.send(());
    if let Err(error) = sweeper.await {
        tracing::error!(%error, "the sweeper task failed");
    }
    tracing::info!("cache-node stopped");
    result
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
