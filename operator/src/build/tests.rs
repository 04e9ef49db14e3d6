//! Golden tests of the builders: each fixture's children are rendered as multi-document YAML
//! and compared with `tests/fixtures/<fixture>.children.yaml`. Run with `UPDATE_GOLDEN=1` to
//! rewrite the golden files after an intended change, then review the diff.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::crd::ReplicationMode;
use crate::fixtures;
use crate::validate::validate;

const FIXTURES: [&str; 3] = ["minimal", "full", "no-pdb"];

fn children(fixture: &str) -> Children {
    build(&validate(&fixtures::load(fixture)).expect("fixture is valid"))
}

fn render(children: &Children) -> String {
    let mut documents = vec![
        serde_yaml::to_string(&children.service_account),
        serde_yaml::to_string(&children.role_binding),
        serde_yaml::to_string(&children.volume_claim),
        serde_yaml::to_string(&children.peers_service),
        serde_yaml::to_string(&children.client_service),
        serde_yaml::to_string(&children.stateful_set),
        serde_yaml::to_string(&children.janitor),
    ];
    if let Some(budget) = &children.disruption_budget {
        documents.push(serde_yaml::to_string(budget));
    }
    if let Some(policy) = &children.network_policy {
        documents.push(serde_yaml::to_string(policy));
    }
    let documents: Vec<String> = documents
        .into_iter()
        .map(|document| document.expect("children serialise"))
        .collect();
    documents.join("---\n")
}

#[test]
fn children_match_the_golden_files() {
    for fixture in FIXTURES {
        let rendered = render(&children(fixture));
        let path = fixtures::dir().join(format!("{fixture}.children.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &rendered).expect("write golden file");
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        assert!(
            rendered == golden,
            "children of {fixture} differ from {}; rerun with UPDATE_GOLDEN=1 and review the \
             diff\n{rendered}",
            path.display()
        );
    }
}

#[test]
fn output_is_deterministic() {
    for fixture in FIXTURES {
        assert_eq!(render(&children(fixture)), render(&children(fixture)));
    }
}

#[test]
fn janitor_runs_on_the_cache_schedule() {
    for fixture in FIXTURES {
        let children = children(fixture);
        let cron = children.janitor.spec.expect("cronjob spec");
        let pod = children
            .stateful_set
            .spec
            .expect("sts spec")
            .template
            .spec
            .expect("pod spec");
        let args = pod.containers[0].args.clone().expect("args");
        assert!(args.contains(&format!("--schedule={}", cron.schedule)));
        let zone = cron.time_zone.expect("time zone");
        assert!(args.contains(&format!("--time-zone={zone}")));
        assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
    }
}

#[test]
fn every_pod_is_restricted() {
    for fixture in FIXTURES {
        let children = children(fixture);
        let cache = children.stateful_set.spec.expect("sts").template.spec;
        let janitor = children
            .janitor
            .spec
            .expect("cron")
            .job_template
            .spec
            .expect("job")
            .template
            .spec;
        for pod in [cache, janitor]
            .into_iter()
            .map(|pod| pod.expect("pod spec"))
        {
            let security = pod.security_context.expect("pod security");
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(
                security.seccomp_profile.map(|profile| profile.type_),
                Some("RuntimeDefault".to_string())
            );
            for container in pod.containers {
                let security = container.security_context.expect("container security");
                assert_eq!(security.allow_privilege_escalation, Some(false));
                assert_eq!(security.read_only_root_filesystem, Some(true));
                let capabilities = security.capabilities.expect("capabilities");
                assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
                assert!(capabilities.add.is_none());
            }
        }
    }
}

#[test]
fn pods_spread_over_the_zone_key_and_hosts() {
    let children = children("full");
    let constraints = children
        .stateful_set
        .spec
        .expect("sts")
        .template
        .spec
        .expect("pod")
        .topology_spread_constraints
        .expect("constraints");
    let keys: Vec<(&str, i32, &str)> = constraints
        .iter()
        .map(|c| {
            (
                c.topology_key.as_str(),
                c.max_skew,
                c.when_unsatisfiable.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("example.com/rack-zone", 2, "ScheduleAnyway"),
            ("kubernetes.io/hostname", 1, "ScheduleAnyway")
        ]
    );
}

#[test]
fn every_child_is_owned_except_a_retained_volume() {
    let minimal = children("minimal");
    assert!(minimal.volume_claim.metadata.owner_references.is_none());
    let full = children("full");
    let owners = [
        &full.service_account.metadata,
        &full.role_binding.metadata,
        &full.volume_claim.metadata,
        &full.peers_service.metadata,
        &full.client_service.metadata,
        &full.stateful_set.metadata,
        &full.janitor.metadata,
        &full.disruption_budget.expect("pdb").metadata,
    ];
    for meta in owners {
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "CacheCluster");
        assert_eq!(owner.name, "sessions");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn disabled_budget_builds_none() {
    assert!(children("no-pdb").disruption_budget.is_none());
}

/// The names and numbers of a Service's ports, with what each forwards to.
fn service_ports(service: &Service) -> Vec<(String, i32, IntOrString)> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|port| {
            (
                port.name.unwrap_or_default(),
                port.port,
                port.target_port.expect("a target port"),
            )
        })
        .collect()
}

/// The cache container of the StatefulSet's pod template.
fn cache_container(children: &Children) -> k8s_openapi::api::core::v1::Container {
    let pod = children
        .stateful_set
        .spec
        .as_ref()
        .expect("sts")
        .template
        .spec
        .as_ref();
    pod.expect("pod").containers[0].clone()
}

#[test]
fn pods_and_both_services_serve_resp_on_the_redis_port() {
    let children = children("full");
    let container = cache_container(&children);
    let args = container.args.clone().expect("args");
    assert!(args.contains(&"--resp-listen=0.0.0.0:6390".to_string()));
    let ports: Vec<(Option<String>, i32)> = container
        .ports
        .expect("ports")
        .into_iter()
        .map(|port| (port.name, port.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some(HTTP_PORT_NAME.into()), i32::from(HTTP_PORT)),
            (Some(REDIS_PORT_NAME.into()), 6390)
        ]
    );
    let redis = (
        REDIS_PORT_NAME.to_string(),
        6390,
        IntOrString::String(REDIS_PORT_NAME.into()),
    );
    let http = |port| {
        (
            HTTP_PORT_NAME.to_string(),
            port,
            IntOrString::String(HTTP_PORT_NAME.into()),
        )
    };
    assert_eq!(
        service_ports(&children.client_service),
        [http(6380), redis.clone()]
    );
    assert_eq!(
        service_ports(&children.peers_service),
        [http(i32::from(HTTP_PORT)), redis]
    );
}

#[test]
fn redis_port_zero_serves_no_resp_anywhere() {
    let mut cluster = fixtures::load("full");
    cluster.spec.service.redis_port = 0;
    let children = build(&validate(&cluster).expect("valid"));
    let container = cache_container(&children);
    let args = container.args.clone().expect("args");
    assert!(
        !args.iter().any(|arg| arg.starts_with("--resp-listen")),
        "{args:?}"
    );
    let names: Vec<Option<String>> = container
        .ports
        .expect("ports")
        .into_iter()
        .map(|port| port.name)
        .collect();
    assert_eq!(names, [Some(HTTP_PORT_NAME.to_string())]);
    for service in [&children.client_service, &children.peers_service] {
        let names: Vec<String> = service_ports(service)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(names, [HTTP_PORT_NAME]);
    }
}

#[test]
fn partitioned_mode_starts_the_pods_partitioned_with_redis_cluster_redirects() {
    let mut cluster = fixtures::load("full");
    cluster.spec.replication.mode = ReplicationMode::Partitioned;
    cluster.spec.replication.replication_factor = 3;
    let args = cache_container(&build(&validate(&cluster).expect("valid")))
        .args
        .expect("args");
    let mode_flags: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| {
            ["--mode", "--replication-factor", "--resp-cluster-mode"]
                .iter()
                .any(|flag| arg.starts_with(flag))
        })
        .collect();
    assert_eq!(
        mode_flags,
        [
            "--mode=partitioned",
            "--replication-factor=3",
            "--resp-cluster-mode"
        ]
    );
    // Full mode passes none of them, whatever replicationFactor says, so the pod template of
    // a cluster made before partitioned mode is unchanged and its pods do not roll.
    for fixture in FIXTURES {
        let mut cluster = fixtures::load(fixture);
        cluster.spec.replication.replication_factor = 3;
        let full = build(&validate(&cluster).expect("valid"));
        assert_eq!(
            full.stateful_set,
            children(fixture).stateful_set,
            "{fixture}"
        );
        let args = cache_container(&full).args.expect("args");
        assert!(
            !args.iter().any(|arg| arg.starts_with("--mode")
                || arg.starts_with("--replication-factor")
                || arg.starts_with("--resp-cluster-mode")),
            "{fixture}: {args:?}"
        );
    }
}

/// A new redisPort changes the pod template, so the StatefulSet rolls every pod onto it as
/// it does for any other spec change, and the Services change with it.
#[test]
fn changing_the_redis_port_changes_the_pod_template_and_the_services() {
    let before = children("full");
    let mut cluster = fixtures::load("full");
    for redis_port in [0, 6391] {
        cluster.spec.service.redis_port = redis_port;
        let after = build(&validate(&cluster).expect("valid"));
        let template = |children: &Children| {
            children
                .stateful_set
                .spec
                .as_ref()
                .expect("sts")
                .template
                .clone()
        };
        assert_ne!(
            template(&before),
            template(&after),
            "redisPort {redis_port}"
        );
        assert_ne!(before.client_service, after.client_service);
        assert_ne!(before.peers_service, after.peers_service);
    }
}

/// A rule of the NetworkPolicy as (sources, TCP ports); sources `None` admit everyone.
type Rule = (Option<Vec<String>>, Vec<i32>);

/// The policy's rules, each source written as `pods:<labels>`, `ns-in:<names>` or
/// `ns:<labels>`, for comparison.
fn policy_rules(children: &Children) -> Vec<Rule> {
    let policy = children.network_policy.clone().expect("a network policy");
    let spec = policy.spec.expect("spec");
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let cache = labels::selector_string(
        &children.stateful_set.metadata.name.clone().unwrap(),
        "cache",
    );
    let pods = spec
        .pod_selector
        .expect("pod selector")
        .match_labels
        .expect("labels");
    let pods: Vec<String> = pods.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(pods.join(","), cache);
    let describe = |peer: &k8s_openapi::api::networking::v1::NetworkPolicyPeer| {
        assert!(peer.ip_block.is_none());
        let labels = |selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
            let mut parts: Vec<String> = selector
                .match_labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.extend(selector.match_expressions.iter().flatten().map(|e| {
                format!(
                    "{} {} {}",
                    e.key,
                    e.operator,
                    e.values.clone().unwrap_or_default().join("|")
                )
            }));
            parts.join(",")
        };
        match (&peer.pod_selector, &peer.namespace_selector) {
            (Some(pods), None) => format!("pods:{}", labels(pods)),
            (None, Some(namespaces)) => format!("ns:{}", labels(namespaces)),
            other => panic!("unexpected peer {other:?}"),
        }
    };
    spec.ingress
        .expect("ingress")
        .iter()
        .map(|rule| {
            let ports = rule
                .ports
                .iter()
                .flatten()
                .map(|port| {
                    assert_eq!(port.protocol.as_deref(), Some("TCP"));
                    match port.port {
                        Some(IntOrString::Int(number)) => number,
                        ref other => panic!("port {other:?}"),
                    }
                })
                .collect();
            (
                rule.from
                    .as_ref()
                    .map(|from| from.iter().map(describe).collect()),
                ports,
            )
        })
        .collect()
}

fn sources(texts: &[&str]) -> Option<Vec<String>> {
    Some(texts.iter().map(|text| text.to_string()).collect())
}

#[test]
fn network_policy_admits_peers_everywhere_and_clients_from_the_own_namespace() {
    let minimal = children("minimal");
    let pods = "pods:app.kubernetes.io/component=cache,app.kubernetes.io/instance=demo,\
                app.kubernetes.io/name=tidecache";
    let own = "ns:kubernetes.io/metadata.name In apps";
    assert_eq!(
        policy_rules(&minimal),
        [
            (sources(&[pods]), vec![8080, 6379]),
            (sources(&[own]), vec![8080, 6379]),
            (sources(&[own]), vec![8080]),
        ]
    );
    let policy = minimal.network_policy.as_ref().expect("policy");
    assert_eq!(policy.metadata.name.as_deref(), Some("demo"));
    assert_eq!(
        policy.metadata.owner_references,
        minimal.stateful_set.metadata.owner_references
    );
}

#[test]
fn network_policy_takes_the_spec_sources_and_ports() {
    let full = children("full");
    let pods = "pods:app.kubernetes.io/component=cache,app.kubernetes.io/instance=sessions,\
                app.kubernetes.io/name=tidecache";
    assert_eq!(
        policy_rules(&full),
        [
            (sources(&[pods]), vec![8080, 6390]),
            (
                sources(&[
                    "ns:kubernetes.io/metadata.name In web|checkout",
                    "ns:team=payments"
                ]),
                vec![8080, 6390]
            ),
            (
                sources(&["ns:kubernetes.io/metadata.name=monitoring"]),
                vec![8080]
            ),
        ]
    );
    // `all` admits every source, also outside the cluster (a LoadBalancer's clients).
    let mut cluster = fixtures::load("full");
    cluster.spec.network.clients = crate::crd::TrafficSources {
        all: true,
        ..crate::crd::TrafficSources::default()
    };
    cluster.spec.service.redis_port = 0;
    let rules = policy_rules(&build(&validate(&cluster).expect("valid")));
    assert_eq!(rules[0], (sources(&[pods]), vec![8080]));
    assert_eq!(rules[1], (None, vec![8080]));
    assert!(children("no-pdb").network_policy.is_none());
}

/// With TLS on, clients are admitted on the TLS ports only and the plain ones serve the
/// cluster's own pods (peers) alone.
#[test]
fn network_policy_admits_clients_on_the_tls_ports_when_tls_is_on() {
    let mut validated = validate(&fixtures::minimal()).expect("valid");
    validated.node.tls = Some(tidecache_contract::args::NodeTls {
        listen: "0.0.0.0:8443".parse().expect("address"),
        resp_listen: Some("0.0.0.0:6380".parse().expect("address")),
        cert_file: "/tls/tls.crt".into(),
        key_file: "/tls/tls.key".into(),
        client_ca_file: None,
    });
    let rules = policy_rules(&build(&validated));
    assert_eq!(rules[0].1, [8080, 6379, 8443, 6380]);
    assert_eq!(rules[1].1, [8443, 6380]);
    assert_eq!(rules[2].1, [8080]);
}

/// The `full` fixture with TLS: client certificates required, HTTPS on Service port 443,
/// RESP over TLS on 6400.
fn with_tls() -> crate::crd::CacheCluster {
    let mut cluster = fixtures::load("full");
    cluster.spec.tls = Some(crate::crd::TlsSpec {
        secret_name: "sessions-tls".into(),
        client_certificates: crate::crd::ClientCertificates::Require,
        port: 443,
        redis_port: 6400,
    });
    cluster
}

#[test]
fn tls_mounts_the_secret_and_adds_the_tls_listeners_beside_the_plain_ones() {
    let children = build(&validate(&with_tls()).expect("valid"));
    let container = cache_container(&children);
    let args = container.args.clone().expect("args");
    for flag in [
        "--listen=0.0.0.0:8080",
        "--resp-listen=0.0.0.0:6390",
        "--tls-listen=0.0.0.0:8443",
        "--resp-tls-listen=0.0.0.0:6400",
        "--tls-cert-file=/etc/tidecache/tls/tls.crt",
        "--tls-key-file=/etc/tidecache/tls/tls.key",
        "--tls-client-ca-file=/etc/tidecache/tls/ca.crt",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} missing: {args:?}");
    }
    let ports: Vec<(Option<String>, i32)> = container
        .ports
        .clone()
        .expect("ports")
        .into_iter()
        .map(|port| (port.name, port.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some(HTTP_PORT_NAME.into()), i32::from(HTTP_PORT)),
            (Some(REDIS_PORT_NAME.into()), 6390),
            (Some(HTTPS_PORT_NAME.into()), i32::from(HTTPS_PORT)),
            (Some(REDISS_PORT_NAME.into()), 6400),
        ]
    );
    let mount = container
        .volume_mounts
        .expect("mounts")
        .into_iter()
        .find(|mount| mount.mount_path == TLS_DIR)
        .expect("the Secret is mounted");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(mount.sub_path, None, "a subPath mount is never updated");
    let pod = children
        .stateful_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.clone())
        .expect("pod");
    let volume = pod
        .volumes
        .expect("volumes")
        .into_iter()
        .find(|volume| volume.name == mount.name)
        .expect("the mount's volume");
    let secret = volume.secret.expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("sessions-tls"));
    assert_eq!(secret.default_mode, Some(0o440));
    // Probes stay on the plain HTTP port.
    let probe = container.readiness_probe.and_then(|probe| probe.http_get);
    assert_eq!(
        probe.map(|get| get.port),
        Some(IntOrString::String(HTTP_PORT_NAME.into()))
    );

    let port = |name: &str, number| (name.to_string(), number, IntOrString::String(name.into()));
    assert_eq!(
        service_ports(&children.client_service),
        [port(HTTPS_PORT_NAME, 443), port(REDISS_PORT_NAME, 6400)],
        "the client Service offers TLS only"
    );
    assert_eq!(
        service_ports(&children.peers_service),
        [
            port(HTTP_PORT_NAME, i32::from(HTTP_PORT)),
            port(REDIS_PORT_NAME, 6390),
            port(HTTPS_PORT_NAME, i32::from(HTTPS_PORT)),
            port(REDISS_PORT_NAME, 6400),
        ]
    );
}

#[test]
fn tls_without_client_certificates_or_resp_over_tls_renders_neither() {
    let mut cluster = with_tls();
    let tls = cluster.spec.tls.as_mut().expect("tls");
    tls.client_certificates = crate::crd::ClientCertificates::Ignore;
    tls.redis_port = 0;
    let built = build(&validate(&cluster).expect("valid"));
    let args = cache_container(&built).args.expect("args");
    assert!(args.contains(&"--tls-listen=0.0.0.0:8443".to_string()));
    for absent in ["--tls-client-ca-file", "--resp-tls-listen"] {
        assert!(!args.iter().any(|arg| arg.starts_with(absent)), "{args:?}");
    }
    let names = |service: &Service| {
        service_ports(service)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&built.client_service), [HTTPS_PORT_NAME]);
    assert_eq!(
        names(&built.peers_service),
        [HTTP_PORT_NAME, REDIS_PORT_NAME, HTTPS_PORT_NAME]
    );
    // Without spec.tls nothing of it is rendered.
    let plain = cache_container(&children("full")).args.expect("args");
    assert!(
        !plain.iter().any(|arg| arg.starts_with("--tls")),
        "{plain:?}"
    );
}

#[test]
fn a_backend_reaches_the_pods_as_flags_a_secret_variable_and_the_ca_volume() {
    let mut cluster = fixtures::load("full");
    cluster.spec.backend = Some(crate::crd::BackendSpec {
        postgres: crate::crd::PostgresBackendSpec {
            connection_secret: crate::crd::SecretKeySpec {
                name: "orders-db".into(),
                key: "url".into(),
            },
            ca_secret: Some(crate::crd::SecretKeySpec {
                name: "orders-db-ca".into(),
                key: "root.pem".into(),
            }),
            table: "shop.orders".into(),
            key_column: "id".into(),
            value_column: "doc".into(),
            expiry_column: Some("expires_at".into()),
            mode: crate::crd::BackendMode::WriteThrough,
        },
    });
    let children = build(&validate(&cluster).expect("valid"));
    let container = cache_container(&children);
    let args = container.args.clone().expect("args");
    for flag in [
        "--backend=postgres",
        "--backend-table=shop.orders",
        "--backend-key-column=id",
        "--backend-value-column=doc",
        "--backend-mode=write-through",
        "--backend-expiry-column=expires_at",
        "--backend-ca-file=/etc/tidecache/backend-ca/ca.crt",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} missing: {args:?}");
    }
    assert!(
        !args.iter().any(|flag| flag.starts_with("--backend-url")),
        "the URL holds a password: never a flag"
    );
    let url = container
        .env
        .clone()
        .expect("env")
        .into_iter()
        .find(|var| var.name == "TIDECACHE_BACKEND_URL")
        .and_then(|var| var.value_from?.secret_key_ref)
        .expect("the URL comes from the Secret");
    assert_eq!((url.name.as_str(), url.key.as_str()), ("orders-db", "url"));
    let mount = container
        .volume_mounts
        .expect("mounts")
        .into_iter()
        .find(|mount| mount.mount_path == BACKEND_CA_DIR)
        .expect("the CA is mounted");
    let pod = children
        .stateful_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.clone())
        .expect("pod");
    let secret = pod
        .volumes
        .expect("volumes")
        .into_iter()
        .find(|volume| volume.name == mount.name)
        .and_then(|volume| volume.secret)
        .expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("orders-db-ca"));
    let items = secret.items.expect("one key projected");
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("root.pem", BACKEND_CA_FILE)
    );
}
