//! kube-proxy from the same Kubernetes build, so that Service ClusterIPs route as in a real
//! cluster: applications (a pod, or the test process on the host) reach
//! `<name>.<ns>.svc.cluster.local` (the cluster DNS answers the ClusterIP) and kube-proxy's
//! iptables rules send each connection to a ready endpoint.
//!
//! # Choices
//! - **iptables mode** (nf_tables backend of Debian's `iptables`): the mode most clusters run,
//!   and the one whose rules are visible with `iptables -t nat -S KUBE-SERVICES`.
//! - **`--masquerade-all`**: pods sit on one Linux bridge, so a pod's reply to another pod
//!   that reached it through a ClusterIP would be bridged straight back without passing the
//!   host's conntrack (no `br_netfilter` here), and the client would drop it. Masquerading
//!   every Service connection to the gateway makes replies return through the host.
//! - **`net.ipv4.ip_forward=1`** while it runs (pod → ClusterIP → pod is routed by the host),
//!   restored on drop; and a route for the Service range on the bridge, so the host reaches
//!   ClusterIPs whatever its default route is.
//! - **One per machine**: the rules live in the host's tables under fixed chain names, so two
//!   kube-proxies would overwrite each other's. Only the clusters that route Services (the
//!   e2e and the demo) start one; other test clusters do not.
//!
//! On drop it is stopped and `kube-proxy --cleanup` removes its chains; on Ctrl-C the
//! signal handler runs the same cleanup.

use std::net::Ipv4Addr;
use std::process::Command;

use super::kubeconfig::{self, Credentials};
use super::process::{Process, forget_cleanup, register_cleanup};
use super::{ControlPlane, Error, Result, SERVICE_CLUSTER_IP_RANGE, free_port};

/// The cleanup key: before the bridge's (`2-…`), after the process groups are stopped.
const CLEANUP_KEY: &str = "1-kube-proxy";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// The cleanup key of the forwarding setting, after kube-proxy's.
const FORWARD_CLEANUP_KEY: &str = "1-kube-proxy-forwarding";

/// Where the proxy runs: the pod network it routes for.
#[derive(Debug, Clone)]
pub struct ProxyNetwork<'a> {
    /// The pods' subnet (`--cluster-cidr`).
    pub pod_cidr: String,
    /// The bridge the pods are on, which the Service range is routed to.
    pub bridge: &'a str,
    /// A Node whose name kube-proxy runs as (`--hostname-override`).
    pub node: &'a str,
}

/// A running kube-proxy. Dropping it stops it and removes its rules.
#[derive(Debug)]
pub struct KubeProxy {
    process: Option<Process>,
    binary: std::path::PathBuf,
    ip_forward_before: String,
}

impl KubeProxy {
    /// Starts kube-proxy for `network` with its own client certificate, and returns once
    /// its rules are in place (its `/healthz` answers, which it does after the first sync).
    ///
    /// # Errors
    /// When it cannot be started or does not become healthy within a minute.
    pub async fn start(plane: &ControlPlane, network: &ProxyNetwork<'_>) -> Result<Self> {
        let dir = plane.dir().join("kube-proxy");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let kubeconfig = kubeconfig::write(
            &dir.join("kube-proxy.kubeconfig"),
            plane.server(),
            &plane.pki().ca.cert,
            "kube-proxy",
            Credentials::Certificate(&plane.pki().kube_proxy),
        )?;
        let ip_forward_before = std::fs::read_to_string(IP_FORWARD)
            .map_err(|e| Error::io(format!("reading {IP_FORWARD}"), e))?
            .trim()
            .to_string();
        // Put back on Ctrl-C too, not only on drop.
        register_cleanup(
            FORWARD_CLEANUP_KEY,
            "sh",
            &["-c", &format!("echo {ip_forward_before} > {IP_FORWARD}")],
        );
        std::fs::write(IP_FORWARD, "1")
            .map_err(|e| Error::io(format!("enabling forwarding in {IP_FORWARD}"), e))?;
        run(
            "ip",
            &[
                "route",
                "replace",
                SERVICE_CLUSTER_IP_RANGE,
                "dev",
                network.bridge,
            ],
        )?;
        let binary = plane.binaries().path("kube-proxy");
        register_cleanup(
            CLEANUP_KEY,
            &binary.to_string_lossy(),
            &["--cleanup", "--v=0"],
        );
        let healthz = free_port()?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--proxy-mode=iptables".into(),
            format!("--hostname-override={}", network.node),
            format!("--cluster-cidr={}", network.pod_cidr),
            "--masquerade-all=true".into(),
            // Leave the machine's conntrack table size and timeouts alone.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            format!("--healthz-bind-address=127.0.0.1:{healthz}"),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
            "--v=2".into(),
        ];
        let log = plane.dir().join("logs").join("kube-proxy.log");
        let mut proxy = Self {
            process: Some(Process::spawn("kube-proxy", &binary, &args, log)?),
            binary,
            ip_forward_before,
        };
        proxy.wait_healthy(healthz).await?;
        Ok(proxy)
    }

    /// Waits for `/healthz` to answer 200, failing early if the process exits.
    async fn wait_healthy(&mut self, port: u16) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(process) = self.process.as_mut() {
                process.check_running()?;
            }
            let answer = crate::http::request(
                (Ipv4Addr::LOCALHOST, port).into(),
                "GET",
                "/healthz",
                &[],
                std::time::Duration::from_secs(2),
            )
            .await;
            if answer.as_ref().is_ok_and(|response| response.status == 200) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "kube-proxy to sync its rules".into(),
                    waited: std::time::Duration::from_secs(60),
                    last: format!("{answer:?}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
        let _ = Command::new(&self.binary)
            .args(["--cleanup", "--v=0"])
            .output();
        forget_cleanup(CLEANUP_KEY);
        let _ = std::fs::write(IP_FORWARD, &self.ip_forward_before);
        forget_cleanup(FORWARD_CLEANUP_KEY);
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::io(
            format!("{program} {}", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        ))
    }
}
