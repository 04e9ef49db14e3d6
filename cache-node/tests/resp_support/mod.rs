//! What the RESP tests share: a `cache-node` process serving RESP on a free port, a
//! `redis-server` started the same way, a blocking RESP client that parses replies, the
//! check that a tool a test needs is installed (a test fails with a clear message when it
//! is not; it never skips), and what the real-client tests need to install and run a
//! client's scenario script.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fails the test unless `tool` runs (`tool --version`, or `tool version` as Go spells it),
/// saying how to install it.
pub fn require(tool: &str, install: &str) {
    let found = ["--version", "version"].iter().any(|arg| {
        Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    assert!(
        found,
        "this test needs `{tool}`, which is not installed: {install} (see .ci/run)"
    );
}

/// Runs `command`, failing the test with its output unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `dir` under the target directory, where `install` put what `inputs` (the text of the
/// lockfiles it installs from) names: `install` runs only when the stamp `installed.txt`
/// left by the last successful install holds other inputs, so a client's packages are
/// fetched once per lockfile content rather than at every test run.
pub fn installed(dir: &str, inputs: &str, install: impl FnOnce(&Path)) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let stamp = dir.join("installed.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(inputs) {
        std::fs::create_dir_all(&dir).expect("install directory");
        install(&dir);
        std::fs::write(&stamp, inputs).expect("stamp");
    }
    dir
}

/// A virtual environment with `tests/resp/requirements.txt` installed, made once per
/// content of that file; its Python.
pub fn python_with_redis_py() -> PathBuf {
    require("python3", "apt-get install -y python3 python3-venv");
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements");
    let venv = installed("resp-venv", &wanted, |venv| {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv));
        run(Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements));
    });
    venv.join("bin/python")
}

/// Runs a client's scenario script (`command`, given `node`'s port and `token` as its two
/// arguments) and fails the test with its output and cache-node's log unless it prints
/// `scenario passed` and succeeds.
pub fn run_scenario(client: &str, command: &mut Command, node: &Server, token: &str) {
    let output = command
        .arg(node.port.to_string())
        .arg(token)
        .output()
        .unwrap_or_else(|error| panic!("the {client} scenario does not start: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("scenario passed"),
        "the {client} scenario failed ({}):\n{stdout}\n{}\ncache-node's log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        node.log()
    );
}

/// A free loopback port (closed again before the server binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A server process, killed when dropped.
pub struct Server {
    /// The RESP port.
    pub port: u16,
    /// The HTTP port (cache-node only).
    pub http_port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A memory-only cache-node with `extra` flags, ready for commands.
    pub fn cache_node(extra: &[&str]) -> Server {
        Server::cache_node_on(free_port(), free_port(), extra)
    }

    /// A cache-node serving RESP on `port` and HTTP on `http_port`, with `extra` flags.
    pub fn cache_node_on(port: u16, http_port: u16, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("cache-node.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cache-node"))
            .arg(format!("--listen=127.0.0.1:{http_port}"))
            .arg(format!("--resp-listen=127.0.0.1:{port}"))
            .arg("--drain-timeout=1s")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("cache-node starts");
        Server::ready(port, http_port, child, log, dir)
    }

    /// A `redis-server` without persistence, with one database as cache-node has.
    pub fn redis_server() -> Server {
        require("redis-server", "apt-get install -y redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("redis.log");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--databases", "1"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        Server::ready(port, 0, child, log, dir)
    }

    fn ready(
        port: u16,
        http_port: u16,
        mut child: Child,
        log: PathBuf,
        dir: tempfile::TempDir,
    ) -> Server {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "the server exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not listen on {port} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            port,
            http_port,
            child,
            log,
            _dir: dir,
        }
    }

    /// Waits until key commands are served (the volume is loaded and the catch-up from the
    /// peers is done: until then they answer `-LOADING`).
    pub fn wait_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = self.connect();
        while let Value::Error(error) = conn.cmd(&["EXISTS", "probe"]) {
            assert!(error.starts_with("LOADING"), "{error}");
            assert!(
                Instant::now() < deadline,
                "still loading after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new connection.
    pub fn connect(&self) -> Conn {
        Conn::new(self.port)
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits up to `within` for the process to exit;
    /// its exit status, or `None` if it is still running.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply, as RESP2 and RESP3 type it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Double(String),
    Verbatim(String),
}

/// A blocking RESP connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connects to `port` on loopback.
    pub fn new(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        self.read()
    }

    /// [`Conn::call`] with text arguments.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// Sends one command without reading.
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend(format!("${}\r\n", arg.len()).into_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("write");
    }

    /// Whether the server closed the connection (a read sees the end of the stream).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0_u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }

    /// Reads one reply if one starts within `limit` (the 10 s of [`Conn::new`] apply to the
    /// rest of it, and to later reads): a subscriber waits for a sweep at the next minute
    /// boundary longer than a command waits for its reply.
    pub fn read_within(&mut self, limit: Duration) -> Option<Value> {
        self.writer
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .expect("timeout");
        let started = self.reader.fill_buf().map(|buffered| !buffered.is_empty());
        self.writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        match started {
            Ok(true) => Some(self.read()),
            Ok(false) => panic!("the server closed the connection"),
            Err(error) if is_timeout(&error) => None,
            Err(error) => panic!("reading a reply: {error}"),
        }
    }

    /// Reads one reply, or `None` once the server closed the connection: a subscriber
    /// drains what was sent to it before the server disconnected it.
    pub fn read_or_closed(&mut self) -> Option<Value> {
        match self.reader.fill_buf() {
            Ok([]) => None,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => None,
            Ok(_) => Some(self.read()),
            Err(error) if is_timeout(&error) => {
                panic!("the server neither sent a reply nor closed the connection in 10 s")
            }
            Err(error) => panic!("reading a reply: {error}"),
        }
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Value {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let number = || rest.parse::<i64>().expect("a length");
        match kind {
            "+" => Value::Simple(rest.to_string()),
            "-" => Value::Error(rest.to_string()),
            ":" => Value::Integer(number()),
            "_" => Value::Null,
            "," => Value::Double(rest.to_string()),
            "$" | "=" if number() < 0 => Value::Null,
            "$" => Value::Bulk(self.bytes(number() as usize)),
            "=" => Value::Verbatim(
                String::from_utf8_lossy(&self.bytes(number() as usize)[4..]).into_owned(),
            ),
            "*" if number() < 0 => Value::Null,
            "*" => Value::Array((0..number()).map(|_| self.read()).collect()),
            "~" => Value::Set((0..number()).map(|_| self.read()).collect()),
            "%" => Value::Map((0..number()).map(|_| (self.read(), self.read())).collect()),
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply line");
        assert!(line.ends_with("\r\n"), "a truncated reply: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len + 2];
        self.reader.read_exact(&mut bytes).expect("a bulk string");
        bytes.truncate(len);
        bytes
    }
}

/// Whether a read failed because its timeout passed (`WouldBlock` on Unix, `TimedOut` on
/// Windows).
fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
