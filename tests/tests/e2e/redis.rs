//! The Redis protocol on a CacheCluster of its own (`e2e-redis/tokens`) whose clients
//! must present a token from a Secret: every pod serves RESP on its IP at the `redis`
//! port, which both Services name; the token is required there as on HTTP; a key SET
//! over RESP is the key the HTTP API serves; and `redisPort: 0` rolls the pods onto
//! HTTP alone.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tidecache_e2e::http;
use tokio::process::Command;

use crate::suite::Env;
use crate::support::{TIMEOUT, Target, TestResult, api, apply, pod_addr, wait_for};

/// The scenario's own namespace (created and deleted by the suite).
pub const NAMESPACE: &str = "e2e-redis";
const TOKENS: Target = Target {
    namespace: NAMESPACE,
    name: "tokens",
};
/// The Secret `spec.auth` names, and the token it holds.
const SECRET: &str = "tokens-auth";
const TOKEN: &str = "e2e-resp-token-7d1c";
/// `spec.service.redisPort`'s default, on which the pods and both Services serve RESP.
const REDIS_PORT: u16 = 6379;
const KEY: &str = "resp-session";
const VALUE: &str = "written over RESP";
/// How long one `redis-cli` run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// With the default `redisPort`, `redis-cli -h <pod IP> -p 6379` without the token gets
/// `NOAUTH` and stores nothing; with it, SET then GET returns the value, which the
/// pod's HTTP API serves (with the bearer token, and to no one without it) and the other
/// pod serves once replicated. Both Services name the port `redis`. Set to 0, the pods
/// roll onto HTTP alone: the Services lose the port, the pods refuse RESP connections,
/// and the key is still served over HTTP.
pub async fn redis_protocol(env: &Env) -> TestResult {
    apply(
        env,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {SECRET}\n  namespace: \
             {NAMESPACE}\nstringData:\n  token: {TOKEN}\n---\n\
             apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
             namespace: {NAMESPACE}\nspec:\n  replicas: 2\n  auth:\n    secretName: {SECRET}\n",
            TOKENS.name
        ),
    )
    .await?;
    let pods = TOKENS.wait_settled(env, 2).await?;
    for service in services(env).await? {
        let ports = redis_ports(&service);
        if ports != [i32::from(REDIS_PORT)] {
            return Err(format!(
                "Service {:?}: redis ports {ports:?}, expected [{REDIS_PORT}]",
                service.metadata.name
            ));
        }
    }
    let mut members = pods.values();
    let (Some(first), Some(second)) = (members.next(), members.next()) else {
        return Err(format!("2 pods settled but {} listed", pods.len()));
    };
    let http_addr = pod_addr(first)?;
    let resp_addr = SocketAddr::new(http_addr.ip(), REDIS_PORT);

    let refused = redis_cli(resp_addr, None, &["SET", KEY, VALUE]).await?;
    if !stdout(&refused).starts_with("NOAUTH") {
        return Err(format!(
            "SET without the token on {resp_addr}: {}",
            describe(&refused)
        ));
    }
    let (status, body) = get_key(http_addr, Some(TOKEN)).await?;
    if status != 404 {
        return Err(format!(
            "after the refused SET, GET over HTTP answered {status} {body}; expected 404"
        ));
    }

    let set = redis_cli(resp_addr, Some(TOKEN), &["SET", KEY, VALUE]).await?;
    if stdout(&set) != "OK" {
        return Err(format!("SET with the token: {}", describe(&set)));
    }
    let got = redis_cli(resp_addr, Some(TOKEN), &["GET", KEY]).await?;
    if stdout(&got) != VALUE {
        return Err(format!("GET with the token: {}", describe(&got)));
    }
    let (status, body) = get_key(http_addr, Some(TOKEN)).await?;
    if status != 200 || body != VALUE {
        return Err(format!(
            "GET over HTTP with the token on {http_addr}: {status} {body}"
        ));
    }
    let (status, body) = get_key(http_addr, None).await?;
    if status != 401 {
        return Err(format!(
            "GET over HTTP without the token on {http_addr}: {status} {body}; expected 401"
        ));
    }
    replicated(pod_addr(second)?).await?;

    TOKENS
        .patch(env, r#"{"spec":{"service":{"redisPort":0}}}"#)
        .await?;
    let pods = wait_for("the pods to roll onto HTTP alone", TIMEOUT, async || {
        let pods = TOKENS.wait_settled(env, 2).await?;
        let serving: Vec<&String> = pods
            .iter()
            .filter(|(_, pod)| serves_resp(pod))
            .map(|(name, _)| name)
            .collect();
        if serving.is_empty() {
            Ok(Some(pods))
        } else {
            Err(format!("still started with RESP: {serving:?}"))
        }
    })
    .await?;
    wait_for("both Services without a redis port", TIMEOUT, async || {
        let left: Vec<(Option<String>, Vec<i32>)> = services(env)
            .await?
            .iter()
            .map(|service| (service.metadata.name.clone(), redis_ports(service)))
            .filter(|(_, ports)| !ports.is_empty())
            .collect();
        if left.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("redis ports left: {left:?}"))
        }
    })
    .await?;
    for (name, pod) in &pods {
        let http_addr = pod_addr(pod)?;
        let resp_addr = SocketAddr::new(http_addr.ip(), REDIS_PORT);
        let ping = redis_cli(resp_addr, Some(TOKEN), &["PING"]).await?;
        if ping.status.success() || !stderr(&ping).contains("Connection refused") {
            return Err(format!(
                "with redisPort 0, {name} still answers on {resp_addr}: {}",
                describe(&ping)
            ));
        }
        let (status, body) = get_key(http_addr, Some(TOKEN)).await?;
        if status != 200 || body != VALUE {
            return Err(format!(
                "with redisPort 0, GET over HTTP on {name}: {status} {body}"
            ));
        }
    }
    Ok(())
}

/// The client Service and the peers Service.
async fn services(env: &Env) -> TestResult<Vec<Service>> {
    let services = api::<Service>(env, NAMESPACE);
    let mut found = Vec::new();
    for name in [TOKENS.name.to_string(), format!("{}-peers", TOKENS.name)] {
        found.push(
            services
                .get(&name)
                .await
                .map_err(|e| format!("Service {name}: {e}"))?,
        );
    }
    Ok(found)
}

/// The numbers of a Service's ports named `redis` that forward to the pods' `redis` port.
fn redis_ports(service: &Service) -> Vec<i32> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|port| port.name.as_deref() == Some("redis"))
        .filter(|port| port.target_port == Some(IntOrString::String("redis".into())))
        .map(|port| port.port)
        .collect()
}

/// Whether the pod's cache-node is started with a RESP listener or has a `redis` port.
fn serves_resp(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .is_some_and(|container| {
            let flag = container
                .args
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|arg| arg.starts_with("--resp-listen"));
            let port = container
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|port| port.name.as_deref() == Some("redis"));
            flag || port
        })
}

/// Runs `redis-cli -h <ip> -p <port> [--user default --pass <token>] <command>` from the
/// host, which reaches pod IPs over the pod network's bridge.
async fn redis_cli(addr: SocketAddr, token: Option<&str>, command: &[&str]) -> TestResult<Output> {
    let mut cli = Command::new("redis-cli");
    cli.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
    if let Some(token) = token {
        cli.args(["--user", "default", "--pass", token, "--no-auth-warning"]);
    }
    cli.args(command).kill_on_drop(true);
    let shown = command.join(" ");
    tokio::time::timeout(CLI_TIMEOUT, cli.output())
        .await
        .map_err(|_| format!("redis-cli {shown} on {addr}: no answer within {CLI_TIMEOUT:?}"))?
        .map_err(|e| {
            format!("running redis-cli (apt package redis-tools) for {shown} on {addr}: {e}")
        })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

fn describe(output: &Output) -> String {
    format!(
        "{}, stdout {:?}, stderr {:?}",
        output.status,
        stdout(output),
        stderr(output)
    )
}

/// `GET /v1/keys/KEY` on the pod's HTTP API, with `Authorization: Bearer <token>` when
/// given: status and body.
async fn get_key(addr: SocketAddr, token: Option<&str>) -> TestResult<(u16, String)> {
    let path = format!("/v1/keys/{KEY}");
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    let r = http::request_with_headers(addr, "GET", &path, &headers, b"", Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    Ok((r.status, r.text()))
}

/// Waits until the other pod serves the key over HTTP: the RESP write was replicated.
async fn replicated(addr: SocketAddr) -> TestResult {
    wait_for(
        &format!("the RESP write replicated to {addr}"),
        Duration::from_secs(30),
        async || {
            let (status, body) = get_key(addr, Some(TOKEN)).await?;
            if status == 200 && body == VALUE {
                Ok(Some(()))
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await
}
