//! The operator process: configuration, logging, the health and metrics server, leader
//! election, the controller, and graceful shutdown on SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use kube::Client;
use operator::controller::{self, Context};
use operator::error_chain;
use operator::leader::Candidacy;
use operator::telemetry::{self, Health, Metrics};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long running reconciles may take to finish after SIGTERM; below the Deployment's
/// 30 s termination grace period, so that the Lease is released before the kubelet kills us.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the tidecache operator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long,
        env = "TIDECACHE_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    listen: SocketAddr,

    /// Whether to elect a leader among replicas (disable only when running a single replica
    /// outside a cluster).
    #[arg(long, env = "TIDECACHE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "TIDECACHE_OPERATOR_LEASE_NAME",
        default_value = "tidecache-operator"
    )]
    lease_name: String,

    /// Namespace of the leader Lease; the operator's own namespace in a cluster.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease and in Events; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Log format: json or text.
    #[arg(long, env = "TIDECACHE_OPERATOR_LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(code) => code,
        Err(message) => {
            error!(error = %message, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let client = Client::try_default().await.map_err(|e| {
        format!(
            "no Kubernetes configuration (kubeconfig or in-cluster): {}",
            error_chain(&e)
        )
    })?;
    let metrics = Arc::new(Metrics::default());
    let serving = Arc::new(AtomicBool::new(true));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(signal_stop(stop));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let router = telemetry::router(Health {
        metrics: metrics.clone(),
        serving: serving.clone(),
    });
    let server_stop = wait_stop(stopped.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(server_stop)
            .await
    });
    info!(listen = %args.listen, "serving /metrics, /healthz and /readyz");

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("tidecache-operator-{}", std::process::id()));
    let context = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Some(identity.clone()),
    ));
    let code = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        lead_and_run(
            client,
            context,
            &namespace,
            &args.lease_name,
            &identity,
            stopped,
        )
        .await?
    } else {
        let mut controller = tokio::spawn(controller::run(context, wait_stop(stopped.clone())));
        tokio::select! {
            _ = &mut controller => {}
            () = wait_stop(stopped) => drain(controller).await,
        }
        ExitCode::SUCCESS
    };
    serving.store(false, Ordering::Relaxed);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "metrics server failed"),
        Err(e) => warn!(error = %e, "metrics server task failed"),
    }
    info!("operator stopped");
    Ok(code)
}

/// Waits for the Lease, runs the controller while holding it, and releases it on shutdown. A
/// replica that loses the Lease exits with a failure so that Kubernetes restarts it as a fresh
/// candidate (it cannot know what the new leader has done meanwhile).
async fn lead_and_run(
    client: Client,
    context: Arc<Context>,
    namespace: &str,
    lease: &str,
    identity: &str,
    stopped: watch::Receiver<bool>,
) -> Result<ExitCode, String> {
    let mut candidacy = Candidacy::start(client, namespace, lease, identity)
        .await
        .map_err(|e| error_chain(&e))?;
    info!(lease, namespace, identity, "waiting for leadership");
    tokio::select! {
        acquired = candidacy.acquired() => acquired.map_err(|e| error_chain(&e))?,
        () = wait_stop(stopped.clone()) => {
            candidacy.release().await.map_err(|e| error_chain(&e))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    info!(identity, "leading; starting the controller");
    context.metrics.leader.set(1);
    let (lost_tx, lost_rx) = watch::channel(false);
    let controller_stop = {
        let stopped = stopped.clone();
        let lost = lost_rx.clone();
        async move {
            tokio::select! {
                () = wait_stop(stopped) => {}
                () = wait_stop(lost) => {}
            }
        }
    };
    let controller = tokio::spawn(controller::run(context.clone(), controller_stop));
    let lost = tokio::select! {
        () = candidacy.lost() => {
            error!(identity, "lost leadership; stopping");
            // The receiver lives in `controller_stop` until the controller has stopped.
            let _ = lost_tx.send(true);
            true
        }
        () = wait_stop(stopped) => false,
    };
    drain(controller).await;
    context.metrics.leader.set(0);
    candidacy.release().await.map_err(|e| error_chain(&e))?;
    Ok(if lost {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Waits for the stopping controller to finish its running reconciles, at most
/// [`DRAIN_TIMEOUT`]; then it is aborted so that the Lease is released within the pod's
/// termination grace period (kube's graceful shutdown can wait on a watch that keeps failing).
async fn drain(mut controller: tokio::task::JoinHandle<()>) {
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut controller).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "controller task failed"),
        Err(_) => {
            warn!(timeout = ?DRAIN_TIMEOUT, "controller did not stop in time; aborting it");
            controller.abort();
        }
    }
}

/// Sets `stop` on SIGTERM or Ctrl-C.
async fn signal_stop(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => info!("SIGTERM: shutting down"),
        result = tokio::signal::ctrl_c() => {
            if result.is_ok() {
                info!("interrupt: shutting down");
            }
        }
    }
    let _ = stop.send(true);
}

/// Completes once `flag` is set (or its sender is gone).
async fn wait_stop(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
