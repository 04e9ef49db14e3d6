//! The kube-apiserver's audit log: which requests a user under test (the operator's
//! ServiceAccount) made, as the apiserver itself recorded them. A test that claims "the
//! operator writes nothing" or "only one replica writes" reads it here instead of
//! trusting the operator's own metrics or resourceVersions.
//!
//! The policy logs the chosen users' requests at `Metadata` level (verb, object, user,
//! timestamps; no bodies) once each, when the response is complete, and nothing else.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Error, Result};

/// The verbs that change something.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// The `user.extra` key under which the apiserver records the pod a bound
/// ServiceAccount token belongs to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// The audit policy for `users`: their requests at `Metadata` level, at the
/// `ResponseComplete` (or `Panic`) stage only; everyone else's not at all.
pub fn policy(users: &[String]) -> String {
    let users = users
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: audit.k8s.io/v1\n\
         kind: Policy\n\
         omitStages: [\"RequestReceived\", \"ResponseStarted\"]\n\
         rules:\n\
         \x20 - level: Metadata\n\
         \x20   users: [{users}]\n\
         \x20 - level: None\n"
    )
}

/// One audited request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub verb: String,
    #[serde(default)]
    pub request_uri: String,
    pub user: AuditUser,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    /// When the apiserver received the request (microsecond precision).
    #[serde(deserialize_with = "rfc3339")]
    pub request_received_timestamp: DateTime<Utc>,
    /// When the response was complete.
    #[serde(deserialize_with = "rfc3339")]
    pub stage_timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditUser {
    pub username: String,
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    pub code: u16,
}

impl AuditEvent {
    /// Whether the request asked to change something (whether or not it succeeded).
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// The pod whose bound token made the request, if any.
    pub fn pod(&self) -> Option<&str> {
        self.user
            .extra
            .get(POD_NAME_EXTRA)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The object, as `group/resource[/subresource] namespace/name`.
    pub fn object(&self) -> String {
        let Some(o) = &self.object_ref else {
            return self.request_uri.clone();
        };
        let mut resource = if o.api_group.is_empty() {
            o.resource.clone()
        } else {
            format!("{}.{}", o.resource, o.api_group)
        };
        if !o.subresource.is_empty() {
            resource = format!("{resource}/{}", o.subresource);
        }
        format!("{resource} {}/{}", o.namespace, o.name)
    }

    /// Whether it is about `resource` of `api_group` named `namespace/name`.
    pub fn is_about(&self, api_group: &str, resource: &str, namespace: &str, name: &str) -> bool {
        self.object_ref.as_ref().is_some_and(|o| {
            o.api_group == api_group
                && o.resource == resource
                && o.namespace == namespace
                && o.name == name
        })
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} by {}{} -> {}",
            self.request_received_timestamp.format("%H:%M:%S%.6f"),
            self.verb,
            self.object(),
            self.user.username,
            self.pod()
                .map(|p| format!(" (pod {p})"))
                .unwrap_or_default(),
            self.response_status
                .as_ref()
                .map_or_else(|| "?".to_owned(), |s| s.code.to_string())
        )
    }
}

/// The workspace's chrono has no serde feature; the timestamps are RFC 3339.
fn rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

/// Every event in the log at `path`, oldest first. A line being written at the moment
/// of reading (the last one, without its newline) is left for the next read.
pub fn read(path: &Path) -> Result<Vec<AuditEvent>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading the audit log {}", path.display()), e))?;
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut events = complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<AuditEvent>(line).map_err(|e| {
                Error::io(
                    format!("parsing an audit event of {}: {line}", path.display()),
                    std::io::Error::other(e),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    events.sort_by_key(|e| e.request_received_timestamp);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_apiserver_event() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/default/statefulsets/demo?fieldManager=tidecache-operator\u0026force=true","verb":"patch","user":{"username":"system:serviceaccount:tidecache-system:tidecache-operator","uid":"u","groups":["system:serviceaccounts"],"extra":{"authentication.kubernetes.io/pod-name":["tidecache-operator-abc-1"],"authentication.kubernetes.io/pod-uid":["p"]}},"sourceIPs":["10.0.0.2"],"userAgent":"operator","objectRef":{"resource":"statefulsets","namespace":"default","name":"demo","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-01T20:00:00.123456Z","stageTimestamp":"2026-12-01T20:00:00.130000Z"}"#;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        // The second line is still being written: no newline yet.
        std::fs::write(&path, format!("{line}\n{{\"kind\":\"Ev")).expect("write");
        let events = read(&path).expect("parsed");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert!(e.is_write());
        assert_eq!(e.pod(), Some("tidecache-operator-abc-1"));
        assert!(e.is_about("apps", "statefulsets", "default", "demo"));
        assert_eq!(e.object(), "statefulsets.apps default/demo");
        assert_eq!(
            e.to_string(),
            "20:00:00.123456 patch statefulsets.apps default/demo by \
             system:serviceaccount:tidecache-system:tidecache-operator \
             (pod tidecache-operator-abc-1) -> 200"
        );
    }

    #[test]
    fn policy_names_the_users() {
        let p = policy(&["system:serviceaccount:a:b".into()]);
        assert!(p.contains("users: [\"system:serviceaccount:a:b\"]"), "{p}");
        assert!(p.ends_with("  - level: None\n"), "{p}");
    }
}
