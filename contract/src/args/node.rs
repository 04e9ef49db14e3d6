//! cache-node's settings as the operator gives them: flags for what every pod of a cluster
//! shares, environment variables for what differs per pod or comes from a Secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    AckLevel, BackendKind, BackendMode, EnvSource, EnvVar, EvictionPolicy, FsyncPolicy, Invocation,
    LogFormat, PodField, ReplicationMode, SecretKeyRef,
};
use crate::Schedule;
use crate::units::format_duration;

/// The pod's name, which is the node's identity and the directory it writes on the volume.
const NODE_ID_ENV: &str = "TIDECACHE_NODE_ID";
/// The pod's namespace, a path component on the volume.
const NAMESPACE_ENV: &str = "TIDECACHE_NAMESPACE";
/// The default acknowledgement level.
const WRITE_ACK_ENV: &str = "TIDECACHE_WRITE_ACK";
/// The bearer token clients present.
const AUTH_TOKEN_ENV: &str = "TIDECACHE_AUTH_TOKEN";
/// The token peers present on the internal routes.
const PEER_TOKEN_ENV: &str = "TIDECACHE_PEER_TOKEN";
/// The peer token before the last rotation, still accepted.
const PEER_TOKEN_PREVIOUS_ENV: &str = "TIDECACHE_PEER_TOKEN_PREVIOUS";
/// The database connection URL behind the cache (it holds a password).
const BACKEND_URL_ENV: &str = "TIDECACHE_BACKEND_URL";
/// The key of the peer-token Secret holding the current token.
pub const PEER_TOKEN_KEY: &str = "token";
/// The key of the peer-token Secret holding the token before the last rotation (the current
/// one again in a Secret never rotated).
pub const PEER_TOKEN_PREVIOUS_KEY: &str = "previous";

/// Everything the operator sets on a cache-node container. Every field is passed explicitly,
/// never left to cache-node's default, so that a binary lacking a setting fails at start
/// instead of running with a different value.
///
/// The node's identity and namespace are not fields: they always come from the pod itself
/// (the downward API), because the pod template is the same for every pod.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeArgs {
    /// The address the HTTP API, probes and peers use (`--listen`).
    pub listen: SocketAddr,
    /// The address the Redis protocol is served on (`--resp-listen`); `None` renders no flag,
    /// which is cache-node's way of serving no RESP at all.
    pub resp_listen: Option<SocketAddr>,
    /// The expiry schedule and its time zone (`--schedule`, `--time-zone`).
    pub schedule: Schedule,
    /// Lifetime of entries written without one, in whole seconds (`--default-ttl`).
    pub default_ttl: Duration,
    /// Longest lifetime a write may ask for, in whole seconds (`--max-ttl`).
    pub max_ttl: Duration,
    /// Longest key in bytes (`--max-key-bytes`).
    pub max_key_bytes: u64,
    /// Largest value in bytes (`--max-value-bytes`).
    pub max_value_bytes: u64,
    /// Bytes of entries kept in memory (`--max-memory`).
    pub max_memory: u64,
    /// What a full node does (`--eviction-policy`).
    pub eviction_policy: EvictionPolicy,
    /// How the node logs (`--log-format`).
    pub log_format: LogFormat,
    /// Where the shared volume is mounted (`--data-dir`).
    pub data_dir: PathBuf,
    /// The CacheCluster's name, a path component on the volume (`--cluster`).
    pub cluster: String,
    /// When persisted writes are synced (`--fsync`).
    pub fsync: FsyncPolicy,
    /// The headless Service whose endpoints are the node's peers (`--peers-service`).
    pub peers_service: String,
    /// The acknowledgement level of writes that do not ask for one (`TIDECACHE_WRITE_ACK`).
    pub write_ack: AckLevel,
    /// The Secret key holding the bearer token, when the cluster requires one
    /// (`TIDECACHE_AUTH_TOKEN`).
    pub auth_token: Option<SecretKeyRef>,
    /// The Secret the operator generates for the cluster's peers, whose keys
    /// [`PEER_TOKEN_KEY`] and [`PEER_TOKEN_PREVIOUS_KEY`] become `TIDECACHE_PEER_TOKEN` and
    /// `TIDECACHE_PEER_TOKEN_PREVIOUS`.
    pub peer_token_secret: String,
    /// TLS for clients, when the cluster has a certificate; `None` renders no TLS flag.
    pub tls: Option<NodeTls>,
    /// Partitioned mode; `None` is full replication, cache-node's default, which renders no
    /// flag so that clusters made before partitioned mode keep their pod template.
    pub partitioned: Option<Partitioned>,
    /// The database behind the cache; `None` renders no flag.
    pub backend: Option<NodeBackend>,
}

/// The database behind the cache (`--backend=postgres` and the `--backend-*` flags); the
/// connection URL comes from a Secret (`TIDECACHE_BACKEND_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBackend {
    /// The Secret key holding the libpq URL.
    pub url: SecretKeyRef,
    /// The PEM CA file to verify the database's TLS certificate with
    /// (`--backend-ca-file`); `None`: no TLS.
    pub ca_file: Option<PathBuf>,
    /// The table (`--backend-table`).
    pub table: String,
    /// Its key column (`--backend-key-column`).
    pub key_column: String,
    /// Its value column (`--backend-value-column`).
    pub value_column: String,
    /// Its expiry column, if any (`--backend-expiry-column`).
    pub expiry_column: Option<String>,
    /// How writes reach it (`--backend-mode`).
    pub mode: BackendMode,
}

/// Partitioned mode's flags: `--mode=partitioned`, `--replication-factor`, and
/// `--resp-cluster-mode`, which the operator always turns on with it so that cluster-aware
/// Redis clients are redirected to the owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioned {
    /// Owners per key.
    pub replication_factor: u16,
}

/// TLS for clients: the listeners beside the plain ones (which stay for peers and probes)
/// and the files of the mounted certificate Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    /// The address HTTPS is served on (`--tls-listen`): the same API as `--listen`.
    pub listen: SocketAddr,
    /// The address RESP over TLS is served on (`--resp-tls-listen`); `None` renders no flag.
    pub resp_listen: Option<SocketAddr>,
    /// The PEM certificate chain (`--tls-cert-file`).
    pub cert_file: PathBuf,
    /// The PEM private key (`--tls-key-file`).
    pub key_file: PathBuf,
    /// The PEM CAs client certificates must chain to (`--tls-client-ca-file`); when set, every
    /// TLS client must present a certificate.
    pub client_ca_file: Option<PathBuf>,
}

impl Invocation for NodeArgs {
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![format!("--listen={}", self.listen)];
        if let Some(resp_listen) = self.resp_listen {
            args.push(format!("--resp-listen={resp_listen}"));
        }
        args.extend([
            format!("--schedule={}", self.schedule.expression()),
            format!("--time-zone={}", self.schedule.time_zone()),
            format!("--default-ttl={}", format_duration(self.default_ttl)),
            format!("--max-ttl={}", format_duration(self.max_ttl)),
            format!("--max-key-bytes={}", self.max_key_bytes),
            format!("--max-value-bytes={}", self.max_value_bytes),
            format!("--max-memory={}", self.max_memory),
            format!("--eviction-policy={}", self.eviction_policy),
            format!("--log-format={}", self.log_format),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--cluster={}", self.cluster),
            format!("--fsync={}", self.fsync),
            format!("--peers-service={}", self.peers_service),
        ]);
        if let Some(partitioned) = self.partitioned {
            args.extend([
                format!("--mode={}", ReplicationMode::Partitioned),
                format!("--replication-factor={}", partitioned.replication_factor),
                "--resp-cluster-mode".to_string(),
            ]);
        }
        if let Some(backend) = &self.backend {
            args.extend([
                format!("--backend={}", BackendKind::Postgres),
                format!("--backend-table={}", backend.table),
                format!("--backend-key-column={}", backend.key_column),
                format!("--backend-value-column={}", backend.value_column),
                format!("--backend-mode={}", backend.mode),
            ]);
            if let Some(expiry) = &backend.expiry_column {
                args.push(format!("--backend-expiry-column={expiry}"));
            }
            if let Some(ca_file) = &backend.ca_file {
                args.push(format!("--backend-ca-file={}", ca_file.display()));
            }
        }
        if let Some(tls) = &self.tls {
            args.push(format!("--tls-listen={}", tls.listen));
            if let Some(resp_listen) = tls.resp_listen {
                args.push(format!("--resp-tls-listen={resp_listen}"));
            }
            args.push(format!("--tls-cert-file={}", tls.cert_file.display()));
            args.push(format!("--tls-key-file={}", tls.key_file.display()));
            if let Some(client_ca) = &tls.client_ca_file {
                args.push(format!("--tls-client-ca-file={}", client_ca.display()));
            }
        }
        args
    }

    fn to_env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            EnvVar {
                name: NODE_ID_ENV,
                source: EnvSource::PodField(PodField::Name),
            },
            EnvVar {
                name: NAMESPACE_ENV,
                source: EnvSource::PodField(PodField::Namespace),
            },
            EnvVar {
                name: WRITE_ACK_ENV,
                source: EnvSource::Value(self.write_ack.to_string()),
            },
        ];
        if let Some(secret) = &self.auth_token {
            env.push(EnvVar {
                name: AUTH_TOKEN_ENV,
                source: EnvSource::SecretKey(secret.clone()),
            });
        }
        if let Some(backend) = &self.backend {
            env.push(EnvVar {
                name: BACKEND_URL_ENV,
                source: EnvSource::SecretKey(backend.url.clone()),
            });
        }
        for (name, key) in [
            (PEER_TOKEN_ENV, PEER_TOKEN_KEY),
            (PEER_TOKEN_PREVIOUS_ENV, PEER_TOKEN_PREVIOUS_KEY),
        ] {
            env.push(EnvVar {
                name,
                source: EnvSource::SecretKey(SecretKeyRef {
                    name: self.peer_token_secret.clone(),
                    key: key.into(),
                }),
            });
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(auth_token: Option<SecretKeyRef>) -> NodeArgs {
        NodeArgs {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            resp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 6379))),
            schedule: Schedule::new("*/5 * * * *", Some("Europe/Berlin")).expect("valid"),
            default_ttl: Duration::from_secs(900),
            max_ttl: Duration::from_secs(7_200),
            max_key_bytes: 256,
            max_value_bytes: 65_536,
            max_memory: 1 << 30,
            eviction_policy: EvictionPolicy::NoEviction,
            log_format: LogFormat::Json,
            data_dir: PathBuf::from("/data"),
            cluster: "sessions".into(),
            fsync: FsyncPolicy::Always,
            peers_service: "sessions-peers".into(),
            write_ack: AckLevel::All,
            auth_token,
            peer_token_secret: "sessions-peer-token".into(),
            tls: None,
            partitioned: None,
            backend: None,
        }
    }

    #[test]
    fn flags_are_rendered_in_order() {
        assert_eq!(
            args(None).to_args(),
            [
                "--listen=0.0.0.0:8080",
                "--resp-listen=0.0.0.0:6379",
                "--schedule=*/5 * * * *",
                "--time-zone=Europe/Berlin",
                "--default-ttl=15m",
                "--max-ttl=2h",
                "--max-key-bytes=256",
                "--max-value-bytes=65536",
                "--max-memory=1073741824",
                "--eviction-policy=noeviction",
                "--log-format=json",
                "--data-dir=/data",
                "--cluster=sessions",
                "--fsync=always",
                "--peers-service=sessions-peers",
            ]
        );
    }

    #[test]
    fn no_resp_address_renders_no_resp_flag() {
        let without_resp = NodeArgs {
            resp_listen: None,
            ..args(None)
        };
        let flags = without_resp.to_args();
        assert!(!flags.iter().any(|flag| flag.starts_with("--resp-listen")));
        assert_eq!(flags.len(), args(None).to_args().len() - 1);
    }

    #[test]
    fn partitioned_mode_renders_its_three_flags_after_the_rest() {
        let partitioned = NodeArgs {
            partitioned: Some(Partitioned {
                replication_factor: 3,
            }),
            ..args(None)
        };
        let plain = args(None).to_args();
        let flags = partitioned.to_args();
        assert_eq!(flags[..plain.len()], plain[..]);
        assert_eq!(
            flags[plain.len()..],
            [
                "--mode=partitioned",
                "--replication-factor=3",
                "--resp-cluster-mode"
            ]
        );
    }

    #[test]
    fn tls_renders_its_listeners_and_files_after_the_rest() {
        let tls = NodeTls {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            resp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 6380))),
            cert_file: PathBuf::from("/tls/tls.crt"),
            key_file: PathBuf::from("/tls/tls.key"),
            client_ca_file: Some(PathBuf::from("/tls/ca.crt")),
        };
        let with_tls = NodeArgs {
            tls: Some(tls.clone()),
            ..args(None)
        };
        let plain = args(None).to_args();
        let flags = with_tls.to_args();
        assert_eq!(flags[..plain.len()], plain[..]);
        assert_eq!(
            flags[plain.len()..],
            [
                "--tls-listen=0.0.0.0:8443",
                "--resp-tls-listen=0.0.0.0:6380",
                "--tls-cert-file=/tls/tls.crt",
                "--tls-key-file=/tls/tls.key",
                "--tls-client-ca-file=/tls/ca.crt",
            ]
        );
        let minimal = NodeArgs {
            tls: Some(NodeTls {
                resp_listen: None,
                client_ca_file: None,
                ..tls
            }),
            ..args(None)
        };
        assert_eq!(minimal.to_args().len(), plain.len() + 3);
    }

    #[test]
    fn the_token_variable_exists_only_with_a_secret() {
        let names = |args: &NodeArgs| args.to_env().iter().map(|v| v.name).collect::<Vec<_>>();
        assert_eq!(
            names(&args(None)),
            [
                NODE_ID_ENV,
                NAMESPACE_ENV,
                WRITE_ACK_ENV,
                PEER_TOKEN_ENV,
                PEER_TOKEN_PREVIOUS_ENV
            ]
        );
        let secret = SecretKeyRef {
            name: "sessions-token".into(),
            key: "bearer".into(),
        };
        let with_token = args(Some(secret.clone()));
        assert_eq!(
            with_token.to_env()[3],
            EnvVar {
                name: AUTH_TOKEN_ENV,
                source: EnvSource::SecretKey(secret),
            }
        );
        // The peers' token always comes from the generated Secret, never from the clients'.
        assert_eq!(
            with_token.to_env()[4],
            EnvVar {
                name: PEER_TOKEN_ENV,
                source: EnvSource::SecretKey(SecretKeyRef {
                    name: "sessions-peer-token".into(),
                    key: PEER_TOKEN_KEY.into(),
                }),
            }
        );
    }
}
