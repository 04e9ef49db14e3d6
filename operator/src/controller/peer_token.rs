//! The peers' credential: a Secret `<cluster>-peer-token` the operator generates, owned by the
//! CacheCluster (garbage collected with it), that the cache pods present to each other on
//! their internal routes. Clients never see it: the clients' token (`spec.auth`) does not
//! open those routes, so no client can act as a peer.
//!
//! # Guarantees
//! - An existing token is never overwritten, except by a rotation the admin asks for: a new
//!   value of the CacheCluster's `tidecache.io/rotate-peer-token` annotation. The value is
//!   recorded on the Secret, so each value rotates once.
//! - A rotation moves the current token to the key `previous`, which the pods keep accepting,
//!   and the pods roll (the template carries the Secret's revision): during the roll a new
//!   pod falls back to the previous token towards a pod not restarted yet, so replication is
//!   never cut. A Secret never rotated holds its token under both keys.
//! - The token is 32 bytes from the operating system's generator, hex-encoded (header-safe).
//!
//! This is the one step that writes with `create`/`replace` instead of server-side apply: the
//! token is generated here, not built from the spec, and the write is conditional on the
//! Secret's resourceVersion, so two operators racing cannot both rotate.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tidecache_contract::args::{PEER_TOKEN_KEY, PEER_TOKEN_PREVIOUS_KEY};
use tracing::info;

use super::{Context, Error};
use crate::crd::CacheCluster;
use crate::labels::{self, CACHE_COMPONENT, PEER_TOKEN_ROTATION_ANNOTATION};
use crate::validate::ValidatedCluster;

/// Bytes of randomness in a token.
const TOKEN_BYTES: usize = 32;

/// What to do with the peer-token Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// It exists with a usable token and no new rotation is asked for.
    Keep,
    /// It does not exist (or holds no usable token): create it with a new token.
    Create,
    /// A new rotation value: a new token, the current one becomes `previous`.
    Rotate {
        /// The token being replaced.
        current: Vec<u8>,
    },
}

/// The rotation value the admin asks for (`None` when the annotation is not set).
fn asked_rotation(cluster: &CacheCluster) -> Option<&str> {
    cluster
        .annotations()
        .get(labels::ROTATE_PEER_TOKEN_ANNOTATION)
        .map(String::as_str)
}

/// Decides from the stored Secret and the rotation asked for.
fn plan(existing: Option<&Secret>, asked: Option<&str>) -> Plan {
    let Some(secret) = existing else {
        return Plan::Create;
    };
    let Some(current) = secret
        .data
        .as_ref()
        .and_then(|data| data.get(PEER_TOKEN_KEY))
        .filter(|token| !token.0.is_empty())
    else {
        return Plan::Create;
    };
    let recorded = secret
        .annotations()
        .get(PEER_TOKEN_ROTATION_ANNOTATION)
        .map(String::as_str);
    match asked {
        Some(asked) if Some(asked) != recorded => Plan::Rotate {
            current: current.0.clone(),
        },
        _ => Plan::Keep,
    }
}

/// A new token: hex of [`TOKEN_BYTES`] random bytes.
fn generate() -> Result<Vec<u8>, Error> {
    let mut bytes = [0_u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|source| Error::Random(source.to_string()))?;
    Ok(bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>()
        .into_bytes())
}

/// The Secret holding `token` and `previous`, recording `rotation`.
fn secret(
    cluster: &ValidatedCluster,
    token: Vec<u8>,
    previous: Vec<u8>,
    rotation: Option<&str>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(labels::names::peer_token(&cluster.name)),
            namespace: Some(cluster.namespace.clone()),
            labels: Some(labels::common(&cluster.name, CACHE_COMPONENT)),
            annotations: Some(BTreeMap::from([(
                PEER_TOKEN_ROTATION_ANNOTATION.to_string(),
                rotation.unwrap_or_default().to_string(),
            )])),
            owner_references: Some(vec![cluster.owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (PEER_TOKEN_KEY.to_string(), ByteString(token)),
            (PEER_TOKEN_PREVIOUS_KEY.to_string(), ByteString(previous)),
        ])),
        ..Secret::default()
    }
}

/// The peer-token Secret as the pods see it: what their template names, and the tokens the
/// operator itself presents to them (to read their partition holdings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct PeerToken {
    /// The revision the pods' template names.
    pub revision: String,
    /// The token the pods present to each other.
    pub current: Vec<u8>,
    /// The token before the last rotation, which pods not restarted since still use.
    pub previous: Vec<u8>,
}

impl PeerToken {
    fn of(secret: &Secret) -> PeerToken {
        let key = |key| {
            secret
                .data
                .as_ref()
                .and_then(|data| data.get(key))
                .map(|token| token.0.clone())
                .unwrap_or_default()
        };
        let current = key(PEER_TOKEN_KEY);
        let previous = Some(key(PEER_TOKEN_PREVIOUS_KEY))
            .filter(|previous| !previous.is_empty())
            .unwrap_or_else(|| current.clone());
        PeerToken {
            revision: revision(secret),
            current,
            previous,
        }
    }
}

/// The revision the pods' template names: changes when the Secret is recreated or rotated.
fn revision(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.uid.as_deref().unwrap_or_default(),
        secret
            .annotations()
            .get(PEER_TOKEN_ROTATION_ANNOTATION)
            .map_or("", String::as_str)
    )
}

/// Creates or rotates the peer-token Secret as needed; returns its revision for the pods'
/// template and its tokens.
///
/// # Errors
/// An [`Error`] naming the Secret when it cannot be read or written (a conflict is retried
/// by the next reconcile, which reads the Secret again).
pub(super) async fn ensure(
    cluster: &CacheCluster,
    validated: &ValidatedCluster,
    context: &Context,
) -> Result<PeerToken, Error> {
    let name = labels::names::peer_token(&validated.name);
    let api: Api<Secret> = Api::namespaced(context.client.clone(), &validated.namespace);
    let kind = || "Secret".to_string();
    let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: kind(),
        name: name.clone(),
        source,
    })?;
    let asked = asked_rotation(cluster);
    let (written, reason, note) = match plan(existing.as_ref(), asked) {
        Plan::Keep => {
            return Ok(existing.as_ref().map(PeerToken::of).unwrap_or_default());
        }
        Plan::Create => {
            let token = generate()?;
            let mut desired = secret(validated, token.clone(), token, asked);
            let written = match existing {
                Some(stored) => {
                    desired.metadata.resource_version = stored.resource_version();
                    api.replace(&name, &PostParams::default(), &desired).await
                }
                None => api.create(&PostParams::default(), &desired).await,
            };
            (
                written,
                "PeerTokenCreated",
                format!("generated Secret {name}"),
            )
        }
        Plan::Rotate { current } => {
            let mut desired = secret(validated, generate()?, current, asked);
            desired.metadata.resource_version =
                existing.as_ref().and_then(ResourceExt::resource_version);
            let written = api.replace(&name, &PostParams::default(), &desired).await;
            (
                written,
                "PeerTokenRotated",
                format!(
                    "rotated the token in Secret {name}; the previous one stays accepted until \
                     the next rotation"
                ),
            )
        }
    };
    let written = written.map_err(|source| Error::Apply {
        kind: kind(),
        name: name.clone(),
        source,
    })?;
    context.metrics.writes.inc();
    info!(name, reason, "peer token written");
    context
        .publish(
            cluster,
            EventType::Normal,
            reason,
            note,
            Some(written.object_ref(&())),
        )
        .await;
    Ok(PeerToken::of(&written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixtures, validate};

    fn stored(token: &[u8], rotation: &str) -> Secret {
        let cluster = validate::validate(&fixtures::minimal()).expect("valid");
        let mut secret = secret(&cluster, token.to_vec(), token.to_vec(), Some(rotation));
        secret.metadata.uid = Some("uid-1".into());
        secret
    }

    #[test]
    fn a_token_is_created_once_and_rotated_once_per_new_value() {
        assert_eq!(plan(None, None), Plan::Create);
        assert_eq!(plan(None, Some("2026-12")), Plan::Create);
        let never_rotated = stored(b"aaaa", "");
        assert_eq!(plan(Some(&never_rotated), None), Plan::Keep);
        assert_eq!(plan(Some(&never_rotated), Some("")), Plan::Keep);
        assert_eq!(
            plan(Some(&never_rotated), Some("2026-12")),
            Plan::Rotate {
                current: b"aaaa".to_vec()
            }
        );
        let rotated = stored(b"bbbb", "2026-12");
        assert_eq!(plan(Some(&rotated), Some("2026-12")), Plan::Keep);
        // Removing the annotation does not rotate back.
        assert_eq!(plan(Some(&rotated), None), Plan::Keep);
        let mut emptied = rotated.clone();
        emptied.data = Some(BTreeMap::new());
        assert_eq!(plan(Some(&emptied), None), Plan::Create);
        assert_ne!(revision(&never_rotated), revision(&rotated));
    }

    #[test]
    fn the_secret_is_owned_and_holds_a_header_safe_random_token_under_both_keys() {
        let cluster = validate::validate(&fixtures::minimal()).expect("valid");
        let (first, second) = (generate().expect("random"), generate().expect("random"));
        assert_ne!(first, second);
        assert_eq!(first.len(), 2 * TOKEN_BYTES);
        assert!(first.iter().all(u8::is_ascii_hexdigit));
        let built = secret(&cluster, second.clone(), first.clone(), None);
        assert_eq!(
            built.metadata.name.as_deref(),
            Some(cluster.node.peer_token_secret.as_str()),
            "the pods read the Secret the operator writes"
        );
        assert_eq!(
            built.metadata.owner_references,
            Some(vec![cluster.owner.clone()])
        );
        let data = built.data.expect("data");
        assert_eq!(data[PEER_TOKEN_KEY].0, second);
        assert_eq!(data[PEER_TOKEN_PREVIOUS_KEY].0, first);
    }
}
