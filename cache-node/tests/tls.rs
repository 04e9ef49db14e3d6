//! TLS for clients on a real cache-node process: HTTPS with a rustls + hyper client, RESP
//! over TLS with redis-rs and `redis-cli --tls`, client certificates, and the reload of a
//! certificate Secret (files swapped the way the kubelet swaps a Secret volume's `..data`
//! link) with no restart and no dropped connection.
//!
//! Certificates come from a throwaway CA made with rcgen for each test.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_node_testkit::{Client, Cluster, cache_node};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How often the node under test reads its TLS files again.
const RELOAD: &str = "--tls-reload-interval=1s";

/// A certificate authority of the test.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM, and the certificate's DER (what a handshake shows).
struct Issued {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Authority {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for localhost and 127.0.0.1 with serial `serial`.
    fn server(&self, serial: u64) -> Issued {
        self.issue(serial, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    fn client(&self, serial: u64) -> Issued {
        self.issue(serial, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, serial: u64, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("parameters");
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("tidecache test {serial}"));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A directory laid out as the kubelet lays out a Secret volume: `tls.crt`, `tls.key` and
/// `ca.crt` link through `..data` into a directory of the current generation; an update
/// writes a new generation and renames a new `..data` link over the old one.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: usize,
}

impl SecretVolume {
    fn new(cert: &str, key: &str, ca: &str) -> SecretVolume {
        let dir = tempfile::tempdir().expect("volume directory");
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            symlink(format!("..data/{name}"), dir.path().join(name)).expect("link");
        }
        let mut volume = SecretVolume { dir, generation: 0 };
        volume.update(cert, key, ca);
        volume
    }

    fn update(&mut self, cert: &str, key: &str, ca: &str) {
        self.generation += 1;
        let generation = format!("..2026_12_02_{:02}", self.generation);
        let path = self.dir.path().join(&generation);
        std::fs::create_dir(&path).expect("generation directory");
        for (name, text) in [("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)] {
            std::fs::write(path.join(name), text).expect("write");
        }
        let staged = self.dir.path().join("..data_tmp");
        symlink(&generation, &staged).expect("staged link");
        std::fs::rename(&staged, self.dir.path().join("..data")).expect("swap ..data");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The flags pointing cache-node at the volume.
    fn flags(&self, client_ca: bool) -> Vec<String> {
        let mut flags = vec![
            format!("--tls-cert-file={}", self.path("tls.crt").display()),
            format!("--tls-key-file={}", self.path("tls.key").display()),
        ];
        if client_ca {
            flags.push(format!(
                "--tls-client-ca-file={}",
                self.path("ca.crt").display()
            ));
        }
        flags
    }
}

/// A node serving plain HTTP and RESP (the testkit's) and HTTPS and RESP over TLS on ports
/// of its own.
struct Node {
    cluster: Cluster,
    https: u16,
    rediss: u16,
}

impl Node {
    fn start(volume: &SecretVolume, client_ca: bool) -> Node {
        let https = free_port();
        let rediss = free_port();
        let builder = Cluster::builder(1)
            .independent()
            .resp()
            .flag(&format!("--tls-listen=127.0.0.1:{https}"))
            .flag(&format!("--resp-tls-listen=127.0.0.1:{rediss}"))
            .flag(RELOAD);
        let builder = volume
            .flags(client_ca)
            .iter()
            .fold(builder, |builder, flag| builder.flag(flag));
        Node {
            cluster: builder.start(),
            https,
            rediss,
        }
    }

    fn address(&self) -> &str {
        self.cluster.address(0)
    }

    /// A sample of `/metrics` (plain HTTP), 0 while the family has no such sample yet.
    async fn metric(&self, sample: &str) -> f64 {
        let reply = Client::default()
            .send(Method::GET, self.address(), "/metrics", &[], "")
            .await
            .expect("scrape");
        reply
            .text()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A port for a listener the node binds later, where the ports the cluster picks for its
/// nodes meanwhile cannot land (see [`cache_node_testkit::unused_port`]).
fn free_port() -> u16 {
    cache_node_testkit::unused_port()
}

/// A rustls client trusting `ca`, presenting `identity` if given.
fn client_config(ca: &str, identity: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("trust anchor");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(
                vec![identity.der.clone()],
                PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).expect("client key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// One keep-alive HTTPS connection and the certificate the node showed on it.
struct Https {
    sender: http1::SendRequest<Full<Bytes>>,
    served: CertificateDer<'static>,
}

impl Https {
    async fn connect(port: u16, config: Arc<ClientConfig>) -> Result<Https, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the node shows a certificate")
            .clone()
            .into_owned();
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Https { sender, served })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<(StatusCode, String), String> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let exchange = async {
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "no answer within 10s".to_string())?
    }
}

/// A redis-rs connection over TLS trusting `ca`, presenting `identity` if given.
fn rediss(port: u16, ca: &str, identity: Option<&Issued>) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::build_with_tls(
        format!("rediss://localhost:{port}/"),
        redis::TlsCertificates {
            client_tls: identity.map(|identity| redis::ClientTlsConfig {
                client_cert: identity.cert.clone().into_bytes(),
                client_key: identity.key.clone().into_bytes(),
            }),
            root_cert: Some(ca.as_bytes().to_vec()),
        },
    )?;
    client.get_connection_with_timeout(Duration::from_secs(10))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_resp_over_tls_serve_the_same_cache_as_the_plain_listeners() {
    let ca = Authority::new("tidecache test CA");
    let server = ca.server(1);
    let volume = SecretVolume::new(&server.cert, &server.key, &ca.pem());
    let node = Node::start(&volume, false);

    let mut https = Https::connect(node.https, client_config(&ca.pem(), None))
        .await
        .expect("HTTPS connection");
    assert_eq!(
        https.served, server.der,
        "the node shows the Secret's certificate"
    );
    let (status, _) = https
        .send(Method::PUT, "/v1/keys/over-https?ttl=600", "secret value")
        .await
        .expect("PUT over HTTPS");
    assert_eq!(status, StatusCode::CREATED);
    let plain = Client::default();
    assert_eq!(
        plain.get(node.address(), "over-https").await.expect("GET"),
        Some("secret value".to_string())
    );
    let (status, body) = https.send(Method::GET, "/readyz", "").await.expect("probe");
    assert_eq!(
        (status, body.contains("ready")),
        (StatusCode::OK, true),
        "{body}"
    );

    // redis-rs over TLS, on the same keys.
    let mut connection = rediss(node.rediss, &ca.pem(), None).expect("redis-rs over TLS");
    let value: String = redis::cmd("GET")
        .arg("over-https")
        .query(&mut connection)
        .expect("GET over TLS");
    assert_eq!(value, "secret value");
    let () = redis::cmd("SET")
        .arg("over-rediss")
        .arg("from redis-rs")
        .query(&mut connection)
        .expect("SET over TLS");
    assert_eq!(
        plain.get(node.address(), "over-rediss").await.expect("GET"),
        Some("from redis-rs".to_string())
    );

    // redis-cli, built with OpenSSL, verifying the chain against the CA file.
    let ca_file = write(volume.dir.path(), "trusted-ca.pem", &ca.pem());
    let output = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca_file)
        .args(["-h", "localhost", "-p", &node.rediss.to_string()])
        .args(["GET", "over-rediss"])
        .output()
        .expect("redis-cli runs (redis-tools)");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "from redis-rs",
        "redis-cli: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A client that trusts another CA refuses the node: the certificate is really checked.
    let stranger = Authority::new("another CA");
    let refused = Https::connect(node.https, client_config(&stranger.pem(), None)).await;
    assert!(refused.is_err(), "a client trusting another CA connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_given() {
    let ca = Authority::new("tidecache test CA");
    let server = ca.server(1);
    let clients = Authority::new("tidecache clients CA");
    let volume = SecretVolume::new(&server.cert, &server.key, &clients.pem());
    let node = Node::start(&volume, true);
    let trusted = clients.client(100);
    let stranger = Authority::new("another CA").client(200);

    // HTTPS: no certificate, or one of another CA, gets no answer; one of the CA does.
    for identity in [None, Some(&stranger)] {
        let outcome = match Https::connect(node.https, client_config(&ca.pem(), identity)).await {
            // TLS 1.3: the client finishes its handshake before the node has checked its
            // certificate, so the refusal arrives on the first exchange.
            Ok(mut https) => https.send(Method::GET, "/readyz", "").await,
            Err(error) => Err(error),
        };
        assert!(
            outcome.is_err(),
            "HTTPS answered a client with {:?}: {outcome:?}",
            identity.map(|_| "a certificate of another CA")
        );
    }
    let mut https = Https::connect(node.https, client_config(&ca.pem(), Some(&trusted)))
        .await
        .expect("HTTPS with a client certificate");
    let (status, _) = https.send(Method::GET, "/readyz", "").await.expect("probe");
    assert_eq!(status, StatusCode::OK);

    // RESP over TLS: the same.
    for identity in [None, Some(&stranger)] {
        let outcome = rediss(node.rediss, &ca.pem(), identity)
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
        assert!(outcome.is_err(), "RESP over TLS answered: {outcome:?}");
    }
    let mut connection =
        rediss(node.rediss, &ca.pem(), Some(&trusted)).expect("RESP with a client certificate");
    let pong: String = redis::cmd("PING").query(&mut connection).expect("PING");
    assert_eq!(pong, "PONG");

    // redis-cli with and without the client certificate.
    let dir = volume.dir.path();
    let ca_file = write(dir, "trusted-ca.pem", &ca.pem());
    let cert_file = write(dir, "client.crt", &trusted.cert);
    let key_file = write(dir, "client.key", &trusted.key);
    let cli = |with_identity: bool| {
        let mut command = Command::new("redis-cli");
        command.args(["--tls", "--cacert"]).arg(&ca_file);
        if with_identity {
            command
                .arg("--cert")
                .arg(&cert_file)
                .arg("--key")
                .arg(&key_file);
        }
        let output = command
            .args(["-h", "localhost", "-p", &node.rediss.to_string(), "PING"])
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(cli(true), "PONG");
    assert_ne!(cli(false), "PONG");

    assert!(
        node.metric("tidecache_tls_handshake_failures_total{listener=\"resp\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_reaches_new_connections_and_open_ones_keep_working() {
    let ca = Authority::new("tidecache test CA");
    let first = ca.server(1);
    let mut volume = SecretVolume::new(&first.cert, &first.key, &ca.pem());
    let node = Node::start(&volume, false);
    let config = client_config(&ca.pem(), None);

    // Connections opened before the rotation.
    let mut https = Https::connect(node.https, config.clone())
        .await
        .expect("HTTPS connection");
    assert_eq!(https.served, first.der);
    let mut resp = rediss(node.rediss, &ca.pem(), None).expect("RESP over TLS");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("before")
        .query(&mut resp)
        .expect("SET before the rotation");

    let second = ca.server(2);
    volume.update(&second.cert, &second.key, &ca.pem());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fresh = Https::connect(node.https, config.clone())
            .await
            .expect("a new HTTPS connection during the rotation");
        if fresh.served == second.der {
            break;
        }
        assert_eq!(fresh.served, first.der, "neither certificate was served");
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 15 s:\n{}",
            node.cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // RESP over TLS serves the new certificate too (redis-cli checks nothing here but the
    // chain; the served certificate is compared through rustls).
    let mut fresh = rediss(node.rediss, &ca.pem(), None).expect("a new RESP connection");
    let value: String = redis::cmd("GET").arg("k").query(&mut fresh).expect("GET");
    assert_eq!(value, "before");

    // The connections from before the rotation still work, on the same sockets.
    let (status, _) = https
        .send(Method::PUT, "/v1/keys/k?ttl=600", "after")
        .await
        .expect("the HTTPS connection opened before the rotation");
    assert_eq!(status, StatusCode::NO_CONTENT);
    let value: String = redis::cmd("GET")
        .arg("k")
        .query(&mut resp)
        .expect("the RESP connection opened before the rotation");
    assert_eq!(value, "after");
    assert_eq!(
        node.metric("tidecache_tls_reloads_total{outcome=\"applied\"}")
            .await,
        1.0
    );
    assert!(
        node.cluster
            .log(0)
            .contains("TLS certificate reloaded: new connections use it"),
        "{}",
        node.cluster.log(0)
    );
    assert_eq!(
        node.cluster.log(0).matches("cache-node serving").count(),
        1,
        "the node restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_update_keeps_the_certificate_in_use() {
    let ca = Authority::new("tidecache test CA");
    let first = ca.server(1);
    let mut volume = SecretVolume::new(&first.cert, &first.key, &ca.pem());
    let node = Node::start(&volume, false);
    let config = client_config(&ca.pem(), None);

    // A new certificate with the old key, then a truncated certificate.
    let second = ca.server(2);
    volume.update(&second.cert, &first.key, &ca.pem());
    wait_for(
        &node,
        "tidecache_tls_reloads_total{outcome=\"refused\"}",
        1.0,
    )
    .await;
    let truncated = &second.cert[..second.cert.len() / 2];
    volume.update(truncated, &second.key, &ca.pem());
    wait_for(
        &node,
        "tidecache_tls_reloads_total{outcome=\"refused\"}",
        2.0,
    )
    .await;

    let https = Https::connect(node.https, config.clone())
        .await
        .expect("HTTPS after the bad updates");
    assert_eq!(
        https.served, first.der,
        "the certificate in use was replaced"
    );
    let log = node.cluster.log(0);
    assert!(
        log.contains("cannot be used together") && log.contains("is not valid PEM"),
        "{log}"
    );
    assert!(
        log.contains("still serving the previous certificate"),
        "{log}"
    );

    // Fixing the Secret applies it.
    volume.update(&second.cert, &second.key, &ca.pem());
    wait_for(
        &node,
        "tidecache_tls_reloads_total{outcome=\"applied\"}",
        1.0,
    )
    .await;
    let https = Https::connect(node.https, config)
        .await
        .expect("HTTPS after the fix");
    assert_eq!(https.served, second.der);
}

/// Waits up to 15 s for `sample` to reach `value`.
async fn wait_for(node: &Node, sample: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.metric(sample).await < value {
        assert!(
            Instant::now() < deadline,
            "{sample} did not reach {value} within 15 s:\n{}",
            node.cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_unusable_certificate_or_flags_stop_the_node_at_start() {
    let ca = Authority::new("tidecache test CA");
    let server = ca.server(1);
    let other = ca.server(2);
    let dir = tempfile::tempdir().expect("directory");
    let cert = write(dir.path(), "tls.crt", &server.cert);
    let other_key = write(dir.path(), "other.key", &other.key);
    let port = free_port();
    let run = |args: &[String]| {
        let output = cache_node()
            .arg(format!("--listen=127.0.0.1:{}", free_port()))
            .args(args)
            .output()
            .expect("cache-node runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let listen = format!("--tls-listen=127.0.0.1:{port}");
    let cert_flag = format!("--tls-cert-file={}", cert.display());
    let key_flag = format!("--tls-key-file={}", other_key.display());
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec![listen.clone(), cert_flag.clone(), key_flag.clone()],
            "cannot be used together",
        ),
        (
            vec![cert_flag.clone(), key_flag.clone()],
            "--tls-cert-file needs a TLS listener: --tls-listen or --resp-tls-listen",
        ),
        (
            vec![
                listen.clone(),
                cert_flag.clone(),
                format!(
                    "--tls-key-file={}",
                    dir.path().join("missing.key").display()
                ),
            ],
            "cannot read the private key",
        ),
        (
            vec![listen.clone()],
            "--tls-listen needs --tls-cert-file and --tls-key-file",
        ),
        (
            vec![listen, cert_flag],
            "--tls-cert-file needs --tls-key-file",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run(&args);
        assert!(
            code.is_some_and(|code| code != 0),
            "{args:?} started: {stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_on_a_tls_port_is_cut_and_the_node_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca = Authority::new("tidecache test CA");
    let server = ca.server(1);
    let volume = SecretVolume::new(&server.cert, &server.key, &ca.pem());
    let node = Node::start(&volume, false);
    for (port, request) in [
        (
            node.https,
            &b"GET /v1/keys/k HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
        (node.rediss, &b"*1\r\n$4\r\nPING\r\n"[..]),
        (node.https, &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00][..]),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        // The node closes the socket (an end of file or a reset, either will do) after at
        // most a TLS alert: never an HTTP or RESP answer.
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the node closes the connection")
            .ok();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.contains("HTTP/1.1") && !text.contains("PONG"),
            "plain text was served on a TLS port: {text:?}"
        );
    }
    for listener in ["http", "resp"] {
        let sample = format!("tidecache_tls_handshake_failures_total{{listener=\"{listener}\"}}");
        assert!(node.metric(&sample).await >= 1.0, "{sample}");
    }
    let mut https = Https::connect(node.https, client_config(&ca.pem(), None))
        .await
        .expect("HTTPS still served");
    let (status, _) = https
        .send(Method::GET, "/healthz", "")
        .await
        .expect("probe");
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_is_closed_after_10_s() {
    use tokio::io::AsyncReadExt;

    let ca = Authority::new("tidecache test CA");
    let server = ca.server(1);
    let volume = SecretVolume::new(&server.cert, &server.key, &ca.pem());
    let node = Node::start(&volume, false);
    let mut silent = Vec::new();
    for port in [node.https, node.rediss] {
        silent.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    let opened = Instant::now();
    // Meanwhile other clients are served.
    let mut https = Https::connect(node.https, client_config(&ca.pem(), None))
        .await
        .expect("HTTPS beside the silent clients");
    let (status, _) = https
        .send(Method::GET, "/healthz", "")
        .await
        .expect("probe");
    assert_eq!(status, StatusCode::OK);
    let mut resp = rediss(node.rediss, &ca.pem(), None).expect("RESP beside the silent clients");
    let pong: String = redis::cmd("PING").query(&mut resp).expect("PING");
    assert_eq!(pong, "PONG");
    for mut stream in silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent client was not closed within 15 s: {read:?}"
        );
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "closed after {waited:?}, before the handshake timeout"
    );
}
