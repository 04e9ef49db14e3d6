//! TLS for clients: the certificate, key and optional client CA read from files (a
//! Kubernetes Secret of type `kubernetes.io/tls`, as cert-manager writes it, mounted as a
//! volume), the rustls [`ServerConfig`] built from them, and its reload.
//!
//! # Reload
//! A Secret volume is updated by writing the new files into a fresh directory and swapping
//! the `..data` symlink, so inode events on the paths say little; [`ServerTls::reload`]
//! reads the files again and compares their contents with the last ones seen. New contents
//! that parse into a configuration replace it atomically: connections accepted afterwards
//! handshake with the new certificate, open ones keep the session they have. Contents that do
//! not parse are refused once (the old configuration stays) and not again until they change.
//!
//! Both front ends (HTTPS and RESP over TLS) share one [`ServerTls`], so one reload serves
//! both. The provider is ring, the one kube already brings into the binary.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its TLS handshake. Long enough for a slow link,
/// short enough that connections which never finish one do not pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate material is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The PEM certificate chain, leaf first (`tls.crt`).
    pub cert: PathBuf,
    /// The PEM private key: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to (`ca.crt`); when given, every
    /// client must present one.
    pub client_ca: Option<PathBuf>,
}

/// Why certificate material was refused. Each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        /// Which file it is (`certificate chain`, `private key`, `client CA bundle`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("the {what} {} is not valid PEM: {source}", path.display())]
    Pem {
        /// Which file it is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What the PEM parser found.
        source: pem::Error,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("the {what} {} holds no PEM CERTIFICATE block", path.display())]
    NoCertificate {
        /// Which file it is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The key file holds no private key block.
    #[error(
        "the private key {} holds no PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block",
        path.display()
    )]
    NoKey {
        /// Its path.
        path: PathBuf,
    },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("the client CA bundle {} cannot verify client certificates: {source}", path.display())]
    ClientCa {
        /// Its path.
        path: PathBuf,
        /// What rustls found.
        source: VerifierBuilderError,
    },
    /// A CA certificate is not a usable X.509 certificate.
    #[error("the client CA bundle {} holds a certificate that is not usable: {source}", path.display())]
    ClientCaCertificate {
        /// Its path.
        path: PathBuf,
        /// What rustls found.
        source: rustls::Error,
    },
    /// The chain and key do not make a configuration: the key is not the certificate's, or
    /// of a kind rustls does not support.
    #[error(
        "the certificate chain {} and the private key {} cannot be used together: {source}",
        cert.display(),
        key.display()
    )]
    Config {
        /// The certificate chain's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
        /// What rustls found.
        source: rustls::Error,
    },
}

/// What [`ServerTls::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was seen last (applied or refused), or were mid-update.
    Unchanged,
    /// New contents were loaded: new connections get them.
    Applied,
}

/// The contents of the files, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The TLS configuration clients are served with, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    /// The configuration new connections handshake with.
    current: RwLock<Arc<ServerConfig>>,
    /// The contents last read, whether they were applied or refused.
    seen: Mutex<Material>,
}

impl ServerTls {
    /// Reads and checks the files.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file that cannot be read or used.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let material = read(&files)?;
        let config = build(&files, &material)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(config),
            seen: Mutex::new(material),
        })
    }

    /// The configuration a connection accepted now handshakes with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether clients must present a certificate (`client_ca` was given).
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; when their contents changed and make a configuration, swaps
    /// it in. The files are read twice and only contents both reads agree on are used, so
    /// that a read straddling a Secret update (the old certificate, the new key) is not
    /// mistaken for a broken pair: the next call sees the finished update.
    ///
    /// # Errors
    /// New contents that cannot be used; the current configuration stays, and the same
    /// contents are not reported again.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let material = read(&self.files)?;
        if read(&self.files)? != material {
            return Ok(Reload::Unchanged);
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == material {
            return Ok(Reload::Unchanged);
        }
        let built = build(&self.files, &material);
        *seen = material;
        let config = built?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(Reload::Applied)
    }

    /// The TLS handshake of an accepted connection with the current configuration, given
    /// at most [`HANDSHAKE_TIMEOUT`].
    ///
    /// # Errors
    /// The handshake failed (the client's certificate was refused, it spoke no TLS) or
    /// timed out.
    pub async fn accept<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.config());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no TLS handshake within {}s",
                    HANDSHAKE_TIMEOUT.as_secs_f64()
                ),
            )),
        }
    }

    /// Calls [`ServerTls::reload`] every `interval` for as long as the future runs, and
    /// tells `outcome` about every reload that applied or refused something (unchanged files
    /// are not news).
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        outcome: impl Fn(&Result<Reload, TlsError>) + Send + 'static,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let tls = self.clone();
            let result = match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(result) => result,
                Err(error) => {
                    tracing::error!(%error, "the TLS reload task failed");
                    continue;
                }
            };
            if !matches!(result, Ok(Reload::Unchanged)) {
                outcome(&result);
            }
        }
    }
}

/// Reads the three files.
fn read(files: &TlsFiles) -> Result<Material, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    Ok(Material {
        cert: read(CHAIN, &files.cert)?,
        key: read(KEY, &files.key)?,
        client_ca: files
            .client_ca
            .as_deref()
            .map(|path| read(CA, path))
            .transpose()?,
    })
}

const CHAIN: &str = "certificate chain";
const KEY: &str = "private key";
const CA: &str = "client CA bundle";

/// The configuration `material` makes.
fn build(files: &TlsFiles, material: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(CHAIN, &files.cert, &material.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        source => TlsError::Pem {
            what: KEY,
            path: files.key.clone(),
            source,
        },
    })?;
    let config_error = |source| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match (&files.client_ca, &material.client_ca) {
        (Some(path), Some(bundle)) => {
            builder.with_client_cert_verifier(client_verifier(path, bundle, provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(config_error)?;
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file; at least one.
fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// Requires and verifies client certificates against the CAs of `bundle`.
fn client_verifier(
    path: &Path,
    bundle: &[u8],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(CA, path, bundle)? {
        roots
            .add(ca)
            .map_err(|source| TlsError::ClientCaCertificate {
                path: path.to_path_buf(),
                source,
            })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsError::ClientCa {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A self-signed certificate for `name` and its key, in PEM.
    fn pair(name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A directory laid out as a Secret volume: `tls.crt` and `tls.key` are links through
    /// `..data` into a timestamped directory, which [`Volume::update`] swaps.
    struct Volume {
        dir: tempfile::TempDir,
        generation: usize,
    }

    impl Volume {
        fn new(cert: &str, key: &str) -> Volume {
            let dir = tempfile::tempdir().expect("directory");
            for name in ["tls.crt", "tls.key"] {
                symlink(format!("..data/{name}"), dir.path().join(name)).expect("link");
            }
            let mut volume = Volume { dir, generation: 0 };
            volume.update(cert, key);
            volume
        }

        /// Writes a new generation and swaps `..data` onto it with one rename, as the
        /// kubelet does.
        fn update(&mut self, cert: &str, key: &str) {
            self.generation += 1;
            let generation = format!("..gen{}", self.generation);
            let path = self.dir.path().join(&generation);
            std::fs::create_dir(&path).expect("generation");
            std::fs::write(path.join("tls.crt"), cert).expect("cert");
            std::fs::write(path.join("tls.key"), key).expect("key");
            let staged = self.dir.path().join("..data_tmp");
            symlink(&generation, &staged).expect("staged link");
            std::fs::rename(&staged, self.dir.path().join("..data")).expect("swap");
        }

        fn files(&self) -> TlsFiles {
            TlsFiles {
                cert: self.dir.path().join("tls.crt"),
                key: self.dir.path().join("tls.key"),
                client_ca: None,
            }
        }
    }

    #[test]
    fn a_secret_update_is_applied_once_and_a_bad_one_keeps_the_old_configuration() {
        let (cert, key) = pair("one.test");
        let mut volume = Volume::new(&cert, &key);
        let tls = ServerTls::load(volume.files()).expect("first pair");
        let first = tls.config();
        assert_eq!(tls.reload().expect("same files"), Reload::Unchanged);
        assert!(Arc::ptr_eq(&first, &tls.config()));

        let (cert, key) = pair("two.test");
        volume.update(&cert, &key);
        assert_eq!(tls.reload().expect("new pair"), Reload::Applied);
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second));

        // The new certificate with the old key: refused, the second pair stays, and the
        // refusal is reported once, not at every poll.
        let (other_cert, _) = pair("three.test");
        volume.update(&other_cert, &key);
        let refused = tls.reload().expect_err("a certificate with another's key");
        assert!(matches!(refused, TlsError::Config { .. }), "{refused}");
        assert!(Arc::ptr_eq(&second, &tls.config()));
        assert_eq!(tls.reload().expect("reported already"), Reload::Unchanged);

        volume.update(&cert, &key);
        assert_eq!(tls.reload().expect("the good pair again"), Reload::Applied);
    }

    #[test]
    fn unusable_files_are_refused_naming_the_file() {
        let (cert, key) = pair("one.test");
        let dir = tempfile::tempdir().expect("directory");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let files = |cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>| TlsFiles {
            cert,
            key,
            client_ca,
        };
        let good_cert = write("tls.crt", &cert);
        let good_key = write("tls.key", &key);
        let cases = [
            (
                files(dir.path().join("missing.crt"), good_key.clone(), None),
                "cannot read the certificate chain",
            ),
            (
                files(write("empty.crt", ""), good_key.clone(), None),
                "holds no PEM CERTIFICATE block",
            ),
            (
                files(good_cert.clone(), write("cert-as-key", &cert), None),
                "holds no PEM PRIVATE KEY",
            ),
            (
                files(
                    write("broken.crt", "-----BEGIN CERTIFICATE-----\nAAAA"),
                    good_key.clone(),
                    None,
                ),
                "is not valid PEM",
            ),
            (
                files(
                    write("other.crt", &pair("other.test").0),
                    good_key.clone(),
                    None,
                ),
                "cannot be used together",
            ),
            (
                files(
                    good_cert.clone(),
                    good_key.clone(),
                    Some(write("ca.crt", "not a certificate")),
                ),
                "client CA bundle",
            ),
        ];
        for (files, expected) in cases {
            let message = ServerTls::load(files.clone())
                .expect_err("unusable files")
                .to_string();
            assert!(message.contains(expected), "{files:?}: {message}");
        }
        assert!(ServerTls::load(files(good_cert, good_key, None)).is_ok());
    }
}
