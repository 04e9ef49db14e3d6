//! Kubeconfig files for the admin and for the components. Certificates are referenced by
//! path (they live next to the kubeconfig in the control plane's temp dir), which keeps
//! the files readable when debugging a failed test.

use std::path::{Path, PathBuf};

use super::certs::CertFiles;
use super::error::{Error, Result};

/// Writes a kubeconfig with one cluster, user and context to `path`; `user` is a plain
/// identifier used for the entry names (the identity itself is the client certificate).
pub(crate) fn write(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &'static str,
    client: &CertFiles,
) -> Result<PathBuf> {
    // JSON strings are valid YAML scalars, and serde_json escapes whatever a temp path
    // may contain.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let path_str = |p: &Path| quote(&p.to_string_lossy());
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
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: {user}@tidecache-e2e
  context:
    cluster: tidecache-e2e
    user: {user}
current-context: {user}@tidecache-e2e
",
        server = quote(server),
        ca = path_str(ca),
        cert = path_str(&client.cert),
        key = path_str(&client.key),
    );
    std::fs::write(path, contents)
        .map_err(|e| Error::io(format!("writing kubeconfig {}", path.display()), e))?;
    Ok(path.to_owned())
}
