//! The operator process: configuration, logging, the health and metrics server, leader
//! election, the controller, and graceful shutdown on SIGTERM.
//!
//! # Tasks and shutdown
//! Every task is spawned on one [`TaskTracker`] and stopped through a [`CancellationToken`];
//! `run` returns only once the tracker is empty, so no task outlives the orderly exit:
//! - the signal task cancels `shutdown` on SIGTERM or Ctrl-C, and ends when `shutdown` is
//!   cancelled for any reason;
//! - the health server serves `/metrics`, `/healthz` and `/readyz` until its own token is
//!   cancelled;
//! - the Lease task (see [`operator::leader`]) takes and renews the Lease until its candidacy
//!   is released;
//! - the controller reconciles until `shutdown` is cancelled.
//!
//! Shutdown begins when `shutdown` is cancelled: by a signal, by losing the Lease, or because
//! the controller or the election stopped on its own. Then, in this order:
//! 1. `/readyz` fails at once (the server keeps serving `/metrics` and `/healthz` meanwhile);
//! 2. the controller drains: its running reconciles get `DRAIN_TIMEOUT`, then it is aborted;
//! 3. the Lease is released, only now that no reconcile can run any more, so that a successor
//!    takes over at once;
//! 4. the health server and the admission webhook stop (the webhook answered until now, while
//!    readiness had already taken this replica out of its Service);
//! 5. the tracker is closed and waited for, which joins the signal task and every task above.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use operator::controller::{self, Context};
use operator::error_chain;
use operator::leader::Candidacy;
use operator::telemetry::{self, Health, Metrics};
use operator::webhook::serve::Serving;
use operator::webhook::{self, CertificateSource};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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

    /// Address of the CacheCluster admission webhook (HTTPS); no webhook when not given
    /// (e.g. a single replica run outside a cluster, where the API server cannot reach it).
    #[arg(long, env = "TIDECACHE_OPERATOR_WEBHOOK_LISTEN")]
    webhook_listen: Option<SocketAddr>,

    /// Who issues the webhook's serving certificate: the operator itself (a self-signed CA,
    /// renewed, its bundle written into the webhook configuration) or someone else writing the
    /// Secret (cert-manager).
    #[arg(
        long,
        env = "TIDECACHE_OPERATOR_WEBHOOK_CERTIFICATES",
        value_enum,
        default_value = "self-signed"
    )]
    webhook_certificates: CertificateSource,

    /// The Service the API server reaches the webhook through (in the operator's namespace).
    #[arg(long, default_value = "tidecache-operator-webhook")]
    webhook_service: String,

    /// The kubernetes.io/tls Secret of the webhook's certificate (in the operator's namespace).
    #[arg(long, default_value = "tidecache-operator-webhook-tls")]
    webhook_secret: String,

    /// The ValidatingWebhookConfiguration that registers the webhook.
    #[arg(long, default_value = "tidecache-operator")]
    webhook_configuration: String,

    /// The webhook's name within that configuration.
    #[arg(long, default_value = "cacheclusters.tidecache.io")]
    webhook_name: String,

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
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let metrics = Arc::new(Metrics::default());
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    tasks.spawn(signal_stop(shutdown.clone()));

    let namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    // The webhook outlives the drain: readiness fails first, so the Service stops sending
    // the API server here while reviews in flight and those already routed still get answers.
    let webhook_stop = CancellationToken::new();
    let webhook = match args.webhook_listen {
        Some(address) => Some(
            start_webhook(
                &args,
                address,
                &namespace,
                &client,
                &metrics,
                &tasks,
                &webhook_stop,
            )
            .await?,
        ),
        None => None,
    };
    let router = telemetry::router(Health {
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        webhook,
    });
    let server_stop = CancellationToken::new();
    let server = tasks.spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(server_stop.clone().cancelled_owned())
            .into_future(),
    );
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
    let outcome = if args.leader_election {
        let lease = Lease {
            namespace: &namespace,
            name: &args.lease_name,
            identity: &identity,
        };
        lead_and_run(client, context, lease, &tasks, &shutdown).await
    } else {
        let controller = tasks.spawn(controller::run(context, shutdown.clone().cancelled_owned()));
        run_until_shutdown(controller, &shutdown).await;
        Ok(ExitCode::SUCCESS)
    };
    // Steps 1 to 3 are done (or were never started); whatever ended the run ends the process.
    shutdown.cancel();
    webhook_stop.cancel();
    server_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "metrics server failed"),
        Err(e) => warn!(error = %e, "metrics server task failed"),
    }
    tasks.close();
    tasks.wait().await;
    info!("operator stopped");
    outcome
}

/// Binds the webhook's listener and starts its server and its certificate upkeep, both
/// stopped with `stop`, which `run` cancels only after the controller has drained and the
/// Lease is released (readiness has failed since the shutdown began).
async fn start_webhook(
    args: &Args,
    address: SocketAddr,
    namespace: &str,
    client: &Client,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Arc<Serving>, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for the webhook: {e}"))?;
    let serving = Arc::new(Serving::default());
    let settings = webhook::Settings {
        namespace: namespace.to_string(),
        service: args.webhook_service.clone(),
        secret: args.webhook_secret.clone(),
        configuration: args.webhook_configuration.clone(),
        webhook: args.webhook_name.clone(),
        certificates: args.webhook_certificates,
    };
    tasks.spawn(webhook::rotation::keep_current(
        client.clone(),
        settings,
        serving.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    tasks.spawn(webhook::serve::run(
        listener,
        serving.clone(),
        metrics.clone(),
        tasks.clone(),
        stop.clone(),
    ));
    Ok(serving)
}

/// The leader Lease this replica competes for.
struct Lease<'a> {
    /// The Lease's namespace.
    namespace: &'a str,
    /// The Lease's name.
    name: &'a str,
    /// This replica's identity in the Lease.
    identity: &'a str,
}

/// Waits for the Lease, runs the controller while holding it, and releases it on shutdown. A
/// replica that loses the Lease exits with a failure so that Kubernetes restarts it as a fresh
/// candidate (it cannot know what the new leader has done meanwhile).
async fn lead_and_run(
    client: Client,
    context: Arc<Context>,
    lease: Lease<'_>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<ExitCode, String> {
    let Lease {
        namespace,
        name,
        identity,
    } = lease;
    let mut candidacy = Candidacy::start(client, namespace, name, identity, tasks)
        .await
        .map_err(|e| error_chain(&e))?;
    info!(lease = name, namespace, identity, "waiting for leadership");
    tokio::select! {
        acquired = candidacy.acquired() => acquired.map_err(|e| error_chain(&e))?,
        () = shutdown.cancelled() => {
            candidacy.release().await.map_err(|e| error_chain(&e))?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    info!(identity, "leading; starting the controller");
    context.metrics.leader.set(1);
    let controller = tasks.spawn(controller::run(
        context.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    let lost = tokio::select! {
        () = candidacy.lost() => {
            error!(identity, "lost leadership; stopping");
            shutdown.cancel();
            true
        }
        () = shutdown.cancelled() => false,
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

/// Runs the controller until it stops on its own or `shutdown` is cancelled, then drains it.
async fn run_until_shutdown(mut controller: JoinHandle<()>, shutdown: &CancellationToken) {
    tokio::select! {
        _ = &mut controller => {}
        () = shutdown.cancelled() => drain(controller).await,
    }
}

/// Waits for the stopping controller to finish its running reconciles, at most
/// [`DRAIN_TIMEOUT`]; then it is aborted so that the Lease is released within the pod's
/// termination grace period (kube's graceful shutdown can wait on a watch that keeps failing).
async fn drain(mut controller: JoinHandle<()>) {
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut controller).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "controller task failed"),
        Err(_) => {
            warn!(timeout = ?DRAIN_TIMEOUT, "controller did not stop in time; aborting it");
            controller.abort();
            // An aborted task ends at its next await; wait for it, so step 3 follows step 2.
            let _ = controller.await;
        }
    }
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C; ends without a signal once `shutdown` is cancelled
/// otherwise.
async fn signal_stop(shutdown: CancellationToken) {
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
        () = shutdown.cancelled() => return,
        () = terminate => info!("SIGTERM: shutting down"),
        result = tokio::signal::ctrl_c() => {
            if result.is_ok() {
                info!("interrupt: shutting down");
            }
        }
    }
    shutdown.cancel();
}
