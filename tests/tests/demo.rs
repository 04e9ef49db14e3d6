//! `make demo`'s promise: Ctrl-C removes everything, whatever the demo's output is. Each
//! test starts the built demo binary, waits until it prints that the cluster is up,
//! records what belongs to the run (every descendant process, the pods' network
//! namespaces, the bridge and its veths, the temp dirs), signals it and then checks
//! that it exited within a bound with 128 + signal and that nothing of the run is left:
//! no process recorded before the signal, none started since in one of the run's
//! network namespaces or naming one of its directories, no namespace, link or
//! directory.
//!
//! - `ctrl_c_after_the_output_pipe_died`: the bug report's `make demo 2>&1 | tee demo.log`
//!   and Ctrl-C, which ends `tee` too: stdout and stderr are one pipe, whose read end the
//!   test closes before it sends SIGINT to the demo's process group (the terminal's
//!   foreground job). Every message of the teardown then fails with EPIPE.
//! - `sigterm_with_the_output_in_a_file`: SIGTERM to the demo alone, its output in a
//!   file, which must then say that the teardown ran.
//!
//! The two run one after the other (a lock): each demo starts kube-proxy, whose rules live
//! in the host's iptables under fixed names. Before its signal, the second also does what
//! the README's quick start does: a PUT and a GET through the Service's name
//! (`demo.default.svc.cluster.local`, in `/etc/hosts` while the demo runs) and ClusterIP.
//! After the teardown the name and kube-proxy's chains must be gone too.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// The demo's last line once everything is up.
const READY: &str = "Press Ctrl-C to stop and remove everything.";
/// Building what is missing and starting the cluster; generous for a busy machine.
const STARTUP: Duration = Duration::from_secs(600);
/// From the signal to the demo's exit: the handler gives the components 3 s after
/// SIGTERM, then kills them and deletes the network and the directories.
const TEARDOWN: Duration = Duration::from_secs(15);
/// For processes SIGKILLed at the end of the teardown to be gone.
const REAPING: Duration = Duration::from_secs(5);

/// One demo at a time (see the module documentation).
static ONE_DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The sample's client Service, as the README's quick start addresses it.
const SERVICE: &str = "demo.default.svc.cluster.local";

#[test]
fn ctrl_c_after_the_output_pipe_died() {
    let _one = ONE_DEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let stderr = writer.try_clone().expect("duplicating the pipe");
    let mut demo = Demo::start(Stdio::from(writer), Stdio::from(stderr));
    let (closed, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            seen.push_str(&line);
            if line.contains(READY) {
                break;
            }
            line.clear();
        }
        // The pipe has no reader from here on, as when `tee` died.
        drop(reader);
        let _told = closed.send(seen);
    });
    let output = lines
        .recv_timeout(STARTUP)
        .expect("the demo reports the cluster up");
    assert!(
        output.contains(READY),
        "the demo ended before the cluster was up:\n{output}"
    );
    let run = Footprint::of(&demo, &output);
    let started = Instant::now();
    demo.signal_group(Signal::INT);
    let status = demo.wait(TEARDOWN);
    let took = started.elapsed();
    let code = status.and_then(|s| s.code());
    eprintln!("demo: SIGINT with its output pipe closed: exit code {code:?} after {took:.1?}");
    assert_eq!(code, Some(130), "exit 128 + SIGINT");
    run.assert_gone(&output);
}

#[test]
fn sigterm_with_the_output_in_a_file() {
    let _one = ONE_DEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("demo.log");
    let file = File::create(&path).expect("creating the log");
    let stderr = file.try_clone().expect("duplicating the log");
    let mut demo = Demo::start(Stdio::from(file), Stdio::from(stderr));
    let start = Instant::now();
    let output = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(READY) {
            break text;
        }
        assert!(
            start.elapsed() < STARTUP && demo.running(),
            "the demo did not report the cluster up:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let run = Footprint::of(&demo, &output);
    assert!(
        output.contains(&format!("curl http://{SERVICE}:8080/v1/keys/greeting")),
        "the demo shows the Service first:\n{output}"
    );
    through_the_service_name();
    let started = Instant::now();
    demo.signal(Signal::TERM);
    let status = demo.wait(TEARDOWN);
    let took = started.elapsed();
    let code = status.and_then(|s| s.code());
    eprintln!("demo: SIGTERM with its output in a file: exit code {code:?} after {took:.1?}");
    let output = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(code, Some(143), "exit 128 + SIGTERM; output:\n{output}");
    assert!(
        output.contains("control plane: signal 15, stopping all components")
            && output.contains("control plane: stopped"),
        "the teardown reports itself:\n{output}"
    );
    run.assert_gone(&output);
}

/// The demo process, in a process group of its own like a terminal's foreground job;
/// stopped if a test fails before it signals it.
struct Demo {
    child: Child,
    pid: u32,
}

impl Demo {
    fn start(stdout: Stdio, stderr: Stdio) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_demo"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .expect("starting the demo");
        let pid = child.id();
        Self { child, pid }
    }

    fn pid(&self) -> Pid {
        i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .expect("a pid")
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal).expect("signalling the demo");
    }

    fn signal_group(&self, signal: Signal) {
        kill_process_group(self.pid(), signal).expect("signalling the demo's group");
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its exit status, or `None` if it is still running after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.running() {
            // A failed test must not leave a cluster behind: its own teardown first.
            let _signalled = kill_process(self.pid(), Signal::TERM);
            if self.wait(Duration::from_secs(30)).is_none() {
                let _killed = self.child.kill();
                let _reaped = self.child.wait();
            }
        }
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    /// Clock ticks after boot: with the PID, identifies the process across PID reuse.
    start: u64,
    zombie: bool,
    /// The executable's file name (for a chrooted container its file on the host).
    exe: String,
    cmdline: String,
    /// `net:[inode]`.
    netns: String,
}

fn processes() -> Vec<Proc> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("listing /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let dir = entry.path();
        // A process that exits while it is read is skipped.
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some((_, after_comm)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let (Some(state), Some(ppid), Some(start)) =
            (fields.first(), fields.get(1), fields.get(19))
        else {
            continue;
        };
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let netns = std::fs::read_link(dir.join("ns/net"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        all.push(Proc {
            pid,
            ppid: ppid.parse().unwrap_or(0),
            start: start.parse().unwrap_or(0),
            zombie: *state == "Z",
            exe,
            cmdline,
            netns,
        });
    }
    all
}

/// What belongs to one run of the demo, recorded while it is up.
struct Footprint {
    /// The demo and every process descending from it.
    processes: Vec<Proc>,
    /// The pods' network namespaces (`net:[inode]`) and their names.
    netns_inodes: BTreeSet<String>,
    netns_names: BTreeSet<String>,
    /// The bridge and the pods' host-side veths.
    links: BTreeSet<String>,
    /// The control plane's and the kubelet's temp dirs.
    dirs: Vec<PathBuf>,
    /// The demo's pid, which marks its lines in `/etc/hosts`.
    demo_pid: u32,
}

impl Footprint {
    fn of(demo: &Demo, output: &str) -> Self {
        let all = processes();
        let mut family: BTreeSet<u32> = BTreeSet::from([demo.pid]);
        loop {
            let before = family.len();
            for p in &all {
                if family.contains(&p.ppid) {
                    family.insert(p.pid);
                }
            }
            if family.len() == before {
                break;
            }
        }
        let processes: Vec<Proc> = all
            .into_iter()
            .filter(|p| family.contains(&p.pid))
            .collect();
        // The run is what the demo says it is, or the checks below prove nothing.
        let count = |name: &str| processes.iter().filter(|p| p.exe == name).count();
        for (name, at_least) in [
            ("etcd", 1),
            ("kube-apiserver", 1),
            ("kube-controller-manager", 1),
            ("kube-scheduler", 1),
            ("operator", 2),
            ("cache-node", 3),
        ] {
            assert!(
                count(name) >= at_least,
                "expected {at_least} {name} among the demo's processes: {:#?}",
                processes
                    .iter()
                    .map(|p| (p.pid, &p.exe))
                    .collect::<Vec<_>>()
            );
        }
        let host_netns = std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.to_string_lossy().into_owned())
            .expect("the test's network namespace");
        let mut netns_inodes = BTreeSet::new();
        let mut netns_names = BTreeSet::new();
        for p in &processes {
            if p.netns != host_netns && netns_inodes.insert(p.netns.clone()) {
                let name = command("ip", &["netns", "identify", &p.pid.to_string()]);
                netns_names.insert(name.trim().to_owned());
            }
        }
        // At least the operator's and the cache's pods.
        assert!(
            netns_inodes.len() >= 5,
            "the pods' network namespaces: {netns_names:?}"
        );
        let gateway = after(output, "Cluster DNS for the pods is at ", ":53");
        let addresses = command("ip", &["-o", "-4", "addr", "show"]);
        let bridge = addresses
            .lines()
            .find(|l| l.contains(&format!("inet {gateway}/")))
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("the bridge holding the gateway's address")
            .to_owned();
        let mut links = BTreeSet::from([bridge.clone()]);
        for line in command("ip", &["-o", "link", "show", "master", &bridge]).lines() {
            if let Some(name) = line.split_whitespace().nth(1) {
                links.insert(
                    name.trim_end_matches(':')
                        .split('@')
                        .next()
                        .unwrap_or(name)
                        .to_owned(),
                );
            }
        }
        let kubeconfig = PathBuf::from(after(output, "export KUBECONFIG=", "\n"));
        let plane_dir = kubeconfig
            .parent()
            .expect("the control plane's dir")
            .to_owned();
        let kubelet_dir = PathBuf::from(after(output, "Pod output is under ", "/pods/"));
        for dir in [&plane_dir, &kubelet_dir] {
            assert!(dir.is_dir(), "{} exists while the demo runs", dir.display());
        }
        Self {
            processes,
            netns_inodes,
            netns_names,
            links,
            dirs: vec![plane_dir, kubelet_dir],
            demo_pid: demo.pid,
        }
    }

    /// Every process of the run is gone (zombies awaiting init count as gone), and so
    /// are its namespaces, links and directories.
    fn assert_gone(&self, output: &str) {
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let deadline = Instant::now() + REAPING;
        let left = loop {
            let left: Vec<Proc> = processes()
                .into_iter()
                .filter(|p| !p.zombie)
                .filter(|p| {
                    self.processes
                        .iter()
                        .any(|r| r.pid == p.pid && r.start == p.start)
                        || self.netns_inodes.contains(&p.netns)
                        || dirs.iter().any(|d| p.cmdline.contains(d.as_str()))
                })
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            left.is_empty(),
            "processes of the run outlived it: {:#?}\ndemo output:\n{output}",
            left.iter()
                .map(|p| format!("{} (parent {}) {}: {}", p.pid, p.ppid, p.exe, p.cmdline))
                .collect::<Vec<_>>()
        );
        let namespaces = command("ip", &["netns", "list"]);
        let kept: Vec<&String> = self
            .netns_names
            .iter()
            .filter(|n| {
                namespaces
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(n.as_str()))
            })
            .collect();
        assert!(kept.is_empty(), "network namespaces left: {kept:?}");
        let links = command("ip", &["-o", "link", "show"]);
        let kept: Vec<&String> = self
            .links
            .iter()
            .filter(|name| {
                links.lines().any(|l| {
                    l.split_whitespace().nth(1).is_some_and(|n| {
                        n.trim_end_matches(':').split('@').next() == Some(name.as_str())
                    })
                })
            })
            .collect();
        assert!(kept.is_empty(), "links left: {kept:?}");
        for dir in &self.dirs {
            assert!(!dir.exists(), "{} is left", dir.display());
        }
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let marker = format!("# tidecache-demo-{}", self.demo_pid);
        assert!(
            !hosts.lines().any(|l| l.ends_with(&marker)),
            "the Service names are left in /etc/hosts:\n{hosts}"
        );
        let chains = Command::new("iptables")
            .args(["-t", "nat", "-S", "KUBE-SERVICES"])
            .output()
            .expect("running iptables");
        assert!(
            !chains.status.success(),
            "kube-proxy's KUBE-SERVICES chain is left:\n{}",
            String::from_utf8_lossy(&chains.stdout)
        );
    }
}

/// The quick start: PUT and GET by the Service's name from the host, answered through
/// kube-proxy's ClusterIP rules by the pods.
fn through_the_service_name() {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(SERVICE, 8080))
        .expect("the Service's name resolves on the host while the demo runs")
        .next()
        .expect("an address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let timeout = Duration::from_secs(5);
    let put = runtime
        .block_on(tidecache_e2e::http::request(
            addr,
            "PUT",
            "/v1/keys/greeting?ttl=10m",
            b"hello",
            timeout,
        ))
        .expect("PUT through the Service");
    assert!((200..300).contains(&put.status), "PUT: {put:?}");
    let got = runtime
        .block_on(tidecache_e2e::http::request(
            addr,
            "GET",
            "/v1/keys/greeting",
            b"",
            timeout,
        ))
        .expect("GET through the Service");
    assert_eq!((got.status, got.text().as_str()), (200, "hello"));
}

/// The text between `start` and the next `end` in `output`.
fn after<'a>(output: &'a str, start: &str, end: &str) -> &'a str {
    let rest = output
        .split_once(start)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("the demo prints {start:?}:\n{output}"));
    rest.split_once(end).map_or(rest, |(text, _)| text)
}

fn command(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
