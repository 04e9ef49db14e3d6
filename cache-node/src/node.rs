//! The node: builds the [`Cache`] and the HTTP server from [`Settings`] and runs them until
//! shutdown. The binary's `main` only parses flags, sets up logging and calls
//! [`serve`]; tests call [`serve`] with their own listener and shutdown future.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::base::node_info::RespPorts;
use crate::base::tasks::Tasks;
use crate::base::time::SystemClock;
use crate::base::tls::ServerTls;
use crate::cache::{Cache, CacheSettings, Peers};
use crate::config::{CapacitySource, PeerSource, ReplicationConfig, Settings};
use crate::http::{self, AppState};
use crate::replication::Discovery;
use crate::replication::endpoint_slices::EndpointSlicePeers;
use crate::replication::membership::{self, DnsPeers, PeersFile, StaticPeers};
use crate::resp::{self, RespSettings, RespState};

/// How often `--peers-service` is resolved again.
const DNS_INTERVAL: Duration = Duration::from_secs(5);

/// How often `--peers-file` is read again: a small file, and a member that joins or leaves
/// is seen within half a second.
const PEERS_FILE_INTERVAL: Duration = Duration::from_millis(500);

/// Serves HTTP on `listener` (and RESP on `--resp-listen`, bound here) with the wall clock
/// until `shutdown` completes, then shuts down in this order:
/// 0. in partitioned mode, a node the membership dropped hands its partitions over;
/// 1. stop accepting: `/readyz` turns 503 and both listeners close;
/// 2. drain: in-flight requests and commands get up to the drain timeout to finish;
/// 3. stop replication: no record is sent to or applied from a peer any more;
/// 4. stop the sweeper, then sync and close the log.
///
/// With persistence, the data volume is loaded first (key requests answer 503 meanwhile).
///
/// # Errors
/// An I/O error of a listener (the RESP address cannot be bound); a data volume that cannot be loaded; a failed fsync (the
/// node stops at once so that it restarts and recovers from disk).
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listen = listener.local_addr()?;
    let resp_listener = bind(settings.resp_listen, "RESP").await?;
    // The certificate is read before anything serves, so that a bad one stops the node
    // with the file named instead of failing every handshake.
    let tls = match &settings.tls {
        Some(tls) => Some(Arc::new(ServerTls::load(tls.files.clone()).map_err(
            |error| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot serve TLS: {error}"),
                )
            },
        )?)),
        None => None,
    };
    let tls_listener = bind(settings.tls.as_ref().and_then(|tls| tls.listen), "HTTPS").await?;
    let resp_tls_listener = bind(
        settings.tls.as_ref().and_then(|tls| tls.resp_listen),
        "RESP over TLS",
    )
    .await?;
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
            backend: settings.backend.clone(),
        },
        Arc::new(SystemClock),
        peers,
    ));
    cache.watch_backend();
    let peer_auth = settings
        .replication
        .as_ref()
        .and_then(|replication| replication.settings.peer_credential.clone());
    // What peers name this node by in CLUSTER SLOTS and -MOVED.
    let resp_ports = RespPorts {
        resp_port: port_of(resp_listener.as_ref()),
        resp_tls_port: port_of(resp_tls_listener.as_ref()),
    };
    let state = Arc::new(
        AppState::new(cache.clone())
            .with_auth(settings.auth.clone())
            .with_peer_auth(peer_auth.clone())
            .with_resp_ports(resp_ports)
            .with_serve(settings.http_serve.clone()),
    );
    let resp_listen = resp_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let tls_listen = tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let resp_tls_listen = resp_tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    tracing::info!(
        listen = %listen,
        resp_listen = ?resp_listen,
        tls_listen = ?tls_listen,
        resp_tls_listen = ?resp_tls_listen,
        tls_client_certificates = tls.as_ref().map(|tls| tls.requires_client_certificates()),
        schedule = %cache.store().schedule(),
        capacity = %describe_capacity(&settings),
        eviction_policy = %settings.store.eviction_policy,
        max_connections = settings.http_serve.max_connections,
        resp_max_clients = settings.resp_bounds.max_clients,
        max_inflight_bytes = settings.limits.max_inflight_bytes,
        max_response_bytes = settings.limits.max_response_bytes,
        "cache-node serving"
    );
    // The volume loads while HTTP already answers /healthz (a long load must not fail the
    // liveness probe); key requests and /readyz wait for it.
    let loading = cache.load();
    tokio::pin!(loading);
    // One stop for both front ends: the shutdown signal, or either server ending.
    let stop = CancellationToken::new();
    let http = {
        let stop = stop.clone();
        let signalled = stop.clone();
        let handing_over = cache.clone();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {
                    // A departing node serves on until its partitions' new owners hold them.
                    handing_over.hand_over().await;
                }
                () = signalled.cancelled() => {}
            }
            // RESP stops accepting at the same moment as HTTP.
            signalled.cancel();
        };
        let run = http::run(listener, state.clone(), shutdown, settings.drain_timeout);
        async move {
            let result = run.await;
            stop.cancel();
            result
        }
    };
    let https = {
        let stop = stop.clone();
        let drain = settings.drain_timeout;
        let tls = tls.clone();
        async move {
            let (Some(listener), Some(tls)) = (tls_listener, tls) else {
                return Ok(());
            };
            let shutdown = stop.clone().cancelled_owned();
            let result = http::run_tls(listener, tls, state, shutdown, drain).await;
            stop.cancel();
            result
        }
    };
    let resp = {
        let stop = stop.clone();
        let drain = settings.drain_timeout;
        let settings = RespSettings {
            auth: settings.auth.clone(),
            allow_flush: settings.resp_allow_flush,
            notify: settings.resp_notify,
            bounds: settings.resp_bounds.clone(),
            cluster_mode: settings.resp_cluster_mode,
            ports: resp_ports,
            peer_credential: peer_auth,
        };
        let cache = cache.clone();
        let tls = tls.clone();
        async move {
            // One state for both RESP listeners: one client list, one CONFIG; INFO and
            // CONFIG GET port name the plain listener when there is one.
            let Some(address) = resp_listen.or(resp_tls_listen) else {
                return Ok(());
            };
            let state = Arc::new(RespState::new(cache, settings, address));
            let plain = async {
                let Some(listener) = resp_listener else {
                    return Ok(());
                };
                let shutdown = stop.clone().cancelled_owned();
                let result = resp::run(listener, state.clone(), shutdown, drain).await;
                stop.cancel();
                result
            };
            let secure = async {
                let (Some(listener), Some(tls)) = (resp_tls_listener, tls) else {
                    return Ok(());
                };
                let shutdown = stop.clone().cancelled_owned();
                let result = resp::run_tls(listener, tls, state.clone(), shutdown, drain).await;
                stop.cancel();
                result
            };
            let (plain, secure) = tokio::join!(plain, secure);
            plain.and(secure)
        }
    };
    // The certificate files are read again while the node serves.
    let reloads = Tasks::new();
    if let (Some(tls), Some(config)) = (&tls, &settings.tls) {
        let metrics = cache.clone();
        reloads.spawn(tls.clone().watch(config.reload_interval, move |outcome| {
            match outcome {
                Ok(_) => tracing::info!("TLS certificate reloaded: new connections use it"),
                Err(error) => tracing::error!(
                    %error,
                    "TLS certificate files changed but cannot be used; still serving the previous certificate"
                ),
            }
            metrics.metrics().observe_tls_reload(outcome.is_ok());
        }));
    }
    let servers = async move {
        let (http, https, resp) = tokio::join!(http, https, resp);
        http.and(https).and(resp)
    };
    tokio::pin!(servers);
    let mut loaded = false;
    let mut stopped = false;
    let result = loop {
        tokio::select! {
            result = &mut servers => {
                stopped = true;
                break result;
            }
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
    if !stopped {
        // A failure ended the loop: the front ends stop (and drain) before the cache closes.
        stop.cancel();
        if let Err(error) = servers.await {
            tracing::warn!(%error, "a front end failed while stopping");
        }
    }
    reloads.stop().await;
    let closed = cache.close().await;
    tracing::info!(
        tasks_running_at_log_close = closed.tasks_running_at_log_close,
        log_closed = closed.log_closed,
        "cache-node stopped"
    );
    result
}

/// A listener on `address`, if one is asked for; `what` names it in the error.
async fn bind(address: Option<SocketAddr>, what: &str) -> io::Result<Option<TcpListener>> {
    let Some(address) = address else {
        return Ok(None);
    };
    TcpListener::bind(address).await.map(Some).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot listen for {what} on {address}: {error}"),
        )
    })
}

/// The port `listener` is bound to, if there is one.
fn port_of(listener: Option<&TcpListener>) -> Option<u16> {
    Some(listener?.local_addr().ok()?.port())
}

/// The peers of a replicated node: the static `--peers` list, the `--peers-file`, or the
/// headless Service's EndpointSlices inside a cluster (its DNS name outside one).
async fn peers(config: &ReplicationConfig, listen: SocketAddr) -> Peers {
    let own = membership::own_addresses(listen).await;
    let discovery: Box<dyn Discovery> = match &config.peers {
        PeerSource::Static(list) => {
            Box::new(StaticPeers::resolved(list.iter().map(String::as_str), &own).await)
        }
        PeerSource::File(path) => {
            Box::new(PeersFile::new(path.clone(), own, PEERS_FILE_INTERVAL).await)
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
