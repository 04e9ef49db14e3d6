//! The end-to-end scenarios of issue 7, each a named test over one local cluster shared
//! by all of them (starting it is the expensive part): the real control plane, 3 zones
//! × 2 fake nodes, the test kubelet, and the operator installed from `deploy/` running
//! as pods under its own ServiceAccount, so the shipped RBAC is what is proven
//! sufficient.
//!
//! # Independence
//!
//! A failing scenario fails its own test and the others still run; `cargo test -p
//! tidecache-e2e --test e2e -- <name>` runs one alone. Each sets up what it needs
//! through the idempotent, once-per-process steps of [`suite`] (the operator from
//! `deploy/`, the sample `default/demo`). Scenarios on the sample leave it as they found
//! it (3 Ready pods, schedule `* * * * *`, every child as the operator builds it);
//! those that change membership or delete run on a CacheCluster of their own in a
//! namespace of their own, deleted after them. So the order below (most valuable
//! first) is not a dependency.
//!
//! # The harness
//!
//! `harness = false` with `libtest-mimic`: the scenarios need one tokio runtime for the
//! whole process, because the cluster's background tasks (the kubelet's pod workers,
//! the node heartbeats, the cluster DNS) must outlive every test, and each
//! `#[tokio::test]` stops its own runtime when it returns. The cluster is dropped
//! after the last scenario, passed or failed, which stops every process and deletes
//! every network namespace, veth and temp dir.

mod backend;
mod deletion;
mod install;
mod leader;
mod membership;
mod partitioned;
mod redis;
mod resilience;
mod services;
mod serving;
mod steady;
mod suite;
mod support;
mod upgrade;
mod zone_cut;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use libtest_mimic::{Arguments, Failed, Trial};

use suite::{Needs, Scenario, Suite};

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "operator_from_deploy",
            needs: Needs::Operator,
            namespace: None,
            body: |e| Box::pin(install::operator_from_deploy(e)),
        },
        Scenario {
            name: "sample_children",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(install::sample_children(e)),
        },
        Scenario {
            name: "services_routed",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(services::services_routed(e)),
        },
        Scenario {
            name: "pod_security_restricted",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(install::pod_security_restricted(e)),
        },
        Scenario {
            name: "spread_and_serve",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(serving::spread_and_serve(e)),
        },
        Scenario {
            name: "redis_protocol",
            needs: Needs::Operator,
            namespace: Some(redis::NAMESPACE),
            body: |e| Box::pin(redis::redis_protocol(e)),
        },
        Scenario {
            name: "printer_columns",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(install::printer_columns(e)),
        },
        Scenario {
            name: "janitor_sweeps",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(serving::janitor_sweeps(e)),
        },
        Scenario {
            name: "rolling_upgrade",
            needs: Needs::Operator,
            namespace: Some(upgrade::NAMESPACE),
            body: |e| Box::pin(upgrade::rolling_upgrade(e)),
        },
        Scenario {
            name: "scale_and_schedule",
            needs: Needs::Operator,
            namespace: Some(membership::NAMESPACE),
            body: |e| Box::pin(membership::scale_and_schedule(e)),
        },
        Scenario {
            name: "partitioned_serve",
            needs: Needs::Operator,
            namespace: Some(partitioned::NAMESPACE),
            body: |e| Box::pin(partitioned::partitioned_serve(e)),
        },
        Scenario {
            name: "partitioned_scale",
            needs: Needs::Operator,
            namespace: Some(partitioned::SCALE_NAMESPACE),
            body: |e| Box::pin(partitioned::partitioned_scale(e)),
        },
        Scenario {
            name: "partitioned_zone_cut",
            needs: Needs::Operator,
            namespace: Some(zone_cut::NAMESPACE),
            body: |e| Box::pin(zone_cut::partitioned_zone_cut(e)),
        },
        Scenario {
            name: "backend_postgres",
            needs: Needs::Operator,
            namespace: Some(backend::NAMESPACE),
            body: |e| Box::pin(backend::backend_postgres(e)),
        },
        Scenario {
            name: "steady_state_writes_nothing",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(steady::steady_state_writes_nothing(e)),
        },
        Scenario {
            name: "drift_undone",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(resilience::drift_undone(e)),
        },
        Scenario {
            name: "leader_takeover",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(leader::leader_takeover(e)),
        },
        Scenario {
            name: "network_cut",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(resilience::network_cut(e)),
        },
        Scenario {
            name: "invalid_refused",
            needs: Needs::Demo,
            namespace: None,
            body: |e| Box::pin(install::invalid_refused(e)),
        },
        Scenario {
            name: "garbage_collected",
            needs: Needs::Operator,
            namespace: Some(deletion::NAMESPACE),
            body: |e| Box::pin(deletion::garbage_collected(e)),
        },
    ]
}

fn main() -> ExitCode {
    let started = Instant::now();
    let mut args = Arguments::from_args();
    // One at a time, whatever `--test-threads` says: scenarios on the sample would see
    // each other's rollouts, and two cores running several rollouts at once with probe
    // periods of seconds would time them out.
    args.test_threads = Some(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("e2e: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let suite = Arc::new(Suite::default());
    let trials = scenarios()
        .into_iter()
        .map(|scenario| {
            let suite = suite.clone();
            let handle = runtime.handle().clone();
            Trial::test(scenario.name, move || {
                handle.block_on(suite.run(&scenario)).map_err(Failed::from)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // `run` has consumed every trial, and with it every other handle on the suite.
    let Some(suite) = Arc::into_inner(suite) else {
        eprintln!("e2e: a trial still holds the cluster, which is left running");
        return ExitCode::FAILURE;
    };
    {
        // Inside the runtime, for anything the cluster's parts release on drop.
        let _context = runtime.enter();
        suite.teardown(conclusion.has_failed());
    }
    // After a Ctrl-C the scenarios fail as the cluster goes; the signal handler exits
    // the process once it has removed everything, which returning now would cut short.
    tidecache_e2e::control_plane::wait_for_teardown();
    drop(runtime);
    eprintln!("e2e: {:.1?} in total", started.elapsed());
    conclusion.exit_code()
}
