//! The pod network: one Linux bridge per test cluster with a /24 of its own, and one
//! network namespace per pod joined to it by a veth pair (iproute2's `ip`). Each pod
//! thus has a real IP on which its processes bind their real ports, pods and the test
//! process reach each other directly, and a pod (or a whole zone) can be cut off by
//! taking its veth down. The bridge's address is the gateway, on which the apiserver
//! also listens so that pods reach it as `KUBERNETES_SERVICE_HOST`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crate::control_plane::process::{forget_cleanup, register_cleanup};
use crate::control_plane::{Error, Result};

/// Distinguishes the networks (and namespaces) of several clusters in one process.
static NEXT_NETWORK: AtomicU32 = AtomicU32::new(0);

/// A bridge with a /24 from which pods get their addresses. Deleted on drop.
#[derive(Debug)]
pub struct PodNetwork {
    bridge: String,
    /// The first three octets of the /24.
    prefix: [u8; 3],
    /// Prefix of every namespace and host-side veth name, unique on the machine.
    tag: String,
    /// Host octets in use (1 is the gateway).
    used: Mutex<BTreeSet<u8>>,
    /// The host octet handed out last (changed under `used`'s lock).
    last: AtomicU8,
}

/// A pod's network namespace and address. Deleted by [`PodNetwork::detach`].
#[derive(Debug, Clone)]
pub struct PodAddress {
    /// The network namespace's name (for `ip netns exec`).
    pub netns: String,
    /// The pod's IP.
    pub ip: Ipv4Addr,
    /// The host-side end of the veth pair (down = the pod is cut off).
    pub host_veth: String,
}

impl PodNetwork {
    /// Creates the bridge on a /24 of 10.0.0.0/8 that no interface of the machine uses.
    /// The subnet and the names derive from the process id, so that concurrent test
    /// processes (and several clusters in one process) do not collide.
    pub fn create() -> Result<Self> {
        let n = NEXT_NETWORK.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("tc{pid:x}{n:x}");
        let bridge = format!("{tag}br");
        let in_use = run_output("ip", &["-4", "-o", "addr", "show"])?;
        let mut prefix = None;
        for attempt in 0..256u32 {
            let seed = pid.wrapping_mul(31).wrapping_add(n * 7 + attempt);
            // 10.96/16 holds the Service ClusterIPs; stay in 10.100–10.249.
            let candidate = [10, 100 + (seed / 256 % 150) as u8, (seed % 256) as u8];
            let dotted = format!(" {}.{}.{}.", candidate[0], candidate[1], candidate[2]);
            if !in_use.contains(&dotted) {
                prefix = Some(candidate);
                break;
            }
        }
        let prefix = prefix.ok_or_else(|| {
            Error::io(
                "choosing a pod subnet",
                std::io::Error::other("every candidate /24 is in use"),
            )
        })?;
        let network = Self {
            bridge,
            prefix,
            tag,
            used: Mutex::new(BTreeSet::from([0, 1, 255])),
            last: AtomicU8::new(1),
        };
        run("ip", &["link", "add", &network.bridge, "type", "bridge"])?;
        register_cleanup(
            &format!("2-{}", network.bridge),
            "ip",
            &["link", "del", &network.bridge],
        );
        let gateway = format!("{}/24", network.gateway());
        run("ip", &["addr", "add", &gateway, "dev", &network.bridge])?;
        run("ip", &["link", "set", &network.bridge, "up"])?;
        Ok(network)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The pods' subnet, e.g. `10.123.45.0/24`.
    pub fn cidr(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    /// The bridge's address: the pods' default route and the host as seen from a pod.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(1)
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, host)
    }

    /// Creates a network namespace for a pod with a free address on the bridge.
    pub fn attach(&self) -> Result<PodAddress> {
        let host = {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            // The next free address after the last one handed out, not the lowest: a pod's
            // address is not given to its successor at once, while kube-proxy's rules and
            // the peers' links may still point at it (as CNI plugins avoid reuse too).
            let last = self.last.load(Ordering::Relaxed);
            let start = if last >= 254 { 2 } else { last.max(1) + 1 };
            let free = (start..=254u8)
                .chain(2..start)
                .find(|h| !used.contains(h))
                .ok_or_else(|| {
                    Error::io(
                        "allocating a pod IP",
                        std::io::Error::other(format!("all of {}/24 in use", self.address(0))),
                    )
                })?;
            used.insert(free);
            self.last.store(free, Ordering::Relaxed);
            free
        };
        let address = PodAddress {
            netns: format!("{}-{host}", self.tag),
            ip: self.address(host),
            host_veth: format!("{}v{host}", self.tag),
        };
        let result = self.plumb(&address);
        if result.is_err() {
            self.detach(&address);
        }
        result.map(|()| address)
    }

    fn plumb(&self, a: &PodAddress) -> Result<()> {
        let ns = a.netns.as_str();
        run("ip", &["netns", "add", ns])?;
        register_cleanup(&format!("1-{ns}"), "ip", &["netns", "del", ns]);
        register_cleanup(
            &format!("0-{}", a.host_veth),
            "ip",
            &["link", "del", &a.host_veth],
        );
        run(
            "ip",
            &[
                "link",
                "add",
                &a.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &a.host_veth, "master", &self.bridge, "up"],
        )?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", a.ip),
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &self.gateway().to_string(),
            ],
        )
    }

    /// Deletes a pod's veth pair and namespace and frees its address. The veth goes
    /// first and explicitly: a namespace outlives its name while sockets in it are still
    /// closing (e.g. retransmitting a FIN to a peer that is gone), and would keep its
    /// veth, and thus a link on the host, for minutes.
    pub fn detach(&self, a: &PodAddress) {
        // Both fail harmlessly when plumbing stopped before they existed.
        let _deleted = run("ip", &["link", "del", &a.host_veth]);
        let _deleted = run("ip", &["netns", "del", &a.netns]);
        forget_cleanup(&format!("0-{}", a.host_veth));
        forget_cleanup(&format!("1-{}", a.netns));
        let host = a.ip.octets()[3];
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&host);
    }

    /// Cuts a pod off the network (`up = false`) or reconnects it.
    pub fn set_link(&self, a: &PodAddress, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &a.host_veth, state])
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // Best effort: nothing else can be done about a bridge that will not go.
        let _deleted = run("ip", &["link", "del", &self.bridge]);
        forget_cleanup(&format!("2-{}", self.bridge));
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    run_output(program, args).map(drop)
}

fn run_output(program: &str, args: &[&str]) -> Result<String> {
    let what = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if !output.status.success() {
        return Err(Error::io(
            what,
            std::io::Error::other(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
