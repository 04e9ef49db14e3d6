//! Golden tests of the builders: each fixture's children are rendered as multi-document YAML
//! and compared with `tests/fixtures/<fixture>.children.yaml`. Run with `UPDATE_GOLDEN=1` to
//! rewrite the golden files after an intended change, then review the diff.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
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
