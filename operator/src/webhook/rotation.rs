//! Keeping the serving certificate current, on every replica (each serves the webhook, leader
//! or not): read the webhook Secret, renew what is due ([`super::certs`], self-signed mode),
//! make the webhook configuration trust the CA bundle, and load the certificate into the
//! server. With cert-manager the Secret is its Certificate's and the bundle its cainjector's;
//! the operator then only reads.
//!
//! Writes are conditional on the Secret's resourceVersion (create, or replace at the version
//! read), so two replicas renewing at once cannot both win: the loser reads the winner's
//! material at its next pass, a few seconds later. Nothing is written when nothing is due, so
//! a settled cluster sees only reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::certs::{self, CertError, Material, Renewal};
use super::serve::{ServeError, Serving};
use super::{CertificateSource, Settings};
use crate::error_chain;
use crate::telemetry::Metrics;

/// Between passes once a certificate is served: renewals are due weeks ahead, so this only
/// bounds how late a cert-manager renewal or another replica's write is picked up.
const SETTLED_PERIOD: Duration = Duration::from_secs(60);
/// Between passes until a certificate is served (readiness waits for it).
const STARTING_PERIOD: Duration = Duration::from_secs(2);
/// The field manager of the operator's part of the webhook configuration: the CA bundle.
const MANAGER: &str = "tidecache-operator-webhook";

/// Why a pass did not end with a current certificate served.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// An API request failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// kube's error.
        source: kube::Error,
    },
    /// In cert-manager mode the Secret does not exist (yet) or lacks a key.
    #[error(
        "the webhook Secret {namespace}/{name} has no {key}; with --webhook-certificates=secret \
         it must be a kubernetes.io/tls Secret (cert-manager's Certificate writes one)"
    )]
    Missing {
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The missing key.
        key: &'static str,
    },
    /// The webhook configuration lacks the webhook this operator serves.
    #[error(
        "the ValidatingWebhookConfiguration {configuration} has no webhook {webhook}; apply \
         the operator's manifests (kubectl apply -k deploy/) or fix --webhook-name"
    )]
    NoWebhook {
        /// The configuration's name.
        configuration: String,
        /// The webhook's name.
        webhook: String,
    },
    /// Making or reading certificate material failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The server refused the material.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs passes until `stop` is cancelled: every [`STARTING_PERIOD`] until a certificate is
/// served, then every [`SETTLED_PERIOD`].
pub async fn keep_current(
    client: Client,
    settings: Settings,
    serving: Arc<Serving>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        match pass(&client, &settings, &serving).await {
            Ok(expiry) => metrics.webhook_certificate_expiry(expiry),
            Err(error) => warn!(error = %error_chain(&error), "webhook certificate not current"),
        }
        let period = if serving.is_ready() {
            SETTLED_PERIOD
        } else {
            STARTING_PERIOD
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// One pass; returns the expiry of the certificate now served.
async fn pass(
    client: &Client,
    settings: &Settings,
    serving: &Serving,
) -> Result<SystemTime, RotationError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let stored = secrets
        .get_opt(&settings.secret)
        .await
        .map_err(|source| RotationError::Api {
            action: format!(
                "reading the webhook Secret {}/{}",
                settings.namespace, settings.secret
            ),
            source,
        })?;
    let (cert, key) = match settings.certificates {
        CertificateSource::Secret => {
            let key_of = |key: &'static str| {
                stored
                    .as_ref()
                    .and_then(|secret| text(secret, key))
                    .ok_or_else(|| RotationError::Missing {
                        namespace: settings.namespace.clone(),
                        name: settings.secret.clone(),
                        key,
                    })
            };
            (key_of("tls.crt")?, key_of("tls.key")?)
        }
        CertificateSource::SelfSigned => {
            let current = stored.as_ref().and_then(material);
            let (material, renewal) =
                certs::renew(current.as_ref(), &settings.dns_names(), SystemTime::now())?;
            if renewal != Renewal::Unchanged {
                store(&secrets, settings, stored.as_ref(), &material).await?;
                info!(?renewal, secret = %settings.secret, "webhook certificate material renewed");
            }
            // Trusted before served: a first or replaced CA is unknown to the API server
            // until the bundle is patched.
            trust(client, settings, &material.ca_bundle).await?;
            (material.cert, material.key)
        }
    };
    serving.load(&cert, &key)?;
    Ok(certs::serving_expiry(&cert)?)
}

/// The self-managed material in `secret`, `None` when a key is missing.
fn material(secret: &Secret) -> Option<Material> {
    Some(Material {
        ca_bundle: text(secret, "ca.crt")?,
        ca_key: text(secret, "ca.key")?,
        cert: text(secret, "tls.crt")?,
        key: text(secret, "tls.key")?,
    })
}

/// The UTF-8 value of `key` in `secret`.
fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Writes `material`: a create when no Secret was read, else a replace at the version read.
async fn store(
    secrets: &Api<Secret>,
    settings: &Settings,
    stored: Option<&Secret>,
    material: &Material,
) -> Result<(), RotationError> {
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", &material.ca_bundle),
        ("ca.key", &material.ca_key),
        ("tls.crt", &material.cert),
        ("tls.key", &material.key),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), ByteString(value.clone().into_bytes())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret.clone()),
            namespace: Some(settings.namespace.clone()),
            resource_version: stored.and_then(|s| s.metadata.resource_version.clone()),
            labels: Some(
                [
                    ("app.kubernetes.io/name", "tidecache"),
                    ("app.kubernetes.io/component", "operator"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Secret::default()
    };
    let action = format!(
        "writing the webhook Secret {}/{}",
        settings.namespace, settings.secret
    );
    let result = match stored {
        None => secrets.create(&PostParams::default(), &secret).await,
        Some(_) => {
            secrets
                .replace(&settings.secret, &PostParams::default(), &secret)
                .await
        }
    };
    result
        .map(drop)
        .map_err(|source| RotationError::Api { action, source })
}

/// Makes the webhook configuration's CA bundle `bundle`, unless it already is.
async fn trust(client: &Client, settings: &Settings, bundle: &str) -> Result<(), RotationError> {
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let action = |what: &str| {
        format!(
            "{what} the ValidatingWebhookConfiguration {}",
            settings.configuration
        )
    };
    let current = configurations
        .get(&settings.configuration)
        .await
        .map_err(|source| RotationError::Api {
            action: action("reading"),
            source,
        })?;
    let webhook = current
        .webhooks
        .iter()
        .flatten()
        .find(|webhook| webhook.name == settings.webhook)
        .ok_or_else(|| RotationError::NoWebhook {
            configuration: settings.configuration.clone(),
            webhook: settings.webhook.clone(),
        })?;
    let trusted = webhook
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.as_slice());
    if trusted == Some(bundle.as_bytes()) {
        return Ok(());
    }
    // Server-side apply of the bundle alone: the rest of the configuration stays the
    // installer's (kubectl or Helm), which never sets the bundle, so nobody undoes it.
    let patch = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": settings.configuration},
        "webhooks": [{
            "name": settings.webhook,
            "clientConfig": {"caBundle": ByteString(bundle.as_bytes().to_vec())},
        }],
    });
    configurations
        .patch(
            &settings.configuration,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| RotationError::Api {
            action: action("patching the CA bundle of"),
            source,
        })?;
    info!(configuration = %settings.configuration, "webhook CA bundle updated");
    Ok(())
}
