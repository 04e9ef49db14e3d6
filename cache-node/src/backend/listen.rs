//! Refresh from the database: a trigger on the table notifies a channel of every key other
//! applications insert, update or delete, and one connection per node listens to it.
//!
//! LISTEN/NOTIFY rather than logical replication: it needs no `wal_level = logical`, no
//! server restart and no replication privilege, and it keeps nothing on the server for a
//! node that went away (a logical replication slot of a deleted pod retains WAL until it is
//! dropped, and can fill the database's disk). The price is that notifications sent while a
//! node's listener is disconnected are lost, so every (re)connection is followed by
//! [`Changed::All`]: the cache checks every key it holds against the table.
//!
//! The cache's own writes are not notified (their sessions carry `tidecache.writer = on`,
//! which the trigger skips): the cache holds them already.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{Kind, Table};
use super::{Backend, BackendError, WRITER_SETTING};
use crate::base::tasks::Tasks;

/// Most keys handed to the cache in one [`Changed::Keys`].
const MAX_KEYS: usize = 1000;

/// Notifications waiting for the cache, at most (the server queues the rest).
const QUEUE: usize = 10_000;

/// A payload longer than this is sent as "everything" (NOTIFY payloads end at 8000 bytes).
const MAX_PAYLOAD: usize = 7000;

/// What changed in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These keys' rows changed (inserted, updated or deleted).
    Keys(Vec<Bytes>),
    /// Anything may have changed: the listener (re)connected, the table was truncated, or a
    /// key was too long to notify.
    All,
}

/// A TLS connector that verifies the database's certificate against the CAs in `ca_file`.
///
/// # Errors
/// [`BackendError::Unavailable`] naming the file when it holds no usable certificate.
pub fn tls_connector(ca_file: &Path) -> Result<MakeRustlsConnect, BackendError> {
    let refused = |problem: String| {
        BackendError::Unavailable(format!(
            "--backend-ca-file {}: {problem}",
            ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(ca_file).map_err(|error| refused(error.to_string()))?
    {
        let certificate = certificate.map_err(|error| refused(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| refused(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(refused("no certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| refused(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Starts the listener; its findings arrive on the returned channel.
pub(super) fn start(backend: Arc<Backend>, tasks: &Tasks) -> mpsc::Receiver<Changed> {
    let (changes, receiver) = mpsc::channel(64);
    tasks.spawn(run(backend, changes));
    receiver
}

async fn run(backend: Arc<Backend>, changes: mpsc::Sender<Changed>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let ended = session(&backend, &changes, &mut backoff).await;
        backend.metrics.listener_connected.set(0);
        if changes.is_closed() {
            return;
        }
        if let Err(error) = ended {
            tracing::warn!(%error, retry_in = ?backoff, "the backend listener is disconnected");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: installs the trigger, listens, then forwards notifications until the
/// connection ends.
async fn session(
    backend: &Backend,
    changes: &mpsc::Sender<Changed>,
    backoff: &mut Duration,
) -> Result<(), BackendError> {
    let table = backend.table().await?;
    let mut config = backend.settings.connection.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(backend.settings.timeout);
    }
    config.application_name("tidecache-listener");
    let (notifications, mut heard) = mpsc::channel::<String>(QUEUE);
    let (client, driver) = match &backend.settings.tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, tokio::spawn(drive(connection, notifications)))
        }
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, tokio::spawn(drive(connection, notifications)))
        }
    };
    let channel = channel_of(&table);
    install_trigger(&client, &table, &channel).await;
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    backend.metrics.listener_connected.set(1);
    *backoff = Duration::from_millis(100);
    tracing::info!(channel, "listening to the backend table's changes");
    // Whatever changed while no one listened is found by checking every cached key.
    if changes.send(Changed::All).await.is_err() {
        return Ok(());
    }
    while let Some(payload) = heard.recv().await {
        let mut payloads = vec![payload];
        while payloads.len() < MAX_KEYS {
            match heard.try_recv() {
                Ok(payload) => payloads.push(payload),
                Err(_) => break,
            }
        }
        backend.metrics.notifications.inc_by(payloads.len() as u64);
        let change = decode(&table, payloads);
        if changes.send(change).await.is_err() {
            return Ok(());
        }
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => Err(BackendError::Unavailable(
            "the connection was closed".into(),
        )),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => Err(BackendError::Unavailable(error.to_string())),
    }
}

/// Polls the connection, handing notification payloads on; ends with the connection.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notifications: mpsc::Sender<String>,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(notification) = message?
            && notifications
                .send(notification.payload().to_string())
                .await
                .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The channel of the table: one per table, so that two clusters on two tables of one
/// database do not hear each other.
fn channel_of(table: &Table) -> String {
    format!("tidecache_{:08x}", crc32c::crc32c(table.name().as_bytes()))
}

/// Payloads to keys: `k:<key>` (hex for a bytea key), or `*` for everything.
fn decode(table: &Table, payloads: Vec<String>) -> Changed {
    let mut keys = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let Some(key) = payload.strip_prefix("k:") else {
            return Changed::All;
        };
        let key = match table.key_kind() {
            Kind::Bytes => match hex(key) {
                Some(key) => Bytes::from(key),
                None => return Changed::All,
            },
            _ => Bytes::from(key.to_string()),
        };
        keys.push(key);
    }
    keys.sort();
    keys.dedup();
    Changed::Keys(keys)
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The trigger function and triggers that notify `channel` of the table's changes.
fn trigger_sql(table: &Table, channel: &str) -> String {
    let function = format!("{channel}_notify");
    let k = format!("\"{}\"", table.key_column().replace('"', "\"\""));
    let text = |row: &str| match table.key_kind() {
        Kind::Bytes => format!("encode({row}.{k}, 'hex')"),
        _ => format!("{row}.{k}::text"),
    };
    let (old, new) = (text("OLD"), text("NEW"));
    let name = table.name();
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $tidecache$
DECLARE payload text;
BEGIN
  IF current_setting('{WRITER_SETTING}', true) = 'on' THEN RETURN NULL; END IF;
  IF TG_OP = 'TRUNCATE' THEN PERFORM pg_notify('{channel}', '*'); RETURN NULL; END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    payload := 'k:' || {old};
    IF octet_length(payload) > {MAX_PAYLOAD} THEN payload := '*'; END IF;
    PERFORM pg_notify('{channel}', payload);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND {new} IS DISTINCT FROM {old}) THEN
    payload := 'k:' || {new};
    IF octet_length(payload) > {MAX_PAYLOAD} THEN payload := '*'; END IF;
    PERFORM pg_notify('{channel}', payload);
  END IF;
  RETURN NULL;
END
$tidecache$;
CREATE OR REPLACE TRIGGER tidecache_notify AFTER INSERT OR UPDATE OR DELETE ON {name}
  FOR EACH ROW EXECUTE FUNCTION {function}();
CREATE OR REPLACE TRIGGER tidecache_notify_truncate AFTER TRUNCATE ON {name}
  FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
    )
}

/// Installs the trigger (once per database at a time: an advisory lock keeps nodes starting
/// together from replacing it concurrently). Without the privilege (the table's owner may
/// be another role) it logs what to run and goes on: an administrator may have installed it.
async fn install_trigger(client: &tokio_postgres::Client, table: &Table, channel: &str) {
    let sql = trigger_sql(table, channel);
    let lock = i64::from(crc32c::crc32c(channel.as_bytes()));
    let installed = client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({lock}); {sql}; COMMIT;"
        ))
        .await;
    if let Err(error) = installed {
        let _ = client.batch_execute("ROLLBACK").await;
        tracing::warn!(
            error = %BackendError::from(error),
            "cannot install the trigger that notifies the cache of the table's changes; \
             changes by other applications are seen only when a node reconnects unless a \
             role owning the table runs the SQL in docs/backend.md"
        );
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn payloads_become_keys_and_anything_else_everything() {
        let text = Table::for_tests(Kind::Text);
        assert_eq!(
            decode(&text, vec!["k:b".into(), "k:a".into(), "k:b".into()]),
            Changed::Keys(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        );
        assert_eq!(decode(&text, vec!["k:a".into(), "*".into()]), Changed::All);
        let bytes = Table::for_tests(Kind::Bytes);
        assert_eq!(
            decode(&bytes, vec!["k:00ff".into()]),
            Changed::Keys(vec![Bytes::from_static(&[0, 0xff])])
        );
        assert_eq!(decode(&bytes, vec!["k:0".into()]), Changed::All);
    }
}
