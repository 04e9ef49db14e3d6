//! The operator's command line for cache-node ([`NodeArgs`]) read by cache-node's own parser,
//! so that a flag or environment variable renamed on one side fails here, not in a pod.
//!
//! clap reads environment variables from the process, and changing the environment of a
//! running test process is unsound (other test threads read it). So the parse runs in a child
//! process — this test binary, run again on the one test — started with exactly the
//! environment the kubelet would give the pod: the contract's variables, resolved as the
//! downward API and the Secret would resolve them, and nothing else.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cache_node::{CapacitySource, Config, Mode, PeerSource};
use clap::{CommandFactory, Parser};
use tidecache_contract::Schedule;
use tidecache_contract::args::{
    AckLevel, BackendMode, EnvSource, EvictionPolicy, FsyncPolicy, Invocation, LogFormat, NodeArgs,
    NodeBackend, NodeTls, PEER_TOKEN_KEY, PEER_TOKEN_PREVIOUS_KEY, Partitioned, PodField,
    SecretKeyRef,
};

/// Set in the child's environment: the test then parses instead of spawning.
const CHILD_MARKER: &str = "TIDECACHE_NODE_ARGS_TEST_CHILD";
/// What the downward API gives the pod as its name.
const POD_NAME: &str = "sessions-4";
/// What the downward API gives the pod as its namespace.
const POD_NAMESPACE: &str = "team-a";
/// What the Secret holds.
const TOKEN: &str = "s3cret-token";
/// What the generated peer-token Secret holds under its two keys.
const PEER_TOKEN: &str = "peer-token-now";
const PEER_TOKEN_PREVIOUS: &str = "peer-token-before";
/// What the backend's Secret holds.
const BACKEND_URL: &str = "postgresql://cache:pw@db.team-a.svc:5432/shop";

/// Every field set, each to a value that is not cache-node's default, so that a setting that
/// does not arrive cannot pass for one that did.
fn node_args() -> NodeArgs {
    NodeArgs {
        listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        resp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 6380))),
        schedule: Schedule::new("*/5 * * * *", Some("Europe/Berlin")).expect("valid schedule"),
        default_ttl: Duration::from_secs(15 * 60),
        max_ttl: Duration::from_secs(2 * 3_600),
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
        auth_token: Some(SecretKeyRef {
            name: "sessions-token".into(),
            key: "bearer".into(),
        }),
        peer_token_secret: "sessions-peer-token".into(),
        partitioned: Some(Partitioned {
            replication_factor: 3,
        }),
        tls: Some(NodeTls {
            listen: SocketAddr::from(([0, 0, 0, 0], 9443)),
            resp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 6390))),
            cert_file: PathBuf::from("/etc/tidecache/tls/tls.crt"),
            key_file: PathBuf::from("/etc/tidecache/tls/tls.key"),
            client_ca_file: Some(PathBuf::from("/etc/tidecache/tls/ca.crt")),
        }),
        backend: Some(NodeBackend {
            url: SecretKeyRef {
                name: "sessions-db".into(),
                key: "url".into(),
            },
            ca_file: None,
            table: "shop.orders".into(),
            key_column: "id".into(),
            value_column: "doc".into(),
            expiry_column: Some("expires_at".into()),
            mode: BackendMode::WriteBehind,
        }),
    }
}

/// The value the kubelet would give a variable of `source`.
fn resolve(source: &EnvSource) -> String {
    match source {
        EnvSource::Value(value) => value.clone(),
        EnvSource::PodField(PodField::Name) => POD_NAME.into(),
        EnvSource::PodField(PodField::Namespace) => POD_NAMESPACE.into(),
        EnvSource::SecretKey(secret) if secret.name == node_args().peer_token_secret => {
            match secret.key.as_str() {
                PEER_TOKEN_KEY => PEER_TOKEN.into(),
                PEER_TOKEN_PREVIOUS_KEY => PEER_TOKEN_PREVIOUS.into(),
                other => panic!("the peer-token Secret has no key {other}"),
            }
        }
        EnvSource::SecretKey(secret)
            if Some(secret) == node_args().backend.as_ref().map(|backend| &backend.url) =>
        {
            BACKEND_URL.into()
        }
        EnvSource::SecretKey(secret) => {
            assert_eq!(Some(secret), node_args().auth_token.as_ref());
            TOKEN.into()
        }
    }
}

#[test]
fn every_variable_is_one_cache_node_reads_and_no_flag_overrides_it() {
    let command = Config::command();
    let args = node_args().to_args();
    for var in node_args().to_env() {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_env() == Some(OsStr::new(var.name)))
            .unwrap_or_else(|| panic!("cache-node's Config declares no env = \"{}\"", var.name));
        let long = arg.get_long().expect("every setting has a long flag");
        let prefix = format!("--{long}=");
        assert!(
            !args.iter().any(|flag| flag.starts_with(&prefix)),
            "--{long} is also given as a flag, which would override {}",
            var.name
        );
    }
}

#[test]
fn every_field_reaches_cache_nodes_settings() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        check_parsed_settings();
        return;
    }
    let env: Vec<(&str, String)> = node_args()
        .to_env()
        .iter()
        .map(|var| (var.name, resolve(&var.source)))
        .collect();
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "every_field_reaches_cache_nodes_settings",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD_MARKER, "1")
        .envs(env)
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the parse in the child failed:\n{stdout}\n{stderr}"
    );
}

/// In the child: parse the contract's flags with the environment the parent set, validate, and
/// find every field of [`NodeArgs`] in the settings cache-node runs with.
fn check_parsed_settings() {
    let node = node_args();
    let config =
        Config::try_parse_from(std::iter::once("cache-node".to_string()).chain(node.to_args()))
            .unwrap_or_else(|error| panic!("cache-node refuses the operator's flags: {error}"));
    let settings = config
        .validate()
        .unwrap_or_else(|error| panic!("cache-node refuses the operator's settings: {error}"));
    // Destructured without `..`: a field added to NodeArgs does not compile here until it is
    // checked.
    let NodeArgs {
        listen,
        resp_listen,
        schedule,
        default_ttl,
        max_ttl,
        max_key_bytes,
        max_value_bytes,
        max_memory,
        eviction_policy,
        log_format,
        data_dir,
        cluster,
        fsync,
        peers_service,
        write_ack,
        auth_token,
        peer_token_secret,
        tls,
        partitioned,
        backend,
    } = node;
    let backend = backend.expect("a backend is set");
    let served = settings.backend.as_ref().expect("the backend is on");
    assert_eq!(served.table, backend.table);
    assert_eq!(served.key_column, backend.key_column);
    assert_eq!(served.value_column, backend.value_column);
    assert_eq!(served.expiry_column, backend.expiry_column);
    assert_eq!(served.mode, backend.mode.into());
    assert!(served.tls.is_none());
    assert_eq!(served.connection.get_dbname(), Some("shop"));
    assert_eq!(served.connection.get_password(), Some(&b"pw"[..]));
    assert_eq!(
        served.queue.as_ref().map(|queue| queue.dir.clone()),
        Some(PathBuf::from(
            "/data/.write-behind/team-a/sessions/sessions-4"
        )),
        "the queue is the pod's own, on the volume"
    );
    let tls = tls.expect("TLS is set");
    let served = settings.tls.as_ref().expect("TLS is on");
    assert_eq!(served.listen, Some(tls.listen));
    assert_eq!(served.resp_listen, tls.resp_listen);
    assert_eq!(served.files.cert, tls.cert_file);
    assert_eq!(served.files.key, tls.key_file);
    assert_eq!(served.files.client_ca, tls.client_ca_file);
    let bytes = |value: usize| u64::try_from(value).expect("fits");
    assert_eq!(settings.listen, listen);
    assert_eq!(settings.resp_listen, resp_listen);
    assert_eq!(settings.store.schedule, schedule);
    assert_eq!(settings.limits.default_ttl, Some(default_ttl));
    assert_eq!(settings.limits.max_ttl, Some(max_ttl));
    assert_eq!(bytes(settings.limits.max_key_bytes), max_key_bytes);
    assert_eq!(bytes(settings.limits.max_value_bytes), max_value_bytes);
    assert_eq!(settings.store.capacity_bytes, max_memory);
    assert_eq!(settings.capacity_source, CapacitySource::Flag);
    assert_eq!(settings.store.eviction_policy, eviction_policy.into());
    assert_eq!(settings.log_format, log_format);

    let persistence = settings.persistence.expect("persistence is on");
    assert_eq!(persistence.data_dir, data_dir);
    assert_eq!(persistence.cluster.as_str(), cluster);
    assert_eq!(persistence.fsync, fsync.into());
    assert_eq!(persistence.node.as_str(), POD_NAME);
    assert_eq!(persistence.namespace.as_str(), POD_NAMESPACE);

    assert!(
        settings.resp_cluster_mode,
        "partitioned mode turns RESP cluster mode on"
    );
    let replication = settings.replication.expect("replication is on");
    assert_eq!(
        replication.settings.mode,
        Mode::Partitioned {
            replication_factor: usize::from(partitioned.expect("set").replication_factor)
        }
    );
    assert_eq!(replication.peers, PeerSource::Service(peers_service));
    assert_eq!(replication.settings.default_ack, write_ack.into());

    assert!(auth_token.is_some());
    let bearer = http::HeaderValue::try_from(format!("Bearer {TOKEN}")).expect("header value");
    assert_eq!(
        settings.auth.map(|token| token.header_value()),
        Some(bearer.clone())
    );
    // The peers present their own token (and accept the previous one), never the clients'.
    assert!(!peer_token_secret.is_empty());
    let credential = replication
        .settings
        .peer_credential
        .expect("a peer credential");
    let presented: Vec<String> = credential
        .header_values()
        .iter()
        .map(|value| value.to_str().expect("ASCII").to_string())
        .collect();
    assert_eq!(
        presented,
        [
            format!("Bearer {PEER_TOKEN}"),
            format!("Bearer {PEER_TOKEN_PREVIOUS}")
        ]
    );
    assert!(!credential.admits(Some(&bearer)));
}
