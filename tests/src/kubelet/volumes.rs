//! A pod's volumes and environment, made from its spec as a kubelet would: PVCs are
//! host directories (one per claim, shared by every pod that mounts it, through the
//! hostPath PersistentVolume the provisioner bound to it), emptyDirs are directories
//! of the pod, configMap/secret/downwardAPI/projected volumes are files written once
//! at start (the service-account token minted with the TokenRequest API, bound to the
//! pod). Environment variables resolve `value`, `valueFrom` and `envFrom`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::control_plane::{Error, Result};

/// Resolves volumes and env for one pod.
pub struct Materializer<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    /// The pod's IP (for `status.podIP`).
    pub pod_ip: &'a str,
    /// The node's IP (for `status.hostIP`).
    pub host_ip: &'a str,
    /// The pod's scratch directory.
    pub dir: &'a Path,
}

impl Materializer<'_> {
    fn namespace(&self) -> String {
        self.pod.namespace().unwrap_or_default()
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.pod.name_any())
    }

    fn unsupported(&self, what: String) -> Error {
        Error::Unsupported {
            pod: self.key(),
            what,
        }
    }

    /// The host directory (or file) of every volume, by volume name.
    pub async fn volumes(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        let volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for volume in &volumes {
            let path = self.volume(volume).await?;
            out.insert(volume.name.clone(), path);
        }
        Ok(out)
    }

    async fn volume(&self, v: &Volume) -> Result<PathBuf> {
        let dir = self.dir.join("volumes").join(&v.name);
        let create = |d: &Path| {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))
        };
        if let Some(claim) = &v.persistent_volume_claim {
            return self.claim_dir(&claim.claim_name).await;
        }
        if let Some(host) = &v.host_path {
            return Ok(PathBuf::from(&host.path));
        }
        create(&dir)?;
        if v.empty_dir.is_some() {
            // World-writable, as a kubelet makes it: any container user may write there.
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .map_err(|e| Error::io(format!("opening up {}", dir.display()), e))?;
            return Ok(dir);
        }
        if let Some(cm) = &v.config_map {
            self.write_config_map(&dir, &cm.name, cm.items.as_deref(), cm.optional)
                .await?;
            return Ok(dir);
        }
        if let Some(secret) = &v.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            self.write_secret(&dir, &name, secret.items.as_deref(), secret.optional)
                .await?;
            return Ok(dir);
        }
        if let Some(downward) = &v.downward_api {
            self.write_downward(&dir, downward.items.as_deref().unwrap_or_default())?;
            return Ok(dir);
        }
        if let Some(projected) = &v.projected {
            for source in projected.sources.as_deref().unwrap_or_default() {
                if let Some(token) = &source.service_account_token {
                    let jwt = self
                        .token(token.audience.clone(), token.expiration_seconds)
                        .await?;
                    write_file(&dir.join(&token.path), jwt.as_bytes())?;
                }
                if let Some(cm) = &source.config_map {
                    self.write_config_map(&dir, &cm.name, cm.items.as_deref(), cm.optional)
                        .await?;
                }
                if let Some(secret) = &source.secret {
                    self.write_secret(&dir, &secret.name, secret.items.as_deref(), secret.optional)
                        .await?;
                }
                if let Some(downward) = &source.downward_api {
                    self.write_downward(&dir, downward.items.as_deref().unwrap_or_default())?;
                }
            }
            return Ok(dir);
        }
        Err(self.unsupported(format!("volume {} of an unsupported type", v.name)))
    }

    /// The hostPath of the PersistentVolume bound to the claim.
    async fn claim_dir(&self, claim: &str) -> Result<PathBuf> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace());
        let pvc = claims
            .get(claim)
            .await
            .map_err(|e| Error::api(format!("reading PVC {claim}"), e))?;
        let volume = pvc
            .spec
            .and_then(|s| s.volume_name)
            .ok_or_else(|| self.unsupported(format!("PVC {claim} is not bound yet")))?;
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get(&volume)
            .await
            .map_err(|e| Error::api(format!("reading PV {volume}"), e))?;
        pv.spec
            .and_then(|s| s.host_path)
            .map(|h| PathBuf::from(h.path))
            .ok_or_else(|| self.unsupported(format!("PV {volume} is not a hostPath volume")))
    }

    async fn write_config_map(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
    ) -> Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace());
        let Some(cm) = api
            .get_opt(name)
            .await
            .map_err(|e| Error::api(format!("reading ConfigMap {name}"), e))?
        else {
            return self.missing("ConfigMap", name, optional);
        };
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        write_items(dir, &data, items)
    }

    async fn write_secret(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
    ) -> Result<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace());
        let Some(secret) = api
            .get_opt(name)
            .await
            .map_err(|e| Error::api(format!("reading Secret {name}"), e))?
        else {
            return self.missing("Secret", name, optional);
        };
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        write_items(dir, &data, items)
    }

    fn missing(&self, kind: &str, name: &str, optional: Option<bool>) -> Result<()> {
        if optional == Some(true) {
            Ok(())
        } else {
            Err(self.unsupported(format!("{kind} {name} does not exist")))
        }
    }

    fn write_downward(&self, dir: &Path, items: &[DownwardAPIVolumeFile]) -> Result<()> {
        for item in items {
            let value = match &item.field_ref {
                Some(f) => self.field(&f.field_path)?,
                None => {
                    return Err(self.unsupported(format!(
                        "downwardAPI item {} without a fieldRef",
                        item.path
                    )));
                }
            };
            write_file(&dir.join(&item.path), value.as_bytes())?;
        }
        Ok(())
    }

    /// A token for the pod's ServiceAccount, bound to the pod, as the kubelet mints it.
    async fn token(&self, audience: Option<String>, seconds: Option<i64>) -> Result<String> {
        let spec = self.pod.spec.as_ref();
        let account = spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.into_iter().collect(),
                expiration_seconds: seconds,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod.name_any()),
                    uid: self.pod.uid(),
                }),
            },
            ..TokenRequest::default()
        };
        let response = api
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::api(format!("minting a token for ServiceAccount {account}"), e))?;
        Ok(response.status.map(|s| s.token).unwrap_or_default())
    }

    /// The value of a downward-API field path.
    fn field(&self, path: &str) -> Result<String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let label_or_annotation = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix("']"))
                .map(|key| {
                    map.as_ref()
                        .and_then(|m| m.get(key))
                        .cloned()
                        .unwrap_or_default()
                })
        };
        Ok(match path {
            "metadata.name" => self.pod.name_any(),
            "metadata.namespace" => self.namespace(),
            "metadata.uid" => self.pod.uid().unwrap_or_default(),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" => self.pod_ip.to_owned(),
            "status.podIPs" => self.pod_ip.to_owned(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.to_owned(),
            _ => {
                if let Some(v) = label_or_annotation("metadata.labels['", &meta.labels) {
                    v
                } else if let Some(v) =
                    label_or_annotation("metadata.annotations['", &meta.annotations)
                {
                    v
                } else {
                    return Err(self.unsupported(format!("fieldRef {path}")));
                }
            }
        })
    }

    /// The container's environment: the service variables for the apiserver, then
    /// `envFrom`, then `env` (later wins, `$(VAR)` expanded as Kubernetes does).
    pub async fn env(
        &self,
        container: &Container,
        apiserver: (&str, u16),
    ) -> Result<Vec<(String, String)>> {
        let (host, port) = apiserver;
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), self.pod.name_any()),
            ("KUBERNETES_SERVICE_HOST".into(), host.into()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
            ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
        ];
        let ns = self.namespace();
        for from in container.env_from.as_deref().unwrap_or_default() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(cm) = &from.config_map_ref {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .get_opt(&cm.name)
                    .await
                    .map_err(|e| Error::api(format!("reading ConfigMap {}", cm.name), e))?
                {
                    Some(found) => env.extend(
                        found
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (format!("{prefix}{k}"), v)),
                    ),
                    None => self.missing("ConfigMap", &cm.name, cm.optional)?,
                }
            }
            if let Some(s) = &from.secret_ref {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .get_opt(&s.name)
                    .await
                    .map_err(|e| Error::api(format!("reading Secret {}", s.name), e))?
                {
                    Some(found) => {
                        env.extend(found.data.unwrap_or_default().into_iter().map(|(k, v)| {
                            (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into())
                        }))
                    }
                    None => self.missing("Secret", &s.name, s.optional)?,
                }
            }
        }
        for var in container.env.as_deref().unwrap_or_default() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => Some(expand(v, &env)),
                (None, Some(from)) => {
                    if let Some(f) = &from.field_ref {
                        Some(self.field(&f.field_path)?)
                    } else if let Some(s) = &from.secret_key_ref {
                        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                        let secret = api
                            .get_opt(&s.name)
                            .await
                            .map_err(|e| Error::api(format!("reading Secret {}", s.name), e))?;
                        let value = secret.and_then(|x| x.data).and_then(|d| {
                            d.get(&s.key).map(|b| String::from_utf8_lossy(&b.0).into())
                        });
                        if value.is_none() && s.optional != Some(true) {
                            return Err(self.unsupported(format!(
                                "env {}: key {} of Secret {} does not exist",
                                var.name, s.key, s.name
                            )));
                        }
                        value
                    } else if let Some(c) = &from.config_map_key_ref {
                        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                        let cm = api
                            .get_opt(&c.name)
                            .await
                            .map_err(|e| Error::api(format!("reading ConfigMap {}", c.name), e))?;
                        let value = cm.and_then(|x| x.data).and_then(|d| d.get(&c.key).cloned());
                        if value.is_none() && c.optional != Some(true) {
                            return Err(self.unsupported(format!(
                                "env {}: key {} of ConfigMap {} does not exist",
                                var.name, c.key, c.name
                            )));
                        }
                        value
                    } else {
                        return Err(self.unsupported(format!(
                            "env {}: only fieldRef, secretKeyRef and configMapKeyRef are supported",
                            var.name
                        )));
                    }
                }
                (None, None) => Some(String::new()),
            };
            if let Some(value) = value {
                env.retain(|(k, _)| k != &var.name);
                env.push((var.name.clone(), value));
            }
        }
        Ok(env)
    }
}

/// Kubernetes' `$(VAR)` expansion: known variables are replaced, `$$` is a literal `$`,
/// anything else is left as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Result<()> {
    match items {
        Some(items) => {
            for item in items {
                if let Some(bytes) = data.get(&item.key) {
                    write_file(&dir.join(&item.path), bytes)?;
                }
            }
        }
        None => {
            for (key, bytes) in data {
                write_file(&dir.join(key), bytes)?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vec![("A".to_owned(), "x".to_owned())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }
}
