//! The HTTP server loop: one hyper HTTP/1.1 connection per accepted socket, under the bounds
//! `axum::serve` does not set (see `docs/limits.md`).
//!
//! - **Time.** A request's head must arrive within `--header-read-timeout`; hyper's timer
//!   runs from the moment the connection waits for a request, so the same bound closes a
//!   silent socket, a half-sent head (slowloris) and a keep-alive connection idle between
//!   requests. A body must arrive within `--body-read-timeout` of its head (408 otherwise),
//!   and a write that makes no progress for `--write-timeout` (a client that does not read its
//!   response) closes the connection.
//! - **Connections.** At most `--max-connections` are served. [`PROBE_RESERVE`] more are
//!   accepted beyond the cap and serve only the probes and `/metrics`, one request each with
//!   a short timeout; any other path gets 503 `server_busy` with `Connection: close`. When
//!   the reserve is full, the newest connection displaces the oldest one of it: a probe
//!   sends its request as soon as it connects, so clients that hold reserve connections idle
//!   cannot starve it, and a saturated listener never makes the kubelet restart the pod. A
//!   failed accept (`EMFILE`) is retried after a few milliseconds, never more, so it
//!   neither spins nor stalls the probes.
//! - **Memory.** A request body is charged to the node's in-flight budget
//!   ([`crate::cache::Budget`]) before it is read: its declared `Content-Length` (up to the
//!   largest body any route takes) at once, the bytes of a body without one as they arrive.
//!   Over the budget the request gets 503 with `Retry-After` before a byte of the body is
//!   buffered. HTTP/1.1 serves one request at a time per connection, so a connection's share
//!   is the body of its one request.
//!
//! The connection is served over any `AsyncRead + AsyncWrite` stream ([`serve_connection`]),
//! so that a TLS stream is served the same way as a TCP one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::error::ApiError;
use super::{AppState, app};
use crate::base::tasks::Tasks;
use crate::base::tls::ServerTls;
use crate::cache::{Budget, Charge};

/// Connections accepted beyond `--max-connections` that serve only `/healthz`, `/readyz`
/// and `/metrics`: enough for the kubelet's probes and a scraper, few enough to leave the
/// file table its reserve.
pub const PROBE_RESERVE: usize = 8;

/// How long a probe connection may take to send its one request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the loop waits after a failed accept: long enough not to spin on `EMFILE`, short
/// enough that a probe behind it is answered well within its timeout.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How often a repeated accept failure or refused connection is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The bounds of the HTTP server loop (`--max-connections`, `--header-read-timeout`,
/// `--body-read-timeout`, `--write-timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// Connections served at once, not counting [`PROBE_RESERVE`].
    pub max_connections: usize,
    /// How long a connection may wait for a complete request head.
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive, from its head.
    pub body_read_timeout: Duration,
    /// How long a write may make no progress before the connection is closed.
    pub write_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> ServeSettings {
        ServeSettings {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request body stopped: read back by `body::read_limited` into an [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyBound {
    /// The in-flight budget has no room for the rest of the body.
    #[error("the node's in-flight memory budget of {total} bytes is used up")]
    OverBudget {
        /// The budget's total.
        total: usize,
    },
    /// The body did not arrive within `--body-read-timeout`.
    #[error("the request body did not arrive within {}s", timeout.as_secs_f64())]
    TimedOut {
        /// The timeout.
        timeout: Duration,
    },
}

/// Serves `state` on `listener` until `shutdown` completes; then stops accepting, lets every
/// connection finish the request it is serving (idle ones close at once), and closes those
/// still busy after `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let settings = state.serve.clone();
    let router = app(state.clone());
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    // The reserve's connections, oldest first; each one's token is cancelled to displace it,
    // and by itself when it ends.
    let mut reserve: VecDeque<CancellationToken> = VecDeque::with_capacity(PROBE_RESERVE);
    let connections = Tasks::new();
    let stop = CancellationToken::new();
    let mut last_logged: Option<Instant> = None;
    let mut should_log = move || {
        let now = Instant::now();
        let due = last_logged.is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            last_logged = Some(now);
        }
        due
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if should_log() {
                        tracing::warn!(%error, "HTTP accept failed; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = Timed::new(stream, settings.write_timeout);
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            let service = Full {
                router: router.clone(),
                budget: state.cache.inflight().clone(),
                largest_body: largest_body(&state),
                body_timeout: settings.body_read_timeout,
            };
            let connection = serve_accepted(
                tls.clone(),
                &state,
                io,
                service,
                settings.header_read_timeout,
                true,
                stop.clone(),
            );
            connections.spawn(async move {
                connection.await;
                drop(slot);
            });
        } else {
            reserve.retain(|held| !held.is_cancelled());
            if reserve.len() >= PROBE_RESERVE {
                if let Some(oldest) = reserve.pop_front() {
                    oldest.cancel();
                }
                if should_log() {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        probe_reserve = PROBE_RESERVE,
                        "the HTTP connection cap and the probe reserve are full"
                    );
                }
            }
            let held = CancellationToken::new();
            reserve.push_back(held.clone());
            let service = ProbesOnly {
                router: router.clone(),
                max_connections: settings.max_connections,
            };
            let connection = serve_accepted(
                tls.clone(),
                &state,
                io,
                service,
                PROBE_TIMEOUT,
                false,
                stop.clone(),
            );
            connections.spawn(async move {
                let ended = held.clone().drop_guard();
                tokio::select! {
                    () = connection => {}
                    () = held.cancelled() => {}
                }
                drop(ended);
            });
        }
    }
    drop(listener);
    state.cache.start_draining();
    tracing::info!(
        drain_secs = drain.as_secs_f64(),
        "shutting down: draining requests"
    );
    stop.cancel();
    let cut = connections.drain(drain).await;
    if cut > 0 {
        tracing::warn!(
            connections = cut,
            "drain timeout passed; closed the remaining connections"
        );
    }
    Ok(())
}

/// The largest request body any route takes: a declared length above it is refused by the
/// route (413) without being read, so the budget is charged no more than this.
fn largest_body(state: &AppState) -> usize {
    let limits = state.cache.limits();
    limits.max_value_bytes.max(limits.max_batch_bytes)
}

/// Serves one accepted connection with [`serve_connection`]; over TLS when `tls` is given,
/// after a handshake bounded by its own timeout. The handshake runs in the connection's task,
/// under its slot, so a client slow to finish one delays nobody else and counts against
/// the cap like any connection.
fn serve_accepted<V>(
    tls: Option<Arc<ServerTls>>,
    state: &AppState,
    io: Timed<TcpStream>,
    service: V,
    header_timeout: Duration,
    keep_alive: bool,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static
where
    V: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    V::Future: Send + 'static,
{
    let cache = state.cache.clone();
    async move {
        let Some(tls) = tls else {
            return serve_connection(io, service, header_timeout, keep_alive, stop).await;
        };
        match tls.accept(io).await {
            Ok(io) => serve_connection(io, service, header_timeout, keep_alive, stop).await,
            Err(error) => {
                cache.metrics().observe_tls_handshake_failure("http");
                tracing::debug!(%error, "HTTPS handshake failed");
            }
        }
    }
}

/// Serves one connection over `io` (TCP, or TLS over it) with `service`: HTTP/1.1, with
/// `header_timeout` for each request head, keep-alive as `keep_alive` says. When `stop` is
/// cancelled the connection finishes the request it is serving and closes (at once if idle).
pub async fn serve_connection<S, V>(
    io: S,
    service: V,
    header_timeout: Duration,
    keep_alive: bool,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    V: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(keep_alive);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The whole API, each request body metered against the in-flight budget and its timeout.
#[derive(Clone)]
struct Full {
    router: Router,
    budget: Budget,
    largest_body: usize,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Full {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok())
            .map_or(0, |len| usize::try_from(len).unwrap_or(usize::MAX));
        // Held until the response is ready: the handler's copy of the body is covered too.
        let Some(upfront) = self.budget.try_charge(declared.min(self.largest_body)) else {
            let total = self.budget.total();
            return Box::pin(async move { Ok(ApiError::OverBudget { total }.into_response()) });
        };
        let (parts, incoming) = request.into_parts();
        let metered = Metered {
            inner: incoming,
            budget: self.budget.clone(),
            prepaid: upfront.bytes(),
            extra: None,
            deadline: tokio::time::Instant::now() + self.body_timeout,
            timer: None,
            timeout: self.body_timeout,
        };
        let mut router = self.router.clone();
        let request = Request::from_parts(parts, Body::new(metered));
        Box::pin(async move {
            let response = router.call(request).await;
            drop(upfront);
            response
        })
    }
}

/// The probes and `/metrics` only: a connection beyond the cap.
#[derive(Clone)]
struct ProbesOnly {
    router: Router,
    max_connections: usize,
}

impl hyper::service::Service<Request<Incoming>> for ProbesOnly {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut router = self.router.clone();
        let max = self.max_connections;
        Box::pin(async move {
            let mut response = match request.uri().path() {
                "/healthz" | "/readyz" | "/metrics" => router.call(request.map(Body::new)).await?,
                _ => ApiError::ServerBusy { max }.into_response(),
            };
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok(response)
        })
    }
}

/// A request body charged to the in-flight budget and bounded in time.
struct Metered {
    inner: Incoming,
    budget: Budget,
    /// Bytes the request's upfront charge covers (its declared length).
    prepaid: usize,
    /// The charge for bytes past `prepaid` (a body without `Content-Length`).
    extra: Option<Charge>,
    /// When the whole body must have arrived (`--body-read-timeout` after the head).
    deadline: tokio::time::Instant,
    /// The timer for `deadline`, armed only when a read has to wait: most requests (every
    /// GET, and bodies that arrived with their head) never register one.
    timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                ready!(timer.as_mut().poll(cx));
                let timeout = this.timeout;
                return Poll::Ready(Some(Err(Box::new(BodyBound::TimedOut { timeout }))));
            }
        };
        let Some(Ok(frame)) = frame else {
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        };
        if let Some(data) = frame.data_ref() {
            let mut len = data.len();
            let prepaid = len.min(this.prepaid);
            this.prepaid -= prepaid;
            len -= prepaid;
            if len > 0 {
                let grown = match &mut this.extra {
                    Some(charge) => charge.try_grow(len),
                    None => this
                        .budget
                        .try_charge(len)
                        .map(|charge| this.extra = Some(charge))
                        .is_some(),
                };
                if !grown {
                    let total = this.budget.total();
                    return Poll::Ready(Some(Err(Box::new(BodyBound::OverBudget { total }))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose writes fail once they have made no progress for a timeout: a client that
/// stops reading its responses cannot hold the connection (and the response) forever.
struct Timed<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Timed<S> {
    fn new(inner: S, timeout: Duration) -> Timed<S> {
        Timed {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// `poll` is the inner write's outcome: progress resets the clock, none past the
    /// timeout fails the write.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {}s", timeout.as_secs_f64()),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
