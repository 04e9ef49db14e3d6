//! A real Prometheus server, built from its Go module by `tests/prometheus/build.sh`, for the
//! monitoring test (`tests/tests/prometheus.rs`): it scrapes real tidecache processes and
//! evaluates `deploy/monitoring/`'s rules, so that a rule Prometheus refuses, an expression
//! that errors, a label the alerts group by but the scrape never sets, or a template that does
//! not expand fails a test instead of an on-call's night.
//!
//! The server and the processes it scrapes ([`Exporter`]) run under the harness's process
//! registry (`control_plane::process`), like the control plane's components: a Ctrl-C stops
//! them and removes their directory instead of leaving them holding ports.
//!
//! The configuration and the rule file are written as JSON, which is YAML too: the harness
//! builds them with `serde_json`, the one structured-data crate it depends on.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::control_plane::process::{self, Process};
use crate::control_plane::{Error, Result};

/// Environment variable naming a `prometheus` binary to use instead of building one.
pub const PROMETHEUS_BIN_ENV: &str = "TIDECACHE_PROMETHEUS_BIN";

/// How long Prometheus may take to replay its (empty) TSDB, load the rules and answer
/// `/-/ready`; a loaded machine needs a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `prometheus` binary: `TIDECACHE_PROMETHEUS_BIN` if set, else what `build.sh` builds
/// (a no-op once cached). The build runs at most once per test process; `build.sh` makes
/// concurrent builds of several processes wait for one with a lock.
///
/// This blocks for the duration of a cold build (minutes): call it from `spawn_blocking` in
/// async code.
pub fn binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os(PROMETHEUS_BIN_ENV) {
        return Ok(path.into());
    }
    let script = build_script();
    BUILT
        .get_or_init(|| run_build(&script))
        .clone()
        .map_err(|reason| Error::Build { script, reason })
}

/// `tests/prometheus/build.sh`, found relative to this crate so that it works from any clone.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/build.sh")
}

fn run_build(script: &Path) -> Result<PathBuf, String> {
    let hint = format!(
        "it needs Go (https://go.dev/dl/, the version in {}) and the Go module proxy; or set \
         {PROMETHEUS_BIN_ENV} to a prometheus binary",
        script.with_file_name("go.mod").display()
    );
    let output = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        // Progress (packages compiled, elapsed time) goes straight to the terminal.
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run it: {e}; {hint}"))?;
    if !output.status.success() {
        return Err(format!(
            "exited with {} (its messages are above); {hint}",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| "printed no path".to_string())
}

/// What a [`Prometheus`] scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct Options {
    /// The global `scrape_interval` and `evaluation_interval` (and the scrape timeout). A
    /// test wants 1 s, so that a series has its first samples, a `rate()` its two points and
    /// a rule its first evaluation within seconds.
    pub interval: Duration,
    /// `scrape_configs` entries, as Prometheus' configuration file spells them.
    pub scrape_configs: Vec<Value>,
    /// Rule groups (`name`, `rules`, ...) as a Prometheus rule file spells them, which is
    /// also the PrometheusRule's `spec.groups`.
    pub rule_groups: Vec<Value>,
}

/// A running Prometheus server on loopback, stopped (and its directory removed) on drop.
#[derive(Debug)]
pub struct Prometheus {
    process: Process,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Writes the configuration and the rule file, starts Prometheus on a free loopback port
    /// and waits until it answers `/-/ready`. A rule file or configuration it cannot load makes
    /// it exit at startup: that is an [`Error::Exited`] with the end of its log, which names
    /// the rule.
    pub async fn start(options: &Options) -> Result<Self> {
        let binary = tokio::task::spawn_blocking(binary)
            .await
            .map_err(|e| Error::io("building prometheus", std::io::Error::other(e)))??;
        let dir = tempfile::Builder::new()
            .prefix("tidecache-prometheus-")
            .tempdir()
            .map_err(|e| Error::io("creating Prometheus' directory", e))?;
        process::register_dir(dir.path());
        let rules = dir.path().join("rules.yml");
        write_json(&rules, &json!({ "groups": options.rule_groups }))?;
        let interval = format!("{}ms", options.interval.as_millis());
        let config = json!({
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [rules],
            "scrape_configs": options.scrape_configs,
        });
        let config_file = dir.path().join("prometheus.yml");
        write_json(&config_file, &config)?;
        let address = free_address()?;
        let args = vec![
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={address}"),
            // The rules' `for:` and the test's waits are seconds: alerts should be seen as
            // soon as Prometheus knows them, not after its default 10 s notification delay.
            "--rules.alert.resend-delay=1s".to_string(),
        ];
        let process = Process::spawn(
            "prometheus",
            &binary,
            &args,
            dir.path().join("prometheus.log"),
        )?;
        let mut prometheus = Self {
            process,
            address,
            dir,
        };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            self.process.check_running()?;
            match crate::http::request(self.address, "GET", "/-/ready", b"", REQUEST_TIMEOUT).await
            {
                Ok(reply) if reply.status == 200 => return Ok(()),
                Ok(reply) => last = format!("{}: {}", reply.status, reply.text().trim()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("Prometheus on {} to be ready", self.address),
                    waited: READY_TIMEOUT,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `host:port` of its HTTP API.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Fails if Prometheus has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Its log so far (logfmt on stderr): rule evaluation and template errors are there too.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// The rule file it was started with.
    pub fn rule_file(&self) -> PathBuf {
        self.dir.path().join("rules.yml")
    }

    /// `GET /api/v1/<path>` with `params` (URL-encoded here); the `data` of a `success`
    /// answer, an error naming Prometheus' `errorType` and `error` otherwise.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let mut target = format!("/api/v1/{path}");
        for (i, (name, value)) in params.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&percent_encode(name));
            target.push('=');
            target.push_str(&percent_encode(value));
        }
        let context = || format!("GET http://{}{target}", self.address);
        let reply = crate::http::request(self.address, "GET", &target, b"", REQUEST_TIMEOUT)
            .await
            .map_err(|e| Error::io(context(), e))?;
        let body: Value = serde_json::from_slice(&reply.body).map_err(|e| {
            Error::io(
                context(),
                std::io::Error::other(format!(
                    "{}: not JSON ({e}): {}",
                    reply.status,
                    reply.text()
                )),
            )
        })?;
        if body["status"] != "success" {
            return Err(Error::io(
                context(),
                std::io::Error::other(format!(
                    "{}: {} {}",
                    reply.status, body["errorType"], body["error"]
                )),
            ));
        }
        Ok(body["data"].clone())
    }

    /// An instant query now: `data` (`resultType` and `result`).
    pub async fn query(&self, expr: &str) -> Result<Value> {
        self.api("query", &[("query", expr)]).await
    }

    /// The series of an instant query that returns a vector.
    pub async fn vector(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.query(expr).await?;
        if data["resultType"] != "vector" {
            return Err(Error::io(
                format!("query {expr}"),
                std::io::Error::other(format!("a {}, not a vector", data["resultType"])),
            ));
        }
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Prometheus' own parse of `expr` (`/api/v1/parse_query`): its abstract syntax tree, in
    /// which every `vectorSelector` and `matrixSelector` names what the expression selects.
    pub async fn parse(&self, expr: &str) -> Result<Value> {
        self.api("parse_query", &[("query", expr)]).await
    }

    /// The loaded rule groups (`/api/v1/rules`), each with its rules' `health` and
    /// `lastError`.
    pub async fn rule_groups(&self) -> Result<Vec<Value>> {
        let data = self.api("rules", &[]).await?;
        Ok(data["groups"].as_array().cloned().unwrap_or_default())
    }

    /// The pending and firing alerts (`/api/v1/alerts`), with their labels and expanded
    /// annotations.
    pub async fn alerts(&self) -> Result<Vec<Value>> {
        let data = self.api("alerts", &[]).await?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// The active targets (`/api/v1/targets`), with their labels after relabeling and
    /// `health`.
    pub async fn targets(&self) -> Result<Vec<Value>> {
        let data = self.api("targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.stop();
        // The TempDir removes the directory right after this.
        process::forget_dir(self.dir.path());
    }
}

/// A process Prometheus scrapes (a cache node, the operator), started in a process group of
/// its own under the harness's registry, so that a Ctrl-C stops it with Prometheus; stopped
/// on drop.
#[derive(Debug)]
pub struct Exporter {
    process: Process,
}

impl Exporter {
    /// Starts `program` with `args`, its stdout and stderr in `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        Ok(Self {
            process: Process::spawn(name, program, args, log)?,
        })
    }

    /// Fails if it has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// SIGTERM, SIGKILL after a grace period, then reaped: from now on its scrapes fail.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// Its name, as given to [`Exporter::spawn`].
    pub fn name(&self) -> &'static str {
        self.process.name()
    }
}

/// A loopback address nothing listens on now. The socket is closed before the server binds
/// it, so another process could take it in between; the kernel hands out ephemeral ports in
/// turn, which makes that unlikely.
pub fn free_address() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| Error::io("picking a free loopback port", e))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::io(format!("encoding {}", path.display()), e.into()))?;
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// `text` with everything but RFC 3986's unreserved characters percent-encoded, for a query
/// string (PromQL is full of `{`, `"`, `=`, `+` and spaces).
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"up{job="a b"} + 1"#),
            "up%7Bjob%3D%22a%20b%22%7D%20%2B%201"
        );
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
    }
}
