//! One client connection: its session state and its loop. Each read is parsed into every
//! complete request it holds, the requests are executed in order, and their replies leave
//! in one write: a pipeline of N commands costs one read and one write, not N of each.
//! Consecutive plain `SET key value` requests of a read run as one batch of the write path,
//! so that they share a group commit instead of each waiting for its own.
//!
//! # Bounds
//! A request must arrive within `--resp-request-timeout` of its first byte, and a client may
//! be idle at most `--resp-idle-timeout` (unset: forever, as Redis' `timeout 0`; subscribers
//! never time out, as in Redis). Replies are buffered up to [`FLUSH_AT`] (plus one reply,
//! itself bounded: `MGET` by `--max-response-bytes`) and then written; a write that makes no
//! progress for `--write-timeout` closes the client, as Redis' client-output-buffer-limit
//! does: a client that sends requests but never reads the replies holds no more than that.
//!
//! # Shutdown
//! The loop checks for shutdown only while waiting for a read, so requests already read are
//! executed and answered; then the connection closes. The server closes a connection that
//! is still busy when the drain timeout passes.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::RespState;
use super::clients::Client;
use super::cmd;
use super::frame::Parser;
use super::notify::Subscriptions;
use super::reply::{Protocol, Reply};
use super::wait::Acks;
use crate::base::events::KeyEvent;
use crate::base::version::Version;

/// Bytes a read may fill at least: one read takes a whole pipeline of small requests.
const READ_CHUNK: usize = 16 * 1024;

/// Output is written out mid-pipeline once it is this large, so that a pipeline of large
/// `GET`s does not buffer every value.
const FLUSH_AT: usize = 1 << 20;

/// What a connection remembers between requests.
#[derive(Debug)]
pub struct Session {
    /// The client as the registry lists it.
    pub client: Arc<Client>,
    /// Whether the client may run commands (always, without a token).
    pub authenticated: bool,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// The commands queued since `MULTI`, while a transaction is open.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// Whether a command was refused while queueing: `EXEC` then aborts.
    pub multi_failed: bool,
    /// `WATCH`ed keys and the version each had (`None`: absent) when watched.
    pub watched: Vec<(Bytes, Option<Version>)>,
    /// The acknowledgements of the writes made since the previous `WAIT`.
    pub acks: Acks,
    /// Keyspace notification channels and patterns subscribed to.
    pub subscriptions: Subscriptions,
    /// Set by `ASKING`: the next command (a transaction it opens, until `EXEC`) is served
    /// here even for a slot this node does not own, as the target of an `-ASK` redirect.
    pub asking: bool,
    /// Set by `QUIT`: close once the reply is written.
    pub quit: bool,
}

impl Session {
    /// A new connection's session; authenticated unless the cluster has a token.
    pub fn new(client: Arc<Client>, authenticated: bool) -> Session {
        Session {
            client,
            authenticated,
            protocol: Protocol::Resp2,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            acks: Acks::default(),
            subscriptions: Subscriptions::default(),
            asking: false,
            quit: false,
        }
    }
}

/// Serves one client until it disconnects, sends a bad frame, says `QUIT`, or `stop` is
/// cancelled.
pub async fn serve(
    state: Arc<RespState>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    // Small replies must leave at once, not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let fd = stream.as_raw_fd();
    let (reader, writer) = stream.split();
    serve_halves(state, reader, writer, (peer, local, fd), stop).await;
}

/// [`serve`] over TLS, once the handshake is done.
pub async fn serve_tls(
    state: Arc<RespState>,
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let tcp = stream.get_ref().0;
    let local = tcp.local_addr().unwrap_or(peer);
    let fd = tcp.as_raw_fd();
    let (reader, writer) = tokio::io::split(stream);
    serve_halves(state, reader, writer, (peer, local, fd), stop).await;
}

/// The connection's loop over its two halves; `(peer, local, fd)` describe the socket for
/// `CLIENT LIST`.
async fn serve_halves(
    state: Arc<RespState>,
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    (peer, local, fd): (SocketAddr, SocketAddr, RawFd),
    stop: CancellationToken,
) {
    let registration = state.clients.register(peer, local, fd);
    let mut session = Session::new(registration.client.clone(), state.settings.auth.is_none());
    let mut parser = Parser::new(state.limits);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut args = Vec::new();
    // Consecutive plain SETs of a pipeline, run as one batch (see `run_sets`).
    let mut set_run: Vec<Vec<Bytes>> = Vec::new();
    let bounds = &state.settings.bounds;
    let write_timeout = bounds.write_timeout;
    // Since when a request has been partly received, and since when the client is idle.
    let mut partial_since: Option<Instant> = None;
    let mut idle_since = Instant::now();
    loop {
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let deadline = match partial_since {
            Some(since) => Some((
                since + bounds.request_timeout,
                "the request did not complete in time",
            )),
            None if session.subscriptions.active() => None,
            None => bounds
                .idle_timeout
                .map(|timeout| (idle_since + timeout, "the client was idle too long")),
        };
        let read = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            why = expire(deadline) => {
                tracing::debug!(%peer, why, "closing a RESP connection");
                break;
            }
            event = session.subscriptions.next() => {
                if let Err(why) = notify(&state, &mut session, event, &mut output) {
                    tracing::warn!(%peer, why, "closing a RESP subscriber");
                    break;
                }
                if !send(&mut writer, &output, write_timeout).await {
                    break;
                }
                output.clear();
                continue;
            }
            read = reader.read_buf(&mut input) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let read_at = Instant::now();
        session.client.touch();
        let mut close = false;
        loop {
            let parsed = parser.next(&mut input, &mut args);
            if matches!(parsed, Ok(true)) && cmd::joins_set_run(&state, &session, &args) {
                set_run.push(std::mem::take(&mut args));
                continue;
            }
            if !set_run.is_empty() {
                run_sets(&state, &mut session, &mut set_run, &mut output).await;
            }
            match parsed {
                Ok(true) => {
                    let mut reply = Reply::new(&mut output, session.protocol);
                    cmd::execute(&state, &mut session, &args, &mut reply).await;
                    session.protocol = reply.protocol();
                    if session.quit {
                        close = true;
                        break;
                    }
                    if output.len() >= FLUSH_AT {
                        if !send(&mut writer, &output, write_timeout).await {
                            return;
                        }
                        output.clear();
                    }
                }
                Ok(false) => break,
                Err(error) => {
                    tracing::debug!(%peer, %error, "closing a RESP connection after a bad request");
                    Reply::new(&mut output, session.protocol).error(&error);
                    close = true;
                    break;
                }
            }
        }
        args.clear();
        if input.is_empty() {
            partial_since = None;
            idle_since = Instant::now();
        } else {
            partial_since.get_or_insert(read_at);
        }
        if !output.is_empty() {
            if !send(&mut writer, &output, write_timeout).await {
                break;
            }
            output.clear();
        }
        if close {
            break;
        }
    }
    let _ = writer.shutdown().await;
    drop(registration);
}

/// Completes at `deadline` with its reason; never without one.
async fn expire(deadline: Option<(Instant, &'static str)>) -> &'static str {
    match deadline {
        Some((at, why)) => {
            tokio::time::sleep_until(at).await;
            why
        }
        None => std::future::pending().await,
    }
}

/// Writes `output`; `false` if the client is gone, or read nothing for `timeout` (it is then
/// closed, as Redis closes a client over its output buffer limit).
async fn send(
    writer: &mut (impl AsyncWrite + Unpin),
    mut output: &[u8],
    timeout: Duration,
) -> bool {
    while !output.is_empty() {
        match tokio::time::timeout(timeout, writer.write(output)).await {
            Ok(Ok(0) | Err(_)) => return false,
            Ok(Ok(written)) => output = &output[written..],
            Err(_) => {
                tracing::debug!(
                    timeout_secs = timeout.as_secs_f64(),
                    "closing a RESP client that does not read its replies"
                );
                return false;
            }
        }
    }
    true
}

/// Runs the SETs gathered from a pipeline and empties `run`: one alone as any command, more
/// as one batch of the write path ([`cmd::execute_set_run`]).
async fn run_sets(
    state: &RespState,
    session: &mut Session,
    run: &mut Vec<Vec<Bytes>>,
    output: &mut BytesMut,
) {
    let mut reply = Reply::new(output, session.protocol);
    match run.as_slice() {
        [one] => cmd::execute(state, session, one, &mut reply).await,
        requests => cmd::execute_set_run(state, session, requests, &mut reply).await,
    }
    run.clear();
}

/// Writes the notifications for `first` and for the announcements already waiting behind
/// it (up to [`FLUSH_AT`] bytes), so that a sweep's burst costs few writes.
///
/// # Errors
/// Why the subscriber must be disconnected: it fell too far behind (as Redis disconnects a
/// subscriber over its output buffer limit), or the store stopped announcing.
fn notify(
    state: &RespState,
    session: &mut Session,
    first: Result<KeyEvent, RecvError>,
    output: &mut BytesMut,
) -> Result<(), &'static str> {
    let flags = state.notify.get();
    let mut reply = Reply::new(output, session.protocol);
    let mut next = Some(first);
    while let Some(event) = next {
        match event {
            Ok(event) => session.subscriptions.deliver(&event, flags, &mut reply),
            Err(RecvError::Lagged(_)) => {
                return Err("it fell too many keyspace notifications behind");
            }
            Err(RecvError::Closed) => return Err("the store stopped announcing removed keys"),
        }
        if reply.len() >= FLUSH_AT {
            break;
        }
        next = session.subscriptions.try_next();
    }
    Ok(())
}
