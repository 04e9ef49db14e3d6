//! Real `cache-node` processes on loopback sharing one data directory (the stand-in for the
//! RWX volume), each with a fixed address (and RESP port, if asked for) and node id, so that
//! a node can be killed and started again as the same pod.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rustix::process::{Pid, Signal, kill_process};

use crate::Client;

/// How long a node may take to load the volume and catch up before `/readyz` turns 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the nodes of a [`Cluster`] are started with; [`Builder::start`] starts them.
#[derive(Debug)]
#[must_use]
pub struct Builder {
    size: usize,
    replicated: bool,
    fsync: Option<String>,
    auth_token: Option<String>,
    peer_token: String,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    data: Option<PathBuf>,
    resp: bool,
    file_limit: Option<u64>,
    zones: usize,
    dynamic: bool,
    members: Option<usize>,
    memory_only: bool,
}

/// The `--peer-token` replicated nodes get unless [`Builder::peer_token`] sets another: peers
/// authenticate with a token of their own, as in Kubernetes.
pub const PEER_TOKEN: &str = "testkit-peer-token";

impl Builder {
    /// Nodes that do not know each other (no `--peers`): each persists its own writes to the
    /// shared directory and loads everyone's at start, as without replication.
    pub fn independent(mut self) -> Builder {
        self.replicated = false;
        self
    }

    /// `--fsync` (`always`, `everysec`, `never`); cache-node's default otherwise.
    pub fn fsync(mut self, policy: &str) -> Builder {
        self.fsync = Some(policy.to_string());
        self
    }

    /// `--auth-token`: every node requires it and presents it to its peers.
    pub fn auth_token(mut self, token: &str) -> Builder {
        self.auth_token = Some(token.to_string());
        self
    }

    /// `--peer-token` of replicated nodes ([`PEER_TOKEN`] otherwise); [`Cluster::peer_auth`]
    /// is the header that carries it.
    pub fn peer_token(mut self, token: &str) -> Builder {
        self.peer_token = token.to_string();
        self
    }

    /// Any other flag, e.g. `--ack=quorum`. Replicated nodes run anti-entropy every second
    /// unless a flag sets `--anti-entropy-interval`, so that tests converge quickly.
    pub fn flag(mut self, flag: &str) -> Builder {
        self.flags.push(flag.to_string());
        self
    }

    /// An environment variable for every node, e.g. a `TIDECACHE_*` setting.
    pub fn env(mut self, name: &str, value: &str) -> Builder {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Every node also serves the Redis protocol (`--resp-listen`) on a loopback port of its
    /// own, fixed across restarts like its HTTP address; [`Cluster::resp_port`] names it.
    pub fn resp(mut self) -> Builder {
        self.resp = true;
        self
    }

    /// Every node runs with RLIMIT_NOFILE at `limit` (soft and hard), set by util-linux's
    /// `prlimit` before the node starts, so that the node sees it from its first instruction.
    pub fn file_limit(mut self, limit: u64) -> Builder {
        self.file_limit = Some(limit);
        self
    }

    /// Spreads the nodes over `zones` zones, node `i` in `zone-{i % zones}`, as `@zone`
    /// suffixes in the `--peers` list or the peers file (for partitioned mode's zone-distinct
    /// owners).
    pub fn zones(mut self, zones: usize) -> Builder {
        self.zones = zones;
        self
    }

    /// Membership through a peers file (`--peers-file`) in the cluster's directory instead of
    /// `--peers`, so that [`Cluster::join`] and [`Cluster::leave`] change it while the nodes
    /// run; with [`Builder::zones`] its entries carry the same `@zone` suffixes.
    pub fn dynamic(mut self) -> Builder {
        self.dynamic = true;
        self
    }

    /// Starts and lists only nodes `0..n` of the cluster's size; the others are slots with
    /// fixed addresses for [`Cluster::join`]. Needs [`Builder::dynamic`].
    pub fn members(mut self, n: usize) -> Builder {
        self.members = Some(n);
        self
    }

    /// Nodes without a data volume (no `--data-dir`): what a node holds came to it over the
    /// network, so moves between nodes are seen for what they carry.
    pub fn memory_only(mut self) -> Builder {
        self.memory_only = true;
        self
    }

    /// The shared data directory, e.g. a crashable [`Volume`](crate::Volume)'s; a new empty
    /// directory otherwise.
    pub fn data_dir(mut self, path: &Path) -> Builder {
        self.data = Some(path.to_path_buf());
        self
    }

    /// Starts every node (the first [`Builder::members`] ones), then waits until each is
    /// ready.
    ///
    /// # Panics
    ///
    /// If a node exits or is not ready within 60 s, with its log; if `members` is more than
    /// the size, or set without `dynamic`; if `dynamic` is set on independent nodes.
    pub fn start(self) -> Cluster {
        let members = self.members.unwrap_or(self.size);
        assert!(
            members <= self.size,
            "{members} members of {} nodes",
            self.size
        );
        assert!(
            self.dynamic || members == self.size,
            "Builder::members needs Builder::dynamic: a --peers list cannot grow"
        );
        assert!(
            self.replicated || !self.dynamic,
            "independent nodes have no membership to change"
        );
        let dir = tempfile::tempdir().expect("cluster directory");
        let data = self.data.unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data).expect("data directory");
        // Every port at once, so that no two are the same.
        let mut ports = free_ports(if self.resp { 2 * self.size } else { self.size });
        let resp_ports = ports.split_off(self.size);
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--drain-timeout=1s".to_string()];
        if !self.memory_only {
            args.push(format!("--data-dir={}", data.display()));
        }
        let zones = self.zones;
        let entries: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| match zones {
                0 => address.clone(),
                zones => format!("{address}@zone-{}", i % zones),
            })
            .collect();
        let peers_file = self.dynamic.then(|| dir.path().join("peers"));
        if self.replicated {
            match &peers_file {
                Some(path) => args.push(format!("--peers-file={}", path.display())),
                None => args.push(format!("--peers={}", entries.join(","))),
            }
            if !self
                .flags
                .iter()
                .any(|f| f.starts_with("--anti-entropy-interval"))
            {
                args.push("--anti-entropy-interval=1s".to_string());
            }
        }
        args.extend(self.fsync.map(|policy| format!("--fsync={policy}")));
        args.extend(self.auth_token.map(|token| format!("--auth-token={token}")));
        args.extend(self.flags);
        let nodes = addresses
            .into_iter()
            .enumerate()
            .map(|(i, address)| Node {
                address,
                resp_port: resp_ports.get(i).copied(),
                id: format!("cache-{i}"),
                child: None,
                log: dir.path().join(format!("cache-{i}.log")),
            })
            .collect();
        let peer_tokens = self
            .replicated
            .then(|| (self.peer_token.clone(), None::<String>));
        let mut cluster = Cluster {
            nodes,
            args,
            peer_tokens,
            env: self.env,
            file_limit: self.file_limit,
            data,
            peers_file,
            entries,
            members: (0..members).collect(),
            _dir: dir,
        };
        cluster.write_peers_file();
        cluster.start_nodes(0..members);
        cluster
    }
}

/// One node: its fixed identity and its process while it runs.
struct Node {
    /// `127.0.0.1:port`, the same across restarts.
    address: String,
    /// The `--resp-listen` port on 127.0.0.1, if the builder asked for RESP.
    resp_port: Option<u16>,
    /// `--node-id`: the subdirectories it writes on the volume.
    id: String,
    child: Option<Child>,
    /// Its stderr, appended to across restarts.
    log: PathBuf,
}

/// Nodes started by a [`Builder`]; every node still running is killed on drop.
pub struct Cluster {
    nodes: Vec<Node>,
    /// The flags every node gets besides `--listen`, `--node-id`, `--resp-listen` and the
    /// peer tokens.
    args: Vec<String>,
    /// `--peer-token` and `--peer-token-previous` of nodes started from now on; `None` for
    /// independent nodes.
    peer_tokens: Option<(String, Option<String>)>,
    env: Vec<(String, String)>,
    /// RLIMIT_NOFILE for the nodes, if the builder set one.
    file_limit: Option<u64>,
    /// The shared data directory.
    data: PathBuf,
    /// The `--peers-file` of a [`Builder::dynamic`] cluster.
    peers_file: Option<PathBuf>,
    /// Every node's entry in the membership, `address[@zone]`.
    entries: Vec<String>,
    /// The nodes the membership lists now.
    members: BTreeSet<usize>,
    /// Holds the logs (and the data directory unless the builder was given one); removed on
    /// drop.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `size` nodes that know each other (`--peers`), with `flags`, persisting to one data
    /// directory; started and ready.
    pub fn start(size: usize, flags: &[&str]) -> Cluster {
        flags
            .iter()
            .fold(Cluster::builder(size), |builder, flag| builder.flag(flag))
            .start()
    }

    /// `size` nodes that know each other unless [`Builder::independent`].
    pub fn builder(size: usize) -> Builder {
        Builder {
            size,
            replicated: true,
            fsync: None,
            auth_token: None,
            peer_token: PEER_TOKEN.to_string(),
            flags: Vec::new(),
            env: Vec::new(),
            data: None,
            resp: false,
            file_limit: None,
            zones: 0,
            dynamic: false,
            members: None,
            memory_only: false,
        }
    }

    /// The nodes the membership lists now, in order: all of them unless the cluster is
    /// [`Builder::dynamic`].
    pub fn members(&self) -> Vec<usize> {
        self.members.iter().copied().collect()
    }

    /// Adds node `i` to the peers file, then starts it and waits until it is ready. The
    /// running nodes see it at their next read of the file (within 500 ms).
    ///
    /// # Panics
    ///
    /// If the cluster is not [`Builder::dynamic`], node `i` is listed already or running, or
    /// it does not get ready (with its log).
    pub fn join(&mut self, i: usize) {
        assert!(self.peers_file.is_some(), "joining needs Builder::dynamic");
        assert!(i < self.nodes.len(), "no node {i}");
        assert!(self.members.insert(i), "node {i} is a member already");
        self.write_peers_file();
        self.start_nodes([i]);
    }

    /// Removes node `i` from the peers file. It keeps running (and serving) until
    /// [`Cluster::stop`]; the nodes see the change at their next read of the file (within
    /// 500 ms), node `i` included.
    ///
    /// # Panics
    ///
    /// If the cluster is not [`Builder::dynamic`] or node `i` is not listed.
    pub fn leave(&mut self, i: usize) {
        assert!(self.peers_file.is_some(), "leaving needs Builder::dynamic");
        assert!(self.members.remove(&i), "node {i} is not a member");
        self.write_peers_file();
    }

    /// Writes the members' entries to the peers file, if there is one, as a configuration
    /// tool should: a temporary file renamed over it, so that no node reads half a list.
    fn write_peers_file(&self) {
        let Some(path) = &self.peers_file else {
            return;
        };
        let mut text = String::new();
        for &i in &self.members {
            text.push_str(&self.entries[i]);
            text.push('\n');
        }
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).expect("write the peers file");
        std::fs::rename(&temporary, path).expect("replace the peers file");
    }

    /// The `Authorization` value that carries the current peer token, for calling a node's
    /// internal routes directly.
    ///
    /// # Panics
    ///
    /// If the nodes are independent (they have no peer token).
    pub fn peer_auth(&self) -> String {
        let (current, _) = self
            .peer_tokens
            .as_ref()
            .expect("independent nodes have no peer token");
        format!("Bearer {current}")
    }

    /// A rotation of the peer token: nodes started from now on get `current` as
    /// `--peer-token` and `previous` as `--peer-token-previous`; running nodes keep theirs,
    /// as pods do until a rolling restart reaches them.
    ///
    /// # Panics
    ///
    /// If the nodes are independent.
    pub fn rotate_peer_token(&mut self, current: &str, previous: Option<&str>) {
        assert!(
            self.peer_tokens.is_some(),
            "independent nodes have no peer token"
        );
        self.peer_tokens = Some((current.to_string(), previous.map(str::to_string)));
    }

    /// Node `i`'s address, `127.0.0.1:port`.
    pub fn address(&self, i: usize) -> &str {
        &self.nodes[i].address
    }

    /// Node `i`'s RESP port on 127.0.0.1 (the same across restarts).
    ///
    /// # Panics
    ///
    /// If the cluster was not built with [`Builder::resp`].
    pub fn resp_port(&self, i: usize) -> u16 {
        self.nodes[i]
            .resp_port
            .expect("the cluster serves RESP only when built with Builder::resp")
    }

    /// Node `i`'s `--node-id`, the name of its subdirectories on the volume.
    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// The shared data directory (`--data-dir` of every node).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Node `i`'s log so far, every run of it.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Starts the stopped nodes `nodes`, all of them first and then waits for each to be
    /// ready, so that nodes restarted together catch up from each other.
    ///
    /// # Panics
    ///
    /// If one is running already, or exits or is not ready within 60 s (with its log).
    pub fn start_nodes(&mut self, nodes: impl IntoIterator<Item = usize> + Clone) {
        for i in nodes.clone() {
            self.spawn(i);
        }
        for i in nodes {
            self.wait_ready(i);
        }
    }

    /// SIGKILL to node `i` (a crash: no drain, no final sync), and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.take_child(i);
        child.kill().expect("SIGKILL");
        child.wait().expect("killed node reaped");
    }

    /// SIGTERM to node `i` (a clean stop: drain, sync, exit), and waits for it to exit.
    pub fn stop(&mut self, i: usize) -> ExitStatus {
        let mut child = self.take_child(i);
        kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM");
        child.wait().expect("stopped node reaped")
    }

    /// Waits up to `within` for node `i` to exit on its own; its exit status.
    ///
    /// # Panics
    ///
    /// If it is not running, or still runs after `within` (with its log).
    pub fn wait_exit(&mut self, i: usize, within: std::time::Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            let child = self.nodes[i]
                .child
                .as_mut()
                .unwrap_or_else(|| panic!("node {i} is not running"));
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.nodes[i].child = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {i} still runs after {within:?}:\n{}",
                self.log(i)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The process id of node `i`, e.g. to read its memory use from `/proc`.
    ///
    /// # Panics
    ///
    /// If it is not running.
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i].child.as_ref().expect("node is running").id()
    }

    /// `STOP` pauses node `i` (a partition: its sockets stay open, nothing answers); `CONT`
    /// resumes it.
    ///
    /// # Panics
    ///
    /// On any other signal name, or if the node is not running.
    pub fn signal(&self, i: usize, signal: &str) {
        let signal = match signal {
            "STOP" => Signal::STOP,
            "CONT" => Signal::CONT,
            other => panic!("signal {other}: use kill or stop to end a node"),
        };
        let child = self.nodes[i].child.as_ref().expect("node is running");
        kill_process(Pid::from_child(child), signal).expect("signal delivered");
    }

    fn take_child(&mut self, i: usize) -> Child {
        self.nodes[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        assert!(node.child.is_none(), "node {i} is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut command = match self.file_limit {
            Some(limit) => {
                // prlimit execs the node: the child's pid is the node's.
                let mut command = std::process::Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(crate::binary());
                command
            }
            None => crate::cache_node(),
        };
        let child = command
            .arg(format!("--listen={}", node.address))
            .arg(format!("--node-id={}", node.id))
            .args(
                node.resp_port
                    .map(|port| format!("--resp-listen=127.0.0.1:{port}")),
            )
            .args(&self.args)
            .args(self.peer_tokens.iter().flat_map(|(current, previous)| {
                std::iter::once(format!("--peer-token={current}")).chain(
                    previous
                        .iter()
                        .map(|previous| format!("--peer-token-previous={previous}")),
                )
            }))
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", "info")
            // Plain text in the log files that failure messages quote.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cache-node starts");
        self.nodes[i].child = Some(child);
    }

    /// Waits until node `i` answers `/readyz` with 200: it has loaded the volume (and caught
    /// up from its peers).
    fn wait_ready(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let (address, child) = (node.address.as_str(), &mut node.child);
        let outcome = on_own_runtime(async move {
            let client = Client::default();
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return Err(format!("exited with {status} before it was ready"));
                }
                let ready = client.send(Method::GET, address, "/readyz", &[], "").await;
                if ready.is_ok_and(|reply| reply.status == StatusCode::OK) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("not ready in {READY_TIMEOUT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        if let Err(why) = outcome {
            panic!("node {i} {why}:\n{}", self.log(i));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // A paused node must be resumed to die of SIGKILL promptly on every kernel.
                let _ = kill_process(Pid::from_child(&child), Signal::CONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Picks `count` free loopback ports, known before any node starts because every node is
/// given every address in `--peers`. The sockets are closed before the nodes bind them, so
/// another process could take one in between; the ephemeral range makes that unlikely.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own: the cluster
/// is started and restarted from synchronous code and from async tests alike, and a runtime
/// cannot be blocked on from inside another.
fn on_own_runtime<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(future)
            })
            .join()
            .expect("runtime thread")
    })
}
