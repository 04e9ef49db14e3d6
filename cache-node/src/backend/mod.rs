//! PostgreSQL behind the cache (docs/backend.md): the rows of one table are the cache's
//! source of truth, loaded on a miss (read-through), written before a write is acknowledged
//! (write-through) or after it, from a persisted queue (write-behind), and refreshed when
//! other applications change them (LISTEN/NOTIFY from a trigger on the table).
//!
//! This module only talks to the database and keeps the write-behind queue; the cache layer
//! decides when to call it, so that every read and write still has one path through
//! `cache/`.
//!
//! # Layout
//! - this file: [`Backend`] (the pool, the statements, single-flight loads), its settings
//!   and [`BackendError`];
//! - `sql`: the table's columns as found in the catalog, and the statements built for them;
//! - `flight`: single-flight per key, so that concurrent misses make one query;
//! - `outbox`: the write-behind queue on the node's disk and its flusher;
//! - `listen`: the listening connection and the trigger that notifies it;
//! - `metrics`: latency, errors, queue depth and lag.

mod flight;
mod listen;
mod metrics;
mod outbox;
mod sql;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use listen::{Changed, tls_connector};
pub use metrics::BackendMetrics;
pub use outbox::{Op, Outbox};

use crate::base::tasks::Tasks;
use crate::base::time::Timestamp;
use flight::Flights;
pub use flight::Settle;
use sql::Table;

/// How a write reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendMode {
    /// Reads load misses from the table; writes stay in the cache.
    ReadThrough,
    /// Writes are committed to the table before they are acknowledged.
    WriteThrough,
    /// Writes are acknowledged once in the node's persisted queue and flushed to the table
    /// after.
    WriteBehind,
}

impl std::fmt::Display for BackendMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendMode::ReadThrough => "read-through",
            BackendMode::WriteThrough => "write-through",
            BackendMode::WriteBehind => "write-behind",
        })
    }
}

/// The write-behind queue's place and bounds.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The directory of this node's queue files (its own, never shared with another node).
    pub dir: PathBuf,
    /// Most writes queued and not yet in the table; more are refused.
    pub max_entries: usize,
    /// Most bytes (keys and values) queued; more are refused.
    pub max_bytes: u64,
    /// Most writes one flush sends in one transaction.
    pub flush_batch: usize,
}

/// What the backend connects to and how.
#[derive(Clone)]
pub struct BackendSettings {
    /// The connection, parsed from a libpq URL or key=value string (holds the password,
    /// so it is never logged).
    pub connection: tokio_postgres::Config,
    /// TLS to the database ([`tls_connector`]); `None` connects without TLS.
    pub tls: Option<MakeRustlsConnect>,
    /// The table, as SQL names it (`items`, `shop.items`).
    pub table: String,
    /// The key column (`text`, `varchar` or `bytea`, unique).
    pub key_column: String,
    /// The value column (`bytea`, `text` or `jsonb`).
    pub value_column: String,
    /// The expiry column (`timestamptz`), if rows expire.
    pub expiry_column: Option<String>,
    /// How writes reach the table.
    pub mode: BackendMode,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long one statement (or getting a connection for it) may take before the request
    /// that waits for it is refused as "unavailable".
    pub timeout: Duration,
    /// Write-behind only: the queue.
    pub queue: Option<QueueSettings>,
}

impl std::fmt::Debug for BackendSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSettings")
            .field("hosts", &self.connection.get_hosts())
            .field("dbname", &self.connection.get_dbname())
            .field("table", &self.table)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// One row as the cache holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The value column's bytes (`text` and `jsonb` as UTF-8 text).
    pub value: Bytes,
    /// The expiry column, if there is one and it is set.
    pub expires_at: Option<Timestamp>,
}

/// Why the database did not do what was asked. Every message names the backend, so that a
/// client reading it knows the cache itself is fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum BackendError {
    /// The database cannot be reached, is starting or shutting down, or did not answer in
    /// time: try again later.
    #[error("the backend postgres is unavailable: {0}")]
    Unavailable(String),
    /// The database refused the statement (a constraint, a permission, a type).
    #[error("the backend postgres refused the write: {message} (SQLSTATE {code})")]
    Refused {
        /// The database's message (and detail).
        message: String,
        /// The SQLSTATE, which says whether the row itself is at fault.
        code: String,
    },
    /// The value cannot be stored in the value column.
    #[error("the backend postgres column {column} is {kind}: {problem}")]
    Value {
        /// The column.
        column: String,
        /// Its type.
        kind: String,
        /// What is wrong with the value.
        problem: String,
    },
    /// The table is not usable as configured (missing, a column missing or of a type the
    /// cache cannot map, no unique key).
    #[error("the backend postgres table cannot be used: {0}")]
    Table(String),
    /// Write-behind: the queue is at its bound (the database has been behind for a while).
    #[error(
        "the write-behind queue to the backend postgres is full ({entries} writes, {bytes} \
         bytes not yet in the table); try again when it drains"
    )]
    QueueFull {
        /// Writes queued.
        entries: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Write-behind: the queue could not be written to disk.
    #[error("the write-behind queue to the backend postgres cannot be written: {0}")]
    Queue(String),
}

impl BackendError {
    /// Whether the same request may succeed later without a change (the database was down
    /// or busy), as opposed to a refusal of this request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Unavailable(_) | BackendError::QueueFull { .. }
        )
    }

    /// Whether the refusal is about the row itself (its value: a data exception, SQLSTATE
    /// class 22; a constraint: class 23; or a value the column cannot hold), so that the same
    /// statement for other rows may pass. A refusal of every statement (a read-only
    /// database, a revoked permission, a renamed table, a lock timeout) is not.
    pub fn is_about_the_row(&self) -> bool {
        match self {
            BackendError::Value { .. } => true,
            BackendError::Refused { code, .. } => code.starts_with("22") || code.starts_with("23"),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for BackendError {
    fn from(error: tokio_postgres::Error) -> BackendError {
        match error.code() {
            // Refusals of the statement itself; everything else (a lost connection, a
            // server shutting down or starting, a serialization failure) may pass later.
            Some(code) if !transient(code) => {
                let detail = error.as_db_error().map_or_else(
                    || error.to_string(),
                    |db| match db.detail() {
                        Some(detail) => format!("{}: {detail}", db.message()),
                        None => db.message().to_string(),
                    },
                );
                BackendError::Refused {
                    message: detail,
                    code: code.code().to_string(),
                }
            }
            _ => BackendError::Unavailable(describe(&error)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for BackendError {
    fn from(error: deadpool_postgres::PoolError) -> BackendError {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => BackendError::Unavailable(other.to_string()),
        }
    }
}

/// SQLSTATE classes that say "not now" rather than "not this": connection exceptions,
/// insufficient resources, operator intervention (shutdown, starting up), serialization
/// failures and deadlocks.
fn transient(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code == "40001"
        || code == "40P01"
}

/// An error with its causes, which tokio-postgres keeps apart ("error connecting to server:
/// Connection refused").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The database behind the cache: a pool, the table's statements, single-flight loads and,
/// in write-behind mode, the queue. Share it behind an `Arc`.
pub struct Backend {
    settings: BackendSettings,
    pool: Pool,
    /// The table's columns, read from the catalog on the first successful connection (the
    /// database may be down when the node starts).
    table: OnceCell<Arc<Table>>,
    flights: Flights,
    metrics: BackendMetrics,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// TCP keepalives of every connection to the database.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;

/// The custom setting every pooled session carries, so that the table's trigger does not
/// notify the cache of its own writes (it already holds them).
const WRITER_SETTING: &str = "tidecache.writer";

impl Backend {
    /// Builds the pool (connections are opened when first needed, so a database that is
    /// down does not keep the node from starting).
    pub fn new(mut settings: BackendSettings, metrics: BackendMetrics) -> Arc<Backend> {
        // A database host that vanishes without closing the connection is noticed within
        // about 11 s (the pool's and the listener's connections alike).
        settings
            .connection
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        let mut connection = settings.connection.clone();
        let timeout_ms = settings.timeout.as_millis().max(1);
        let mut options = connection.get_options().unwrap_or_default().to_string();
        options.push_str(&format!(
            " -c statement_timeout={timeout_ms} -c {WRITER_SETTING}=on"
        ));
        connection.options(options.trim());
        if connection.get_connect_timeout().is_none() {
            connection.connect_timeout(settings.timeout);
        }
        if connection.get_application_name().is_none() {
            connection.application_name("tidecache");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &settings.tls {
            Some(tls) => Manager::from_config(connection, tls.clone(), manager_config),
            None => Manager::from_config(connection, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .expect("a pool with a runtime for its timeouts always builds");
        Arc::new(Backend {
            settings,
            pool,
            table: OnceCell::new(),
            flights: Flights::default(),
            metrics,
        })
    }

    /// How writes reach the table.
    pub fn mode(&self) -> BackendMode {
        self.settings.mode
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// The metrics it updates.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    /// Starts the listener (refresh from the table's changes): what it hears arrives on the
    /// returned channel.
    pub fn listen(self: &Arc<Backend>, tasks: &Tasks) -> tokio::sync::mpsc::Receiver<Changed> {
        listen::start(self.clone(), tasks)
    }

    /// The table's columns and statements, read from the catalog once.
    async fn table(&self) -> Result<Arc<Table>, BackendError> {
        self.table
            .get_or_try_init(|| async {
                let client = self.pool.get().await?;
                let table = Table::describe(
                    &client,
                    &self.settings.table,
                    &self.settings.key_column,
                    &self.settings.value_column,
                    self.settings.expiry_column.as_deref(),
                )
                .await?;
                tracing::info!(
                    table = %table.name(),
                    key = %table.key_kind(),
                    value = %table.value_kind(),
                    expiry = table.has_expiry(),
                    "backend table found"
                );
                Ok(Arc::new(table))
            })
            .await
            .cloned()
    }

    /// Checks that `key` and `value` fit their columns, before anything is written; passes
    /// while the table has not been reached yet (the statement checks again).
    ///
    /// # Errors
    /// [`BackendError::Value`] naming the column.
    pub fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), BackendError> {
        self.table
            .get()
            .map_or(Ok(()), |table| table.check(key, value))
    }

    /// Loads the rows of `keys` (one result per key, in order), one query for all keys no
    /// other request is loading already; a key another request is loading waits for that
    /// load instead (single-flight). Hold the [`Settle`] until the rows are stored.
    pub async fn load(
        self: &Arc<Backend>,
        keys: &[Bytes],
    ) -> (Vec<Result<Option<Row>, BackendError>>, Settle) {
        let backend = self.clone();
        self.flights
            .load(keys, move |keys| async move { backend.select(keys).await })
            .await
    }

    /// One query for the rows of `keys`, now, outside single-flight: a refresh must see the
    /// table as it is after the change it heard of, not join a load that started before.
    ///
    /// # Errors
    /// [`BackendError`] when the query fails.
    pub async fn select(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Row>>, BackendError> {
        let rows = self
            .measured("select", async {
                let table = self.table().await?;
                let client = self.pool.get().await?;
                table.select(&client, &keys).await
            })
            .await?;
        let found = rows.iter().filter(|row| row.is_some()).count() as u64;
        self.metrics.loaded(found, keys.len() as u64 - found);
        Ok(rows)
    }

    /// Write-through: stores `rows` in one statement (insert, or update where the key
    /// exists).
    ///
    /// # Errors
    /// [`BackendError`]: nothing was stored.
    pub async fn upsert(&self, rows: &[(Bytes, Row)]) -> Result<(), BackendError> {
        self.measured("upsert", async {
            let table = self.table().await?;
            let client = self.pool.get().await?;
            table.upsert(&client, rows).await
        })
        .await
    }

    /// Write-through: deletes the rows of `keys` in one statement.
    ///
    /// # Errors
    /// [`BackendError`]: nothing was deleted.
    pub async fn remove(&self, keys: &[Bytes]) -> Result<(), BackendError> {
        self.measured("delete", async {
            let table = self.table().await?;
            let client = self.pool.get().await?;
            table.delete(&client, keys).await
        })
        .await
    }

    /// Write-behind: applies a batch of queued changes (one per key) in one transaction.
    ///
    /// # Errors
    /// [`BackendError`]: nothing was applied.
    pub async fn apply(&self, ops: &[Op]) -> Result<(), BackendError> {
        self.measured("flush", async {
            let table = self.table().await?;
            let mut client = self.pool.get().await?;
            let transaction = client.transaction().await?;
            let mut rows = Vec::new();
            let mut deletes = Vec::new();
            for op in ops {
                match &op.value {
                    Some(value) => rows.push((
                        op.key.clone(),
                        Row {
                            value: value.clone(),
                            expires_at: op.expires_at,
                        },
                    )),
                    None => deletes.push(op.key.clone()),
                }
            }
            if !rows.is_empty() {
                table.upsert(&transaction, &rows).await?;
            }
            if !deletes.is_empty() {
                table.delete(&transaction, &deletes).await?;
            }
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    /// Runs `work` (getting a connection and the statement) for at most `--backend-timeout`,
    /// counting it as a statement of kind `op` with its latency and outcome.
    async fn measured<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.settings.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Unavailable(format!(
                    "no answer within {:?} (--backend-timeout)",
                    self.settings.timeout
                )))
            });
        self.metrics.observe(op, started, &result);
        result
    }
}
