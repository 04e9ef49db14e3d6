//! The webhook's certificates when the operator manages them itself: a self-signed CA, the
//! serving certificate it signs for the webhook Service, and when each is renewed. Pure
//! functions of the stored material and the time, so rotation is tested without a cluster.
//!
//! # Rotation without a refused request
//! The API server trusts the CA bundle in the webhook configuration, so a new CA must be in
//! that bundle before any replica serves a certificate it signed. The two lifetimes make that
//! so without a second phase: a CA is renewed [`CA_RENEW_BEFORE`] (120 days) before it expires
//! and is then put first in the bundle beside the old one, while the serving certificate, at
//! most [`SERVING_LIFETIME`] (90 days) long and still signed by the old CA, goes on being
//! served. The next serving certificate, due [`SERVING_RENEW_BEFORE`] before its own expiry,
//! is signed by the new CA, which has been trusted for weeks by then. A CA leaves the bundle
//! once it has expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How long before its expiry a CA is replaced (and the new one joins the bundle).
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(120 * 24 * 60 * 60);
/// How long a serving certificate is valid.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// How long before its expiry a serving certificate is replaced.
pub const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How far back `notBefore` is set, so that a clock a little behind ours accepts a new
/// certificate at once.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Why certificate material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generating a key or signing a certificate failed.
    #[error("cannot issue the webhook's {what}: {source}")]
    Issue {
        /// Which certificate or key.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Stored material is not a certificate or key the operator can use.
    #[error("the webhook Secret's {key} is unusable: {message}")]
    Stored {
        /// The Secret key (`ca.crt`, `ca.key`, `tls.crt`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The material a self-managed webhook Secret holds, in its keys' PEM form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// `ca.crt`: the CA bundle the API server trusts, newest CA first.
    pub ca_bundle: String,
    /// `ca.key`: the newest CA's private key.
    pub ca_key: String,
    /// `tls.crt`: the serving certificate.
    pub cert: String,
    /// `tls.key`: its private key.
    pub key: String,
}

/// What [`renew`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing was due.
    Unchanged,
    /// New material where there was none (or none usable).
    Issued,
    /// A new CA joined the bundle (the serving certificate stays until it is due).
    CaRenewed,
    /// A new serving certificate, signed by the newest CA.
    ServingRenewed,
}

/// The material to store at `now` for a Service reached as `dns_names`: `current` kept when
/// nothing is due, otherwise renewed as the module documentation says. Material that cannot
/// be read is replaced as a whole, which the API server trusts once the bundle is patched;
/// the old material's unexpired CAs stay in the bundle after the new one, so that a replica
/// still serving the old certificate (until its next check) is not refused meanwhile.
///
/// # Errors
/// [`CertError::Issue`] when a key or certificate cannot be made.
pub fn renew(
    current: Option<&Material>,
    dns_names: &[String],
    now: SystemTime,
) -> Result<(Material, Renewal), CertError> {
    let Some(current) = current.filter(|material| usable(material, dns_names)) else {
        let (ca_cert, ca_key) = new_ca(now)?;
        let (cert, key) = serving(&ca_cert, &ca_key, dns_names, now)?;
        let kept = current.map_or_else(String::new, |old| unexpired(&old.ca_bundle, now));
        return Ok((
            Material {
                ca_bundle: ca_cert + &kept,
                ca_key,
                cert,
                key,
            },
            Renewal::Issued,
        ));
    };
    let bundle = certificates(&current.ca_bundle);
    let newest_ca_expiry = bundle.first().and_then(|der| not_after(der).ok());
    if newest_ca_expiry.is_none_or(|expiry| expiry < now + CA_RENEW_BEFORE) {
        let (ca_cert, ca_key) = new_ca(now)?;
        let ca_bundle = ca_cert + &unexpired(&current.ca_bundle, now);
        return Ok((
            Material {
                ca_bundle,
                ca_key,
                cert: current.cert.clone(),
                key: current.key.clone(),
            },
            Renewal::CaRenewed,
        ));
    }
    let serving_expiry = certificates(&current.cert)
        .first()
        .and_then(|der| not_after(der).ok());
    if serving_expiry.is_none_or(|expiry| expiry < now + SERVING_RENEW_BEFORE) {
        let newest = bundle.first().map(pem).unwrap_or_default();
        let (cert, key) = serving(&newest, &current.ca_key, dns_names, now)?;
        // Expired CAs leave the bundle here too.
        let ca_bundle = unexpired(&current.ca_bundle, now);
        return Ok((
            Material {
                ca_bundle,
                ca_key: current.ca_key.clone(),
                cert,
                key,
            },
            Renewal::ServingRenewed,
        ));
    }
    Ok((current.clone(), Renewal::Unchanged))
}

/// When the serving certificate in `cert_pem` expires.
///
/// # Errors
/// [`CertError::Stored`] when it holds no certificate that parses.
pub fn serving_expiry(cert_pem: &str) -> Result<SystemTime, CertError> {
    let stored = |message: String| CertError::Stored {
        key: "tls.crt",
        message,
    };
    let first = certificates(cert_pem)
        .into_iter()
        .next()
        .ok_or_else(|| stored("no PEM certificate".to_string()))?;
    not_after(&first).map_err(stored)
}

/// Whether stored material can be renewed in place: the newest CA and its key parse and
/// belong together, and the serving certificate is for the names the Service has now.
fn usable(material: &Material, dns_names: &[String]) -> bool {
    let Some(newest) = certificates(&material.ca_bundle).into_iter().next() else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(&material.ca_key) else {
        return false;
    };
    if Issuer::from_ca_cert_der(&newest, &key).is_err() {
        return false;
    }
    let Some(serving) = certificates(&material.cert).into_iter().next() else {
        return false;
    };
    // A Service renamed (another namespace) needs a certificate for its new names.
    dns_names_of(&serving).is_ok_and(|names| names == dns_names)
        && KeyPair::from_pem(&material.key).is_ok()
}

/// A new self-signed CA: (certificate PEM, key PEM).
fn new_ca(now: SystemTime) -> Result<(String, String), CertError> {
    let issue = |source| CertError::Issue { what: "CA", source };
    let key = KeyPair::generate().map_err(issue)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("tidecache-webhook-ca-{}", unix(now)),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, CA_LIFETIME);
    let cert = params.self_signed(&key).map_err(issue)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `dns_names` signed by the CA in `ca_pem` with `ca_key_pem`:
/// (certificate PEM, key PEM). It never outlives its CA.
fn serving(
    ca_pem: &str,
    ca_key_pem: &str,
    dns_names: &[String],
    now: SystemTime,
) -> Result<(String, String), CertError> {
    let issue = |source| CertError::Issue {
        what: "serving certificate",
        source,
    };
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(issue)?;
    let ca_der = certificates(ca_pem)
        .into_iter()
        .next()
        .ok_or_else(|| CertError::Stored {
            key: "ca.crt",
            message: "no PEM certificate".to_string(),
        })?;
    let ca_expiry = not_after(&ca_der).map_err(|message| CertError::Stored {
        key: "ca.crt",
        message,
    })?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(issue)?;
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(issue)?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let lifetime = SERVING_LIFETIME.min(ca_expiry.duration_since(now).unwrap_or(DAY));
    validity(&mut params, now, lifetime);
    let key = KeyPair::generate().map_err(issue)?;
    let cert = params.signed_by(&key, &issuer).map_err(issue)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Sets `notBefore` an hour back and `notAfter` `lifetime` from `now`.
fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    let at = |time: SystemTime| {
        time::OffsetDateTime::from_unix_timestamp(unix(time))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    params.not_before = at(now - BACKDATE);
    params.not_after = at(now + lifetime);
}

/// Seconds since the epoch, saturated into `i64`.
fn unix(time: SystemTime) -> i64 {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// The certificates in a PEM text, in order; what does not parse is skipped.
/// The certificates of `bundle` still valid at `now`, as PEM, in order.
fn unexpired(bundle: &str, now: SystemTime) -> String {
    certificates(bundle)
        .iter()
        .filter(|der| not_after(der).is_ok_and(|expiry| expiry > now))
        .map(|der| pem(der))
        .collect()
}

fn certificates(pem_text: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// One certificate as PEM.
fn pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The DNS names of a certificate's subjectAltName, in order.
fn dns_names_of(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|error| error.to_string())?;
    let names = cert
        .subject_alternative_name()
        .map_err(|error| error.to_string())?
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

/// A certificate's `notAfter`.
fn not_after(der: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|error| error.to_string())?;
    let seconds = cert.validity().not_after.timestamp();
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;

    use super::*;

    fn names() -> Vec<String> {
        vec![
            "tidecache-operator-webhook.tidecache-system.svc".to_string(),
            "tidecache-operator-webhook.tidecache-system.svc.cluster.local".to_string(),
        ]
    }

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// Whether `cert` chains to one CA of `bundle`, checked by rustls as a client would.
    fn trusted(bundle: &str, cert: &str, now: SystemTime) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(bundle) {
            roots.add(ca).expect("a CA");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .expect("a verifier");
        let leaf = certificates(cert).remove(0);
        let name = rustls::pki_types::ServerName::try_from(names()[0].clone()).expect("a name");
        let at = rustls::pki_types::UnixTime::since_unix_epoch(
            now.duration_since(UNIX_EPOCH).expect("after the epoch"),
        );
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], at)
            .is_ok()
    }

    #[test]
    fn first_material_is_trusted_by_its_bundle() {
        let (material, renewal) = renew(None, &names(), start()).expect("issued");
        assert_eq!(renewal, Renewal::Issued);
        assert!(trusted(&material.ca_bundle, &material.cert, start()));
        let expiry = serving_expiry(&material.cert).expect("expiry");
        assert_eq!(
            expiry.duration_since(start()).expect("later").as_secs(),
            SERVING_LIFETIME.as_secs()
        );
        let (same, renewal) = renew(Some(&material), &names(), start() + DAY).expect("kept");
        assert_eq!(renewal, Renewal::Unchanged);
        assert_eq!(same, material);
    }

    /// Two years of daily checks: every day the certificate served is trusted by the bundle
    /// the API server has, both for the material before and after that day's renewal (the
    /// replicas and the webhook configuration pick up a change at slightly different times).
    #[test]
    fn two_years_of_rotation_never_leave_the_served_certificate_untrusted() {
        let (mut material, _) = renew(None, &names(), start()).expect("issued");
        let mut seen = Vec::new();
        for day in 1..730u32 {
            let now = start() + DAY * day;
            let (next, renewal) = renew(Some(&material), &names(), now).expect("renewed");
            if renewal != Renewal::Unchanged {
                seen.push(renewal);
            }
            assert!(
                trusted(&next.ca_bundle, &material.cert, now),
                "day {day}: the new bundle does not trust the certificate being served"
            );
            assert!(
                trusted(&next.ca_bundle, &next.cert, now),
                "day {day}: the new certificate is not trusted by the new bundle"
            );
            assert!(
                trusted(&material.ca_bundle, &next.cert, now),
                "day {day}: a replica serving the new certificate before the bundle is patched \
                 would be refused ({renewal:?})"
            );
            material = next;
        }
        assert!(seen.contains(&Renewal::CaRenewed), "{seen:?}");
        assert!(seen.contains(&Renewal::ServingRenewed), "{seen:?}");
        assert!(certificates(&material.ca_bundle).len() <= 2);
    }

    #[test]
    fn unusable_material_is_replaced_whole() {
        let (material, _) = renew(None, &names(), start()).expect("issued");
        let broken = Material {
            ca_key: "not a key".to_string(),
            ..material.clone()
        };
        let (fresh, renewal) = renew(Some(&broken), &names(), start()).expect("reissued");
        assert_eq!(renewal, Renewal::Issued);
        assert_ne!(fresh.ca_bundle, material.ca_bundle);
        let other_names = vec!["tidecache-operator-webhook.elsewhere.svc".to_string()];
        let (moved, renewal) = renew(Some(&material), &other_names, start()).expect("reissued");
        assert_eq!(renewal, Renewal::Issued);
        // A replica still serving the old certificate stays trusted until it reloads.
        assert!(trusted(&moved.ca_bundle, &material.cert, start()));
        assert_eq!(certificates(&moved.ca_bundle).len(), 2);
    }
}
