//! Kubeconfig files for the admin and for the components. Certificates are referenced by
//! path (they live next to the kubeconfig in the control plane's temp dir), which keeps
//! the files readable when debugging a failed test.

use std::path::{Path, PathBuf};

use super::certs::CertFiles;
use super::error::{Error, Result};

/// How the kubeconfig's user authenticates.
pub(crate) enum Credentials<'a> {
    /// A client certificate: the components and the admin.
    Certificate(&'a CertFiles),
    /// A bearer token, e.g. a ServiceAccount's from the TokenRequest API.
    Token(&'a str),
}

/// Writes a kubeconfig with one cluster, user and context to `path`; `user` is a plain
/// identifier used for the entry names (the identity itself is in the credentials).
pub(crate) fn write(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    credentials: Credentials<'_>,
) -> Result<PathBuf> {
    // JSON strings are valid YAML scalars, and serde_json escapes whatever a temp path
    // may contain.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let path_str = |p: &Path| quote(&p.to_string_lossy());
    let user_fields = match credentials {
        Credentials::Certificate(client) => format!(
            "client-certificate: {}\n    client-key: {}",
            path_str(&client.cert),
            path_str(&client.key)
        ),
        Credentials::Token(token) => format!("token: {}", quote(token)),
    };
    let contents = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: tidecache-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    {user_fields}
contexts:
- name: {user}@tidecache-e2e
  context:
    cluster: tidecache-e2e
    user: {user}
current-context: {user}@tidecache-e2e
",
        server = quote(server),
        ca = path_str(ca),
    );
    std::fs::write(path, contents)
        .map_err(|e| Error::io(format!("writing kubeconfig {}", path.display()), e))?;
    Ok(path.to_owned())
}
