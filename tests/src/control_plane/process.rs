//! Supervised child processes. Each component runs in its own process group, so that
//! stopping it also stops anything it forked, and so that a Ctrl-C in the terminal
//! reaches only the test process, which then tears the components down in order
//! instead of leaving orphans holding ports and temp dirs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use super::error::{Error, Result};
use crate::console;

/// How long a component gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// A running component whose output goes to a log file.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `program` in a new process group with stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        install_signal_handler();
        let file = File::create(&log)
            .map_err(|e| Error::io(format!("creating log {}", log.display()), e))?;
        let stderr = file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating log {}", log.display()), e))?;
        let child = spawn_group(
            || {
                Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(file)
                    .stderr(stderr)
                    .process_group(0)
                    .spawn()
            },
            Child::id,
        )
        .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        Ok(Self {
            name,
            child: Some(child),
            log,
        })
    }

    /// The component's name, as used in messages.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Its log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Fails if the component has exited, with the end of its log: a component dying
    /// during startup must surface as its own error, not as a later timeout.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                registry().groups.remove(&child.id());
                self.child = None;
                Err(Error::Exited {
                    component: self.name,
                    status,
                    log_tail: log_tail(&self.log, 40),
                })
            }
            Err(e) => Err(Error::io(format!("checking on {}", self.name), e)),
        }
    }

    /// SIGTERM to the process group, SIGKILL after the grace period, then reap.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let id = child.id();
        signal_group(id, Signal::TERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Also catches grandchildren that outlived the leader.
        signal_group(id, Signal::KILL);
        // Reaping cannot fail in a way we could act on while tearing down.
        let _reaped = child.wait();
        registry().groups.remove(&id);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (at most the last 64 KiB of it).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Sends `signal` to process group `id`, ignoring a group that is already gone.
pub(crate) fn signal_group(id: u32, signal: Signal) {
    let pid = i32::try_from(id).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (already gone) is the expected outcome for the SIGKILL after a clean exit.
        let _gone = kill_process_group(pid, signal);
    }
}

/// What must be cleaned up if the test process is interrupted.
#[derive(Clone)]
struct Registry {
    /// Set when the signal handler takes its copy: from then on no group starts.
    closed: bool,
    groups: BTreeSet<u32>,
    dirs: BTreeSet<PathBuf>,
    /// Commands by key, run in key order (so a key prefix can order them).
    cleanups: BTreeMap<String, Vec<String>>,
}

impl Registry {
    const fn new() -> Self {
        Self {
            closed: false,
            groups: BTreeSet::new(),
            dirs: BTreeSet::new(),
            cleanups: BTreeMap::new(),
        }
    }

    /// Runs `spawn` and registers the group of the child it started, unless the
    /// registry is closed (see [`spawn_group`]).
    fn spawn_group<T>(
        &mut self,
        spawn: impl FnOnce() -> std::io::Result<T>,
        id: impl FnOnce(&T) -> u32,
    ) -> std::io::Result<T> {
        if self.closed {
            return Err(std::io::Error::other(
                "not started: the process is being torn down by a signal",
            ));
        }
        let child = spawn()?;
        self.groups.insert(id(&child));
        Ok(child)
    }

    /// Closes the registry and returns what it held, for the teardown.
    fn close(&mut self) -> Self {
        self.closed = true;
        self.clone()
    }
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());
    // A panic while holding the lock leaves consistent sets behind, so poisoning is moot.
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers a directory to delete if the process is interrupted (the owner deletes it
/// itself on a normal drop and then calls [`forget_dir`]).
pub(crate) fn register_dir(dir: &Path) {
    install_signal_handler();
    registry().dirs.insert(dir.to_owned());
}

/// Starts a process group (`spawn` must put the child in a new one) and registers it to
/// be stopped if the test process is interrupted; its owner stops it itself otherwise
/// and then calls [`forget_group`]. Refused once a terminating signal arrived: the
/// kubelet restarts a container that exited on the handler's SIGTERM within a second,
/// and a group started after the handler took its list would outlive the process (the
/// operator's replicas did, reparented to init). The registry's lock is held across the
/// spawn, so a group is either in the handler's list or never started.
pub(crate) fn spawn_group<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    id: impl FnOnce(&T) -> u32,
) -> std::io::Result<T> {
    install_signal_handler();
    registry().spawn_group(spawn, id)
}

/// Undoes the registration of [`spawn_group`].
pub(crate) fn forget_group(id: u32) {
    registry().groups.remove(&id);
}

/// Registers a command that undoes host state outside any directory (a network
/// namespace, a bridge) to run if the test process is interrupted, under `key`; the
/// owner undoes it itself otherwise and then calls [`forget_cleanup`].
pub(crate) fn register_cleanup(key: &str, program: &str, args: &[&str]) {
    install_signal_handler();
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    registry().cleanups.insert(key.to_owned(), command);
}

/// Undoes [`register_cleanup`].
pub(crate) fn forget_cleanup(key: &str) {
    registry().cleanups.remove(key);
}

/// Undoes [`register_dir`].
pub(crate) fn forget_dir(dir: &Path) {
    registry().dirs.remove(dir);
}

/// Set once a terminating signal arrived: the failures that the teardown causes in the
/// running test are then expected, and their log tails are noise.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the test process is being torn down by a signal.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// If a terminating signal is tearing the process down, waits for the signal handler,
/// which exits the process when it is done; returns at once otherwise. For a `main`
/// about to return (the failures the teardown causes surface there as errors): the
/// process would otherwise end while the handler is still stopping the components.
pub fn wait_for_teardown() {
    if interrupted() {
        loop {
            std::thread::park();
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: stop every registered process group, run the
/// registered cleanups, delete the registered directories and exit, since Drop never
/// runs when a signal kills the test process. Its messages go through
/// [`console::say`]: stderr may be a pipe whose reader died with the same Ctrl-C.
fn install_signal_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => signals,
            Err(e) => {
                console::say(format!("control plane: cannot install the signal handler ({e}); an interrupted test may leave processes behind"));
                return;
            }
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tear_down(signal);
            }
        });
    });
}

fn tear_down(signal: i32) -> ! {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let Registry {
        groups,
        dirs,
        cleanups,
        ..
    } = registry().close();
    console::say(format!(
        "control plane: signal {signal}, stopping all components"
    ));
    for &id in &groups {
        signal_group(id, Signal::TERM);
    }
    // Until every group is gone (or only zombies are left, which the exit reaps), at
    // most a few seconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !registry().groups.is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A container's group holds its `unshare`, whose death kills the container's PID
    // namespace: whatever it forked, even into a session of its own, dies with it.
    for &id in &groups {
        signal_group(id, Signal::KILL);
    }
    for command in cleanups.values() {
        if let Some((program, args)) = command.split_first() {
            // Best effort: the process is exiting either way.
            let _ran = Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    for dir in &dirs {
        // Best effort: the process is exiting either way.
        let _removed = std::fs::remove_dir_all(dir);
    }
    console::say(format!(
        "control plane: stopped {} process groups, removed {} network objects and {} directories",
        groups.len(),
        cleanups.len(),
        dirs.len()
    ));
    console::flush(Duration::from_secs(1));
    std::process::exit(128 + signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        assert_eq!(log_tail(&path, 2), "line 99\nline 100");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("(cannot read"));
    }

    #[test]
    fn nothing_starts_once_the_teardown_took_its_list() {
        let mut registry = Registry::new();
        let first = registry.spawn_group(|| Ok(7), |&id| id).expect("started");
        let taken = registry.close();
        assert_eq!(taken.groups, BTreeSet::from([first]));
        let mut attempted = false;
        let refused = registry.spawn_group(
            || {
                attempted = true;
                Ok(8)
            },
            |&id| id,
        );
        assert!(
            refused.is_err() && !attempted,
            "a restart during the teardown is refused"
        );
        assert_eq!(registry.groups, BTreeSet::from([first]));
    }

    #[test]
    fn stop_ends_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A shell whose child would outlive it if only the leader were signalled.
        let mut p = Process::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), "sleep 600 & echo started; wait".into()],
            dir.path().join("sh.log"),
        )
        .expect("spawn");
        let group = p.child.as_ref().map(Child::id).expect("running");
        p.check_running().expect("still running");
        p.stop();
        let pid = i32::try_from(group)
            .ok()
            .and_then(Pid::from_raw)
            .expect("pid");
        // The orphaned `sleep` is killed at once but reaped by init a moment later; until
        // then its zombie still counts as a member of the group.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rustix::process::test_kill_process_group(pid).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            rustix::process::test_kill_process_group(pid).is_err(),
            "no process of the group is left"
        );
    }
}
