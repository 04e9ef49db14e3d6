//! Contract 5: the `CacheCluster` resource (`tidecache.io/v1alpha1`).
//!
//! These types are the single source of the CRD in `crds/` (written by the `crdgen` binary). Every
//! field has a doc comment because it becomes the field's description in `kubectl explain`;
//! defaults live in the schema so that the API server fills them in and a minimal resource
//! (`spec: {}`) is complete once stored. Validation that the API server can do itself (ranges,
//! enums, patterns, CEL rules across fields and on updates) is in the schema, so a bad resource is
//! refused at `kubectl apply`; what only Rust can check (the cron expression and time zone, by the
//! shared contract crate) is checked by [`crate::validate`] and reported in status. The enums
//! that reach cache-node map onto the contract's flag values here (`From` impls), the one place
//! where the spec's names meet the binaries' spellings.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidecache_contract::args;

use crate::build::{HTTP_PORT, HTTPS_PORT};

/// The cache-node image used when `spec.image` is not set.
pub const DEFAULT_IMAGE: &str = "ghcr.io/tidecache/cache-node:0.1.0";
/// The janitor image used when `spec.janitor.image` is not set.
pub const DEFAULT_JANITOR_IMAGE: &str = "ghcr.io/tidecache/janitor:0.1.0";

/// A byte count as the operator accepts it: a whole number of bytes with an optional decimal or
/// binary unit (a subset of Kubernetes quantities without fractions or exponents).
pub const BYTES_PATTERN: &str = r"^[1-9][0-9]*(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";

/// The desired state of a tidecache cluster: cache pods spread over zones, the Services that
/// reach them, the shared volume entries are persisted on and the janitor that sweeps it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[expect(
    clippy::duplicated_attributes,
    reason = "several printer columns share a type, which clippy mistakes for repeated attributes"
)]
#[kube(
    group = "tidecache.io",
    version = "v1alpha1",
    kind = "CacheCluster",
    namespaced,
    status = "CacheClusterStatus",
    derive = "PartialEq",
    shortname = "tcc",
    category = "tidecache",
    doc = "A tidecache cluster: zone-spread cache pods sharing a volume on which entries are \
           persisted by expiry time, swept by a janitor CronJob on the expiry schedule.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of cache pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Cache pods that are ready"
    ),
    printcolumn(
        name = "Zones",
        type_ = "integer",
        json_path = ".status.readyZones",
        description = "Zones with at least one ready cache pod"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.replication.mode",
        description = "Full (every pod holds every key) or Partitioned (R owners per key)"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".status.schedule",
        description = "The expiry schedule in force"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.state",
        description = "Ready, or the reason the cluster is not"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.tls) || self.tls.redisPort == 0 || self.tls.redisPort != self.service.redisPort"
).message(
    "tls.redisPort must differ from service.redisPort: the pods serve plain RESP on one and \
     RESP over TLS on the other"
).field_path(".tls.redisPort"))]
#[x_kube(validation = Rule::new(format!(
    "!has(self.tls) || self.service.redisPort != {HTTPS_PORT}"
)).message(Message::Message(format!(
    "service.redisPort {HTTPS_PORT} is the cache pods' HTTPS port when tls is set; choose \
     another port"
))).field_path(".service.redisPort"))]
#[x_kube(validation = Rule::new(
    "self.persistence.accessMode != 'ReadWriteOncePod' || self.replicas <= 1"
).message(
    "persistence.accessMode ReadWriteOncePod lets only one pod mount the shared volume; \
     use ReadWriteMany or set replicas to 0 or 1"
).field_path(".persistence.accessMode"))]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterSpec {
    /// Number of cache pods. Each pod serves every key; writes are replicated between them
    /// (in Partitioned mode to the key's owners only, so capacity grows with the pods).
    /// Scalable through the scale subresource (`kubectl scale`, HorizontalPodAutoscaler).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Container image of the cache node.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When the kubelet pulls the cache-node and janitor images.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// CPU and memory requests and limits of each cache container. Size the memory limit above
    /// `memory.capacity`: the capacity counts stored entries, not the process's own overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// How much each pod keeps in memory and what happens when it is full.
    #[serde(default)]
    pub memory: MemorySpec,

    /// When entries expire: the schedule whose fire times are the expiry buckets, shared by the
    /// cache pods (which evict expired buckets from memory) and the janitor (which deletes them
    /// from the shared volume).
    #[serde(default)]
    pub expiry: ExpirySpec,

    /// The shared volume on which entries are persisted.
    #[serde(default)]
    pub persistence: PersistenceSpec,

    /// How writes are replicated between the cache pods.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// How cache pods are spread over zones and nodes.
    #[serde(default)]
    pub topology: TopologySpec,

    /// The janitor CronJob that deletes expired buckets from the shared volume.
    #[serde(default)]
    pub janitor: JanitorSpec,

    /// Optional bearer-token authentication of clients. Without it the cache accepts every
    /// client that can reach the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Optional TLS for clients, on HTTPS and Redis-over-TLS ports beside the plain ones (which
    /// then serve the cluster's own pods, probes and metrics); the client Service then offers
    /// the TLS ports only. Without it clients connect in plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// The client Service applications connect to, and the Redis-protocol port of the pods
    /// and both Services.
    #[serde(default)]
    pub service: ServiceSpec,

    /// The PodDisruptionBudget that limits voluntary evictions of cache pods.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// Who may connect to the cache pods: the NetworkPolicy the operator maintains for them.
    #[serde(default)]
    pub network: NetworkSpec,

    /// Optional database behind the cache (docs/backend.md): misses load its rows, writes
    /// reach it as `mode` says, and its rows changed by other applications refresh the
    /// cache. Without it the cache holds only what clients write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendSpec>,
}

fn default_replicas() -> i32 {
    3
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}

/// When the kubelet pulls an image (the Kubernetes `imagePullPolicy`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The value of the container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Memory capacity and limits of each cache pod.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemorySpec {
    /// Bytes of entries each pod keeps in memory, as a whole number with an optional unit
    /// (k, M, G, T or Ki, Mi, Gi, Ti), e.g. 256Mi or 2Gi. When it is reached the eviction policy
    /// decides.
    #[serde(default = "default_capacity")]
    #[schemars(regex(pattern = BYTES_PATTERN))]
    pub capacity: String,

    /// What a full pod does: ApproximateLRU evicts expired and then least recently read entries,
    /// NoEviction refuses new writes with HTTP 507 until entries expire.
    #[serde(default)]
    pub eviction_policy: EvictionPolicy,

    /// Largest accepted key, in bytes; longer keys are refused with a clear error.
    #[serde(default = "default_max_key_bytes")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_key_bytes: i64,

    /// Largest accepted value, in bytes; larger values are refused with a clear error.
    #[serde(default = "default_max_value_bytes")]
    #[schemars(range(min = 1, max = 536870912))]
    pub max_value_bytes: i64,
}

impl Default for MemorySpec {
    fn default() -> Self {
        MemorySpec {
            capacity: default_capacity(),
            eviction_policy: EvictionPolicy::default(),
            max_key_bytes: default_max_key_bytes(),
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

fn default_capacity() -> String {
    "256Mi".to_string()
}

fn default_max_key_bytes() -> i64 {
    1024
}

fn default_max_value_bytes() -> i64 {
    1024 * 1024
}

/// What a cache pod does when its memory capacity is reached.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Evict expired entries first, then entries not read recently (CLOCK, an approximation of
    /// least-recently-used).
    #[default]
    ApproximateLRU,
    /// Evict nothing; refuse writes until expiry frees memory.
    NoEviction,
}

/// The spec's names are for admins; cache-node's flag says how: CLOCK approximates LRU.
impl From<EvictionPolicy> for args::EvictionPolicy {
    fn from(policy: EvictionPolicy) -> args::EvictionPolicy {
        match policy {
            EvictionPolicy::ApproximateLRU => args::EvictionPolicy::Clock,
            EvictionPolicy::NoEviction => args::EvictionPolicy::NoEviction,
        }
    }
}

/// The expiry schedule and entry lifetimes (contract 1).
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("duration(self.defaultTTL) <= duration(self.maxTTL)")
    .message("expiry.defaultTTL must not be longer than expiry.maxTTL")
    .field_path(".defaultTTL"))]
#[serde(rename_all = "camelCase")]
pub struct ExpirySpec {
    /// Cron expression (5 fields: minute hour day-of-month month day-of-week, or a macro such as
    /// @hourly) whose fire times are the expiry buckets: an entry expiring at t is evicted at the
    /// first fire time at or after t. The janitor CronJob runs on exactly this schedule.
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 1, max = 256))]
    pub schedule: String,

    /// IANA time zone in which the schedule is read, e.g. Europe/Berlin. UTC when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,

    /// Lifetime of an entry written without a TTL, as a duration such as 90s, 15m or 2h.
    #[serde(rename = "defaultTTL", default = "default_ttl")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*(s|m|h)$"))]
    pub default_ttl: String,

    /// Longest lifetime a client may ask for, as a duration such as 90s, 15m or 2h. Longer
    /// requests are refused.
    #[serde(rename = "maxTTL", default = "default_max_ttl")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*(s|m|h)$"))]
    pub max_ttl: String,

    /// How long after a bucket's fire time the janitor waits before deleting it from the volume,
    /// to allow for clock skew between nodes. A duration such as 60s.
    #[serde(default = "default_grace")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub grace: String,
}

impl Default for ExpirySpec {
    fn default() -> Self {
        ExpirySpec {
            schedule: default_schedule(),
            time_zone: None,
            default_ttl: default_ttl(),
            max_ttl: default_max_ttl(),
            grace: default_grace(),
        }
    }
}

fn default_schedule() -> String {
    "* * * * *".to_string()
}

fn default_ttl() -> String {
    "1h".to_string()
}

fn default_max_ttl() -> String {
    "24h".to_string()
}

fn default_grace() -> String {
    "60s".to_string()
}

/// The shared volume (contract 2): one PersistentVolumeClaim mounted by every cache pod and the
/// janitor.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new(
    "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0"
).message("persistence.size cannot shrink: a volume can only be expanded")
    .field_path(".size"))]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) && \
     (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message("persistence.storageClassName is immutable; create a new CacheCluster to change it")
    .field_path(".storageClassName"))]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// StorageClass of the volume; the cluster's default class when empty. Immutable: the data
    /// cannot move between classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Size of the volume, as a whole number with an optional unit, e.g. 10Gi.
    #[serde(default = "default_size")]
    #[schemars(regex(pattern = BYTES_PATTERN))]
    pub size: String,

    /// Access mode of the volume. ReadWriteMany (the default) lets pods on any node share it;
    /// ReadWriteOnce only works while all pods run on one node; ReadWriteOncePod allows a
    /// single pod. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("persistence.accessMode is immutable; create a new CacheCluster to change it"))]
    pub access_mode: AccessMode,

    /// When a write is durable: Always fsyncs before acknowledging, EverySec fsyncs once a
    /// second (up to a second of acknowledged writes can be lost on a crash), Never leaves it to
    /// the operating system.
    #[serde(default)]
    pub fsync: FsyncPolicy,

    /// What happens to the volume when the CacheCluster is deleted: Retain keeps it (and its
    /// data) for a later cluster of the same name, Delete removes it with the cluster.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        PersistenceSpec {
            storage_class_name: None,
            size: default_size(),
            access_mode: AccessMode::default(),
            fsync: FsyncPolicy::default(),
            reclaim_policy: ReclaimPolicy::default(),
        }
    }
}

fn default_size() -> String {
    "10Gi".to_string()
}

/// Access mode of the shared volume.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessMode {
    /// Read-write by pods on many nodes.
    #[default]
    ReadWriteMany,
    /// Read-write by pods on one node.
    ReadWriteOnce,
    /// Read-write by a single pod.
    ReadWriteOncePod,
}

impl AccessMode {
    /// The PersistentVolumeClaim access mode.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// When cache-node fsyncs its segment files.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before every write is acknowledged.
    Always,
    /// Once a second.
    #[default]
    EverySec,
    /// Never explicitly.
    Never,
}

impl From<FsyncPolicy> for args::FsyncPolicy {
    fn from(policy: FsyncPolicy) -> args::FsyncPolicy {
        match policy {
            FsyncPolicy::Always => args::FsyncPolicy::Always,
            FsyncPolicy::EverySec => args::FsyncPolicy::Everysec,
            FsyncPolicy::Never => args::FsyncPolicy::Never,
        }
    }
}

/// Whether the shared volume outlives its CacheCluster.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimPolicy {
    /// Keep the volume when the CacheCluster is deleted.
    #[default]
    Retain,
    /// Delete the volume with the CacheCluster.
    Delete,
}

/// Replication of writes between cache pods (contract 4).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// How many pods must acknowledge a write before the client gets its answer, unless the
    /// client asks for another level: One, Quorum (a majority) or All. In Partitioned mode
    /// they are counted among the key's owners.
    #[serde(default)]
    pub write_acknowledgement: WriteAcknowledgement,

    /// Which pods hold a key: Full (every pod, so a cluster holds at most one pod's memory)
    /// or Partitioned (replicationFactor owners per key, in distinct zones where there are
    /// enough zones, so capacity grows with the pods). Partitioned also turns on Redis Cluster
    /// redirects for cluster-aware clients.
    #[serde(default)]
    pub mode: ReplicationMode,

    /// Owners of each key in Partitioned mode, 1 to 5; ignored in Full mode. A cluster with
    /// fewer pods than this (scaled down for a while) keeps working with fewer owners, and its
    /// status says so (Ready=False, reason UnderReplicated).
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 5))]
    pub replication_factor: i32,
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        ReplicationSpec {
            write_acknowledgement: WriteAcknowledgement::default(),
            mode: ReplicationMode::default(),
            replication_factor: default_replication_factor(),
        }
    }
}

fn default_replication_factor() -> i32 {
    2
}

/// Which cache pods hold a key.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// Every pod holds every key and can answer any read from its own memory.
    #[default]
    Full,
    /// Each key has replicationFactor owners, chosen by its Redis Cluster hash slot; any pod
    /// serves any request, forwarding to an owner.
    Partitioned,
}

/// How many replicas acknowledge a write.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteAcknowledgement {
    /// The pod that received the write.
    One,
    /// A majority of the pods.
    #[default]
    Quorum,
    /// Every pod.
    All,
}

impl From<WriteAcknowledgement> for args::AckLevel {
    fn from(level: WriteAcknowledgement) -> args::AckLevel {
        match level {
            WriteAcknowledgement::One => args::AckLevel::One,
            WriteAcknowledgement::Quorum => args::AckLevel::Quorum,
            WriteAcknowledgement::All => args::AckLevel::All,
        }
    }
}

/// Spreading of cache pods over failure domains.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpec {
    /// Node label that names a node's zone.
    #[serde(default = "default_zone_key")]
    #[schemars(length(min = 1, max = 316))]
    pub zone_key: String,

    /// Largest allowed difference in the number of cache pods between two zones.
    #[serde(default = "default_max_skew")]
    #[schemars(range(min = 1, max = 100))]
    pub max_skew: i32,

    /// What the scheduler does when a pod cannot be placed without exceeding maxSkew:
    /// DoNotSchedule keeps it pending, ScheduleAnyway places it as evenly as it can.
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

impl Default for TopologySpec {
    fn default() -> Self {
        TopologySpec {
            zone_key: default_zone_key(),
            max_skew: default_max_skew(),
            when_unsatisfiable: WhenUnsatisfiable::default(),
        }
    }
}

fn default_zone_key() -> String {
    "topology.kubernetes.io/zone".to_string()
}

fn default_max_skew() -> i32 {
    1
}

/// The scheduler's behaviour when a spread constraint cannot be met.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenUnsatisfiable {
    /// Keep the pod pending.
    #[default]
    DoNotSchedule,
    /// Schedule it anyway, preferring less skew.
    ScheduleAnyway,
}

impl WhenUnsatisfiable {
    /// The value of the constraint's `whenUnsatisfiable`.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenUnsatisfiable::DoNotSchedule => "DoNotSchedule",
            WhenUnsatisfiable::ScheduleAnyway => "ScheduleAnyway",
        }
    }
}

/// The janitor CronJob.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JanitorSpec {
    /// Container image of the janitor.
    #[serde(default = "default_janitor_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// CPU and memory requests and limits of the janitor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Stops new janitor runs (expired buckets then stay on the volume; reads still never
    /// serve them).
    #[serde(default)]
    pub suspend: bool,

    /// Seconds after a missed fire time within which a run may still start.
    #[serde(default = "default_starting_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub starting_deadline_seconds: i64,

    /// Finished successful janitor Jobs to keep.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_jobs_history_limit: i32,

    /// Finished failed janitor Jobs to keep.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_jobs_history_limit: i32,
}

impl Default for JanitorSpec {
    fn default() -> Self {
        JanitorSpec {
            image: default_janitor_image(),
            resources: None,
            suspend: false,
            starting_deadline_seconds: default_starting_deadline(),
            successful_jobs_history_limit: default_successful_history(),
            failed_jobs_history_limit: default_failed_history(),
        }
    }
}

fn default_janitor_image() -> String {
    DEFAULT_JANITOR_IMAGE.to_string()
}

fn default_starting_deadline() -> i64 {
    60
}

fn default_successful_history() -> i32 {
    3
}

fn default_failed_history() -> i32 {
    1
}

/// The database behind the cache.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// A PostgreSQL table (the only kind so far).
    pub postgres: PostgresBackendSpec,
}

/// A PostgreSQL table behind the cache: one row per key.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackendSpec {
    /// The Secret key holding the connection as a libpq URL
    /// (`postgresql://user:password@host:5432/database`). The role needs SELECT on the table,
    /// INSERT, UPDATE and DELETE for WriteThrough and WriteBehind, and to own the table for the
    /// cache to install its change trigger (otherwise an administrator installs it, see
    /// docs/backend.md).
    pub connection_secret: SecretKeySpec,

    /// Optional Secret key holding the PEM CA certificates the database's TLS certificate is
    /// verified with; with it the pods connect over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeySpec>,

    /// The table, optionally schema-qualified (`orders`, `shop.orders`).
    #[schemars(length(min = 1, max = 127))]
    pub table: String,

    /// The key column: text, varchar or bytea, with a primary key or unique index.
    #[serde(default = "default_key_column")]
    #[schemars(length(min = 1, max = 63))]
    pub key_column: String,

    /// The value column: bytea, text or jsonb.
    #[serde(default = "default_value_column")]
    #[schemars(length(min = 1, max = 63))]
    pub value_column: String,

    /// Optional timestamptz column: a row's cached entry expires then, and a write's expiry
    /// is stored in it. Without it rows are cached for expiry.defaultTTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub expiry_column: Option<String>,

    /// How writes reach the table: ReadThrough (they do not), WriteThrough (committed before
    /// the write is acknowledged) or WriteBehind (queued on the pod's volume, flushed after).
    #[serde(default)]
    pub mode: BackendMode,
}

fn default_key_column() -> String {
    "key".to_string()
}

fn default_value_column() -> String {
    "value".to_string()
}

/// A key of a Secret in the CacheCluster's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySpec {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The key in it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How writes reach the database behind the cache.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendMode {
    /// Misses load rows; writes stay in the cache.
    #[default]
    ReadThrough,
    /// A write is committed to the table before it is acknowledged; a refusal of the
    /// database is the client's refusal.
    WriteThrough,
    /// A write is acknowledged once in the pod's queue on disk and flushed to the table in
    /// batches after.
    WriteBehind,
}

impl From<BackendMode> for args::BackendMode {
    fn from(mode: BackendMode) -> args::BackendMode {
        match mode {
            BackendMode::ReadThrough => args::BackendMode::ReadThrough,
            BackendMode::WriteThrough => args::BackendMode::WriteThrough,
            BackendMode::WriteBehind => args::BackendMode::WriteBehind,
        }
    }
}

/// Bearer-token authentication of clients.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Name of a Secret in the CacheCluster's namespace that holds the token.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,

    /// Key in the Secret whose value is the token.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_string()
}

/// TLS for clients, from a Secret of type `kubernetes.io/tls` as cert-manager writes it.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new(format!(
    "self.redisPort != {HTTP_PORT} && self.redisPort != {HTTPS_PORT}"
))
    .message(Message::Message(format!(
        "tls.redisPort must differ from the cache pods' HTTP ({HTTP_PORT}) and HTTPS \
         ({HTTPS_PORT}) ports"
    )))
    .field_path(".redisPort"))]
#[x_kube(validation = Rule::new("self.redisPort != self.port")
    .message("tls.redisPort must differ from tls.port: the client Service serves both")
    .field_path(".redisPort"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Name of a Secret in the CacheCluster's namespace holding `tls.crt` (the certificate
    /// chain, leaf first) and `tls.key`, and `ca.crt` when clientCertificates is Require. The
    /// pods read it again when it changes (cert-manager's renewals), without a restart.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,

    /// Whether clients must present a certificate issued by a CA of the Secret's `ca.crt`:
    /// Ignore (the default) or Require.
    #[serde(default)]
    pub client_certificates: ClientCertificates,

    /// Port on which the client Service accepts HTTPS (forwarded to the pods' port named
    /// https, 8443).
    #[serde(default = "default_https_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Port on which every cache pod, the client Service and the peers Service accept Redis
    /// clients over TLS, as the port named rediss. 0: no Redis protocol over TLS.
    #[serde(default = "default_rediss_port")]
    #[schemars(range(min = 0, max = 65535))]
    pub redis_port: i32,
}

fn default_https_port() -> i32 {
    i32::from(HTTPS_PORT)
}

fn default_rediss_port() -> i32 {
    6380
}

/// Whether TLS clients must present a certificate.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCertificates {
    /// Clients present none (any they offer is not asked for).
    #[default]
    Ignore,
    /// Every TLS client must present a certificate that chains to the Secret's `ca.crt`;
    /// others are refused in the handshake.
    Require,
}

/// The client Service, and the Redis-protocol port of both Services and the pods.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("self.redisPort != self.port")
    .message("service.redisPort must differ from service.port: the client Service serves both")
    .field_path(".redisPort"))]
#[x_kube(validation = Rule::new(format!("self.redisPort != {HTTP_PORT}"))
    .message(Message::Message(format!(
        "service.redisPort {HTTP_PORT} is the cache pods' HTTP port; choose another port"
    )))
    .field_path(".redisPort"))]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type: ClusterIP, NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Port on which the Service accepts HTTP clients.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Port on which every cache pod, the client Service and the peers Service accept Redis
    /// clients (RESP2, RESP3 after HELLO 3), as the port named redis. 0 switches the Redis
    /// protocol off: the pods do not listen for it and the Services have no redis port.
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 0, max = 65535))]
    pub redis_port: i32,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            type_: ServiceType::default(),
            port: default_service_port(),
            redis_port: default_redis_port(),
        }
    }
}

fn default_service_port() -> i32 {
    8080
}

fn default_redis_port() -> i32 {
    6379
}

/// How the client Service is exposed.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Service's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The PodDisruptionBudget.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))")
    .message("set at most one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable"))]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Whether a PodDisruptionBudget is created.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Pods (a number or a percentage such as 50%) that must stay available during voluntary
    /// disruptions. Mutually exclusive with maxUnavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,

    /// Pods (a number or a percentage) that may be unavailable during voluntary disruptions.
    /// Mutually exclusive with minAvailable; 1 when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec {
            enabled: true,
            min_available: None,
            max_unavailable: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The NetworkPolicy of the cache pods. It admits the cluster's own cache pods on every port
/// (peers replicate over the HTTP port), clients from the allowed sources on the client ports,
/// and scrapers from the allowed sources on the HTTP port (`/metrics`). It restricts ingress
/// only: the pods must reach DNS, the API server and each other.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Whether the operator creates the NetworkPolicy (an existing one is deleted when false).
    /// It takes effect only where the cluster's network plugin enforces NetworkPolicies.
    #[serde(default = "default_true")]
    pub policy: bool,

    /// Where clients may connect from, on the HTTP and Redis ports (on the TLS ports instead
    /// when TLS is on, the plain ones then serving the cluster's own pods only). The
    /// CacheCluster's own namespace when unset.
    #[serde(default)]
    pub clients: TrafficSources,

    /// Where Prometheus may scrape `/metrics` from, on the pods' HTTP port. The CacheCluster's
    /// own namespace when unset.
    #[serde(default)]
    pub metrics: TrafficSources,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            policy: true,
            clients: TrafficSources::default(),
            metrics: TrafficSources::default(),
        }
    }
}

/// The sources a rule of the NetworkPolicy admits: every source, or the pods of the named and
/// the selected namespaces; the pods of the CacheCluster's own namespace when none is set.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "!self.all || ((!has(self.namespaces) || size(self.namespaces) == 0) && \
     !has(self.namespaceSelector))"
).message(
    "all admits every source already; leave namespaces and namespaceSelector unset with it"
))]
#[serde(rename_all = "camelCase")]
pub struct TrafficSources {
    /// Every source, in the Kubernetes cluster or outside it (e.g. through a NodePort or
    /// LoadBalancer Service): the rule has no `from`.
    #[serde(default)]
    pub all: bool,

    /// Names of further namespaces whose pods are admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub namespaces: Vec<String>,

    /// Further namespaces by label, e.g. `matchLabels: {team: payments}`; `{}` selects every
    /// namespace (every pod of the cluster, but nothing outside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// The observed state of a CacheCluster, written only by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Cache pods that exist (from the StatefulSet).
    #[serde(default)]
    pub replicas: i32,

    /// Cache pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Number of zones with at least one ready cache pod.
    #[serde(default)]
    pub ready_zones: i32,

    /// Ready cache pods per zone, sorted by zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneStatus>,

    /// The expiry schedule in force, with its time zone, e.g. "*/5 * * * * (UTC)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,

    /// Label selector of the cache pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The janitor's most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub janitor: Option<JanitorStatus>,

    /// Where the partitions are, in Partitioned mode: owners per zone and how many partitions
    /// lack ready owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionStatus>,

    /// `Ready`, or why the cluster is not: the Ready condition's reason (`InvalidSpec`,
    /// `ReplicasNotReady`, ...), so that `kubectl get` shows it in one word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,

    /// Ready, Progressing and Degraded, following Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Ready cache pods in one zone.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    /// The zone (the value of the zone label of the pods' nodes; "unknown" when a node has none).
    pub zone: String,
    /// Ready cache pods in that zone.
    pub ready_replicas: i32,
}

/// The placement of a Partitioned cluster as its pods compute it: the same function of the
/// same membership (the pods' names and their nodes' zones). The key space is 16384 Redis
/// Cluster hash slots in partitions of 16 consecutive slots; each partition has
/// replicationFactor owners.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Owners per partition the spec asks for.
    pub replication_factor: i32,
    /// Partitions of the key space (each 16 hash slots).
    pub partitions: i32,
    /// Cache pods placement counts as members: those the peers Service's EndpointSlices
    /// list and do not mark terminating, i.e. every pod with an address that is neither
    /// finished nor being deleted, ready or not.
    pub members: i32,
    /// Partitions with fewer than replicationFactor ready owners: their keys have fewer
    /// copies than asked for until the missing owners are ready (or the cluster is scaled to
    /// at least replicationFactor pods).
    pub under_replicated: i32,
    /// Partitions moving to new owners after a membership change, summed over the pods:
    /// those a pod owns and is still receiving the data of (gaining), and those it no longer
    /// owns and keeps serving until every new owner holds them (kept). Every key is served
    /// meanwhile; 0 once the moves are done. Read from the pods themselves.
    #[serde(default)]
    pub moving: i32,
    /// Cache pods (members, and leaving ones handing their partitions over) the operator
    /// could not ask what they hold (starting, unreachable, or refusing its peer token):
    /// their moves are not counted in `moving`.
    #[serde(default)]
    pub unread_pods: i32,
    /// Members and owned partitions per zone, sorted by zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners_per_zone: Vec<ZoneOwnership>,
}

/// The partitions owned in one zone.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneOwnership {
    /// The zone (`topology.kubernetes.io/zone` of the pods' nodes, as their EndpointSlices
    /// report it; "unknown" when a node has none).
    pub zone: String,
    /// Members in that zone.
    pub pods: i32,
    /// Partitions with at least one owner in that zone.
    pub partitions: i32,
}

/// The janitor's most recent run, from its CronJob and Jobs.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JanitorStatus {
    /// When the janitor was last scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a janitor run last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Name of the most recent janitor Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// Outcome of the most recent janitor Job: Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
}

#[cfg(test)]
mod tests {
    //! The schema's CEL rules, evaluated client-side by kube's CEL validator on the generated
    //! CRD, so that each rule and its message is checked without an API server.

    use kube::CustomResourceExt;
    use kube::core::cel::{validate_cel, validate_cel_update};

    use super::*;
    use crate::fixtures;

    /// The messages of the rules `cluster` breaks (on update from `old` when given).
    fn broken_rules(cluster: &CacheCluster, old: Option<&CacheCluster>) -> Vec<String> {
        let result = match old {
            Some(old) => validate_cel_update(cluster, old),
            None => validate_cel(cluster),
        };
        match result {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|error| error.message.clone()).collect(),
        }
    }

    #[test]
    fn fixtures_pass_every_rule() {
        for fixture in ["minimal", "full", "no-pdb"] {
            let cluster = fixtures::load(fixture);
            assert_eq!(
                broken_rules(&cluster, None),
                Vec::<String>::new(),
                "{fixture}"
            );
            assert_eq!(broken_rules(&cluster, Some(&cluster)), Vec::<String>::new());
        }
    }

    #[test]
    fn default_ttl_must_not_exceed_max_ttl() {
        let mut cluster = fixtures::minimal();
        cluster.spec.expiry.default_ttl = "25h".into();
        assert_eq!(
            broken_rules(&cluster, None),
            ["expiry.defaultTTL must not be longer than expiry.maxTTL"]
        );
        cluster.spec.expiry.default_ttl = "1440m".into();
        assert!(broken_rules(&cluster, None).is_empty());
    }

    #[test]
    fn budget_takes_one_of_min_available_and_max_unavailable() {
        let mut cluster = fixtures::minimal();
        cluster.spec.pod_disruption_budget.min_available = Some(IntOrString::Int(2));
        cluster.spec.pod_disruption_budget.max_unavailable =
            Some(IntOrString::String("10%".into()));
        assert_eq!(
            broken_rules(&cluster, None),
            ["set at most one of podDisruptionBudget.minAvailable and \
                 podDisruptionBudget.maxUnavailable"]
        );
    }

    #[test]
    fn read_write_once_pod_allows_one_replica() {
        let mut cluster = fixtures::load("no-pdb");
        cluster.spec.replicas = 2;
        let broken = broken_rules(&cluster, None);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].starts_with("persistence.accessMode ReadWriteOncePod lets only one pod"));
    }

    #[test]
    fn the_redis_port_clashes_with_neither_http_port() {
        let mut cluster = fixtures::minimal();
        cluster.spec.service.redis_port = 0;
        assert!(broken_rules(&cluster, None).is_empty());
        cluster.spec.service.port = 6379;
        cluster.spec.service.redis_port = 6379;
        assert_eq!(
            broken_rules(&cluster, None),
            ["service.redisPort must differ from service.port: the client Service serves both"]
        );
        cluster.spec.service.port = 80;
        cluster.spec.service.redis_port = i32::from(HTTP_PORT);
        assert_eq!(
            broken_rules(&cluster, None),
            ["service.redisPort 8080 is the cache pods' HTTP port; choose another port"]
        );
    }

    #[test]
    fn the_tls_ports_clash_with_no_other_port() {
        let mut cluster = fixtures::minimal();
        let tls = |port, redis_port| TlsSpec {
            secret_name: "demo-tls".into(),
            client_certificates: ClientCertificates::Require,
            port,
            redis_port,
        };
        cluster.spec.tls = Some(tls(443, 6380));
        assert!(broken_rules(&cluster, None).is_empty());
        cluster.spec.tls = Some(tls(443, 0));
        cluster.spec.service.redis_port = 0;
        assert!(
            broken_rules(&cluster, None).is_empty(),
            "0 switches both off"
        );
        cluster.spec.service.redis_port = 6379;
        for (tls, service_redis_port, message) in [
            (
                tls(443, 6379),
                6379,
                "tls.redisPort must differ from service.redisPort: the pods serve plain RESP on \
                 one and RESP over TLS on the other",
            ),
            (
                tls(443, 8443),
                6379,
                "tls.redisPort must differ from the cache pods' HTTP (8080) and HTTPS (8443) ports",
            ),
            (
                tls(6380, 6380),
                6379,
                "tls.redisPort must differ from tls.port: the client Service serves both",
            ),
            (
                tls(443, 6380),
                8443,
                "service.redisPort 8443 is the cache pods' HTTPS port when tls is set; choose \
                 another port",
            ),
        ] {
            cluster.spec.tls = Some(tls);
            cluster.spec.service.redis_port = service_redis_port;
            assert_eq!(broken_rules(&cluster, None), [message]);
        }
    }

    #[test]
    fn all_sources_take_no_namespaces_besides() {
        let mut cluster = fixtures::minimal();
        cluster.spec.network.clients.all = true;
        assert!(broken_rules(&cluster, None).is_empty());
        cluster.spec.network.clients.namespaces = vec!["web".into()];
        let message =
            "all admits every source already; leave namespaces and namespaceSelector unset with it";
        assert_eq!(broken_rules(&cluster, None), [message]);
        let mut cluster = fixtures::minimal();
        cluster.spec.network.metrics.all = true;
        cluster.spec.network.metrics.namespace_selector = Some(LabelSelector::default());
        assert_eq!(broken_rules(&cluster, None), [message]);
    }

    #[test]
    fn volume_class_and_access_mode_are_immutable() {
        let old = fixtures::load("full");
        let mut changed = old.clone();
        changed.spec.persistence.storage_class_name = Some("ssd".into());
        assert_eq!(
            broken_rules(&changed, Some(&old)),
            ["persistence.storageClassName is immutable; create a new CacheCluster to change it"]
        );
        changed.spec.persistence.storage_class_name = None;
        assert_eq!(
            broken_rules(&changed, Some(&old)),
            ["persistence.storageClassName is immutable; create a new CacheCluster to change it"]
        );
        let mut changed = old.clone();
        changed.spec.persistence.access_mode = AccessMode::ReadWriteOnce;
        assert_eq!(
            broken_rules(&changed, Some(&old)),
            ["persistence.accessMode is immutable; create a new CacheCluster to change it"]
        );
        let mut grown = old.clone();
        grown.spec.persistence.size = "100Gi".into();
        assert!(broken_rules(&grown, Some(&old)).is_empty());
        let mut shrunk = old.clone();
        shrunk.spec.persistence.size = "50000M".into();
        assert_eq!(
            broken_rules(&shrunk, Some(&old)),
            ["persistence.size cannot shrink: a volume can only be expanded"]
        );
    }

    #[test]
    fn replication_defaults_to_full_with_two_owners_and_bounds_the_factor() {
        assert_eq!(
            fixtures::minimal().spec.replication,
            ReplicationSpec {
                write_acknowledgement: WriteAcknowledgement::Quorum,
                mode: ReplicationMode::Full,
                replication_factor: 2,
            }
        );
        let crd = serde_json::to_value(CacheCluster::crd()).expect("crd json");
        let version = &crd["spec"]["versions"][0];
        let replication = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["replication"];
        // The API server fills these in for `spec: {}` and for `replication: {}`.
        assert_eq!(
            replication["default"],
            serde_json::json!({"mode": "Full", "replicationFactor": 2,
                               "writeAcknowledgement": "Quorum"})
        );
        let mode = &replication["properties"]["mode"];
        assert_eq!(mode["enum"], serde_json::json!(["Full", "Partitioned"]));
        assert_eq!(mode["default"], "Full");
        let factor = &replication["properties"]["replicationFactor"];
        assert_eq!(
            (&factor["minimum"], &factor["maximum"], &factor["default"]),
            (
                &serde_json::json!(1.0),
                &serde_json::json!(5.0),
                &serde_json::json!(2)
            )
        );
        let mode_column = version["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns")
            .iter()
            .find(|column| column["name"] == "Mode")
            .expect("Mode column");
        assert_eq!(mode_column["jsonPath"], ".spec.replication.mode");
    }

    #[test]
    fn a_partitioned_cluster_may_have_fewer_pods_than_owners_per_key() {
        let mut cluster = fixtures::minimal();
        cluster.spec.replication.mode = ReplicationMode::Partitioned;
        cluster.spec.replication.replication_factor = 5;
        cluster.spec.replicas = 1;
        assert!(broken_rules(&cluster, None).is_empty());
    }

    #[test]
    fn samples_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/samples");
        let mut samples: Vec<String> = std::fs::read_dir(&dir)
            .expect("read samples")
            .map(|entry| entry.expect("sample entry").file_name())
            .filter_map(|name| name.into_string().ok())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        samples.sort();
        assert_eq!(
            samples,
            [
                "backend.yaml",
                "full.yaml",
                "minimal.yaml",
                "partitioned.yaml"
            ]
        );
        for sample in &samples {
            let text = std::fs::read_to_string(dir.join(sample)).expect("read sample");
            let mut cluster: CacheCluster = serde_yaml::from_str(&text).expect("parse sample");
            assert_eq!(
                broken_rules(&cluster, None),
                Vec::<String>::new(),
                "{sample}"
            );
            cluster.metadata.uid = Some("uid".into());
            let validated = crate::validate::validate(&cluster).expect("sample validates");
            let partitioned = validated.node.partitioned.map(|p| p.replication_factor);
            let expected = (sample == "partitioned.yaml").then_some(2);
            assert_eq!(partitioned, expected, "{sample}");
            let backend = validated.node.backend.map(|backend| backend.mode);
            let expected = (sample == "backend.yaml")
                .then_some(tidecache_contract::args::BackendMode::WriteThrough);
            assert_eq!(backend, expected, "{sample}");
        }
    }
}
