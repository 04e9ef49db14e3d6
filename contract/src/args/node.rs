//! cache-node's settings as the operator gives them: flags for what every pod of a cluster
//! shares, environment variables for what differs per pod or comes from a Secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    AckLevel, EnvSource, EnvVar, EvictionPolicy, FsyncPolicy, Invocation, LogFormat, PodField,
    SecretKeyRef,
};
use crate::Schedule;
use crate::units::format_duration;

/// The pod's name, which is the node's identity and the directory it writes on the volume.
const NODE_ID_ENV: &str = "TIDECACHE_NODE_ID";
/// The pod's namespace, a path component on the volume.
const NAMESPACE_ENV: &str = "TIDECACHE_NAMESPACE";
/// The default acknowledgement level.
const WRITE_ACK_ENV: &str = "TIDECACHE_WRITE_ACK";
/// The bearer token clients and peers present.
const AUTH_TOKEN_ENV: &str = "TIDECACHE_AUTH_TOKEN";

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
    fn the_token_variable_exists_only_with_a_secret() {
        let names = |args: &NodeArgs| args.to_env().iter().map(|v| v.name).collect::<Vec<_>>();
        assert_eq!(
            names(&args(None)),
            [NODE_ID_ENV, NAMESPACE_ENV, WRITE_ACK_ENV]
        );
        let secret = SecretKeyRef {
            name: "sessions-token".into(),
            key: "bearer".into(),
        };
        let with_token = args(Some(secret.clone()));
        assert_eq!(
            with_token.to_env().last(),
            Some(&EnvVar {
                name: AUTH_TOKEN_ENV,
                source: EnvSource::SecretKey(secret),
            })
        );
    }
}
