//! A real PostgreSQL server for the backend tests: Debian's `postgresql` package
//! (`initdb`, `postgres`, `psql`), a data directory of its own in a temporary directory, on
//! loopback at a free port, with `pg_stat_statements` loaded so that tests can count the
//! queries the cache made. Killed (and its directory removed) on drop.
//!
//! As root (the CI machine), the server runs as the `postgres` user the package creates:
//! PostgreSQL refuses to run as root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long the server may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server started for a test.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The user the server runs as, when the test runs as root.
    user: Option<(u32, u32)>,
    child: Option<Child>,
    /// Addresses listened on besides 127.0.0.1.
    listen: Vec<std::net::Ipv4Addr>,
    /// Whether TLS is on (`server.crt` and `server.key` in the data directory).
    tls: bool,
}

impl Postgres {
    /// Creates a database cluster and starts the server; returns once it accepts
    /// connections.
    ///
    /// # Panics
    /// Without PostgreSQL installed (naming the package), or if it does not start.
    pub fn start() -> Postgres {
        Postgres::start_on(&[])
    }

    /// As [`Postgres::start`], listening also on `addresses` (with trust authentication from
    /// anywhere: a test's own server), e.g. a pod network's gateway for pods to reach it.
    ///
    /// # Panics
    /// As [`Postgres::start`].
    pub fn start_on(addresses: &[std::net::Ipv4Addr]) -> Postgres {
        Postgres::start_with(addresses, None)
    }

    /// As [`Postgres::start`], with TLS on: `cert` and `key` (PEM) are the server's
    /// certificate and key. Clients may still connect without TLS.
    ///
    /// # Panics
    /// As [`Postgres::start`].
    pub fn start_tls(cert: &str, key: &str) -> Postgres {
        Postgres::start_with(&[], Some((cert, key)))
    }

    fn start_with(addresses: &[std::net::Ipv4Addr], tls: Option<(&str, &str)>) -> Postgres {
        let bin = binaries();
        let dir = tempfile::tempdir().expect("a directory for PostgreSQL");
        let user = if rustix::process::geteuid().is_root() {
            Some(postgres_user())
        } else {
            None
        };
        if let Some((uid, gid)) = user {
            chown(dir.path(), uid, gid);
        }
        let data = dir.path().join("data");
        let output = command(&bin, "initdb", user)
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if !addresses.is_empty() {
            let hba = data.join("pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            rules.push_str("host all all 0.0.0.0/0 trust\n");
            std::fs::write(&hba, rules).expect("pg_hba.conf written");
        }
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, pem).expect("TLS file written");
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("TLS file mode");
                if let Some((uid, gid)) = user {
                    chown(&path, uid, gid);
                }
            }
        }
        let mut postgres = Postgres {
            bin,
            port: crate::unused_port(),
            dir,
            user,
            child: None,
            listen: addresses.to_vec(),
            tls: tls.is_some(),
        };
        postgres.spawn();
        postgres.psql("CREATE EXTENSION pg_stat_statements");
        postgres
    }

    /// The libpq URL of the `postgres` database as the `postgres` user.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The libpq URL as a client reaching it at `host` (one of [`Postgres::start_on`]'s
    /// addresses) uses.
    pub fn url_at(&self, host: std::net::Ipv4Addr) -> String {
        format!("postgresql://postgres@{host}:{}/postgres", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` with `psql` and returns its unaligned output.
    ///
    /// # Panics
    /// If `psql` fails (with its error).
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|error| panic!("psql {sql:?} failed: {error}"))
    }

    /// Runs `sql` with `psql`; its output, or its error.
    ///
    /// # Errors
    /// What `psql` printed on failure.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// How many times statements starting with `prefix` ran (from `pg_stat_statements`,
    /// flushed first).
    pub fn calls(&self, prefix: &str) -> u64 {
        let sql = format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '{}%'",
            prefix.replace('\'', "''")
        );
        self.psql(&sql).parse().expect("a count")
    }

    /// SIGKILL to the server and every process of it (a crash of its machine: a backend
    /// left alive would answer on its connection until it noticed), waiting until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let backends = children_of(child.id());
            let _ = child.kill();
            for backend in backends {
                if let Some(pid) = Pid::from_raw(backend) {
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
            let _ = child.wait();
            // Backends notice the postmaster's death and exit; wait until the port is free.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_file(self.dir.path().join("data/postmaster.pid"));
        }
    }

    /// A fast shutdown (SIGINT: open sessions are ended, the server exits cleanly).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_process(Pid::from_child(&child), Signal::INT);
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same directory and port (after [`Postgres::kill`] or
    /// [`Postgres::stop`]); returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        if let Some((uid, gid)) = self.user {
            chown(&self.dir.path().join("postgres.log"), uid, gid);
        }
        let child = command(&self.bin, "postgres", self.user)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-c"])
            .arg(format!(
                "listen_addresses={}",
                std::iter::once("127.0.0.1".to_string())
                    .chain(self.listen.iter().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .args(["-c", "max_connections=300", "-c", "fsync=on"])
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[] })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.try_psql("SELECT 1").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory of `initdb`, `postgres` and `psql`: the newest of Debian's
/// `/usr/lib/postgresql/<version>/bin`.
fn binaries() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: the backend tests run a real server from Debian's \
             postgresql package (apt-get install postgresql; .ci/run installs it)"
        )
    })
}

/// The processes whose parent is `parent` (from `/proc`).
fn children_of(parent: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid …; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// `program` of `bin`, run as `user` when given.
fn command(bin: &Path, program: &str, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bin.join(program));
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    command
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .expect("the postgres user (created by Debian's postgresql package)")
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for the postgres user");
}
