//! Configuration: command-line flags, each also readable from a `TIDECACHE_*` environment
//! variable (flags win), validated into [`Settings`] before anything starts, so that a bad
//! value stops the node with a message instead of surfacing as odd behaviour later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use tidecache_contract::args as flag;
use tidecache_contract::disk::{NameError, ObjectName};
use tidecache_contract::{Schedule, ScheduleError};

use crate::backend::{self, BackendMode, BackendSettings, QueueSettings};
use crate::base::auth::{AuthToken, AuthTokenError, PeerCredential};
use crate::base::tls::TlsFiles;
use crate::cache::Limits;
use crate::http::{PROBE_RESERVE, ServeSettings};
use crate::persist::{FsyncPolicy, PersistSettings};
use crate::replication::{AckLevel, Mode, MoveSettings, ReplicationSettings, TransportSettings};
use crate::resp::{NotifyFlags, RespBounds};
use crate::store::{DEFAULT_SHARDS, EvictionPolicy, StoreConfig};
use tidecache_contract::units::{parse_duration, parse_size};

/// The share of a container's memory limit given to entries when `--max-memory` is unset;
/// the rest covers connection buffers, allocator fragmentation and the runtime.
const CGROUP_SHARE_PERCENT: u64 = 75;

/// cgroup limits at or above this mean "no limit" (v1 reports a huge page-rounded number).
const UNLIMITED_THRESHOLD: u64 = 1 << 60;

/// The tidecache cache node: an in-memory cache with schedule-driven expiry, over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "cache-node", version, about)]
pub struct Config {
    /// Address to serve HTTP on.
    #[arg(long, env = "TIDECACHE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address to serve the Redis protocol (RESP2, RESP3 after HELLO 3) on, beside HTTP;
    /// unset: no RESP listener.
    #[arg(long, env = "TIDECACHE_RESP_LISTEN")]
    pub resp_listen: Option<SocketAddr>,

    /// Let FLUSHDB and FLUSHALL over RESP delete every key of the cluster (refused
    /// otherwise).
    #[arg(long, env = "TIDECACHE_RESP_ALLOW_FLUSH")]
    pub resp_allow_flush: bool,

    /// Keyspace notifications over RESP at start, in Redis' notify-keyspace-events letters
    /// (e.g. "Ex": expired keys on __keyevent@0__:expired); CONFIG SET changes them per node.
    #[arg(long, env = "TIDECACHE_RESP_NOTIFY_KEYSPACE_EVENTS", default_value = "", value_parser = notify_flags)]
    pub resp_notify_keyspace_events: NotifyFlags,

    /// Address to serve HTTPS on: the same API as --listen, which stays for peers and probes.
    /// Needs --tls-cert-file and --tls-key-file.
    #[arg(long, env = "TIDECACHE_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,

    /// Address to serve the Redis protocol over TLS on (Redis' tls-port), beside
    /// --resp-listen. Needs --tls-cert-file and --tls-key-file.
    #[arg(long, env = "TIDECACHE_RESP_TLS_LISTEN")]
    pub resp_tls_listen: Option<SocketAddr>,

    /// The PEM certificate chain, leaf first, of the TLS listeners (`tls.crt` of a
    /// kubernetes.io/tls Secret); re-read every --tls-reload-interval.
    #[arg(long, env = "TIDECACHE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file (`tls.key`).
    #[arg(long, env = "TIDECACHE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates (`ca.crt`): when given, every TLS client must present a
    /// certificate issued by one of them.
    #[arg(long, env = "TIDECACHE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// How often the TLS files are read again; changed files that make a valid certificate
    /// and key are used for new connections, without a restart.
    #[arg(long, env = "TIDECACHE_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// Expiry schedule: a 5-field cron expression (or @hourly etc.); entries are evicted in
    /// buckets at its fire times.
    #[arg(long, env = "TIDECACHE_SCHEDULE", default_value = "* * * * *")]
    pub schedule: String,

    /// IANA time zone the schedule is read in.
    #[arg(long, env = "TIDECACHE_TIME_ZONE", default_value = "UTC")]
    pub time_zone: String,

    /// Lifetime of entries written without ttl or Expires (90s, 15m, 2h, seconds); unset
    /// means no expiry.
    #[arg(long, env = "TIDECACHE_DEFAULT_TTL", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,

    /// Longest lifetime a write may ask for; unset means unbounded.
    #[arg(long, env = "TIDECACHE_MAX_TTL", value_parser = parse_duration)]
    pub max_ttl: Option<Duration>,

    /// Longest key in bytes (after percent-decoding).
    #[arg(long, env = "TIDECACHE_MAX_KEY_BYTES", default_value = "1KiB", value_parser = parse_size)]
    pub max_key_bytes: u64,

    /// Largest value in bytes.
    #[arg(long, env = "TIDECACHE_MAX_VALUE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_value_bytes: u64,

    /// Most entries in one batch request.
    #[arg(long, env = "TIDECACHE_MAX_BATCH_ENTRIES", default_value_t = 1000)]
    pub max_batch_entries: usize,

    /// Largest batch request body in bytes.
    #[arg(long, env = "TIDECACHE_MAX_BATCH_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub max_batch_bytes: u64,

    /// Memory for entries (e.g. 512MiB, 2GiB). Unset: 75% of the container's cgroup memory
    /// limit if there is one, else unlimited.
    #[arg(long, env = "TIDECACHE_MAX_MEMORY", value_parser = parse_size)]
    pub max_memory: Option<u64>,

    /// What to do when memory is full: evict (clock, an LRU approximation) or refuse writes
    /// with 507 (noeviction).
    #[arg(long, env = "TIDECACHE_EVICTION_POLICY", value_enum, default_value_t = flag::EvictionPolicy::Clock)]
    pub eviction_policy: flag::EvictionPolicy,

    /// Log format.
    #[arg(long, env = "TIDECACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "TIDECACHE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    // Bounds on connections, time and transient memory (docs/limits.md).
    /// Largest response a batch read (POST /v1/batch/get, RESP MGET) may build; larger ones
    /// are refused (HTTP 413, a RESP error), naming this flag. Never above
    /// --max-inflight-bytes.
    #[arg(long, env = "TIDECACHE_MAX_RESPONSE_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub max_response_bytes: u64,

    /// Memory for request bodies and responses in flight, node-wide; over it requests get
    /// 503 with Retry-After. Unset: a quarter of the entry capacity (1GiB when unlimited),
    /// and at least the largest request body.
    #[arg(long, env = "TIDECACHE_MAX_INFLIGHT_BYTES", value_parser = parse_size)]
    pub max_inflight_bytes: Option<u64>,

    /// HTTP connections served at once; a few more serve only the probes. Lowered to what
    /// RLIMIT_NOFILE leaves after a reserve for files and peers.
    #[arg(long, env = "TIDECACHE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// How long an HTTP connection may wait for a complete request head: closes silent
    /// sockets, slowly sent heads and keep-alive connections idle this long.
    #[arg(long, env = "TIDECACHE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long an HTTP request body may take to arrive after its head (408 after).
    #[arg(long, env = "TIDECACHE_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// How long a write to a client (HTTP or RESP) may make no progress before the
    /// connection is closed: a client that does not read its replies.
    #[arg(long, env = "TIDECACHE_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// RESP clients served at once (Redis' maxclients); over it a client gets "-ERR max
    /// number of clients reached" and is closed. Lowered like --max-connections.
    #[arg(long, env = "TIDECACHE_RESP_MAX_CLIENTS", default_value_t = 10_000)]
    pub resp_max_clients: usize,

    /// How long a RESP request may take from its first byte to its last; a client that stops
    /// mid-request is closed.
    #[arg(long, env = "TIDECACHE_RESP_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub resp_request_timeout: Duration,

    /// Close a RESP client idle this long (Redis' timeout); unset: never, as in Redis,
    /// because pools and subscribers hold idle connections by design.
    #[arg(long, env = "TIDECACHE_RESP_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub resp_idle_timeout: Option<Duration>,

    /// Store shards (rounded up to a power of two); more shards, less lock contention.
    #[arg(long, env = "TIDECACHE_SHARDS", default_value_t = DEFAULT_SHARDS)]
    pub shards: usize,

    /// The shared volume's mount point. When given, every acknowledged write and delete is
    /// persisted under DIR/<namespace>/<cluster>/ and loaded again at start-up.
    #[arg(long, env = "TIDECACHE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// This node's name, the subdirectory it writes (the pod name in Kubernetes). Default:
    /// the hostname, lowercased.
    #[arg(long, env = "TIDECACHE_NODE_ID")]
    pub node_id: Option<String>,

    /// The CacheCluster's namespace (a path component on the volume).
    #[arg(long, env = "TIDECACHE_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// The CacheCluster's name (a path component on the volume).
    #[arg(long, env = "TIDECACHE_CLUSTER", default_value = "tidecache")]
    pub cluster: String,

    /// When persisted writes reach stable storage: always (fsync before acknowledging),
    /// everysec (fsync each second), never (the kernel decides).
    #[arg(long, env = "TIDECACHE_FSYNC", value_enum, default_value_t = flag::FsyncPolicy::Everysec)]
    pub fsync: flag::FsyncPolicy,

    /// Segment files are rotated at this size.
    #[arg(long, env = "TIDECACHE_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub segment_bytes: u64,

    /// The persistent area (entries without expiry) is compacted once it is over this size
    /// and has doubled since its last compaction.
    #[arg(long, env = "TIDECACHE_COMPACT_MIN_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub compact_min_bytes: u64,

    /// The cluster's nodes as host:port,... (may include this node's own address); writes
    /// are replicated to the others. For local runs; in Kubernetes use --peers-service.
    #[arg(
        long,
        env = "TIDECACHE_PEERS",
        value_delimiter = ',',
        conflicts_with = "peers_service"
    )]
    pub peers: Vec<String>,

    /// The headless Service whose DNS name resolves to every pod, NAME[:PORT] (the port
    /// defaults to --listen's); re-resolved every few seconds.
    #[arg(long, env = "TIDECACHE_PEERS_SERVICE")]
    pub peers_service: Option<String>,

    /// A file listing the cluster's nodes as --peers does (host:port[@zone], separated by
    /// commas or newlines; `#` starts a comment), read again every 500 ms: membership that
    /// changes while the nodes run, outside Kubernetes. Replace it atomically (write a
    /// temporary file, rename it over this one); while it cannot be read the last list stays.
    #[arg(
        long,
        env = "TIDECACHE_PEERS_FILE",
        conflicts_with_all = ["peers", "peers_service"]
    )]
    pub peers_file: Option<PathBuf>,

    /// Which nodes hold a key: full (every node) or partitioned (--replication-factor owners
    /// per hash slot, the others forward).
    #[arg(long, env = "TIDECACHE_MODE", value_enum, default_value_t = flag::ReplicationMode::Full)]
    pub mode: flag::ReplicationMode,

    /// Owners per key in partitioned mode, in distinct zones where there are enough zones.
    #[arg(long, env = "TIDECACHE_REPLICATION_FACTOR", default_value_t = 2)]
    pub replication_factor: u16,

    /// This node's zone, for placing a key's owners in distinct zones; in Kubernetes the
    /// EndpointSlices say every pod's zone and this is not needed. In a --peers list, a peer's
    /// zone follows its address after `@` (`127.0.0.1:7001@zone-a`).
    #[arg(long, env = "TIDECACHE_ZONE")]
    pub zone: Option<String>,

    /// Answer RESP key commands for slots this node does not serve with `-MOVED` (and
    /// `-ASK` during a move), as a Redis Cluster node does, instead of forwarding them;
    /// for cluster-aware clients. Partitioned mode only.
    #[arg(long, env = "TIDECACHE_RESP_CLUSTER_MODE")]
    pub resp_cluster_mode: bool,

    /// Partitioned mode: at most this many partitions (of 1024) move to this node at once,
    /// so that a joining node does not ask everything of its peers in one go.
    #[arg(long, env = "TIDECACHE_MAX_MOVING_PARTITIONS", default_value_t = 256)]
    pub max_moving_partitions: usize,

    /// Partitioned mode: how long a stopping node that the membership no longer lists (a
    /// deleted pod) keeps serving until the new owners hold its partitions; keep it below
    /// the pod's termination grace period less --drain-timeout.
    #[arg(long, env = "TIDECACHE_HANDOFF_TIMEOUT", default_value = "40s", value_parser = parse_duration)]
    pub handoff_timeout: Duration,

    /// How many replicas acknowledge a write that does not say (Tidecache-Ack): one (this
    /// node), quorum (a majority) or all.
    #[arg(long, env = "TIDECACHE_WRITE_ACK", value_enum, default_value_t = flag::AckLevel::One)]
    pub ack: flag::AckLevel,

    /// How long a write waits for its acknowledgements before the client gets 503.
    #[arg(long, env = "TIDECACHE_ACK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub ack_timeout: Duration,

    /// Time between anti-entropy passes (digests compared with every peer).
    #[arg(long, env = "TIDECACHE_ANTI_ENTROPY_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub anti_entropy_interval: Duration,

    /// How long a starting node may spend catching up from its peers before it turns ready
    /// anyway.
    #[arg(long, env = "TIDECACHE_CATCH_UP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub catch_up_timeout: Duration,

    /// Records queued per peer before writes with ack=one stop being queued for it (and
    /// writes waiting for acknowledgements wait for room).
    #[arg(long, env = "TIDECACHE_REPLICATION_QUEUE", default_value_t = 16_384)]
    pub replication_queue: usize,

    /// A bearer token that key routes (and RESP `AUTH`) require (`Authorization: Bearer
    /// <token>`); it does not open the internal routes (see --peer-token). In Kubernetes it
    /// comes from the Secret in `spec.auth`. Unset: no authentication of clients.
    #[arg(long, env = "TIDECACHE_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// The token peers present on the internal routes (`/internal/*`), and this node presents
    /// to its peers; never the same as --auth-token, which does not open them. Required on a
    /// replicated node with --auth-token. In Kubernetes it comes from the Secret
    /// `<cluster>-peer-token` the operator generates. Unset without --auth-token: the internal
    /// routes are open, like the key routes.
    #[arg(long, env = "TIDECACHE_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,

    /// The peer token before the last rotation: still accepted, and presented to a peer that
    /// refuses --peer-token (one that has not restarted with the new token yet).
    #[arg(long, env = "TIDECACHE_PEER_TOKEN_PREVIOUS", hide_env_values = true)]
    pub peer_token_previous: Option<String>,

    // The database behind the cache (docs/backend.md).
    /// A database behind the cache: misses load its rows, and writes reach it as
    /// --backend-mode says. The only kind is postgres.
    #[arg(long, env = "TIDECACHE_BACKEND", value_enum)]
    pub backend: Option<flag::BackendKind>,

    /// The database's connection, a libpq URL (postgresql://user:password@host:5432/db) or
    /// key=value string; with --backend-ca-file the connection uses TLS (sslmode=require).
    #[arg(long, env = "TIDECACHE_BACKEND_URL", hide_env_values = true)]
    pub backend_url: Option<String>,

    /// PEM CA certificates to verify the database's TLS certificate with.
    #[arg(long, env = "TIDECACHE_BACKEND_CA_FILE")]
    pub backend_ca_file: Option<PathBuf>,

    /// The table behind the cache (`items`, `shop.items`).
    #[arg(long, env = "TIDECACHE_BACKEND_TABLE")]
    pub backend_table: Option<String>,

    /// The table's key column: text, varchar or bytea, unique.
    #[arg(long, env = "TIDECACHE_BACKEND_KEY_COLUMN", default_value = "key")]
    pub backend_key_column: String,

    /// The table's value column: bytea, text or jsonb.
    #[arg(long, env = "TIDECACHE_BACKEND_VALUE_COLUMN", default_value = "value")]
    pub backend_value_column: String,

    /// The table's expiry column (timestamptz): a row's cached entry expires then, and a
    /// write's expiry is stored in it. Unset: rows are cached for --default-ttl.
    #[arg(long, env = "TIDECACHE_BACKEND_EXPIRY_COLUMN")]
    pub backend_expiry_column: Option<String>,

    /// How writes reach the table: read-through (they do not), write-through (committed
    /// before the write is acknowledged) or write-behind (queued on this node's disk and
    /// flushed after).
    #[arg(long, env = "TIDECACHE_BACKEND_MODE", value_enum, default_value_t = flag::BackendMode::ReadThrough)]
    pub backend_mode: flag::BackendMode,

    /// Connections to the database in the pool.
    #[arg(long, env = "TIDECACHE_BACKEND_POOL_SIZE", default_value_t = 16)]
    pub backend_pool_size: usize,

    /// How long a statement, or getting a connection for it, may take; a request waiting
    /// longer is answered 503 (RESP: an error) naming the backend.
    #[arg(long, env = "TIDECACHE_BACKEND_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub backend_timeout: Duration,

    /// Write-behind: this node's queue directory (its own; not shared with another node).
    /// Default: DATA_DIR/.write-behind/<namespace>/<cluster>/<node-id> with --data-dir.
    #[arg(long, env = "TIDECACHE_BACKEND_QUEUE_DIR")]
    pub backend_queue_dir: Option<PathBuf>,

    /// Write-behind: most writes queued and not yet in the table; more are refused (503).
    #[arg(
        long,
        env = "TIDECACHE_BACKEND_QUEUE_MAX_ENTRIES",
        default_value_t = 1_000_000
    )]
    pub backend_queue_max_entries: usize,

    /// Write-behind: most bytes of keys and values queued and not yet in the table.
    #[arg(long, env = "TIDECACHE_BACKEND_QUEUE_MAX_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub backend_queue_max_bytes: u64,

    /// Write-behind: most writes flushed to the table in one transaction.
    #[arg(long, env = "TIDECACHE_BACKEND_FLUSH_BATCH", default_value_t = 1000)]
    pub backend_flush_batch: usize,
}

/// Where a replicated node finds its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// `--peers`.
    Static(Vec<String>),
    /// `--peers-service`.
    Service(String),
    /// `--peers-file`.
    File(PathBuf),
}

/// A validated replication setup.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Where the peers come from.
    pub peers: PeerSource,
    /// Levels, timeouts, queues.
    pub settings: ReplicationSettings,
}

/// `--log-format` values, spelled by the contract the operator renders flags with.
pub use tidecache_contract::args::LogFormat;

/// The flag values are the contract's, so that their spelling exists once; each maps onto the
/// type that implements it here.
impl From<flag::EvictionPolicy> for EvictionPolicy {
    fn from(policy: flag::EvictionPolicy) -> EvictionPolicy {
        match policy {
            flag::EvictionPolicy::Clock => EvictionPolicy::Clock,
            flag::EvictionPolicy::NoEviction => EvictionPolicy::NoEviction,
        }
    }
}

impl From<flag::FsyncPolicy> for FsyncPolicy {
    fn from(policy: flag::FsyncPolicy) -> FsyncPolicy {
        match policy {
            flag::FsyncPolicy::Always => FsyncPolicy::Always,
            flag::FsyncPolicy::Everysec => FsyncPolicy::Everysec,
            flag::FsyncPolicy::Never => FsyncPolicy::Never,
        }
    }
}

impl From<flag::BackendMode> for BackendMode {
    fn from(mode: flag::BackendMode) -> BackendMode {
        match mode {
            flag::BackendMode::ReadThrough => BackendMode::ReadThrough,
            flag::BackendMode::WriteThrough => BackendMode::WriteThrough,
            flag::BackendMode::WriteBehind => BackendMode::WriteBehind,
        }
    }
}

impl From<flag::AckLevel> for AckLevel {
    fn from(level: flag::AckLevel) -> AckLevel {
        match level {
            flag::AckLevel::One => AckLevel::One,
            flag::AckLevel::Quorum => AckLevel::Quorum,
            flag::AckLevel::All => AckLevel::All,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--node-id`, `--namespace` or `--cluster` is not a Kubernetes object name.
    #[error("invalid --{flag}: {source}")]
    Name {
        /// The flag.
        flag: &'static str,
        /// What is wrong with the name.
        source: NameError,
    },
    /// No `--node-id` and no usable hostname.
    #[error("--node-id is required: the hostname cannot be read")]
    NoNodeId,
    /// `--auth-token`.
    #[error("invalid --auth-token: {0}")]
    AuthToken(#[from] AuthTokenError),
    /// `--peer-token` or `--peer-token-previous`.
    #[error("invalid --{flag}: {source}")]
    PeerToken {
        /// The flag.
        flag: &'static str,
        /// What is wrong with the token.
        source: AuthTokenError,
    },
    /// A replicated node with `--auth-token` but no `--peer-token`: the clients' token would
    /// be the only thing guarding the internal routes.
    #[error(
        "--peer-token is required on a replicated node with --auth-token: peers must present a \
         token of their own on /internal/* (give every node the same --peer-token)"
    )]
    PeerTokenRequired,
    /// `--peer-token-previous` without `--peer-token`.
    #[error("--peer-token-previous needs --peer-token (the token that replaced it)")]
    PreviousWithoutPeerToken,
    /// A peer token equal to `--auth-token`: every client could act as a peer.
    #[error("--{flag} must differ from --auth-token: a client token must not open /internal/*")]
    PeerTokenIsClientToken {
        /// The flag.
        flag: &'static str,
    },
    /// A TLS flag given without one it needs.
    #[error("--{flag} needs {needs}")]
    TlsIncomplete {
        /// The flag given.
        flag: &'static str,
        /// What must be given with it.
        needs: &'static str,
    },
    /// `--schedule` / `--time-zone`.
    #[error("invalid --schedule/--time-zone: {0}")]
    Schedule(#[from] ScheduleError),
    /// A flag given without the setting it belongs to.
    #[error("--{flag} needs {needs}")]
    Needs {
        /// The flag given.
        flag: &'static str,
        /// What must be given with it.
        needs: &'static str,
    },
    /// A limit that must be positive is zero.
    #[error("--{flag} must be at least 1")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// A limit that does not fit in memory addresses.
    #[error("--{flag} is too large for this machine")]
    TooLarge {
        /// The flag.
        flag: &'static str,
    },
    /// A backend flag that cannot be used.
    #[error("invalid --{flag}: {problem}")]
    Backend {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `--default-ttl` above `--max-ttl`, or zero.
    #[error("--default-ttl ({default}s) must be between 1s and --max-ttl ({max}s)")]
    DefaultTtl {
        /// The default.
        default: u64,
        /// The maximum.
        max: u64,
    },
}

/// Where the memory capacity came from, for the startup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacitySource {
    /// `--max-memory`.
    Flag,
    /// A share of the cgroup memory limit.
    Cgroup {
        /// The limit found.
        limit: u64,
    },
    /// No flag, no limit: unlimited.
    Unlimited,
}

/// The TLS listeners and where their certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Where to serve HTTPS (`--tls-listen`).
    pub listen: Option<SocketAddr>,
    /// Where to serve RESP over TLS (`--resp-tls-listen`).
    pub resp_listen: Option<SocketAddr>,
    /// The certificate, key and client CA files.
    pub files: TlsFiles,
    /// How often the files are read again (`--tls-reload-interval`).
    pub reload_interval: Duration,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to serve RESP; `None` without `--resp-listen`.
    pub resp_listen: Option<SocketAddr>,
    /// Whether `FLUSHDB`/`FLUSHALL` are allowed (`--resp-allow-flush`).
    pub resp_allow_flush: bool,
    /// The keyspace notifications on at start (`--resp-notify-keyspace-events`).
    pub resp_notify: NotifyFlags,
    /// TLS for clients; `None` without `--tls-cert-file`.
    pub tls: Option<TlsSettings>,
    /// The store's setup (schedule, capacity, policy, shards).
    pub store: StoreConfig,
    /// Where the capacity came from.
    pub capacity_source: CapacitySource,
    /// Request limits.
    pub limits: Limits,
    /// The log format.
    pub log_format: LogFormat,
    /// The drain timeout.
    pub drain_timeout: Duration,
    /// The HTTP server loop's bounds (connections, timeouts).
    pub http_serve: ServeSettings,
    /// The RESP listener's bounds (clients, timeouts).
    pub resp_bounds: RespBounds,
    /// Persistence to the shared volume; `None` without `--data-dir` (memory only).
    pub persistence: Option<PersistSettings>,
    /// Replication; `None` without `--peers` or `--peers-service`.
    pub replication: Option<ReplicationConfig>,
    /// Whether RESP answers for slots this node does not serve with redirects
    /// (`--resp-cluster-mode`, partitioned mode only).
    pub resp_cluster_mode: bool,
    /// The tag of this node's name (`--node-id`, else the hostname): the second half of every
    /// version it issues (0 when it has no name).
    pub node_tag: u64,
    /// The token clients and peers must present; `None` without `--auth-token`.
    pub auth: Option<AuthToken>,
    /// The database behind the cache; `None` without `--backend`.
    pub backend: Option<BackendSettings>,
}

impl Config {
    /// Validates the configuration, reading the cgroup memory limit from the standard
    /// mount point when `--max-memory` is unset.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag to fix.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        self.validate_with_cgroup_root(Path::new("/sys/fs/cgroup"))
    }

    /// [`Config::validate`] with the cgroup file system rooted at `cgroup_root` (tests).
    ///
    /// # Errors
    /// As [`Config::validate`].
    pub fn validate_with_cgroup_root(self, cgroup_root: &Path) -> Result<Settings, ConfigError> {
        let schedule = Schedule::new(&self.schedule, Some(&self.time_zone))?;
        let auth = self.auth_token.as_deref().map(AuthToken::new).transpose()?;
        let usize_of = |value: u64, flag| {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
            usize::try_from(value).map_err(|_| ConfigError::TooLarge { flag })
        };
        let max_key_bytes = usize_of(self.max_key_bytes, "max-key-bytes")?;
        let max_value_bytes = usize_of(self.max_value_bytes, "max-value-bytes")?;
        let max_batch_bytes = usize_of(self.max_batch_bytes, "max-batch-bytes")?;
        if self.max_batch_entries == 0 {
            return Err(ConfigError::Zero {
                flag: "max-batch-entries",
            });
        }
        if self.max_ttl.is_some_and(|max| max.is_zero()) {
            return Err(ConfigError::Zero { flag: "max-ttl" });
        }
        if let Some(default) = self.default_ttl {
            let max = self.max_ttl.unwrap_or(Duration::MAX);
            if default.is_zero() || default > max {
                return Err(ConfigError::DefaultTtl {
                    default: default.as_secs(),
                    max: max.as_secs(),
                });
            }
        }
        let (capacity_bytes, capacity_source) = match self.max_memory {
            Some(0) => return Err(ConfigError::Zero { flag: "max-memory" }),
            Some(bytes) => (bytes, CapacitySource::Flag),
            None => match cgroup_memory_limit(cgroup_root) {
                Some(limit) => (
                    limit / 100 * CGROUP_SHARE_PERCENT,
                    CapacitySource::Cgroup { limit },
                ),
                None => (u64::MAX, CapacitySource::Unlimited),
            },
        };
        let largest_body = max_value_bytes.max(max_batch_bytes);
        let (max_response_bytes, max_inflight_bytes) =
            self.memory_bounds(capacity_bytes, largest_body)?;
        let (http_serve, resp_bounds) = self.connection_bounds(raise_file_limit())?;
        let persistence = match &self.data_dir {
            Some(data_dir) => Some(self.persistence(data_dir.clone())?),
            None => None,
        };
        let replication = self.replication()?;
        if self.resp_cluster_mode && self.mode != flag::ReplicationMode::Partitioned {
            return Err(ConfigError::Needs {
                flag: "resp-cluster-mode",
                needs: "--mode=partitioned",
            });
        }
        let tls = self.tls()?;
        let backend = self.backend(persistence.as_ref())?;
        let node_tag = match (&persistence, &self.node_id) {
            (Some(persistence), _) => persistence.node.tag(),
            (None, Some(id)) => ObjectName::new(id)
                .map_err(|source| ConfigError::Name {
                    flag: "node-id",
                    source,
                })?
                .tag(),
            (None, None) => hostname()
                .and_then(|name| ObjectName::new(&name).ok())
                .map_or(0, |name| name.tag()),
        };
        Ok(Settings {
            backend,
            persistence,
            replication,
            node_tag,
            auth,
            listen: self.listen,
            resp_listen: self.resp_listen,
            resp_allow_flush: self.resp_allow_flush,
            resp_cluster_mode: self.resp_cluster_mode,
            resp_notify: self.resp_notify_keyspace_events,
            tls,
            store: StoreConfig {
                schedule,
                capacity_bytes,
                eviction_policy: self.eviction_policy.into(),
                shards: self.shards,
            },
            capacity_source,
            limits: Limits {
                max_key_bytes,
                max_value_bytes,
                max_batch_entries: self.max_batch_entries,
                max_batch_bytes,
                max_response_bytes,
                max_inflight_bytes,
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
            },
            log_format: self.log_format,
            drain_timeout: self.drain_timeout,
            http_serve,
            resp_bounds,
        })
    }
}

impl Config {
    /// The TLS setup, if a certificate is configured. The files are read when the node
    /// starts, not here, so that a refusal names the file as it is then.
    fn tls(&self) -> Result<Option<TlsSettings>, ConfigError> {
        let incomplete = |flag, needs| Err(ConfigError::TlsIncomplete { flag, needs });
        let listening = self.tls_listen.is_some() || self.resp_tls_listen.is_some();
        let (cert, key) = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(_), None) => return incomplete("tls-cert-file", "--tls-key-file"),
            (None, Some(_)) => return incomplete("tls-key-file", "--tls-cert-file"),
            (None, None) => {
                return match (
                    self.tls_listen,
                    self.resp_tls_listen,
                    &self.tls_client_ca_file,
                ) {
                    (Some(_), _, _) => {
                        incomplete("tls-listen", "--tls-cert-file and --tls-key-file")
                    }
                    (None, Some(_), _) => {
                        incomplete("resp-tls-listen", "--tls-cert-file and --tls-key-file")
                    }
                    (None, None, Some(_)) => {
                        incomplete("tls-client-ca-file", "--tls-cert-file and --tls-key-file")
                    }
                    (None, None, None) => Ok(None),
                };
            }
        };
        if !listening {
            return incomplete(
                "tls-cert-file",
                "a TLS listener: --tls-listen or --resp-tls-listen",
            );
        }
        if self.tls_reload_interval.is_zero() {
            return Err(ConfigError::Zero {
                flag: "tls-reload-interval",
            });
        }
        Ok(Some(TlsSettings {
            listen: self.tls_listen,
            resp_listen: self.resp_tls_listen,
            files: TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca_file.clone(),
            },
            reload_interval: self.tls_reload_interval,
        }))
    }

    /// The database behind the cache, if `--backend` is given.
    fn backend(
        &self,
        persistence: Option<&PersistSettings>,
    ) -> Result<Option<BackendSettings>, ConfigError> {
        let refused = |flag, problem: &str| ConfigError::Backend {
            flag,
            problem: problem.to_string(),
        };
        let Some(flag::BackendKind::Postgres) = self.backend else {
            let given = [
                ("backend-url", self.backend_url.is_some()),
                ("backend-table", self.backend_table.is_some()),
                (
                    "backend-expiry-column",
                    self.backend_expiry_column.is_some(),
                ),
                ("backend-queue-dir", self.backend_queue_dir.is_some()),
                ("backend-ca-file", self.backend_ca_file.is_some()),
            ];
            return match given.into_iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(ConfigError::Needs {
                    flag,
                    needs: "--backend=postgres",
                }),
                None => Ok(None),
            };
        };
        let url = self
            .backend_url
            .as_deref()
            .ok_or_else(|| refused("backend-url", "required with --backend"))?;
        // The message of a URL that does not parse may quote it, password and all.
        let connection: tokio_postgres::Config = url.parse().map_err(|_| {
            refused(
                "backend-url",
                "not a libpq connection URL or key=value string                  (postgresql://user:password@host:5432/database)",
            )
        })?;
        if connection.get_hosts().is_empty() {
            return Err(refused("backend-url", "names no host"));
        }
        let table = self
            .backend_table
            .clone()
            .ok_or_else(|| refused("backend-table", "required with --backend"))?;
        for (flag, name) in [
            ("backend-table", Some(&table)),
            ("backend-key-column", Some(&self.backend_key_column)),
            ("backend-value-column", Some(&self.backend_value_column)),
            ("backend-expiry-column", self.backend_expiry_column.as_ref()),
        ] {
            if name.is_some_and(|name| name.is_empty() || name.contains('\0')) {
                return Err(refused(flag, "must be a non-empty name"));
            }
        }
        if self.backend_pool_size == 0 {
            return Err(ConfigError::Zero {
                flag: "backend-pool-size",
            });
        }
        if self.backend_timeout.is_zero() {
            return Err(ConfigError::Zero {
                flag: "backend-timeout",
            });
        }
        let tls = match &self.backend_ca_file {
            Some(path) => Some(
                backend::tls_connector(path)
                    .map_err(|error| refused("backend-ca-file", &error.to_string()))?,
            ),
            None => None,
        };
        let mode = self.backend_mode.into();
        let queue = match mode {
            BackendMode::WriteBehind => {
                let dir = match (&self.backend_queue_dir, persistence) {
                    (Some(dir), _) => dir.clone(),
                    (None, Some(persistence)) => persistence
                        .data_dir
                        .join(".write-behind")
                        .join(persistence.namespace.as_str())
                        .join(persistence.cluster.as_str())
                        .join(persistence.node.as_str()),
                    (None, None) => {
                        return Err(ConfigError::Needs {
                            flag: "backend-mode=write-behind",
                            needs: "--backend-queue-dir or --data-dir (the queue is on disk)",
                        });
                    }
                };
                for (flag, value) in [
                    (
                        "backend-queue-max-entries",
                        self.backend_queue_max_entries as u64,
                    ),
                    ("backend-queue-max-bytes", self.backend_queue_max_bytes),
                    ("backend-flush-batch", self.backend_flush_batch as u64),
                ] {
                    if value == 0 {
                        return Err(ConfigError::Zero { flag });
                    }
                }
                Some(QueueSettings {
                    dir,
                    max_entries: self.backend_queue_max_entries,
                    max_bytes: self.backend_queue_max_bytes,
                    flush_batch: self.backend_flush_batch,
                })
            }
            _ => None,
        };
        Ok(Some(BackendSettings {
            connection,
            tls,
            table,
            key_column: self.backend_key_column.clone(),
            value_column: self.backend_value_column.clone(),
            expiry_column: self.backend_expiry_column.clone(),
            mode,
            pool_size: self.backend_pool_size,
            timeout: self.backend_timeout,
            queue,
        }))
    }

    /// The replication setup, if peers are configured.
    fn replication(&self) -> Result<Option<ReplicationConfig>, ConfigError> {
        // clap refuses more than one of the three.
        let peers = if let Some(service) = &self.peers_service {
            PeerSource::Service(service.clone())
        } else if let Some(path) = &self.peers_file {
            PeerSource::File(path.clone())
        } else if !self.peers.is_empty() {
            PeerSource::Static(self.peers.clone())
        } else if self.mode == flag::ReplicationMode::Partitioned {
            return Err(ConfigError::Needs {
                flag: "mode=partitioned",
                needs: "--peers, --peers-file or --peers-service (the nodes the keys are spread \
                        over)",
            });
        } else {
            return Ok(None);
        };
        let mode = match self.mode {
            flag::ReplicationMode::Full => Mode::Full,
            flag::ReplicationMode::Partitioned if self.replication_factor == 0 => {
                return Err(ConfigError::Zero {
                    flag: "replication-factor",
                });
            }
            flag::ReplicationMode::Partitioned => Mode::Partitioned {
                replication_factor: usize::from(self.replication_factor),
            },
        };
        if self.replication_queue == 0 {
            return Err(ConfigError::Zero {
                flag: "replication-queue",
            });
        }
        for (flag, value) in [
            ("ack-timeout", self.ack_timeout),
            ("anti-entropy-interval", self.anti_entropy_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        Ok(Some(ReplicationConfig {
            peers,
            settings: ReplicationSettings {
                default_ack: self.ack.into(),
                ack_timeout: self.ack_timeout,
                anti_entropy_interval: self.anti_entropy_interval,
                catch_up_timeout: self.catch_up_timeout,
                transport: TransportSettings {
                    queue_capacity: self.replication_queue,
                    ..TransportSettings::default()
                },
                peer_credential: self.peer_credential()?,
                mode,
                zone: self.zone.clone(),
                moves: MoveSettings {
                    max_concurrent: self.max_moving_partitions.max(1),
                    handoff_timeout: self.handoff_timeout,
                },
                // The cache holds peers' records to the node's request limits.
                ..ReplicationSettings::default()
            },
        }))
    }

    /// The peers' credential of a replicated node, checked against the clients' token.
    fn peer_credential(&self) -> Result<Option<PeerCredential>, ConfigError> {
        let parse = |flag, token: &Option<String>| {
            token
                .as_deref()
                .map(|token| {
                    AuthToken::new(token).map_err(|source| ConfigError::PeerToken { flag, source })
                })
                .transpose()
        };
        let current = parse("peer-token", &self.peer_token)?;
        // A Secret never rotated holds its token under both keys: no previous one then.
        let previous = parse("peer-token-previous", &self.peer_token_previous)?
            .filter(|previous| Some(previous) != current.as_ref());
        let client = self.auth_token.as_deref().map(AuthToken::new).transpose()?;
        for (flag, token) in [("peer-token", &current), ("peer-token-previous", &previous)] {
            if token.is_some() && token == &client {
                return Err(ConfigError::PeerTokenIsClientToken { flag });
            }
        }
        match (current, previous) {
            (Some(current), previous) => Ok(Some(PeerCredential::new(current, previous))),
            (None, Some(_)) => Err(ConfigError::PreviousWithoutPeerToken),
            (None, None) if client.is_some() => Err(ConfigError::PeerTokenRequired),
            (None, None) => Ok(None),
        }
    }

    /// The persistence settings for `--data-dir`.
    fn persistence(&self, data_dir: PathBuf) -> Result<PersistSettings, ConfigError> {
        let name = |flag, value: &str| {
            ObjectName::new(value).map_err(|source| ConfigError::Name { flag, source })
        };
        let node = match &self.node_id {
            Some(id) => name("node-id", id)?,
            None => name("node-id", &hostname().ok_or(ConfigError::NoNodeId)?)?,
        };
        if self.segment_bytes == 0 {
            return Err(ConfigError::Zero {
                flag: "segment-bytes",
            });
        }
        Ok(PersistSettings {
            data_dir,
            namespace: name("namespace", &self.namespace)?,
            cluster: name("cluster", &self.cluster)?,
            node,
            fsync: self.fsync.into(),
            segment_bytes: self.segment_bytes,
            compact_min_bytes: self.compact_min_bytes,
        })
    }
}

/// Parses `--resp-notify-keyspace-events` as `CONFIG SET notify-keyspace-events` would.
/// File descriptors kept out of the connection caps: the data volume's segments and
/// directories, peer links, DNS, the listeners and stdio (Redis keeps 32).
const FD_RESERVE: u64 = 64;

impl Config {
    /// `--max-response-bytes` and `--max-inflight-bytes` as enforced: the budget defaults to
    /// a quarter of the entry capacity and is at least the largest request body (so that
    /// every allowed request can be received); the response bound is at most the budget (so
    /// that every allowed response can be charged).
    fn memory_bounds(
        &self,
        capacity_bytes: u64,
        largest_body: usize,
    ) -> Result<(usize, usize), ConfigError> {
        let positive = |value: u64, flag| {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
            usize::try_from(value).map_err(|_| ConfigError::TooLarge { flag })
        };
        let response = positive(self.max_response_bytes, "max-response-bytes")?;
        let inflight = match self.max_inflight_bytes {
            Some(bytes) => positive(bytes, "max-inflight-bytes")?,
            // No memory limit to take a share of.
            None if capacity_bytes == u64::MAX => Limits::default().max_inflight_bytes,
            None => usize::try_from(capacity_bytes / 4).unwrap_or(usize::MAX),
        };
        let inflight = inflight.max(largest_body);
        Ok((response.min(inflight), inflight))
    }

    /// The HTTP and RESP bounds, with the connection caps lowered to fit in `file_limit`
    /// (RLIMIT_NOFILE) after [`FD_RESERVE`] and the probe reserve, shared in proportion when
    /// both do not fit; a lowered cap is logged.
    fn connection_bounds(
        &self,
        file_limit: u64,
    ) -> Result<(ServeSettings, RespBounds), ConfigError> {
        for (flag, value) in [
            ("max-connections", self.max_connections),
            ("resp-max-clients", self.resp_max_clients),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        for (flag, value) in [
            ("header-read-timeout", self.header_read_timeout),
            ("body-read-timeout", self.body_read_timeout),
            ("write-timeout", self.write_timeout),
            ("resp-request-timeout", self.resp_request_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self
            .resp_idle_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            return Err(ConfigError::Zero {
                flag: "resp-idle-timeout",
            });
        }
        let resp = if self.resp_listen.is_some() {
            self.resp_max_clients
        } else {
            0
        };
        let (http, resp_capped) = connection_caps(self.max_connections, resp, file_limit);
        if http < self.max_connections || resp_capped < resp {
            tracing::warn!(
                file_limit,
                max_connections = http,
                resp_max_clients = resp_capped,
                "connection caps lowered to fit RLIMIT_NOFILE; raise the limit to serve more"
            );
        }
        Ok((
            ServeSettings {
                max_connections: http,
                header_read_timeout: self.header_read_timeout,
                body_read_timeout: self.body_read_timeout,
                write_timeout: self.write_timeout,
            },
            RespBounds {
                max_clients: if resp == 0 {
                    self.resp_max_clients
                } else {
                    resp_capped
                },
                request_timeout: self.resp_request_timeout,
                idle_timeout: self.resp_idle_timeout,
                write_timeout: self.write_timeout,
            },
        ))
    }
}

/// The HTTP and RESP caps (`resp` 0: no RESP listener) that fit in `file_limit` descriptors
/// beside [`FD_RESERVE`] and [`PROBE_RESERVE`]: shared in proportion to what was asked when
/// both do not fit, each at least 1.
fn connection_caps(http: usize, resp: usize, file_limit: u64) -> (usize, usize) {
    let room = file_limit.saturating_sub(FD_RESERVE + PROBE_RESERVE as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let asked = http.saturating_add(resp);
    if asked <= room {
        return (http, resp);
    }
    let http_share = (room as u128 * http as u128 / asked as u128) as usize;
    let resp_share = room - http_share;
    (
        http_share.max(1),
        if resp == 0 { 0 } else { resp_share.max(1) },
    )
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as Redis does at start, and returns the
/// soft limit in force (`u64::MAX` when unlimited or unreadable).
fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

fn notify_flags(text: &str) -> Result<NotifyFlags, String> {
    NotifyFlags::parse(text.as_bytes()).map_err(|_| {
        format!(
            "{text:?} has a letter that is not a notify-keyspace-events class; use letters of \
             'Ag$lshzxeKEtmdn' (e.g. \"Ex\" for expired keys)"
        )
    })
}

/// The hostname, lowercased (Kubernetes sets it to the pod name): the kernel's, else
/// `$HOSTNAME`.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// The memory limit of this process's cgroup: v2 `memory.max`, else v1
/// `memory/memory.limit_in_bytes`; `None` when unlimited or not in a limited cgroup.
pub fn cgroup_memory_limit(root: &Path) -> Option<u64> {
    [
        root.join("memory.max"),
        root.join("memory/memory.limit_in_bytes"),
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .find_map(|text| {
        let text = text.trim();
        (text != "max").then(|| text.parse::<u64>().ok()).flatten()
    })
    .filter(|limit| *limit < UNLIMITED_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("cache-node").chain(args.iter().copied()))
            .expect("parses")
    }

    fn empty_cgroup() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    /// Parses and validates `args` with `cgroup` as the cgroup root; either failure as text.
    fn validate_in(cgroup: &tempfile::TempDir, args: &[&str]) -> Result<Settings, String> {
        Config::try_parse_from(std::iter::once("cache-node").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.validate_with_cgroup_root(cgroup.path())
                    .map_err(|e| e.to_string())
            })
    }

    #[test]
    fn defaults_are_a_local_memory_only_node_on_the_every_minute_schedule() {
        let cgroup = empty_cgroup();
        let settings = parse(&[])
            .validate_with_cgroup_root(cgroup.path())
            .expect("valid");
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(settings.store.schedule, Schedule::every_minute());
        assert_eq!(settings.store.capacity_bytes, u64::MAX);
        assert_eq!(settings.capacity_source, CapacitySource::Unlimited);
        assert_eq!(settings.store.eviction_policy, EvictionPolicy::Clock);
        assert_eq!(settings.limits, Limits::default());
        assert_eq!(settings.log_format, LogFormat::Human);
        assert_eq!(settings.resp_listen, None, "RESP is off unless asked for");
        assert!(!settings.resp_allow_flush);
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let cgroup = empty_cgroup();
        let settings = parse(&[
            "--listen=0.0.0.0:9000",
            "--schedule=*/5 * * * *",
            "--time-zone=Europe/Berlin",
            "--default-ttl=15m",
            "--max-ttl=2h",
            "--max-key-bytes=256",
            "--max-value-bytes=4MiB",
            "--max-memory=1GiB",
            "--eviction-policy=noeviction",
            "--log-format=json",
            "--resp-listen=0.0.0.0:6379",
            "--resp-allow-flush",
            "--resp-notify-keyspace-events=Ex",
        ])
        .validate_with_cgroup_root(cgroup.path())
        .expect("valid");
        assert_eq!(
            settings.resp_listen,
            Some("0.0.0.0:6379".parse().expect("addr"))
        );
        assert!(settings.resp_allow_flush);
        assert_eq!(settings.resp_notify.render(), "xE");
        assert_eq!(settings.store.schedule.time_zone(), "Europe/Berlin");
        assert_eq!(settings.limits.default_ttl, Some(Duration::from_secs(900)));
        assert_eq!(settings.limits.max_value_bytes, 4 << 20);
        assert_eq!(settings.store.capacity_bytes, 1 << 30);
        assert_eq!(settings.store.eviction_policy, EvictionPolicy::NoEviction);
        let refused = |args: &[&str]| {
            parse(args)
                .validate_with_cgroup_root(cgroup.path())
                .is_err()
        };
        assert!(refused(&["--schedule=61 * * * *"]));
        assert!(refused(&["--time-zone=Mars/Olympus"]));
        assert!(refused(&["--default-ttl=3h", "--max-ttl=2h"]));
        assert!(refused(&["--max-key-bytes=0"]));
        assert!(refused(&["--max-memory=0"]));
        assert!(Config::try_parse_from(["cache-node", "--max-memory=lots"]).is_err());
        assert!(Config::try_parse_from(["cache-node", "--eviction-policy=random"]).is_err());
        assert!(Config::try_parse_from(["cache-node", "--resp-listen=localhost"]).is_err());
        let error = Config::try_parse_from(["cache-node", "--resp-notify-keyspace-events=Eq"])
            .expect_err("q is no class");
        assert!(error.to_string().contains("'Ag$lshzxeKEtmdn'"), "{error}");
    }

    #[test]
    fn replication_is_on_with_peers_or_a_peers_service() {
        let cgroup = empty_cgroup();
        let validate = |args: &[&str]| validate_in(&cgroup, args);
        assert!(validate(&[]).expect("valid").replication.is_none());
        let settings = validate(&[
            "--peers=127.0.0.1:1,127.0.0.1:2",
            "--ack=quorum",
            "--ack-timeout=1s",
            "--node-id=cache-1",
        ])
        .expect("valid");
        let replication = settings.replication.expect("on");
        assert_eq!(
            replication.peers,
            PeerSource::Static(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()])
        );
        assert_eq!(replication.settings.default_ack, AckLevel::Quorum);
        assert_eq!(replication.settings.ack_timeout, Duration::from_secs(1));
        assert_eq!(
            settings.node_tag,
            ObjectName::new("cache-1").expect("valid").tag()
        );
        let service = validate(&["--peers-service=demo-peers", "--ack=all"]).expect("valid");
        assert_eq!(
            service.replication.expect("on").peers,
            PeerSource::Service("demo-peers".into())
        );
        assert!(validate(&["--peers=a:1", "--peers-service=s"]).is_err());
        let file = validate(&["--peers-file=peers.txt"]).expect("valid");
        assert_eq!(
            file.replication.expect("on").peers,
            PeerSource::File("peers.txt".into())
        );
        for other in ["--peers=a:1", "--peers-service=s"] {
            let error = Config::try_parse_from(["cache-node", "--peers-file=peers.txt", other])
                .expect_err("one source of peers");
            assert!(
                error.to_string().contains("cannot be used with"),
                "{other}: {error}"
            );
        }
        assert!(validate(&["--peers=a:1", "--ack=most"]).is_err());
        assert!(validate(&["--peers=a:1", "--replication-queue=0"]).is_err());
    }

    #[test]
    fn peers_have_a_token_of_their_own_never_the_clients() {
        let cgroup = empty_cgroup();
        let validate = |args: &[&str]| validate_in(&cgroup, args);
        let peers = "--peers=127.0.0.1:1,127.0.0.1:2";
        let credential = |args: &[&str]| {
            validate(args)
                .expect("valid")
                .replication
                .expect("on")
                .settings
                .peer_credential
        };
        assert_eq!(credential(&[peers]), None, "no authentication at all");
        let rotated = credential(&[
            peers,
            "--auth-token=client",
            "--peer-token=new",
            "--peer-token-previous=old",
        ])
        .expect("a credential");
        assert_eq!(
            rotated.header_values(),
            [
                AuthToken::new("new").expect("t").header_value(),
                AuthToken::new("old").expect("t").header_value()
            ]
        );
        let refused = |args: &[&str]| validate(args).expect_err("refused");
        assert!(
            refused(&[peers, "--auth-token=client"]).contains("--peer-token is required"),
            "the client token alone must not guard /internal"
        );
        assert!(
            refused(&[peers, "--auth-token=same", "--peer-token=same"]).contains("must differ")
        );
        assert!(
            refused(&[
                peers,
                "--auth-token=same",
                "--peer-token=other",
                "--peer-token-previous=same"
            ])
            .contains("--peer-token-previous must differ")
        );
        assert!(refused(&[peers, "--peer-token-previous=old"]).contains("needs --peer-token"));
        let never_rotated = credential(&[peers, "--peer-token=t", "--peer-token-previous=t"]);
        assert_eq!(
            never_rotated.expect("a credential").header_values().len(),
            1
        );
        assert!(refused(&[peers, "--peer-token= "]).contains("invalid --peer-token"));
    }

    #[test]
    fn persistence_is_on_with_a_data_dir_and_names_are_checked() {
        let cgroup = empty_cgroup();
        let settings = |args: &[&str]| parse(args).validate_with_cgroup_root(cgroup.path());
        assert_eq!(settings(&[]).expect("valid").persistence, None);
        let persistence = settings(&[
            "--data-dir=/data",
            "--node-id=cache-0",
            "--namespace=team-a",
            "--cluster=sessions",
            "--fsync=always",
        ])
        .expect("valid")
        .persistence
        .expect("on");
        assert_eq!(persistence.node.as_str(), "cache-0");
        assert_eq!(persistence.fsync, FsyncPolicy::Always);
        assert_eq!(
            persistence.root().path(),
            Path::new("/data/team-a/sessions")
        );
        assert_eq!(
            settings(&["--data-dir=/data", "--node-id=x"])
                .expect("valid")
                .persistence
                .expect("on")
                .fsync,
            FsyncPolicy::Everysec
        );
        for bad in [
            ["--node-id=../x", "--cluster=ok"],
            ["--node-id=A", "--cluster=ok"],
            ["--node-id=ok", "--namespace=a/b"],
            ["--node-id=ok", "--cluster=.."],
        ] {
            let args = ["--data-dir=/data", bad[0], bad[1]];
            assert!(settings(&args).is_err(), "{bad:?} accepted");
        }
        assert!(Config::try_parse_from(["cache-node", "--fsync=sometimes"]).is_err());
    }

    #[test]
    fn connection_caps_fit_the_file_limit_and_memory_bounds_fit_the_budget() {
        // Room for both: as asked.
        assert_eq!(connection_caps(10_000, 10_000, 1 << 20), (10_000, 10_000));
        // RLIMIT_NOFILE 128: 56 descriptors beside the reserves, shared in proportion.
        assert_eq!(connection_caps(10_000, 0, 128), (56, 0));
        assert_eq!(connection_caps(10_000, 10_000, 128), (28, 28));
        assert_eq!(connection_caps(10, 10, 16), (1, 1), "never zero");

        let cgroup = empty_cgroup();
        let settings = |args: &[&str]| {
            parse(args)
                .validate_with_cgroup_root(cgroup.path())
                .expect("valid")
        };
        let limits = settings(&["--max-memory=64MiB"]).limits;
        assert_eq!(
            limits.max_inflight_bytes,
            16 << 20,
            "a quarter of 64 MiB, and the largest body"
        );
        assert_eq!(
            limits.max_response_bytes,
            16 << 20,
            "never above the budget"
        );
        let limits = settings(&["--max-memory=4GiB"]).limits;
        assert_eq!(limits.max_inflight_bytes, 1 << 30);
        assert_eq!(limits.max_response_bytes, 64 << 20);
        let limits = settings(&["--max-inflight-bytes=1MiB"]).limits;
        assert_eq!(limits.max_inflight_bytes, 16 << 20, "a batch body must fit");
        assert_eq!(settings(&[]).limits.max_inflight_bytes, 1 << 30);
        let refused = |args: &[&str]| {
            parse(args)
                .validate_with_cgroup_root(cgroup.path())
                .is_err()
        };
        assert!(refused(&["--max-connections=0"]));
        assert!(refused(&["--resp-max-clients=0"]));
        assert!(refused(&["--header-read-timeout=0s"]));
        assert!(refused(&["--resp-idle-timeout=0s"]));
        assert!(refused(&["--max-response-bytes=0"]));
    }

    #[test]
    fn capacity_defaults_to_a_share_of_the_cgroup_limit() {
        let v2 = empty_cgroup();
        std::fs::write(v2.path().join("memory.max"), "1073741824\n").expect("write");
        let settings = parse(&[])
            .validate_with_cgroup_root(v2.path())
            .expect("valid");
        assert_eq!(
            settings.capacity_source,
            CapacitySource::Cgroup { limit: 1 << 30 }
        );
        assert_eq!(settings.store.capacity_bytes, (1 << 30) / 100 * 75);

        let unlimited = empty_cgroup();
        std::fs::write(unlimited.path().join("memory.max"), "max\n").expect("write");
        assert_eq!(cgroup_memory_limit(unlimited.path()), None);

        let v1 = empty_cgroup();
        std::fs::create_dir(v1.path().join("memory")).expect("mkdir");
        let path = v1.path().join("memory/memory.limit_in_bytes");
        std::fs::write(&path, "9223372036854771712\n").expect("write");
        assert_eq!(cgroup_memory_limit(v1.path()), None);
        std::fs::write(&path, "536870912\n").expect("write");
        assert_eq!(cgroup_memory_limit(v1.path()), Some(512 << 20));
    }
}
