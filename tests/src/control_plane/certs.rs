//! The cluster's PKI, generated fresh for every control plane: a CA, the apiserver's
//! serving certificate, client certificates for the admin and for the controller
//! manager and scheduler (whose user names the bootstrap RBAC policy already grants
//! what they need, so RBAC is exercised for real), and the service-account signing key
//! pair.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::error::{Error, Result};

/// The service ClusterIP range handed to kube-apiserver; its first address is the
/// `kubernetes` Service, which therefore belongs in the serving certificate.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
}

/// All the files of the cluster's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed everything, also used as kube-controller-manager's cluster
    /// signer so that CSRs and the root CA published to pods agree.
    pub ca: CertFiles,
    /// kube-apiserver's serving certificate.
    pub apiserver: CertFiles,
    /// `kubernetes-admin`, group `system:masters`.
    pub admin: CertFiles,
    /// `system:kube-controller-manager`.
    pub controller_manager: CertFiles,
    /// `system:kube-scheduler`.
    pub scheduler: CertFiles,
    /// `system:kube-proxy`, which the bootstrap policy binds to `system:node-proxier`.
    pub kube_proxy: CertFiles,
    /// Private key that signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public key, with which the apiserver verifies those tokens.
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Generates the PKI into `dir` (created if missing). `extra_ips` are added to the
    /// apiserver's serving certificate: the pod network's gateway, through which pods in
    /// their own network namespaces reach the apiserver.
    pub fn generate(dir: &Path, extra_ips: &[std::net::IpAddr]) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let write = |name: &str, contents: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(path)
        };

        let ca_key = new_key("CA key")?;
        let ca_params = ca_params();
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|source| Error::Certificate {
                what: "CA certificate",
                source,
            })?;
        let ca = CertFiles {
            cert: write("ca.crt", &ca_cert.pem())?,
            key: write("ca.key", &ca_key.serialize_pem())?,
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let extra: Vec<String> = extra_ips.iter().map(ToString::to_string).collect();
        let mut serving_names = vec![
            "localhost",
            "127.0.0.1",
            KUBERNETES_SERVICE_IP,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        serving_names.extend(extra.iter().map(String::as_str));
        let (cert, key) = leaf(
            &issuer,
            "kube-apiserver",
            &[],
            &serving_names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let apiserver = CertFiles {
            cert: write("apiserver.crt", &cert)?,
            key: write("apiserver.key", &key)?,
        };

        let client = |file: &str, cn: &str, org: &[&str]| -> Result<CertFiles> {
            let (cert, key) = leaf(&issuer, cn, org, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
            Ok(CertFiles {
                cert: write(&format!("{file}.crt"), &cert)?,
                key: write(&format!("{file}.key"), &key)?,
            })
        };
        let admin = client("admin", "kubernetes-admin", &["system:masters"])?;
        let controller_manager =
            client("controller-manager", "system:kube-controller-manager", &[])?;
        let scheduler = client("scheduler", "system:kube-scheduler", &[])?;
        let kube_proxy = client("kube-proxy", "system:kube-proxy", &[])?;

        let sa = new_key("service-account signing key")?;
        Ok(Self {
            ca,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            kube_proxy,
            service_account_key: write("sa.key", &sa.serialize_pem())?,
            service_account_pub: write("sa.pub", &sa.public_key_pem())?,
        })
    }
}

impl Pki {
    /// Issues one more client certificate from the cluster's CA into `dir` as
    /// `<file>.crt`/`<file>.key`: for a component started after the control plane (a real
    /// kubelet's `system:node:<name>` in `system:nodes`).
    pub fn issue_client(
        &self,
        dir: &Path,
        file: &str,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<CertFiles> {
        let what = "client certificate";
        let pem = std::fs::read_to_string(&self.ca.key)
            .map_err(|e| Error::io(format!("reading {}", self.ca.key.display()), e))?;
        let ca_key =
            KeyPair::from_pem(&pem).map_err(|source| Error::Certificate { what, source })?;
        // Same subject and key as the CA certificate, so what it signs chains to it.
        let issuer = Issuer::new(ca_params(), ca_key);
        let (cert, key) = leaf(
            &issuer,
            common_name,
            organizations,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let files = CertFiles {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        for (path, contents) in [(&files.cert, cert), (&files.key, key)] {
            std::fs::write(path, contents)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(files)
    }
}

/// The CA's subject and usages.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "tidecache-e2e-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// An ECDSA P-256 key: accepted by Go's TLS stack, by the service-account token signer
/// (ES256) and by rustls, and fast to generate.
fn new_key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate().map_err(|source| Error::Certificate { what, source })
}

/// Issues a certificate signed by the CA; returns (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organizations: &[&str],
    subject_alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let what = match usage {
        ExtendedKeyUsagePurpose::ServerAuth => "serving certificate",
        _ => "client certificate",
    };
    let mut params = CertificateParams::new(
        subject_alt_names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    )
    .map_err(|source| Error::Certificate { what, source })?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for org in organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = new_key(what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| Error::Certificate { what, source })?;
    Ok((cert.pem(), key.serialize_pem()))
}
