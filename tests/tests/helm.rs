//! The Helm chart `deploy/helm/tidecache` against `deploy/`: the chart's CRD is the generated
//! one, `helm lint --strict` passes, the chart with default values renders exactly the objects
//! `kubectl kustomize deploy/` does (and with monitoring on, those of `deploy/monitoring/`), the
//! values that change something show up where they should, contradictory or unknown values are
//! refused, and on a real control plane the install, upgrade, uninstall and adoption of a
//! `deploy/` installation work as the chart's README says.
//!
//! helm is built from its Go module by `tests/helm/build.sh` (a no-op once cached) unless
//! `TIDECACHE_HELM_BIN` names a binary; kubectl is the control plane's (`Binaries::ensure`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};
use tidecache_e2e::control_plane::{Binaries, ControlPlane};

/// Environment variable naming a helm binary to use instead of building one.
const HELM_BIN_ENV: &str = "TIDECACHE_HELM_BIN";

/// The labels the chart adds to the objects of `deploy/` (Helm's conventions:
/// `templates/_helpers.tpl`, "tidecache.labels"), and the only thing removed before comparing:
/// which chart rendered an object, that Helm manages it, and the app version. Everything else,
/// pod templates and selectors included, must be equal.
const HELM_LABELS: [&str; 3] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
];

/// The namespace `deploy/` installs into, and the chart's release name in these tests.
const NAMESPACE: &str = "tidecache-system";
const RELEASE: &str = "tidecache";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/tidecache")
}

fn chart_crd() -> PathBuf {
    chart().join("crds/cacheclusters.tidecache.io.yaml")
}

/// The helm binary, built at most once per test process; `build.sh` serialises concurrent
/// builds of several processes with a lock and prints the binary's path last.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os(HELM_BIN_ENV) {
            return path.into();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            // Progress (and, on a cold build, Go's downloads) goes straight to the terminal.
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} exited with {}",
            script.display(),
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let path = stdout.lines().last().map(str::trim).unwrap_or_default();
        assert!(!path.is_empty(), "{} printed no path", script.display());
        PathBuf::from(path)
    })
}

/// Helm's configuration, cache and data directories: a fresh one per test process, so that
/// nothing from the user's `~/.config/helm` (repositories, plugins) takes part.
fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("tidecache-helm-home-")
            .tempdir()
            .expect("temp dir for helm")
    })
    .path()
}

fn run_helm(args: &[&str]) -> Output {
    let home = helm_home();
    Command::new(helm())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running helm: {e}"))
}

/// Runs helm and returns its stdout; fails the test with its stderr otherwise.
fn helm_ok(args: &[&str]) -> String {
    let output = run_helm(args);
    assert!(
        output.status.success(),
        "helm {} exited with {}:\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// Runs helm expecting it to fail, and returns its stderr.
fn helm_refuses(args: &[&str]) -> String {
    let output = run_helm(args);
    assert!(
        !output.status.success(),
        "helm {} succeeded but should have been refused:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `helm template` of the chart as release [`RELEASE`] in `namespace`, with extra arguments.
fn template(namespace: &str, extra: &[&str]) -> Objects {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    Objects::parse(&helm_ok(&args))
}

/// `kubectl kustomize` of a directory of the repository, with the control plane's kubectl.
fn kustomize(dir: &str) -> Objects {
    let kubectl = Binaries::ensure()
        .unwrap_or_else(|e| panic!("kubectl: {e}"))
        .path("kubectl");
    let dir = repo().join(dir);
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Objects::parse(&String::from_utf8(output.stdout).expect("UTF-8"))
}

/// An object's identity: kind, namespace ("" when cluster-scoped) and name.
type Key = (String, String, String);

/// Rendered objects by identity.
#[derive(Debug)]
struct Objects(BTreeMap<Key, Value>);

impl Objects {
    /// Every document of a multi-document YAML stream; two objects with one identity fail.
    fn parse(yaml: &str) -> Objects {
        let mut objects = BTreeMap::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let object = Value::deserialize(document).expect("valid YAML");
            if object.is_null() {
                continue;
            }
            let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
            let key = (
                text(&object["kind"]),
                text(&object["metadata"]["namespace"]),
                text(&object["metadata"]["name"]),
            );
            assert!(!key.0.is_empty() && !key.2.is_empty(), "{object}");
            if let Some(previous) = objects.insert(key.clone(), object) {
                panic!("{key:?} rendered twice: {previous}");
            }
        }
        Objects(objects)
    }

    fn keys(&self) -> BTreeSet<Key> {
        self.0.keys().cloned().collect()
    }

    /// The one object of a kind and name (in whichever namespace).
    fn get(&self, kind: &str, name: &str) -> &Value {
        let mut found = self
            .0
            .iter()
            .filter(|((k, _, n), _)| k == kind && n == name);
        let (_, object) = found
            .next()
            .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", self.keys()));
        assert!(found.next().is_none(), "several {kind} {name}");
        object
    }

    fn has(&self, kind: &str, name: &str) -> bool {
        self.0.keys().any(|(k, _, n)| k == kind && n == name)
    }

    /// The objects that `self` has and `base` has not.
    fn without(mut self, base: &Objects) -> Objects {
        self.0.retain(|key, _| !base.0.contains_key(key));
        self
    }

    /// Checks that every object rendered from a template (all but the CRDs, which Helm copies
    /// from `crds/` verbatim) carries Helm's labels, then removes them: what they would hide
    /// is only ever these three keys.
    fn without_helm_labels(mut self) -> Objects {
        for (key, object) in &mut self.0 {
            let Some(labels) = object["metadata"]["labels"].as_object_mut() else {
                assert_eq!(key.0, "CustomResourceDefinition", "{key:?} has no labels");
                continue;
            };
            for label in HELM_LABELS {
                let removed = labels.remove(label);
                if key.0 != "CustomResourceDefinition" {
                    assert!(removed.is_some(), "{key:?} lacks the label {label}");
                }
            }
        }
        self
    }
}

/// Asserts that two sets of objects are equal, object by object, naming each difference by
/// its path (a whole CRD in a panic message would bury it). Numbers are compared by value.
fn assert_same_objects(chart: &Objects, kustomize: &Objects, what: &str) {
    assert_eq!(
        chart.keys(),
        kustomize.keys(),
        "{what}: the chart and kustomize render different objects"
    );
    let mut differences = Vec::new();
    for (key, expected) in &kustomize.0 {
        difference(
            &format!("{key:?}"),
            &chart.0[key],
            expected,
            &mut differences,
        );
    }
    assert!(
        differences.is_empty(),
        "{what}: the chart (left) differs from kustomize (right):\n{}",
        differences.join("\n")
    );
}

fn difference(path: &str, chart: &Value, kustomize: &Value, found: &mut Vec<String>) {
    match (chart, kustomize) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                let (left, right) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                difference(&format!("{path}.{key}"), left, right, found);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (left, right)) in a.iter().zip(b).enumerate() {
                difference(&format!("{path}[{i}]"), left, right, found);
            }
        }
        // kustomize re-serialises what it reads, and writes the generated CRD's `100.0` as
        // `100`: the same number to the apiserver (and to JSON Schema).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ if chart != kustomize => found.push(format!("{path}: {chart} != {kustomize}")),
        _ => {}
    }
}

/// The chart's `appVersion`, the default image tag.
fn app_version() -> String {
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_yaml::from_str(&text).expect("Chart.yaml is YAML");
    chart["appVersion"]
        .as_str()
        .expect("appVersion is a string")
        .to_string()
}

/// A values file in a temp dir (kept alive by the returned guard).
fn values_file(values: &Value) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, serde_yaml::to_string(values).expect("YAML")).expect("write values");
    (dir, path)
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").file_name().into_string().unwrap())
            .filter(|name| name != "kustomization.yaml")
            .collect()
    };
    let generated = repo().join("crds");
    let copied = chart().join("crds");
    assert_eq!(
        names(&copied),
        names(&generated),
        "deploy/helm/tidecache/crds/ must hold exactly the CRDs of crds/"
    );
    for name in names(&generated) {
        let read = |dir: &Path| std::fs::read(dir.join(&name)).expect("read CRD");
        assert!(
            read(&copied) == read(&generated),
            "deploy/helm/tidecache/crds/{name} differs from crds/{name}; after regenerating \
             the CRDs run `cp crds/{name} deploy/helm/tidecache/crds/`"
        );
    }
}

#[test]
fn lint_passes_strictly() {
    let chart = chart();
    let chart = chart.to_str().expect("UTF-8 path");
    helm_ok(&["lint", "--strict", chart]);
    // Other branches of the templates, except cert-manager's: lint cannot be told that the
    // cluster serves cert-manager.io/v1 (the render tests below are).
    let (_dir, values) = values_file(&json!({
        "image": {"tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "replicas": 3,
        "podAnnotations": {"example.com/team": "cache"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "webhook": {"certificates": "secret", "caBundle": "Q0E="},
        "monitoring": {"enabled": true},
    }));
    helm_ok(&[
        "lint",
        "--strict",
        chart,
        "--values",
        values.to_str().unwrap(),
    ]);
}

#[test]
fn default_render_is_what_kustomize_renders() {
    let chart = template(NAMESPACE, &["--include-crds"]).without_helm_labels();
    let kustomize = kustomize("deploy");
    // The one difference, documented in the chart's README: Helm users create the release
    // namespace (`--create-namespace`) before the release's objects, so the chart renders no
    // Namespace (it could not be part of the release stored in it).
    let namespace = (
        "Namespace".to_string(),
        String::new(),
        NAMESPACE.to_string(),
    );
    assert_eq!(
        kustomize.0[&namespace]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let mut expected = kustomize;
    expected.0.remove(&namespace);
    assert_same_objects(&chart, &expected, "default values");

    let image = &chart.get("Deployment", "tidecache-operator")["spec"]["template"]["spec"]["containers"]
        [0]["image"];
    assert_eq!(
        image.as_str(),
        Some(format!("ghcr.io/tidecache/operator:{}", app_version()).as_str()),
        "the image tag defaults to the chart's appVersion"
    );
}

#[test]
fn monitoring_render_is_what_kustomize_renders() {
    let base = template(NAMESPACE, &[]);
    let enabled = ["--set", "monitoring.enabled=true"];
    let with_crds = [
        &enabled[..],
        &["--api-versions", "monitoring.coreos.com/v1"],
    ]
    .concat();
    let monitoring = template(NAMESPACE, &with_crds)
        .without(&base)
        .without_helm_labels();
    assert_same_objects(
        &monitoring,
        &kustomize("deploy/monitoring"),
        "monitoring.enabled with the Prometheus Operator's API",
    );

    // Without the Prometheus Operator's API only the dashboard's ConfigMap is rendered.
    let without_crds = template(NAMESPACE, &enabled).without(&base);
    assert_eq!(
        without_crds.keys(),
        BTreeSet::from([(
            "ConfigMap".to_string(),
            NAMESPACE.to_string(),
            "tidecache-grafana-dashboard".to_string()
        )])
    );

    // The parts can be left out, and Prometheus' selector labels added.
    let parts = [
        &with_crds[..],
        &[
            "--set",
            "monitoring.grafanaDashboard=false,monitoring.podMonitors=false",
            "--set",
            "monitoring.labels.release=kube-prometheus-stack",
        ],
    ]
    .concat();
    let parts = template(NAMESPACE, &parts).without(&base);
    assert_eq!(
        parts.keys(),
        BTreeSet::from([(
            "PrometheusRule".to_string(),
            NAMESPACE.to_string(),
            "tidecache".to_string()
        )])
    );
    assert_eq!(
        parts.get("PrometheusRule", "tidecache")["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
}

#[test]
fn non_default_values_appear() {
    let namespace = "cache-ops";
    let resources = json!({
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    });
    let (_dir, values) = values_file(&json!({
        "image": {
            "repository": "registry.example.com/tidecache/operator",
            "tag": "1.2.3",
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "registry"}],
        "replicas": 3,
        "resources": resources,
        "logLevel": "info,operator=debug",
        "podAnnotations": {"example.com/team": "cache"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {"podAntiAffinity": {}},
        "webhook": {"certificates": "secret", "certManager": {"enabled": true}},
    }));
    let values = values.to_str().unwrap();
    let cert_manager = ["--values", values, "--api-versions", "cert-manager.io/v1"];
    let objects = template(namespace, &cert_manager);

    let deployment = objects.get("Deployment", "tidecache-operator");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        container["image"],
        "registry.example.com/tidecache/operator:1.2.3"
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"], resources);
    assert_eq!(
        container["args"],
        json!([
            "--listen=0.0.0.0:8080",
            "--webhook-listen=0.0.0.0:9443",
            "--log-format=json",
            "--webhook-certificates=secret",
        ])
    );
    assert_eq!(
        container["env"][2],
        json!({"name": "RUST_LOG", "value": "info,operator=debug"})
    );
    assert_eq!(pod["metadata"]["annotations"]["example.com/team"], "cache");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "registry"}])
    );
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["spec"]["affinity"], json!({"podAntiAffinity": {}}));
    // Selectors stay as deploy/ has them (they cannot change on an upgrade).
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "tidecache", "app.kubernetes.io/component": "operator"})
    );

    // Everything namespaced is in the release namespace, and what points at the operator's
    // objects points there too.
    for (kind, object_namespace, name) in objects.0.keys() {
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingWebhookConfiguration",
        ];
        let expected = if cluster_scoped.contains(&kind.as_str()) {
            ""
        } else {
            namespace
        };
        assert_eq!(object_namespace, expected, "{kind} {name}");
    }
    for binding in [
        objects.get("ClusterRoleBinding", "tidecache-operator"),
        objects.get("RoleBinding", "tidecache-operator-leader"),
    ] {
        assert_eq!(binding["subjects"][0]["namespace"], namespace);
    }

    // cert-manager writes the Secret the operator reads, for the Service's DNS names, and
    // injects the CA; the operator does not touch the bundle.
    let configuration = objects.get("ValidatingWebhookConfiguration", "tidecache-operator");
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{namespace}/tidecache-operator-webhook")
    );
    let client = &configuration["webhooks"][0]["clientConfig"];
    assert_eq!(client["service"]["namespace"], namespace);
    assert_eq!(client["caBundle"], Value::Null);
    let certificate = &objects.get("Certificate", "tidecache-operator-webhook")["spec"];
    assert_eq!(certificate["secretName"], "tidecache-operator-webhook-tls");
    assert_eq!(
        certificate["dnsNames"],
        json!([
            "tidecache-operator-webhook.cache-ops.svc",
            "tidecache-operator-webhook.cache-ops.svc.cluster.local",
        ])
    );
    assert_eq!(
        certificate["issuerRef"],
        json!({"kind": "Issuer", "name": "tidecache-operator-webhook"})
    );
    assert_eq!(
        objects.get("Issuer", "tidecache-operator-webhook")["spec"],
        json!({"selfSigned": {}})
    );

    // An issuer of one's own replaces the chart's.
    let own_issuer = [
        &cert_manager[..],
        &[
            "--set",
            "webhook.certManager.issuerRef.kind=ClusterIssuer,webhook.certManager.issuerRef.name=corp-ca",
        ],
    ]
    .concat();
    let objects = template(namespace, &own_issuer);
    assert!(!objects.has("Issuer", "tidecache-operator-webhook"));
    assert_eq!(
        objects.get("Certificate", "tidecache-operator-webhook")["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp-ca"})
    );

    // A Secret written by hand: its CA bundle goes into the configuration, nothing else.
    let by_hand = [
        "--set",
        "webhook.certificates=secret",
        "--set",
        "webhook.caBundle=Q0E=",
    ];
    let objects = template(NAMESPACE, &by_hand);
    assert!(!objects.has("Certificate", "tidecache-operator-webhook"));
    let configuration = objects.get("ValidatingWebhookConfiguration", "tidecache-operator");
    assert_eq!(configuration["metadata"]["annotations"], Value::Null);
    assert_eq!(
        configuration["webhooks"][0]["clientConfig"]["caBundle"],
        "Q0E="
    );
}

#[test]
fn contradictory_or_unknown_values_are_refused() {
    let chart = chart();
    let chart = chart.to_str().expect("UTF-8 path");
    let refusal = |values: &[&str]| {
        let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
        args.extend_from_slice(values);
        helm_refuses(&args)
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &["--set", "webhook.certificates=cert-manager"],
            "certificates",
        ),
        // The operator watches every namespace; the chart has no value to pretend otherwise.
        (&["--set", "watchNamespaces={team-a}"], "watchNamespaces"),
        (&["--set", "replica=3"], "replica"),
        (
            &["--set", "webhook.certManager.enabled=true"],
            "needs webhook.certificates=secret",
        ),
        (
            &[
                "--set",
                "webhook.certificates=secret,webhook.certManager.enabled=true",
            ],
            "does not serve cert-manager.io/v1",
        ),
        (
            &["--set", "webhook.caBundle=Q0E="],
            "webhook.caBundle needs webhook.certificates=secret",
        ),
    ];
    for (values, reason) in cases {
        let stderr = refusal(values);
        assert!(
            stderr.contains(reason),
            "{values:?} refused without naming {reason:?}: {stderr}"
        );
    }
}

/// `kubectl get ... -o json` on the control plane.
async fn get_json(plane: &ControlPlane, args: &[&str]) -> Value {
    let args = [args, &["-o", "json"]].concat();
    let text = plane.kubectl(&args).await.expect("kubectl get");
    serde_json::from_str(&text).expect("JSON")
}

/// The apiserver accepts every object of the chart, and what the README says about installing,
/// upgrading and uninstalling holds, on a real control plane (no kubelet: the operator's pods
/// never run, so nothing answers the webhook).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_upgrades_and_uninstalls_on_a_control_plane() {
    let plane = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane starts: {e}"));
    let kubeconfig = plane
        .admin_kubeconfig()
        .to_str()
        .expect("UTF-8")
        .to_string();
    let chart = chart();
    let chart = chart.to_str().expect("UTF-8 path");
    let with_plane = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--kubeconfig", &kubeconfig, "--namespace", NAMESPACE]);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let on_plane = |args: &[&str]| {
        let all = with_plane(args);
        helm_ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = scratch.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("UTF-8").to_string()
    };

    // Install with --create-namespace; the notes say how to label the namespace as deploy/.
    let notes = on_plane(&["install", RELEASE, chart, "--create-namespace"]);
    assert!(
        notes.contains(&format!(
            "kubectl label namespace {NAMESPACE} pod-security.kubernetes.io/enforce=restricted"
        )),
        "{notes}"
    );
    let manifest = Objects::parse(&on_plane(&["get", "manifest", RELEASE]));
    assert_eq!(manifest.keys(), template(NAMESPACE, &[]).keys());
    for (kind, namespace, name) in manifest.keys() {
        let mut args = vec!["get", kind.as_str(), name.as_str(), "-o", "name"];
        if !namespace.is_empty() {
            args.extend_from_slice(&["--namespace", namespace.as_str()]);
        }
        plane
            .kubectl(&args)
            .await
            .unwrap_or_else(|e| panic!("{kind} {name} was installed: {e}"));
    }
    let crd = "crd/cacheclusters.tidecache.io";
    plane
        .kubectl(&["wait", "--for=condition=Established", crd, "--timeout=30s"])
        .await
        .expect("the CRD from crds/ is established");
    // The webhook is registered and fails closed: with no operator to answer it, a
    // CacheCluster is refused, naming the webhook.
    let sample = repo().join("deploy/samples/minimal.yaml");
    let refused = plane
        .kubectl(&["apply", "-f", sample.to_str().expect("UTF-8")])
        .await
        .expect_err("no CacheCluster is stored unchecked");
    assert!(
        refused.to_string().contains("cacheclusters.tidecache.io"),
        "{refused}"
    );

    // What the operator does in self-signed mode: it applies the CA bundle alone, under its
    // own field manager.
    let bundle = file(
        "bundle.yaml",
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
         metadata:\n  name: tidecache-operator\nwebhooks:\n  - name: cacheclusters.tidecache.io\n\
         \x20   clientConfig:\n      caBundle: Q0E=\n",
    );
    plane
        .kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=tidecache-operator-webhook",
            "-f",
            &bundle,
        ])
        .await
        .expect("the operator's CA bundle");
    // The README's CRD update before an upgrade, of a CRD Helm created: Helm applied it
    // server-side, so kubectl must take its fields over (--force-conflicts).
    let generated = std::fs::read_to_string(chart_crd()).expect("the chart's CRD");
    let changed = generated.replacen(
        "description: Desired number of cache pods",
        "description: Desired number of cache pods (changed)",
        1,
    );
    assert_ne!(changed, generated);
    let changed = file("crd.yaml", &changed);
    plane
        .kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &changed,
        ])
        .await
        .expect("the README's CRD update");
    let printed = plane
        .kubectl(&[
            "get",
            crd,
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[0].description}",
        ])
        .await
        .expect("the CRD");
    assert_eq!(printed, "Desired number of cache pods (changed)");

    on_plane(&[
        "upgrade",
        RELEASE,
        chart,
        "--reuse-values",
        "--set",
        "replicas=3,image.tag=0.1.1",
    ]);
    let deployment = get_json(
        &plane,
        &[
            "get",
            "deployment",
            "tidecache-operator",
            "--namespace",
            NAMESPACE,
        ],
    )
    .await;
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/tidecache/operator:0.1.1"
    );
    let configuration = get_json(
        &plane,
        &[
            "get",
            "validatingwebhookconfiguration",
            "tidecache-operator",
        ],
    )
    .await;
    assert_eq!(
        configuration["webhooks"][0]["clientConfig"]["caBundle"], "Q0E=",
        "an upgrade keeps the operator's CA bundle"
    );

    // Uninstalling keeps the CRD.
    on_plane(&["uninstall", RELEASE]);
    let left = plane
        .kubectl(&[
            "get",
            "crd,clusterroles,validatingwebhookconfigurations",
            "-o",
            "name",
        ])
        .await
        .expect("list what is left");
    assert!(
        left.contains("customresourcedefinition.apiextensions.k8s.io/cacheclusters.tidecache.io"),
        "Helm never deletes the CRDs of crds/: {left}"
    );
    assert!(!left.contains("tidecache-operator"), "{left}");

    // Moving from `kubectl apply -k deploy/` to Helm, as the README says: refused without
    // --take-ownership.
    let deploy = repo().join("deploy");
    plane
        .kubectl(&[
            "apply",
            "--server-side",
            "-k",
            deploy.to_str().expect("UTF-8"),
        ])
        .await
        .expect("kubectl apply -k deploy/");
    let plain = with_plane(&["install", RELEASE, chart]);
    let refusal = helm_refuses(&plain.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        refusal.contains("exists and cannot be imported"),
        "{refusal}"
    );
    // kubectl's field manager owns the fields, and Helm's apply of the same manifest
    // conflicts with it on the Deployment's two env `fieldRef`s (atomic structs, which the
    // apiserver completes with an apiVersion) unless Helm takes them over.
    on_plane(&[
        "install",
        RELEASE,
        chart,
        "--take-ownership",
        "--force-conflicts",
    ]);
    let manifest = Objects::parse(&on_plane(&["get", "manifest", RELEASE]));
    assert_eq!(manifest.keys(), template(NAMESPACE, &[]).keys());
    let namespace = get_json(&plane, &["get", "namespace", NAMESPACE]).await;
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "deploy/'s namespace keeps its label"
    );
}
