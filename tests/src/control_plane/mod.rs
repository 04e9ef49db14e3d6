//! A real Kubernetes control plane on loopback for end-to-end tests: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler, built from their Go
//! modules (see `tests/control-plane/build.sh`), with a generated PKI, RBAC and
//! service-account token signing — the same components a real cluster runs, so that
//! what the operator's tests prove holds against the real API semantics, admission,
//! scheduler and garbage collector rather than against mocks.
//!
//! Everything lives in one temp dir and is torn down when the [`ControlPlane`] is
//! dropped (also while a failing test unwinds, when the tails of the component logs are
//! printed) or when the test process gets SIGINT/SIGTERM.

pub mod audit;
mod binaries;
mod certs;
mod error;
pub(crate) mod kubeconfig;
mod nodes;
pub(crate) mod process;
pub mod proxy;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use binaries::{BIN_DIR_ENV, Binaries};
pub use certs::{CertFiles, Pki, SERVICE_CLUSTER_IP_RANGE};
pub use error::{Error, Result};
use kubeconfig::Credentials;
pub use nodes::{FakeNodes, HOSTNAME_LABEL, NodeTemplate, ZONE_LABEL};
use process::Process;
pub use process::wait_for_teardown;

/// How long each startup phase may take. Generous: the machine may be busy compiling.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// The issuer written into service-account tokens (also their audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A running control plane. Dropping it stops the components (SIGTERM, then SIGKILL
/// after a grace period) and deletes its directory.
pub struct ControlPlane {
    /// In start order; stopped in reverse.
    processes: Vec<Process>,
    binaries: Binaries,
    pki: Pki,
    server: String,
    admin_kubeconfig: PathBuf,
    apiserver_port: u16,
    pod_gateway: Option<Ipv4Addr>,
    /// The audit log, when some users' requests are audited.
    audit_log: Option<PathBuf>,
    /// Dropped after the processes are stopped (see `Drop`).
    dir: tempfile::TempDir,
}

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// An address (the pod network's gateway) at which pods in their own network
    /// namespaces reach the apiserver: it goes into the serving certificate and the
    /// apiserver then listens on all addresses instead of loopback only.
    pub pod_gateway: Option<Ipv4Addr>,
    /// Users (e.g. `system:serviceaccount:<ns>:<name>`) whose every request the
    /// apiserver records in its audit log ([`ControlPlane::audit_events`]); none: no
    /// audit log.
    pub audited_users: Vec<String>,
}

impl ControlPlane {
    /// Builds the binaries if needed, then starts etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler, and returns once the apiserver is
    /// ready and the controller manager and scheduler have both taken their leader
    /// lease and the controllers are doing their work.
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`Self::start`] with options.
    pub async fn start_with(options: Options) -> Result<Self> {
        let binaries = tokio::task::spawn_blocking(Binaries::ensure)
            .await
            .map_err(|e| Error::io("building the control plane", std::io::Error::other(e)))??;
        let dir = tempfile::Builder::new()
            .prefix("tidecache-control-plane-")
            .tempdir()
            .map_err(|e| Error::io("creating the control plane's temp dir", e))?;
        process::register_dir(dir.path());
        let extra_ips: Vec<std::net::IpAddr> =
            options.pod_gateway.into_iter().map(Into::into).collect();
        let pki = Pki::generate(&dir.path().join("pki"), &extra_ips)?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;

        let apiserver_port = free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = |name: &str, client: &CertFiles| {
            kubeconfig::write(
                &dir.path().join(format!("{name}.kubeconfig")),
                &server,
                &pki.ca.cert,
                name,
                Credentials::Certificate(client),
            )
        };
        let admin_kubeconfig = kubeconfig("admin", &pki.admin)?;
        let kcm_kubeconfig = kubeconfig("controller-manager", &pki.controller_manager)?;
        let scheduler_kubeconfig = kubeconfig("scheduler", &pki.scheduler)?;
        let audit_log = if options.audited_users.is_empty() {
            None
        } else {
            let policy = dir.path().join("audit-policy.yaml");
            std::fs::write(&policy, audit::policy(&options.audited_users))
                .map_err(|e| Error::io(format!("writing {}", policy.display()), e))?;
            Some(logs.join("audit.log"))
        };

        let mut plane = Self {
            processes: Vec::new(),
            binaries,
            pki,
            server,
            admin_kubeconfig,
            apiserver_port,
            pod_gateway: options.pod_gateway,
            audit_log,
            dir,
        };

        let booted = plane.boot(&kcm_kubeconfig, &scheduler_kubeconfig).await;
        if let Err(e) = booted {
            // The caller only sees the error; the logs say why.
            plane.stop_all();
            if !process::interrupted() {
                plane.print_log_tails(60);
            }
            return Err(e);
        }
        Ok(plane)
    }

    async fn boot(&mut self, kcm_kubeconfig: &Path, scheduler_kubeconfig: &Path) -> Result<()> {
        let etcd_url = self.start_etcd()?;
        self.start_apiserver(&etcd_url)?;
        let client = self.client().await?;
        self.wait_apiserver_ready(&client).await?;
        self.start_controller_manager(kcm_kubeconfig)?;
        self.start_scheduler(scheduler_kubeconfig)?;
        self.wait_controllers(&client).await
    }

    /// Stops the components in reverse start order (idempotent).
    fn stop_all(&mut self) {
        for p in self.processes.iter_mut().rev() {
            p.stop();
        }
    }

    /// The apiserver's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The apiserver's port (on loopback, and on the pod gateway if there is one).
    pub fn apiserver_port(&self) -> u16 {
        self.apiserver_port
    }

    /// A kubeconfig for `kubernetes-admin` (group `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The cluster's PKI (e.g. to mint more client certificates' trust or read the CA).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The binaries in use (kubectl among them).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The directory holding the PKI, kubeconfigs, etcd data and the component logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.admin_kubeconfig).await
    }

    /// Every request of the audited users ([`Options::audited_users`]) the apiserver
    /// has completed so far, oldest first. Fails if no users are audited.
    pub fn audit_events(&self) -> Result<Vec<audit::AuditEvent>> {
        let path = self.audit_log.as_deref().ok_or_else(|| {
            Error::io(
                "reading the audit log",
                std::io::Error::other("the control plane was started without audited users"),
            )
        })?;
        if !path.exists() {
            // Nothing audited has happened yet.
            return Ok(Vec::new());
        }
        audit::read(path)
    }

    /// Mints a token for ServiceAccount `namespace/name` with the TokenRequest API
    /// (valid `expiration_seconds`) and writes a kubeconfig that uses it, so that a
    /// component under test (the operator) runs with exactly the permissions its RBAC
    /// grants. The ServiceAccount must exist.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        expiration_seconds: i64,
    ) -> Result<PathBuf> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(expiration_seconds),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::api(format!("requesting a token for {namespace}/{name}"), e))?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
        let user = format!("system:serviceaccount:{namespace}:{name}");
        kubeconfig::write(
            &self
                .dir
                .path()
                .join(format!("sa-{namespace}-{name}.kubeconfig")),
            &self.server,
            &self.pki.ca.cert,
            &user,
            Credentials::Token(&token),
        )
    }

    /// Runs the built kubectl with the admin kubeconfig and returns its stdout; a
    /// non-zero exit is an error carrying kubectl's stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.admin_kubeconfig, args).await
    }

    /// Runs the built kubectl with the given kubeconfig (e.g. from
    /// [`Self::service_account_kubeconfig`]) and returns its stdout; a non-zero exit is
    /// an error carrying kubectl's stderr.
    pub async fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<String> {
        let kubectl = self.binaries.path("kubectl");
        let output = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| Error::io(format!("running {}", kubectl.display()), e))?;
        if !output.status.success() {
            return Err(Error::io(
                format!("kubectl {}", args.join(" ")),
                std::io::Error::other(format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Fails if any component has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(Process::check_running)
    }

    /// Prints the end of every component's log to stderr (the test harness shows it
    /// with the failure).
    pub fn print_log_tails(&self, lines: usize) {
        for p in &self.processes {
            eprintln!(
                "----- {} ({}), last {lines} lines -----\n{}",
                p.name(),
                p.log().display(),
                process::log_tail(p.log(), lines)
            );
        }
    }

    fn spawn(&mut self, name: &'static str, args: Vec<String>) -> Result<()> {
        let log = self.dir.path().join("logs").join(format!("{name}.log"));
        let process = Process::spawn(name, &self.binaries.path(name), &args, log)?;
        self.processes.push(process);
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<String> {
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let data = self.dir.path().join("etcd");
        let args = vec![
            "--name=default".into(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            // The data is thrown away after the test; fsync only slows it down.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        self.spawn("etcd", args)?;
        Ok(client_url)
    }

    fn start_apiserver(&mut self, etcd_url: &str) -> Result<()> {
        let pki = &self.pki;
        // Pods reach it through the pod network's gateway, the tests through loopback.
        let bind = if self.pod_gateway.is_some() {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={bind}"),
            format!("--secure-port={}", self.apiserver_port),
            // There is no default route to pick an address from.
            "--advertise-address=127.0.0.1".into(),
            // 1.37 refuses to publish a loopback address as the endpoint of the
            // `kubernetes` Service ("may not be in the loopback range"); nothing here
            // routes ClusterIPs anyway, so pods get the apiserver's address directly.
            "--endpoint-reconciler-type=none".into(),
            // Admission webhooks are called at a ready endpoint of their Service, not at its
            // ClusterIP (as GKE and k3s do): the apiserver runs on the host, outside any
            // route to Service IPs.
            "--enable-aggregator-routing=true".into(),
            format!("--cert-dir={}", self.dir.path().join("apiserver").display()),
            format!("--tls-cert-file={}", pki.apiserver.cert.display()),
            format!("--tls-private-key-file={}", pki.apiserver.key.display()),
            format!("--client-ca-file={}", pki.ca.cert.display()),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            // For a real kubelet's API (`kubectl logs`, tests/src/real_kubelet.rs): node
            // names resolve nowhere here, so dial the node's InternalIP first (the default
            // order puts Hostname first), and authenticate as a system:masters user, whom
            // the kubelet's webhook authorizer allows. No effect on the fake nodes, whose
            // API nothing calls.
            "--kubelet-preferred-address-types=InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP"
                .into(),
            format!("--kubelet-client-certificate={}", pki.admin.cert.display()),
            format!("--kubelet-client-key={}", pki.admin.key.display()),
        ];
        if let Some(log) = &self.audit_log {
            let policy = self.dir.path().join("audit-policy.yaml");
            args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", log.display()),
                "--audit-log-format=json".into(),
                // Each event is written before the request returns: a test reading the
                // log after a request completed sees it.
                "--audit-log-mode=blocking".into(),
            ]);
        }
        self.spawn("kube-apiserver", args)
    }

    fn start_controller_manager(&mut self, kubeconfig: &Path) -> Result<()> {
        let pki = &self.pki;
        let kubeconfig = kubeconfig.display();
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            format!(
                "--cert-dir={}",
                self.dir.path().join("controller-manager").display()
            ),
            // Every controller, including the two that are off by default.
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
            // Each controller acts as its own ServiceAccount, as in a real cluster.
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--root-ca-file={}", pki.ca.cert.display()),
            format!("--cluster-signing-cert-file={}", pki.ca.cert.display()),
            format!("--cluster-signing-key-file={}", pki.ca.key.display()),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--cluster-name=tidecache-e2e".into(),
            "--profiling=false".into(),
        ];
        self.spawn("kube-controller-manager", args)
    }

    fn start_scheduler(&mut self, kubeconfig: &Path) -> Result<()> {
        let kubeconfig = kubeconfig.display();
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            format!("--cert-dir={}", self.dir.path().join("scheduler").display()),
            "--profiling=false".into(),
        ];
        self.spawn("kube-scheduler", args)
    }

    async fn wait_apiserver_ready(&mut self, client: &Client) -> Result<()> {
        let request = || {
            http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::io("building the /readyz request", std::io::Error::other(e)))
        };
        self.poll("kube-apiserver /readyz", async || {
            Ok(match client.request_text(request()?).await {
                Ok(body) if body.trim() == "ok" => None,
                Ok(body) => Some(body),
                Err(e) => Some(e.to_string()),
            })
        })
        .await
    }

    /// Both leader leases held proves the controller manager and the scheduler are
    /// connected and authorised; the `default` ServiceAccount (and the root CA
    /// ConfigMap) prove the controllers are running with working token signing.
    async fn wait_controllers(&mut self, client: &Client) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), "default");
        self.poll("the controller manager and the scheduler", async || {
            for name in ["kube-controller-manager", "kube-scheduler"] {
                let held = leases
                    .get_opt(name)
                    .await
                    .map_err(|e| Error::api(format!("reading lease kube-system/{name}"), e))?
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .is_some();
                if !held {
                    return Ok(Some(format!("lease kube-system/{name} not held yet")));
                }
            }
            let sa = service_accounts
                .get_opt("default")
                .await
                .map_err(|e| Error::api("reading ServiceAccount default/default", e))?;
            if sa.is_none() {
                return Ok(Some("no ServiceAccount default/default yet".into()));
            }
            let ca = config_maps
                .get_opt("kube-root-ca.crt")
                .await
                .map_err(|e| Error::api("reading ConfigMap default/kube-root-ca.crt", e))?;
            Ok(ca
                .is_none()
                .then(|| "no ConfigMap default/kube-root-ca.crt yet".into()))
        })
        .await
    }

    /// Calls `check` every 250 ms until it returns `None` (done), while making sure no
    /// component has died; `Some(state)` is the state reported if time runs out.
    async fn poll(
        &mut self,
        what: &str,
        mut check: impl AsyncFnMut() -> Result<Option<String>>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_running()?;
            let last = match check().await? {
                None => return Ok(()),
                Some(state) => state,
            };
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(Error::Timeout {
                    what: what.into(),
                    waited: STARTUP_TIMEOUT,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_all();
        if std::thread::panicking() && !process::interrupted() {
            self.print_log_tails(60);
        }
        // The TempDir field deletes the directory right after this.
        process::forget_dir(self.dir.path());
    }
}

/// A client for any kubeconfig, e.g. one from
/// [`ControlPlane::service_account_kubeconfig`].
pub async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let parsed = Kubeconfig::read_from(kubeconfig).map_err(|source| Error::Kubeconfig {
        path: kubeconfig.to_owned(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: kubeconfig.to_owned(),
            source,
        })?;
    Client::try_from(config)
        .map_err(|e| Error::api(format!("creating a client for {}", kubeconfig.display()), e))
}

/// A port that was free a moment ago. Another process could take it before the
/// component binds it; on a test machine that race is rare enough, and a component
/// that fails to bind exits, which surfaces as an `Exited` error.
pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free loopback port", e))
}
