//! Reconcile scenarios against an in-memory fake of the API server behind a `tower_test` mock
//! service: it stores what is applied, answers reads from the store, and records every write
//! and Event, so that each test states exactly which writes a reconcile makes. Before each
//! reconcile the children's caches are filled from the fake's objects, as complete lists of
//! the driver's watches would fill them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::ApiResource;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::caches::ChildMeta;
use super::holdings::{HoldingsReader, PARTITIONS_PATH};
use super::pipeline::{MOVES_POLL, RESYNC, reconcile, reconcile_guarded};
use super::{Context, Error};
use crate::crd::CacheCluster;
use crate::labels::{self, APPLIED_HASH_ANNOTATION, CACHE_COMPONENT};
use crate::telemetry::Metrics;
use crate::{fixtures, status};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// What the fake API server holds and saw.
#[derive(Default)]
struct State {
    /// Objects by their API path (without query).
    objects: BTreeMap<String, Value>,
    /// `METHOD path` of every write except Events.
    writes: Vec<String>,
    /// `type reason: note` of every Event.
    events: Vec<String>,
    /// Requests of any kind.
    requests: usize,
    /// A path whose apply the fake refuses, as an admission webhook or validation would.
    refuse: Option<String>,
}

struct FakeApi {
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
    context: Arc<Context>,
    /// The writers of the context's children caches, which the driver would own.
    caches: Mutex<Vec<(ApiResource, Writer<ChildMeta>)>>,
}

const CLUSTER_PATH: &str = "/apis/tidecache.io/v1alpha1/namespaces/apps/cacheclusters/demo";
const STS_PATH: &str = "/apis/apps/v1/namespaces/apps/statefulsets/demo";
const CRON_PATH: &str = "/apis/batch/v1/namespaces/apps/cronjobs/demo-janitor";
const PDB_PATH: &str = "/apis/policy/v1/namespaces/apps/poddisruptionbudgets/demo";
const NETWORK_POLICY_PATH: &str = "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/demo";

impl FakeApi {
    /// A fake whose reconciles ask for pods' holdings on a port nothing listens on.
    fn start() -> FakeApi {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = free.local_addr().expect("address").port();
        drop(free);
        FakeApi::with_pod_port(port)
    }

    /// A fake whose reconciles ask for pods' holdings on `port` of their pod IPs.
    fn with_pod_port(port: u16) -> FakeApi {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let state = Arc::new(Mutex::new(State::default()));
        let server = tokio::spawn(serve(handle, state.clone()));
        let mut context = Context::new(client, Arc::new(Metrics::default()), None);
        context.now = Box::new(|| Timestamp::from_second(1_800_000_000).expect("timestamp"));
        context.holdings = HoldingsReader::new(port);
        let caches = Mutex::new(context.children.take_writers());
        FakeApi {
            state,
            server,
            context: Arc::new(context),
            caches,
        }
    }

    /// Fills the children's caches with the fake's objects of their kinds, as a complete list
    /// would.
    fn fill_caches(&self) {
        let objects = self.lock().objects.clone();
        for (kind, writer) in self.caches.lock().expect("caches lock").iter_mut() {
            writer.apply_watcher_event(&watcher::Event::Init);
            for (path, object) in &objects {
                if !is_of_kind(path, kind) {
                    continue;
                }
                let meta: ChildMeta = serde_json::from_value(json!({
                    "apiVersion": kind.api_version,
                    "kind": kind.kind,
                    "metadata": object["metadata"],
                }))
                .expect("metadata");
                writer.apply_watcher_event(&watcher::Event::InitApply(meta));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    /// Stores `cluster` as the API server would and returns it.
    fn put_cluster(&self, cluster: &CacheCluster) {
        let value = serde_json::to_value(cluster).expect("json");
        self.lock().objects.insert(CLUSTER_PATH.into(), value);
    }

    /// The stored CacheCluster, as the controller's watch would deliver it.
    fn cluster(&self) -> CacheCluster {
        serde_json::from_value(self.lock().objects[CLUSTER_PATH].clone()).expect("cluster")
    }

    async fn reconcile(&self) -> Action {
        self.try_reconcile().await.expect("reconcile")
    }

    /// A reconcile of the stored CacheCluster, with the caches filled first.
    async fn try_reconcile(&self) -> Result<Action, Error> {
        self.fill_caches();
        reconcile(Arc::new(self.cluster()), self.context.clone()).await
    }

    /// Takes the writes and Events recorded so far.
    fn take(&self) -> (Vec<String>, Vec<String>) {
        let mut state = self.lock();
        (
            std::mem::take(&mut state.writes),
            std::mem::take(&mut state.events),
        )
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut handle: Handle, state: Arc<Mutex<State>>) {
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let selector = label_selector(request.uri().query().unwrap_or_default());
        let body = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("json body")
        };
        let (code, response) = answer(
            &mut state.lock().expect("state lock"),
            &method,
            &path,
            &selector,
            body,
        );
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&response).expect("json")))
            .expect("response");
        send.send_response(response);
    }
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// The `key=value` requirements of a request's `labelSelector` (the only selector form the
/// operator uses).
fn label_selector(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("labelSelector="))
        .flat_map(|selector| {
            percent_decode(selector)
                .split(',')
                .filter_map(|requirement| {
                    let (key, value) = requirement.split_once('=')?;
                    Some((key.to_string(), value.to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Decodes `%XX` escapes of a query value.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(if bytes[index] == b'+' {
                    b' '
                } else {
                    bytes[index]
                });
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).expect("UTF-8 query")
}

/// Whether `path` names one object (`.../namespaces/<ns>/<plural>/<name>`) of `kind`.
fn is_of_kind(path: &str, kind: &ApiResource) -> bool {
    let prefix = if kind.group.is_empty() {
        format!("/api/{}/namespaces/", kind.version)
    } else {
        format!("/apis/{}/{}/namespaces/", kind.group, kind.version)
    };
    let Some(rest) = path.strip_prefix(&prefix) else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    segments.len() == 3 && segments[1] == kind.plural
}

/// Whether `path` names a namespaced collection (`.../namespaces/<ns>/<plural>`) rather than
/// one object in it.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.first() {
        Some(&"api") => segments.len() == 5 && segments[2] == "namespaces",
        Some(&"apis") => segments.len() == 6 && segments[3] == "namespaces",
        _ => false,
    }
}

fn answer(
    state: &mut State,
    method: &Method,
    path: &str,
    selector: &[(String, String)],
    body: Value,
) -> (StatusCode, Value) {
    state.requests += 1;
    if path.contains("/events") {
        let event = format!(
            "{} {}: {}",
            body["type"].as_str().unwrap_or_default(),
            body["reason"].as_str().unwrap_or_default(),
            body["note"].as_str().unwrap_or_default()
        );
        state.events.push(event);
        return (StatusCode::CREATED, body);
    }
    match *method {
        Method::GET => {
            if let Some(object) = state.objects.get(path) {
                return (StatusCode::OK, object.clone());
            }
            if !is_collection(path) {
                return not_found();
            }
            let prefix = format!("{path}/");
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|(key, _)| {
                    key.strip_prefix(&prefix)
                        .is_some_and(|name| !name.contains('/'))
                })
                .map(|(_, value)| value)
                .filter(|object| {
                    selector
                        .iter()
                        .all(|(key, value)| object["metadata"]["labels"][key] == value.as_str())
                })
                .cloned()
                .collect();
            (
                StatusCode::OK,
                json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        Method::PATCH => {
            state.writes.push(format!("PATCH {path}"));
            if state.refuse.as_deref() == Some(path) {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "reason": "Invalid", "code": 422,
                           "message": "spec: Forbidden: refused by the test\n@@ -1 +1 @@\n-a\n+b"}),
                );
            }
            if let Some(object_path) = path.strip_suffix("/status") {
                let Some(object) = state.objects.get_mut(object_path) else {
                    return not_found();
                };
                object["status"] = body["status"].clone();
                return (StatusCode::OK, object.clone());
            }
            let mut object = body;
            if let Some(status) = state
                .objects
                .get(path)
                .and_then(|existing| existing.get("status"))
            {
                object["status"] = status.clone();
            }
            object["metadata"]["generation"] = json!(1);
            object["metadata"]["resourceVersion"] = json!(state.requests.to_string());
            state.objects.insert(path.to_string(), object.clone());
            (StatusCode::OK, object)
        }
        // Create and replace: only the peer-token Secret is written this way.
        Method::POST => {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            let object_path = format!("{path}/{name}");
            state.writes.push(format!("POST {object_path}"));
            if state.objects.contains_key(&object_path) {
                return (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "reason": "AlreadyExists", "code": 409,
                           "message": "already exists"}),
                );
            }
            let mut object = body;
            object["metadata"]["uid"] = json!(format!("uid-{}", state.requests));
            object["metadata"]["resourceVersion"] = json!("1");
            state.objects.insert(object_path, object.clone());
            (StatusCode::CREATED, object)
        }
        Method::PUT => {
            state.writes.push(format!("PUT {path}"));
            let Some(stored) = state.objects.get(path) else {
                return not_found();
            };
            let version = stored["metadata"]["resourceVersion"].clone();
            if body["metadata"]["resourceVersion"] != version {
                return (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "reason": "Conflict", "code": 409,
                           "message": "the object has been modified"}),
                );
            }
            let mut object = body;
            object["metadata"]["uid"] = stored["metadata"]["uid"].clone();
            let next = version
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            object["metadata"]["resourceVersion"] = json!(next.to_string());
            state.objects.insert(path.to_string(), object.clone());
            (StatusCode::OK, object)
        }
        Method::DELETE => {
            state.writes.push(format!("DELETE {path}"));
            match state.objects.remove(path) {
                Some(_) => (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success"}),
                ),
                None => not_found(),
            }
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
    }
}

fn condition(cluster: &CacheCluster, type_: &str) -> (String, String, String) {
    let condition = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .expect("condition");
    (
        condition.status.clone(),
        condition.reason.clone(),
        condition.message.clone(),
    )
}

const PEER_TOKEN_PATH: &str = "/api/v1/namespaces/apps/secrets/demo-peer-token";

const CHILD_PATHS: [&str; 9] = [
    "/api/v1/namespaces/apps/serviceaccounts/demo-cache",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/apps/rolebindings/demo-cache",
    "/api/v1/namespaces/apps/persistentvolumeclaims/demo-data",
    "/api/v1/namespaces/apps/services/demo-peers",
    "/api/v1/namespaces/apps/services/demo",
    STS_PATH,
    CRON_PATH,
    PDB_PATH,
    NETWORK_POLICY_PATH,
];

#[tokio::test]
async fn create_applies_every_child_then_status() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    let action = api.reconcile().await;
    assert_eq!(action, Action::requeue(RESYNC));
    let (writes, events) = api.take();
    let mut expected = vec![format!("POST {PEER_TOKEN_PATH}")];
    expected.extend(CHILD_PATHS.iter().map(|p| format!("PATCH {p}")));
    expected.push(format!("PATCH {CLUSTER_PATH}/status"));
    assert_eq!(writes, expected);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].starts_with("Normal PeerTokenCreated: "),
        "{events:?}"
    );
    assert_eq!(
        events[1],
        "Normal Created: created ServiceAccount demo-cache, created RoleBinding demo-cache, \
         created PersistentVolumeClaim demo-data, created Service demo-peers, created Service \
         demo, created StatefulSet demo, created CronJob demo-janitor, created \
         PodDisruptionBudget demo, created NetworkPolicy demo"
    );
    let cluster = api.cluster();
    let status = cluster.status.clone().expect("status");
    assert_eq!(status.schedule.as_deref(), Some("* * * * * (UTC)"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&cluster, status::READY).0, "False");
    assert_eq!(condition(&cluster, status::PROGRESSING).0, "True");
    let sts = &api.lock().objects[STS_PATH];
    assert!(sts["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].is_string());
    assert_eq!(
        sts["metadata"]["ownerReferences"][0]["kind"],
        "CacheCluster"
    );
}

/// The peer-token Secret's two keys, decoded.
fn peer_tokens(api: &FakeApi) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine;
    let secret = &api.lock().objects[PEER_TOKEN_PATH];
    let key = |key: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().expect("base64"))
            .expect("base64")
    };
    (key("token"), key("previous"))
}

fn revision_of_pods(api: &FakeApi) -> Value {
    api.lock().objects[STS_PATH]["spec"]["template"]["metadata"]["annotations"]
        [labels::PEER_TOKEN_REVISION_ANNOTATION]
        .clone()
}

#[tokio::test]
async fn the_peer_token_is_kept_and_rotated_once_per_annotation_value() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    let (first, previous) = peer_tokens(&api);
    assert_eq!(first.len(), 64);
    assert_eq!(previous, first, "a Secret never rotated holds one token");
    let revision = revision_of_pods(&api);
    assert!(revision.is_string(), "the pods name the Secret's revision");

    // The admin asks for a rotation.
    let mut cluster = api.cluster();
    cluster.metadata.annotations = Some(BTreeMap::from([(
        labels::ROTATE_PEER_TOKEN_ANNOTATION.to_string(),
        "2026-12-02".to_string(),
    )]));
    api.put_cluster(&cluster);
    api.reconcile().await;
    let (writes, events) = api.take();
    assert_eq!(
        writes,
        [
            format!("PUT {PEER_TOKEN_PATH}"),
            format!("PATCH {STS_PATH}")
        ],
        "the Secret is rotated, then the pods roll"
    );
    assert!(
        events[0].starts_with("Normal PeerTokenRotated: "),
        "{events:?}"
    );
    let (second, previous) = peer_tokens(&api);
    assert_ne!(second, first);
    assert_eq!(previous, first, "the old token stays accepted");
    assert_ne!(revision_of_pods(&api), revision);

    // The same value rotates once: nothing is written again.
    api.reconcile().await;
    assert_eq!(api.take(), (vec![], vec![]));
    assert_eq!(peer_tokens(&api).0, second);
}

#[tokio::test]
async fn unchanged_cluster_makes_no_writes() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    api.lock().requests = 0;
    api.reconcile().await;
    assert_eq!(api.take(), (vec![], vec![]));
    // The Secret, the StatefulSet, pods and Jobs: the caches show the other children
    // unchanged since they were written (the CronJob, whose status is read, as it was then).
    assert_eq!(api.lock().requests, 4);
}

/// The reads a reconcile skips are of children the caches show unchanged: one changed by
/// someone else has a new resourceVersion, and is read and put back.
#[tokio::test]
async fn a_child_changed_by_someone_else_is_read_and_put_back() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    let client_service = CHILD_PATHS[4];
    {
        let mut state = api.lock();
        let service = state.objects.get_mut(client_service).expect("service");
        service["spec"]["ports"] = json!([]);
        service["metadata"]["resourceVersion"] = json!("someone-else");
    }
    api.reconcile().await;
    let (writes, events) = api.take();
    assert_eq!(writes, [format!("PATCH {client_service}")]);
    assert_eq!(events, ["Normal Updated: updated Service demo"]);
    api.reconcile().await;
    assert_eq!(api.take(), (vec![], vec![]));
}

#[tokio::test]
async fn drift_is_undone_with_one_write() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    {
        let mut state = api.lock();
        let sts = state.objects.get_mut(STS_PATH).expect("sts");
        sts["spec"]["replicas"] = json!(1);
        sts["metadata"]["resourceVersion"] = json!("someone-else");
    }
    api.lock().objects.remove(CRON_PATH);
    api.reconcile().await;
    let (writes, events) = api.take();
    assert_eq!(
        writes,
        [format!("PATCH {STS_PATH}"), format!("PATCH {CRON_PATH}")]
    );
    assert_eq!(
        events,
        [
            "Normal Updated: updated StatefulSet demo",
            "Normal Created: created CronJob demo-janitor"
        ]
    );
    assert_eq!(api.lock().objects[STS_PATH]["spec"]["replicas"], json!(3));
}

#[tokio::test]
async fn spec_change_is_applied() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    let mut cluster = api.cluster();
    cluster.spec.expiry.schedule = "*/5 * * * *".into();
    cluster.metadata.generation = Some(2);
    api.put_cluster(&cluster);
    api.reconcile().await;
    let (writes, _) = api.take();
    assert_eq!(
        writes,
        [
            format!("PATCH {STS_PATH}"),
            format!("PATCH {CRON_PATH}"),
            format!("PATCH {CLUSTER_PATH}/status")
        ]
    );
    assert_eq!(
        api.lock().objects[CRON_PATH]["spec"]["schedule"],
        "*/5 * * * *"
    );
}

#[tokio::test]
async fn invalid_spec_reports_and_waits() {
    let api = FakeApi::start();
    let mut cluster = fixtures::minimal();
    cluster.spec.expiry.time_zone = Some("Mars/Olympus".into());
    api.put_cluster(&cluster);
    let action = api.reconcile().await;
    assert_eq!(action, Action::await_change());
    let (writes, events) = api.take();
    assert_eq!(writes, [format!("PATCH {CLUSTER_PATH}/status")]);
    let message = "spec.expiry.timeZone: unknown time zone \"Mars/Olympus\"; use an IANA name \
                   such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\"";
    assert_eq!(events, [format!("Warning InvalidSpec: {message}")]);
    let stored = api.cluster();
    assert_eq!(
        condition(&stored, status::READY),
        ("False".into(), status::INVALID_SPEC.into(), message.into())
    );
    // Nothing was created, and a second look at the same resource neither writes nor repeats
    // the Event.
    assert!(!api.lock().objects.contains_key(STS_PATH));
    api.reconcile().await;
    assert_eq!(api.take(), (vec![], vec![]));
}

#[tokio::test]
async fn a_refused_child_degrades_and_warns() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.lock().refuse = Some(CRON_PATH.to_string());
    let error = api
        .try_reconcile()
        .await
        .expect_err("the CronJob is refused");
    assert!(matches!(error, Error::Apply { .. }), "{error:?}");
    let (_, events) = api.take();
    let warning = events.last().expect("an Event");
    assert!(
        warning.starts_with("Warning ReconcileFailed: failed to apply CronJob demo-janitor: "),
        "{warning}"
    );
    assert_eq!(
        warning,
        "Warning ReconcileFailed: failed to apply CronJob demo-janitor: spec: Forbidden: refused \
         by the test"
    );
    let stored = api.cluster();
    let (status, reason, _) = condition(&stored, status::DEGRADED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", status::RECONCILE_FAILED)
    );
    // The same failure again neither rewrites the status nor repeats the Event.
    let again = api.try_reconcile().await;
    assert!(again.is_err());
    let (writes, events) = api.take();
    assert_eq!(writes, [format!("PATCH {CRON_PATH}")]);
    assert!(events.is_empty());
}

#[tokio::test]
async fn an_unreadable_cluster_is_reported_alone() {
    let api = FakeApi::start();
    let mut value = serde_json::to_value(fixtures::minimal()).expect("json");
    value["spec"]["memory"]["evictionPolicy"] = json!("SampledLRU");
    let guard: DeserializeGuard<CacheCluster> = serde_json::from_value(value).expect("guard");
    assert!(guard.0.is_err());
    let action = reconcile_guarded(Arc::new(guard), api.context.clone())
        .await
        .expect("not an error");
    assert_eq!(action, Action::await_change());
    let (writes, events) = api.take();
    assert!(writes.is_empty());
    assert_eq!(events.len(), 1);
    assert!(
        events[0].starts_with("Warning Unreadable: the operator cannot read"),
        "{events:?}"
    );
}

#[tokio::test]
async fn deleted_cluster_is_left_to_garbage_collection() {
    let api = FakeApi::start();
    let mut cluster = fixtures::minimal();
    cluster.metadata.deletion_timestamp = Some(Time(
        Timestamp::from_second(1_800_000_000).expect("timestamp"),
    ));
    api.put_cluster(&cluster);
    let action = api.reconcile().await;
    assert_eq!(action, Action::await_change());
    assert_eq!(api.lock().requests, 0);
}

#[tokio::test]
async fn disabling_the_budget_deletes_it() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    let mut cluster = api.cluster();
    cluster.spec.pod_disruption_budget.enabled = false;
    api.put_cluster(&cluster);
    api.reconcile().await;
    let (writes, events) = api.take();
    assert_eq!(writes, [format!("DELETE {PDB_PATH}")]);
    assert_eq!(events, ["Normal Deleted: deleted PodDisruptionBudget demo"]);
}

#[tokio::test]
async fn disabling_the_network_policy_deletes_it() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    api.reconcile().await;
    api.take();
    let mut cluster = api.cluster();
    cluster.spec.network.policy = false;
    api.put_cluster(&cluster);
    api.reconcile().await;
    let (writes, events) = api.take();
    assert_eq!(writes, [format!("DELETE {NETWORK_POLICY_PATH}")]);
    assert_eq!(events, ["Normal Deleted: deleted NetworkPolicy demo"]);
}

#[tokio::test]
async fn the_sweep_deletes_only_children_this_cluster_owns() {
    let api = FakeApi::start();
    let cluster = fixtures::minimal();
    api.put_cluster(&cluster);
    api.reconcile().await;
    api.take();
    let uid = cluster.metadata.uid.clone().expect("uid");
    let service = |name: &str, owner_uid: &str| {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "apps",
                            "labels": labels::common("demo", CACHE_COMPONENT),
                            "ownerReferences": [{"apiVersion": "tidecache.io/v1alpha1",
                                                 "kind": "CacheCluster", "name": "demo",
                                                 "uid": owner_uid, "controller": true}]}})
    };
    let orphan = "/api/v1/namespaces/apps/services/demo-old";
    let foreign = "/api/v1/namespaces/apps/services/demo-foreign";
    {
        let mut state = api.lock();
        state
            .objects
            .insert(orphan.into(), service("demo-old", &uid));
        state
            .objects
            .insert(foreign.into(), service("demo-foreign", "another-uid"));
    }
    api.reconcile().await;
    let (writes, events) = api.take();
    assert_eq!(writes, [format!("DELETE {orphan}")]);
    assert_eq!(events, ["Normal Deleted: deleted Service demo-old"]);
    assert!(api.lock().objects.contains_key(foreign));
}

#[tokio::test]
async fn ready_pods_are_counted_per_zone() {
    let api = FakeApi::start();
    api.put_cluster(&fixtures::minimal());
    {
        let mut state = api.lock();
        for (pod, node, ready) in [
            ("demo-0", "n1", true),
            ("demo-1", "n2", true),
            ("demo-2", "n3", false),
        ] {
            state.objects.insert(
                format!("/api/v1/namespaces/apps/pods/{pod}"),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod, "labels": labels::common("demo", CACHE_COMPONENT)},
                       "spec": {"nodeName": node, "containers": []},
                       "status": {"conditions": [{"type": "Ready",
                                                   "status": if ready { "True" } else { "False" }}]}}),
            );
        }
        for (node, zone) in [("n1", "zone-a"), ("n2", "zone-b"), ("n3", "zone-b")] {
            state.objects.insert(
                format!("/api/v1/nodes/{node}"),
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": node,
                                    "labels": {"topology.kubernetes.io/zone": zone}}}),
            );
        }
    }
    api.reconcile().await;
    let status = api.cluster().status.expect("status");
    assert_eq!(status.ready_zones, 2);
    let zones: Vec<(String, i32)> = status
        .zones
        .into_iter()
        .map(|z| (z.zone, z.ready_replicas))
        .collect();
    assert_eq!(zones, [("zone-a".into(), 1), ("zone-b".into(), 1)]);
}

/// In Partitioned mode the status places the partitions on the pods the peers Service lists
/// (every pod with an address, ready or not) by their nodes' `topology.kubernetes.io/zone`,
/// the zone their EndpointSlice entries carry, even when the pods are spread by another key.
#[tokio::test]
async fn partitioned_status_places_the_listed_pods_by_their_endpoint_zone() {
    let api = FakeApi::start();
    let mut cluster = fixtures::minimal();
    cluster.spec.replicas = 4;
    cluster.spec.replication.mode = crate::crd::ReplicationMode::Partitioned;
    cluster.spec.topology.zone_key = "example.com/rack".into();
    api.put_cluster(&cluster);
    {
        let mut state = api.lock();
        for (pod, node, ip, ready) in [
            ("demo-0", Some("n1"), Some("127.0.0.1"), true),
            ("demo-1", Some("n2"), Some("127.0.0.2"), true),
            ("demo-2", Some("n3"), Some("127.0.0.3"), false),
            ("demo-3", None, None, false),
        ] {
            state.objects.insert(
                format!("/api/v1/namespaces/apps/pods/{pod}"),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod, "labels": labels::common("demo", CACHE_COMPONENT)},
                       "spec": {"nodeName": node, "containers": []},
                       "status": {"podIP": ip, "phase": "Running",
                                  "conditions": [{"type": "Ready",
                                                  "status": if ready { "True" } else { "False" }}]}}),
            );
        }
        for (node, zone, rack) in [
            ("n1", "zone-a", "rack-1"),
            ("n2", "zone-b", "rack-1"),
            ("n3", "zone-c", "rack-2"),
        ] {
            state.objects.insert(
                format!("/api/v1/nodes/{node}"),
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": node,
                                    "labels": {"topology.kubernetes.io/zone": zone,
                                               "example.com/rack": rack}}}),
            );
        }
    }
    api.reconcile().await;
    let cluster = api.cluster();
    let status = cluster.status.clone().expect("status");
    let zones: Vec<(String, i32)> = status
        .zones
        .into_iter()
        .map(|z| (z.zone, z.ready_replicas))
        .collect();
    assert_eq!(zones, [("rack-1".to_string(), 2)]);
    let partitions = status.partitions.expect("partition status");
    assert_eq!(
        (partitions.members, partitions.under_replicated),
        (3, 705),
        "demo-3 has no address yet; demo-2's 705 partitions lack one ready owner"
    );
    assert_eq!(
        (partitions.moving, partitions.unread_pods),
        (0, 3),
        "no pod listens, so none could say what it holds"
    );
    let owners: Vec<(String, i32, i32)> = partitions
        .owners_per_zone
        .into_iter()
        .map(|z| (z.zone, z.pods, z.partitions))
        .collect();
    assert_eq!(
        owners,
        [
            ("zone-a".to_string(), 1, 674),
            ("zone-b".to_string(), 1, 669),
            ("zone-c".to_string(), 1, 705)
        ]
    );
    assert_eq!(
        condition(&cluster, status::READY),
        (
            "False".to_string(),
            status::UNDER_REPLICATED.to_string(),
            "2 of 4 cache pods are ready; 705 of 1024 partitions have fewer than 2 ready owners"
                .to_string()
        )
    );
}

/// A cache pod's `GET /internal/v1/partitions` on `ip:port`, answering `holdings` to the
/// bearer of `token` and 401 to anyone else, as cache-node does.
async fn serve_holdings(ip: &str, port: u16, token: &'static str, holdings: Arc<Mutex<Value>>) {
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .expect("bind a pod address");
    let app = axum::Router::new().route(
        PARTITIONS_PATH,
        axum::routing::get(move |headers: http::HeaderMap| async move {
            let bearer = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if bearer == Some(token) {
                let answer = holdings.lock().expect("holdings").clone();
                (StatusCode::OK, axum::Json(answer))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "unauthorized"})),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
}

/// Gives the applied StatefulSet the status of `replicas` pods rolled out and ready.
fn roll_out(api: &FakeApi, replicas: i32) {
    let mut state = api.lock();
    let sts = state
        .objects
        .get_mut(STS_PATH)
        .expect("StatefulSet applied");
    sts["status"] = json!({"observedGeneration": 1, "replicas": replicas,
                           "readyReplicas": replicas, "updatedReplicas": replicas,
                           "currentRevision": "r1", "updateRevision": "r1"});
    // As the API server does for every write.
    sts["metadata"]["resourceVersion"] = json!(format!("rolled-out-{replicas}"));
}

/// A bitmap of 1024 partitions holding the first `n`.
fn first(n: u32) -> Value {
    let words: Vec<u64> = (0..16)
        .map(|w| match n.saturating_sub(w * 64) {
            0 => 0,
            k if k >= 64 => u64::MAX,
            k => (1 << k) - 1,
        })
        .collect();
    json!(words)
}

/// While partitions move the operator reads each pod's holdings with the peer token from the
/// Secret it generated, reports the moving partitions, says Progressing with Ready kept, and
/// comes back soon; once the pods hold what they own, Progressing is False and it resyncs at
/// the usual pace.
#[tokio::test]
async fn moving_partitions_are_read_from_the_pods_and_reported_until_done() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("address").port();
    drop(probe);
    let api = FakeApi::with_pod_port(port);
    let mut cluster = fixtures::minimal();
    cluster.spec.replicas = 2;
    cluster.spec.replication.mode = crate::crd::ReplicationMode::Partitioned;
    api.put_cluster(&cluster);
    let gaining = Arc::new(Mutex::new(
        json!({"fingerprint": 7, "complete": first(0), "held": first(10)}),
    ));
    let keeping = Arc::new(Mutex::new(
        json!({"fingerprint": 7, "complete": first(0), "held": first(3)}),
    ));
    {
        use base64::Engine;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let mut state = api.lock();
        // Rotated once: demo-0 was restarted with the new token, demo-1 still has the old.
        state.objects.insert(
            PEER_TOKEN_PATH.into(),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "demo-peer-token", "uid": "uid-s",
                                "resourceVersion": "1",
                                "annotations": {labels::PEER_TOKEN_ROTATION_ANNOTATION: ""}},
                   "data": {"token": encode("new-token"), "previous": encode("old-token")}}),
        );
        for (pod, node, ip, zone, deleted) in [
            ("demo-0", "n1", "127.0.0.1", "zone-a", None),
            ("demo-1", "n2", "127.0.0.2", "zone-b", None),
            (
                "demo-2",
                "n3",
                "127.0.0.3",
                "zone-c",
                Some("2027-01-15T08:00:00Z"),
            ),
        ] {
            state.objects.insert(
                format!("/api/v1/namespaces/apps/pods/{pod}"),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod, "labels": labels::common("demo", CACHE_COMPONENT),
                                    "deletionTimestamp": deleted},
                       "spec": {"nodeName": node, "containers": []},
                       "status": {"podIP": ip, "phase": "Running",
                                  "conditions": [{"type": "Ready", "status": "True"}]}}),
            );
            state.objects.insert(
                format!("/api/v1/nodes/{node}"),
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": node,
                                    "labels": {"topology.kubernetes.io/zone": zone}}}),
            );
        }
    }
    let complete = Arc::new(Mutex::new(
        json!({"fingerprint": 7, "complete": first(1024), "held": first(1024)}),
    ));
    serve_holdings("127.0.0.1", port, "new-token", gaining.clone()).await;
    serve_holdings("127.0.0.2", port, "new-token", complete).await;
    // Leaving (scaled down), not restarted since the rotation: it keeps what it handed over.
    serve_holdings("127.0.0.3", port, "old-token", keeping.clone()).await;
    api.reconcile().await;
    roll_out(&api, 2);
    let action = api.reconcile().await;
    let status = api.cluster().status.expect("status");
    let partitions = status.partitions.clone().expect("partition status");
    assert_eq!(
        (partitions.moving, partitions.unread_pods),
        (13, 0),
        "10 gaining on demo-0 (asked with the token), 3 kept on demo-2 (with the previous one)"
    );
    assert_eq!(partitions.members, 2, "a terminating pod is no member");
    assert_eq!(action, Action::requeue(MOVES_POLL));
    let cluster = api.cluster();
    assert_eq!(condition(&cluster, status::READY).0, "True");
    let (progressing, reason, _) = condition(&cluster, status::PROGRESSING);
    assert_eq!(
        (progressing.as_str(), reason.as_str()),
        ("True", status::PARTITIONS_MOVING)
    );

    *gaining.lock().expect("holdings") =
        json!({"fingerprint": 7, "complete": first(10), "held": first(10)});
    *keeping.lock().expect("holdings") =
        json!({"fingerprint": 7, "complete": first(0), "held": first(0)});
    let action = api.reconcile().await;
    let cluster = api.cluster();
    let partitions = cluster
        .status
        .clone()
        .expect("status")
        .partitions
        .expect("partitions");
    assert_eq!((partitions.moving, partitions.unread_pods), (0, 0));
    assert_eq!(condition(&cluster, status::PROGRESSING).1, "RolledOut");
    assert_eq!(action, Action::requeue(RESYNC));
}
