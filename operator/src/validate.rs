//! The validate step: turns a stored `CacheCluster` into the one input of the pure builders, or
//! says what the admin has to fix.
//!
//! The schema already refuses most bad resources at `kubectl apply`; this step re-checks what
//! the builders rely on (a CRD older than the operator may have let something through) and adds
//! what only Rust can check: the schedule and time zone, by the shared contract crate, so that
//! the operator, the cache nodes and the janitor agree on them. What it parses it keeps, as
//! the contract's typed settings of cache-node and the janitor, so the builders only assemble.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use tidecache_contract::args::{
    JanitorArgs, LogFormat, NodeArgs, NodeBackend, NodeTls, Partitioned, SecretKeyRef,
};
use tidecache_contract::{Schedule, ScheduleError, units};

use crate::build::{BACKEND_CA_DIR, BACKEND_CA_FILE, DATA_DIR, HTTP_PORT, HTTPS_PORT, TLS_DIR};
use crate::crd::{
    BackendSpec, CacheCluster, CacheClusterSpec, ClientCertificates, ReplicationMode,
    ReplicationSpec, ServiceSpec, TrafficSources,
};
use crate::labels;

/// Longest CacheCluster name: the janitor CronJob is named `<name>-janitor` and a CronJob name
/// may have at most 52 characters.
pub const MAX_NAME_LEN: usize = 44;

/// Why a CacheCluster cannot be built. [`ValidationError::InvalidSpec`] waits for the admin to
/// change the resource; the others mean the object did not come from the API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A field has a value the operator cannot act on; the message says what to fix.
    #[error("{field}: {message}")]
    InvalidSpec {
        /// The field path, e.g. `spec.expiry.schedule`.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The object lacks metadata the API server always sets.
    #[error("the CacheCluster has no metadata.{0}")]
    MissingMetadata(&'static str),
}

impl ValidationError {
    fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
        ValidationError::InvalidSpec {
            field,
            message: message.into(),
        }
    }
}

/// A CacheCluster whose spec the builders can turn into children without further checks.
///
/// Every spec value that needs parsing is carried here parsed, in the types the binaries are
/// given (the contract's [`NodeArgs`] and [`JanitorArgs`]), so no builder reads or re-parses
/// the text of such a field.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    /// The CacheCluster's name, the prefix of every child's name.
    pub name: String,
    /// The namespace of the CacheCluster and all its children.
    pub namespace: String,
    /// The ownerReference every child carries, so that garbage collection removes them.
    pub owner: OwnerReference,
    /// The spec as stored (with schema defaults applied), for the fields children take over
    /// verbatim: replicas, images, resources, topology, the janitor's Job settings, the
    /// Service, the budget and the volume's class, access mode and size (a quantity the
    /// PersistentVolumeClaim takes as written).
    pub spec: CacheClusterSpec,
    /// The expiry schedule and its time zone, for the CronJob and the status.
    pub schedule: Schedule,
    /// What every cache pod is started with.
    pub node: NodeArgs,
    /// What every janitor run is started with.
    pub janitor: JanitorArgs,
    /// The revision of the peer-token Secret the pods must run with (see
    /// `labels::PEER_TOKEN_REVISION_ANNOTATION`): not part of the spec, so `None` here; the
    /// reconciler sets it once it has ensured the Secret, before building.
    pub peer_token_revision: Option<String>,
}

/// Checks `cluster` and returns the builders' input.
///
/// # Errors
/// [`ValidationError::InvalidSpec`] naming the first field to fix, or
/// [`ValidationError::MissingMetadata`].
pub fn validate(cluster: &CacheCluster) -> Result<ValidatedCluster, ValidationError> {
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .clone()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(ValidationError::MissingMetadata("uid"))?;
    checked(name, namespace, owner, &cluster.spec)
}

/// Checks what [`validate`] checks of a CacheCluster about to be stored, for the admission
/// webhook: the same spec checks with the same messages, so `kubectl apply` refuses what would
/// otherwise surface only in status. `name` is the name the request gives (for a
/// `generateName` the prefix plus the five characters the API server appends).
///
/// # Errors
/// [`ValidationError::InvalidSpec`] naming the first field to fix.
pub fn admissible(
    name: &str,
    namespace: &str,
    spec: &CacheClusterSpec,
) -> Result<(), ValidationError> {
    // A new object has no uid yet, so there is no owner reference to build; the builders that
    // would use it never run here.
    checked(
        name.to_string(),
        namespace.to_string(),
        OwnerReference::default(),
        spec,
    )
    .map(drop)
}

/// The checks of [`validate`] after the metadata: the name's length and the whole spec.
fn checked(
    name: String,
    namespace: String,
    owner: OwnerReference,
    spec: &CacheClusterSpec,
) -> Result<ValidatedCluster, ValidationError> {
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::invalid(
            "metadata.name",
            format!(
                "the name \"{name}\" has {} characters; use at most {MAX_NAME_LEN} so that \
                 the names of its children stay within Kubernetes limits",
                name.len()
            ),
        ));
    }
    let schedule = Schedule::new(&spec.expiry.schedule, spec.expiry.time_zone.as_deref())
        .map_err(|error| schedule_error(&error))?;
    // Refused rather than warned about: the janitor CronJob is what frees the volume, and
    // there the CronJob controller can stop scheduling it for good without a word in the
    // CacheCluster's status.
    if let Some(hazard) = schedule.cronjob_hazard(Utc::now()) {
        return Err(ValidationError::invalid(
            "spec.expiry.timeZone",
            hazard.to_string(),
        ));
    }
    let default_ttl = parse_duration(&spec.expiry.default_ttl)
        .map_err(|message| ValidationError::invalid("spec.expiry.defaultTTL", message))?;
    let max_ttl = parse_duration(&spec.expiry.max_ttl)
        .map_err(|message| ValidationError::invalid("spec.expiry.maxTTL", message))?;
    let grace = parse_duration(&spec.expiry.grace)
        .map_err(|message| ValidationError::invalid("spec.expiry.grace", message))?;
    if default_ttl.is_zero() || max_ttl.is_zero() {
        return Err(ValidationError::invalid(
            "spec.expiry",
            "defaultTTL and maxTTL must be longer than 0s",
        ));
    }
    if default_ttl > max_ttl {
        return Err(ValidationError::invalid(
            "spec.expiry.defaultTTL",
            "expiry.defaultTTL must not be longer than expiry.maxTTL",
        ));
    }
    let max_memory = parse_bytes(&spec.memory.capacity)
        .map_err(|message| ValidationError::invalid("spec.memory.capacity", message))?;
    memory_fits(max_memory, spec)?;
    let max_key_bytes = positive(spec.memory.max_key_bytes, "spec.memory.maxKeyBytes")?;
    let max_value_bytes = positive(spec.memory.max_value_bytes, "spec.memory.maxValueBytes")?;
    parse_bytes(&spec.persistence.size)
        .map_err(|message| ValidationError::invalid("spec.persistence.size", message))?;
    let pdb = &spec.pod_disruption_budget;
    if pdb.min_available.is_some() && pdb.max_unavailable.is_some() {
        return Err(ValidationError::invalid(
            "spec.podDisruptionBudget",
            "set at most one of podDisruptionBudget.minAvailable and \
             podDisruptionBudget.maxUnavailable",
        ));
    }
    let resp_port = redis_port(&spec.service)?;
    let partitioned = partitioned(&spec.replication)?;
    namespace_names(&spec.network.clients, "spec.network.clients.namespaces")?;
    namespace_names(&spec.network.metrics, "spec.network.metrics.namespaces")?;
    let node = NodeArgs {
        listen: SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)),
        resp_listen: resp_port.map(|port| SocketAddr::from(([0, 0, 0, 0], port))),
        schedule: schedule.clone(),
        default_ttl,
        max_ttl,
        max_key_bytes,
        max_value_bytes,
        max_memory,
        eviction_policy: spec.memory.eviction_policy.into(),
        log_format: LogFormat::Json,
        data_dir: PathBuf::from(DATA_DIR),
        cluster: name.clone(),
        fsync: spec.persistence.fsync.into(),
        peers_service: labels::names::peers_service(&name),
        write_ack: spec.replication.write_acknowledgement.into(),
        auth_token: spec.auth.as_ref().map(|auth| SecretKeyRef {
            name: auth.secret_name.clone(),
            key: auth.key.clone(),
        }),
        peer_token_secret: labels::names::peer_token(&name),
        tls: tls(spec, resp_port)?,
        partitioned,
        backend: spec.backend.as_ref().map(backend),
    };
    let janitor = JanitorArgs {
        data_dir: PathBuf::from(DATA_DIR),
        schedule: schedule.clone(),
        grace,
        namespace: namespace.clone(),
        cluster: name.clone(),
    };
    Ok(ValidatedCluster {
        name,
        namespace,
        owner,
        spec: spec.clone(),
        schedule,
        node,
        janitor,
        peer_token_revision: None,
    })
}

/// The database behind the cache as cache-node is given it: the URL from its Secret, the CA
/// from the volume [`crate::build`] mounts at [`BACKEND_CA_DIR`].
fn backend(spec: &BackendSpec) -> NodeBackend {
    let postgres = &spec.postgres;
    NodeBackend {
        url: SecretKeyRef {
            name: postgres.connection_secret.name.clone(),
            key: postgres.connection_secret.key.clone(),
        },
        ca_file: postgres
            .ca_secret
            .as_ref()
            .map(|_| PathBuf::from(BACKEND_CA_DIR).join(BACKEND_CA_FILE)),
        table: postgres.table.clone(),
        key_column: postgres.key_column.clone(),
        value_column: postgres.value_column.clone(),
        expiry_column: postgres.expiry_column.clone(),
        mode: postgres.mode.into(),
    }
}

/// Refuses a memory capacity above the cache container's memory limit: the kernel would kill
/// the pod long before the store reached it, and eviction would never run. The limit counts
/// the whole process, the capacity only stored entries, so equal is allowed but leaves no room;
/// the message says so. A limit that is not a plain quantity of bytes is left to the API
/// server, which has already accepted it.
fn memory_fits(capacity: u64, spec: &CacheClusterSpec) -> Result<(), ValidationError> {
    let Some(limit) = spec
        .resources
        .as_ref()
        .and_then(|resources| resources.limits.as_ref())
        .and_then(|limits| limits.get("memory"))
    else {
        return Ok(());
    };
    match quantity_bytes(&limit.0) {
        Some(limit_bytes) if capacity > limit_bytes => Err(ValidationError::invalid(
            "spec.memory.capacity",
            format!(
                "memory.capacity {} ({capacity} bytes) is above the cache container's memory \
                 limit {} ({limit_bytes} bytes, spec.resources.limits.memory): the pod would be \
                 OOM-killed before eviction starts; lower memory.capacity or raise the limit, \
                 leaving room for the process itself (about a quarter of the limit)",
                spec.memory.capacity, limit.0
            ),
        )),
        _ => Ok(()),
    }
}

/// The bytes a Kubernetes quantity stands for (`512Mi`, `1G`, `1.5Gi`, `1e9`, `+2048`), rounded
/// up as the API server's `Quantity.Value()` does, computed exactly in integers; `None` for
/// what bounds nothing in bytes (zero, a milli or negative value, or what does not parse).
fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim().strip_prefix('+').unwrap_or(text.trim());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // The number as digits / 10^fraction.len().
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let denominator = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1, 1),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (10u128.pow(12), 1),
        "P" => (10u128.pow(15), 1),
        "E" => (10u128.pow(18), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exponent => {
            let exponent: i32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            let power = 10u128.checked_pow(exponent.unsigned_abs())?;
            if exponent >= 0 {
                (power, 1)
            } else {
                (1, power)
            }
        }
    };
    let numerator = digits.checked_mul(multiplier)?;
    let bytes = numerator.div_ceil(denominator.checked_mul(divisor)?);
    // A limit above u64 bounds nothing a capacity could exceed.
    (bytes > 0).then(|| u64::try_from(bytes).unwrap_or(u64::MAX))
}

/// A byte limit the schema bounds to be positive, re-checked because an older CRD may not.
fn positive(value: i64, field: &'static str) -> Result<u64, ValidationError> {
    u64::try_from(value)
        .ok()
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| {
            ValidationError::invalid(field, format!("is {value}; it must be at least 1"))
        })
}

/// The port the pods serve RESP on, `None` when `spec.service.redisPort` is 0 (off). The
/// schema's range and rules refuse the rest; re-checked because an older CRD lacks them, and a
/// clash would leave the pods unable to bind or the Service refused.
fn redis_port(service: &ServiceSpec) -> Result<Option<u16>, ValidationError> {
    let field = "spec.service.redisPort";
    let port = u16::try_from(service.redis_port).map_err(|_| {
        ValidationError::invalid(
            field,
            format!(
                "is {}; use a port from 1 to 65535, or 0 to switch the Redis protocol off",
                service.redis_port
            ),
        )
    })?;
    if port == 0 {
        return Ok(None);
    }
    if port == HTTP_PORT {
        return Err(ValidationError::invalid(
            field,
            format!(
                "service.redisPort {HTTP_PORT} is the cache pods' HTTP port; choose another port"
            ),
        ));
    }
    if i32::from(port) == service.port {
        return Err(ValidationError::invalid(
            field,
            "service.redisPort must differ from service.port: the client Service serves both",
        ));
    }
    Ok(Some(port))
}

/// The owners per key the operator accepts, as the schema bounds `replicationFactor`.
const REPLICATION_FACTORS: std::ops::RangeInclusive<u16> = 1..=5;

/// Partitioned mode's settings, `None` in Full mode (where `replicationFactor` is ignored, so
/// it is not checked either). The range is the schema's, re-checked because an older CRD lacks
/// it and cache-node would refuse 0 at start, leaving the pods crash-looping.
fn partitioned(replication: &ReplicationSpec) -> Result<Option<Partitioned>, ValidationError> {
    match replication.mode {
        ReplicationMode::Full => Ok(None),
        ReplicationMode::Partitioned => u16::try_from(replication.replication_factor)
            .ok()
            .filter(|factor| REPLICATION_FACTORS.contains(factor))
            .map(|replication_factor| Some(Partitioned { replication_factor }))
            .ok_or_else(|| {
                ValidationError::invalid(
                    "spec.replication.replicationFactor",
                    format!(
                        "is {}; use {} to {} owners per key",
                        replication.replication_factor,
                        REPLICATION_FACTORS.start(),
                        REPLICATION_FACTORS.end()
                    ),
                )
            }),
    }
}

/// The pods' TLS listeners and the files of the mounted `spec.tls` Secret. The schema's
/// range and rules refuse clashing ports; re-checked because an older CRD lacks them.
fn tls(
    spec: &CacheClusterSpec,
    resp_port: Option<u16>,
) -> Result<Option<NodeTls>, ValidationError> {
    let Some(tls) = &spec.tls else {
        return Ok(None);
    };
    let field = "spec.tls.redisPort";
    let redis_port = u16::try_from(tls.redis_port).map_err(|_| {
        ValidationError::invalid(
            field,
            format!(
                "is {}; use a port from 1 to 65535, or 0 for no Redis protocol over TLS",
                tls.redis_port
            ),
        )
    })?;
    if resp_port == Some(HTTPS_PORT) {
        return Err(ValidationError::invalid(
            "spec.service.redisPort",
            format!(
                "service.redisPort {HTTPS_PORT} is the cache pods' HTTPS port when tls is set; \
                 choose another port"
            ),
        ));
    }
    if redis_port != 0 {
        if redis_port == HTTP_PORT || redis_port == HTTPS_PORT {
            return Err(ValidationError::invalid(
                field,
                format!(
                    "tls.redisPort must differ from the cache pods' HTTP ({HTTP_PORT}) and HTTPS \
                     ({HTTPS_PORT}) ports"
                ),
            ));
        }
        if Some(redis_port) == resp_port {
            return Err(ValidationError::invalid(
                field,
                "tls.redisPort must differ from service.redisPort: the pods serve plain RESP on \
                 one and RESP over TLS on the other",
            ));
        }
        if i32::from(redis_port) == tls.port {
            return Err(ValidationError::invalid(
                field,
                "tls.redisPort must differ from tls.port: the client Service serves both",
            ));
        }
    }
    u16::try_from(tls.port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            ValidationError::invalid(
                "spec.tls.port",
                format!("is {}; use a port from 1 to 65535", tls.port),
            )
        })?;
    let file = |name: &str| PathBuf::from(TLS_DIR).join(name);
    Ok(Some(NodeTls {
        listen: SocketAddr::from(([0, 0, 0, 0], HTTPS_PORT)),
        resp_listen: (redis_port != 0).then(|| SocketAddr::from(([0, 0, 0, 0], redis_port))),
        cert_file: file("tls.crt"),
        key_file: file("tls.key"),
        client_ca_file: match tls.client_certificates {
            ClientCertificates::Ignore => None,
            ClientCertificates::Require => Some(file("ca.crt")),
        },
    }))
}

/// The namespace names of a NetworkPolicy rule: each must be a DNS label, as namespace names
/// are, or it would select nothing and the rule would silently admit no one from it.
fn namespace_names(sources: &TrafficSources, field: &'static str) -> Result<(), ValidationError> {
    let is_label = |name: &str| {
        (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    };
    match sources.namespaces.iter().find(|name| !is_label(name)) {
        Some(name) => Err(ValidationError::invalid(
            field,
            format!(
                "\"{name}\" is not a namespace name; use lowercase letters, digits and '-', at \
                 most 63 characters, starting and ending with a letter or digit"
            ),
        )),
        None => Ok(()),
    }
}

/// Which field a schedule error is about: the time zone or the expression.
fn schedule_error(error: &ScheduleError) -> ValidationError {
    let field = match error {
        ScheduleError::UnknownTimeZone(_) => "spec.expiry.timeZone",
        _ => "spec.expiry.schedule",
    };
    ValidationError::invalid(field, error.to_string())
}

/// A duration (`90s`, `15m`, `2h`), parsed by the contract crate exactly as cache-node and the
/// janitor parse the flag the operator passes them.
///
/// # Errors
/// A message saying which form is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    units::parse_duration(text).map_err(|error| error.to_string())
}

/// Bytes in a Kubernetes quantity written as an integer with an optional binary (Ki…Ei) or
/// decimal (k…E) suffix, parsed by the contract crate as cache-node parses its size flags;
/// zero is refused because a capacity must be positive.
///
/// # Errors
/// A message saying which form is expected.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bytes = units::parse_size(text).map_err(|error| error.to_string())?;
    if bytes == 0 {
        return Err(format!("\"{text}\" is zero; a capacity must be positive"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn invalid_message(cluster: &CacheCluster) -> String {
        match validate(cluster) {
            Err(ValidationError::InvalidSpec { field, message }) => format!("{field}: {message}"),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn capacity_above_the_memory_limit_is_refused() {
        let mut cluster = fixtures::minimal();
        cluster.spec.memory.capacity = "1Pi".into();
        cluster.spec.resources = Some(fixtures::memory_limit("512Mi"));
        let message = invalid_message(&cluster);
        assert!(
            message.starts_with("spec.memory.capacity: memory.capacity 1Pi (1125899906842624 bytes) is above the cache container's memory limit 512Mi (536870912 bytes"),
            "{message}"
        );
        cluster.spec.memory.capacity = "512Mi".into();
        validate(&cluster).expect("a capacity equal to the limit");
        cluster.spec.resources = None;
        cluster.spec.memory.capacity = "1Pi".into();
        validate(&cluster).expect("no limit, nothing to compare with");
    }

    #[test]
    fn quantities_are_read_as_kubernetes_writes_them() {
        for (text, bytes) in [
            ("2048", Some(2048)),
            ("512Mi", Some(512 << 20)),
            ("1G", Some(1_000_000_000)),
            ("1.5Gi", Some(3 << 29)),
            ("1.001G", Some(1_001_000_000)),
            ("+1Gi", Some(1 << 30)),
            ("1e-3", Some(1)),
            ("0", None),
            ("1e9", Some(1_000_000_000)),
            ("128974848", Some(128_974_848)),
            ("129e6", Some(129_000_000)),
            ("123Mi", Some(123 << 20)),
            ("100m", None),
            ("-1Gi", None),
            ("lots", None),
        ] {
            assert_eq!(quantity_bytes(text), bytes, "{text}");
        }
    }

    #[test]
    fn the_webhook_check_needs_no_uid_and_says_what_the_status_says() {
        let mut cluster = fixtures::minimal();
        cluster.metadata.uid = None;
        admissible("demo", "default", &cluster.spec).expect("valid");
        cluster.metadata.uid = Some("uid".into());
        cluster.spec.expiry.time_zone = Some("Mars/Olympus".into());
        let refused = admissible("demo", "default", &cluster.spec).expect_err("bad zone");
        assert_eq!(refused, validate(&cluster).expect_err("bad zone"));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(admissible(&long, "default", &fixtures::minimal().spec).is_err());
    }

    #[test]
    fn minimal_cluster_is_valid() {
        let validated = validate(&fixtures::minimal()).expect("valid");
        assert_eq!(validated.name, "demo");
        assert_eq!(validated.node.max_memory, 256 << 20);
        assert_eq!(validated.node.default_ttl, Duration::from_secs(3_600));
        assert_eq!(validated.janitor.grace, Duration::from_secs(60));
        assert_eq!(validated.node.peers_service, "demo-peers");
        assert_eq!(validated.schedule.expression(), "* * * * *");
        assert_eq!(validated.owner.controller, Some(true));
    }

    #[test]
    fn invalid_schedule_carries_the_contract_message() {
        let mut cluster = fixtures::minimal();
        cluster.spec.expiry.schedule = "*/5 * * *".into();
        assert_eq!(
            invalid_message(&cluster),
            "spec.expiry.schedule: the schedule \"*/5 * * *\" has 4 fields; write exactly 5 \
             (minute hour day-of-month month day-of-week), e.g. \"*/5 * * * *\""
        );
    }

    #[test]
    fn every_schedule_error_is_reported_with_its_field() {
        let cases = [
            ("", None, "spec.expiry.schedule", "the schedule is empty"),
            (
                "61 * * * *",
                None,
                "spec.expiry.schedule",
                "the minute field \"61\"",
            ),
            (
                "@every 5m",
                None,
                "spec.expiry.schedule",
                "is not a supported macro",
            ),
            (
                "TZ=UTC * * * * *",
                None,
                "spec.expiry.schedule",
                "must not contain TZ=",
            ),
            ("0 0 30 2 *", None, "spec.expiry.schedule", "never fires"),
            (
                "* * * * *",
                Some("Mars/Olympus"),
                "spec.expiry.timeZone",
                "unknown time zone",
            ),
        ];
        for (schedule, zone, field, fragment) in cases {
            let mut cluster = fixtures::minimal();
            cluster.spec.expiry.schedule = schedule.into();
            cluster.spec.expiry.time_zone = zone.map(str::to_string);
            let message = invalid_message(&cluster);
            assert!(message.starts_with(field), "{schedule}: {message}");
            assert!(message.contains(fragment), "{schedule}: {message}");
        }
    }

    #[test]
    fn zones_the_cronjob_controller_mis_schedules_are_refused_with_why() {
        for (schedule, zone, why) in [
            (
                "0 2 * * *",
                "Australia/Lord_Howe",
                "which is a change of 30 minutes, not whole hours",
            ),
            (
                "45 3 * * *",
                "Pacific/Chatham",
                "which is not at a whole hour",
            ),
        ] {
            let mut cluster = fixtures::minimal();
            cluster.spec.expiry.schedule = schedule.into();
            cluster.spec.expiry.time_zone = Some(zone.into());
            let message = invalid_message(&cluster);
            let expected = format!("spec.expiry.timeZone: {zone} changes its UTC offset");
            assert!(message.starts_with(&expected), "{message}");
            for fragment in [
                why,
                "robfig/cron v3",
                &format!("the schedule \"{schedule}\" excludes"),
                "Use an hour field of *",
            ] {
                assert!(message.contains(fragment), "{fragment}: {message}");
            }
        }
        // The same zones with every hour allowed run exactly on the fire times.
        for zone in ["Australia/Lord_Howe", "Pacific/Chatham"] {
            let mut cluster = fixtures::minimal();
            cluster.spec.expiry.schedule = "*/15 * * * *".into();
            cluster.spec.expiry.time_zone = Some(zone.into());
            validate(&cluster).expect("an hour field of * is scheduled correctly");
        }
    }

    #[test]
    fn network_namespaces_must_be_namespace_names() {
        for (bad, field) in [
            ("Payments", "clients"),
            ("-web", "metrics"),
            ("a_b", "clients"),
            ("", "metrics"),
        ] {
            let mut cluster = fixtures::minimal();
            let sources = if field == "clients" {
                &mut cluster.spec.network.clients
            } else {
                &mut cluster.spec.network.metrics
            };
            sources.namespaces = vec!["web".into(), bad.into()];
            assert_eq!(
                invalid_message(&cluster),
                format!(
                    "spec.network.{field}.namespaces: \"{bad}\" is not a namespace name; use \
                     lowercase letters, digits and '-', at most 63 characters, starting and \
                     ending with a letter or digit"
                )
            );
        }
        let mut cluster = fixtures::minimal();
        cluster.spec.network.clients.namespaces = vec!["web-2".into(), "x".repeat(63)];
        validate(&cluster).expect("namespace names");
    }

    #[test]
    fn ttl_order_and_forms_are_checked() {
        let mut cluster = fixtures::minimal();
        cluster.spec.expiry.default_ttl = "2h".into();
        cluster.spec.expiry.max_ttl = "90m".into();
        assert!(invalid_message(&cluster).contains("must not be longer than expiry.maxTTL"));
        cluster.spec.expiry.max_ttl = "1d".into();
        assert!(invalid_message(&cluster).starts_with("spec.expiry.maxTTL: \"1d\""));
    }

    #[test]
    fn capacities_and_names_are_checked() {
        let mut cluster = fixtures::minimal();
        cluster.spec.memory.capacity = "1.5Gi".into();
        assert!(invalid_message(&cluster).starts_with("spec.memory.capacity"));
        let mut cluster = fixtures::minimal();
        cluster.spec.memory.max_key_bytes = 0;
        assert_eq!(
            invalid_message(&cluster),
            "spec.memory.maxKeyBytes: is 0; it must be at least 1"
        );
        let mut cluster = fixtures::minimal();
        cluster.metadata.name = Some("x".repeat(MAX_NAME_LEN + 1));
        assert!(invalid_message(&cluster).starts_with("metadata.name"));
    }

    #[test]
    fn the_redis_port_is_where_pods_serve_resp_and_zero_is_off() {
        let validated = validate(&fixtures::minimal()).expect("valid");
        assert_eq!(
            validated.node.resp_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 6379)))
        );
        let mut cluster = fixtures::minimal();
        cluster.spec.service.redis_port = 0;
        assert_eq!(validate(&cluster).expect("valid").node.resp_listen, None);
        cluster.spec.service.redis_port = 70_000;
        assert!(invalid_message(&cluster).starts_with("spec.service.redisPort: is 70000"));
        cluster.spec.service.redis_port = i32::from(HTTP_PORT);
        assert!(invalid_message(&cluster).contains("the cache pods' HTTP port"));
        cluster.spec.service.redis_port = cluster.spec.service.port + 1;
        cluster.spec.service.port += 1;
        assert!(invalid_message(&cluster).contains("must differ from service.port"));
    }

    #[test]
    fn partitioned_mode_carries_the_replication_factor_and_full_mode_none() {
        let mut cluster = fixtures::minimal();
        assert_eq!(validate(&cluster).expect("valid").node.partitioned, None);
        cluster.spec.replication.mode = crate::crd::ReplicationMode::Partitioned;
        assert_eq!(
            validate(&cluster).expect("valid").node.partitioned,
            Some(Partitioned {
                replication_factor: 2
            })
        );
        for factor in [0, 6, -1] {
            cluster.spec.replication.replication_factor = factor;
            assert_eq!(
                invalid_message(&cluster),
                format!(
                    "spec.replication.replicationFactor: is {factor}; use 1 to 5 owners per key"
                )
            );
        }
        // Ignored in Full mode, as its description says.
        cluster.spec.replication.mode = crate::crd::ReplicationMode::Full;
        assert_eq!(validate(&cluster).expect("valid").node.partitioned, None);
    }

    #[test]
    fn quantities_and_durations_parse() {
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("Gi").is_err());
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn tls_ports_that_clash_are_refused_naming_the_field() {
        let tls = |redis_port, port| crate::crd::TlsSpec {
            secret_name: "demo-tls".into(),
            client_certificates: ClientCertificates::Ignore,
            port,
            redis_port,
        };
        for (service_redis_port, tls_spec, expected) in [
            (
                6379,
                tls(6379, 8443),
                "spec.tls.redisPort: tls.redisPort must differ from service.redisPort",
            ),
            (
                6379,
                tls(8443, 443),
                "spec.tls.redisPort: tls.redisPort must differ from the cache pods' HTTP",
            ),
            (
                6379,
                tls(6380, 6380),
                "spec.tls.redisPort: tls.redisPort must differ from tls.port",
            ),
            (
                8443,
                tls(6380, 8443),
                "spec.service.redisPort: service.redisPort 8443 is the cache pods' HTTPS port",
            ),
            (6379, tls(70_000, 8443), "spec.tls.redisPort: is 70000"),
            (6379, tls(6380, 0), "spec.tls.port: is 0"),
        ] {
            let mut cluster = fixtures::minimal();
            cluster.spec.service.redis_port = service_redis_port;
            cluster.spec.tls = Some(tls_spec);
            let message = invalid_message(&cluster);
            assert!(message.starts_with(expected), "{message}");
        }
        let mut cluster = fixtures::minimal();
        cluster.spec.tls = Some(tls(6380, 8443));
        let node = validate(&cluster).expect("valid").node;
        assert_eq!(
            node.tls
                .map(|tls| (tls.listen.port(), tls.resp_listen.map(|a| a.port()))),
            Some((HTTPS_PORT, Some(6380)))
        );
    }
}
