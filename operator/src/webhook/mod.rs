//! The validating admission webhook for CacheClusters: `kubectl apply` refuses a spec the
//! operator could not build (a schedule that never fires, an unknown time zone, a capacity
//! above the pod's memory limit, ...) with the message the status would otherwise show later.
//!
//! - [`admit`]: the decision on one `AdmissionReview`, by [`crate::validate::admissible`];
//! - [`serve`]: the HTTPS server the API server calls, with a swappable certificate;
//! - [`certs`]: the self-signed CA and serving certificate, and when each is renewed;
//! - [`rotation`]: keeping the Secret, the webhook configuration's CA bundle and the served
//!   certificate current, on every replica.
//!
//! The configuration (`deploy/webhook.yaml`) registers the webhook for CacheClusters alone,
//! with `failurePolicy: Fail`: a CacheCluster is never stored unchecked, and no other resource
//! of the cluster ever waits for the operator.

pub mod admit;
pub mod certs;
pub mod rotation;
pub mod serve;

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertificateSource {
    /// The operator issues a self-signed CA and the serving certificate into the Secret,
    /// renews both, and writes the CA bundle into the webhook configuration.
    SelfSigned,
    /// The Secret is written by someone else (cert-manager's Certificate, with its
    /// cainjector filling the bundle); the operator only reads it.
    Secret,
}

/// Names the webhook is reached and configured by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The operator's namespace: of the Service and the Secret.
    pub namespace: String,
    /// The Service the API server calls the webhook through.
    pub service: String,
    /// The `kubernetes.io/tls` Secret holding the serving certificate.
    pub secret: String,
    /// The ValidatingWebhookConfiguration whose CA bundle trusts it.
    pub configuration: String,
    /// The webhook's name within that configuration.
    pub webhook: String,
    /// Who issues the certificate.
    pub certificates: CertificateSource,
}

impl Settings {
    /// The names the API server verifies the certificate for: the Service's DNS names.
    pub fn dns_names(&self) -> Vec<String> {
        let base = format!("{}.{}.svc", self.service, self.namespace);
        vec![base.clone(), format!("{base}.cluster.local")]
    }
}
