//! The `RuntimeDefault` seccomp profile: the one CRI-O and Podman apply, from Debian's
//! `containers-common` (installed with buildah), turned into the OCI runtime spec's
//! `linux.seccomp` for one container, as those runtimes do: a rule that names
//! capabilities or architectures applies only where the container has them.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::control_plane::{Error, Result};

/// Where `containers-common` installs the default profile.
pub const PROFILE: &str = "/usr/share/containers/seccomp.json";

/// The profile file's format (Moby's, which containers-common shares; any list may be
/// `null`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Option<Vec<String>>,
    action: String,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
}

impl Filter {
    fn caps(filter: Option<&Self>) -> &[String] {
        filter.and_then(|f| f.caps.as_deref()).unwrap_or_default()
    }

    fn arches(filter: Option<&Self>) -> &[String] {
        filter.and_then(|f| f.arches.as_deref()).unwrap_or_default()
    }
}

/// This machine's architecture as libseccomp names it (the profile's `includes.arches`
/// use Go's names, `amd64`, `arm64`, ...).
fn native() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("SCMP_ARCH_AARCH64", "arm64"),
        _ => ("SCMP_ARCH_X86_64", "amd64"),
    }
}

/// Reads [`PROFILE`] and renders it for a container whose bounding set is `caps`.
pub fn runtime_default(caps: &BTreeSet<String>) -> Result<Value> {
    let path = Path::new(PROFILE);
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::io(
            format!(
                "reading the RuntimeDefault seccomp profile {PROFILE} \
                 (apt-get install containers-common)"
            ),
            e,
        )
    })?;
    let profile: Profile = serde_json::from_str(&text).map_err(|e| {
        Error::io(
            format!("parsing {PROFILE}"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    Ok(render(&profile, caps))
}

fn render(profile: &Profile, caps: &BTreeSet<String>) -> Value {
    let (arch, go_arch) = native();
    let architectures: Vec<&str> = profile
        .arch_map
        .iter()
        .flatten()
        .filter(|m| m.architecture == arch)
        .flat_map(|m| {
            std::iter::once(m.architecture.as_str())
                .chain(m.sub_architectures.iter().flatten().map(String::as_str))
        })
        .collect();
    let applies = |rule: &Rule| {
        let (includes, excludes) = (rule.includes.as_ref(), rule.excludes.as_ref());
        Filter::caps(includes).iter().all(|c| caps.contains(c))
            && (Filter::arches(includes).is_empty()
                || Filter::arches(includes).iter().any(|a| a == go_arch))
            && !Filter::caps(excludes).iter().any(|c| caps.contains(c))
            && !Filter::arches(excludes).iter().any(|a| a == go_arch)
    };
    let syscalls: Vec<Value> = profile
        .syscalls
        .iter()
        .flatten()
        .filter(|r| applies(r) && r.names.as_ref().is_some_and(|n| !n.is_empty()))
        .map(|r| {
            let mut rule = json!({"names": r.names, "action": r.action});
            if let Some(args) = r.args.as_ref().filter(|a| !a.is_empty()) {
                rule["args"] = json!(args);
            }
            if let Some(errno) = r.errno_ret {
                rule["errnoRet"] = json!(errno);
            }
            rule
        })
        .collect();
    let mut out = json!({
        "defaultAction": profile.default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile.default_errno_ret {
        out["defaultErrnoRet"] = json!(errno);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            ],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}},
                {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            ],
        }))
        .expect("profile")
    }

    fn names(rendered: &Value) -> Vec<String> {
        rendered["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn rules_follow_the_containers_capabilities() {
        let none = render(&profile(), &BTreeSet::new());
        let names_none = names(&none);
        assert!(names_none.contains(&"read".to_owned()));
        assert!(
            !names_none.contains(&"ptrace".to_owned()),
            "needs CAP_SYS_PTRACE"
        );
        assert!(
            names_none.contains(&"chroot".to_owned()),
            "denied without the cap"
        );
        assert_eq!(none["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(none["defaultErrnoRet"], 38);

        let caps = BTreeSet::from(["CAP_SYS_PTRACE".to_owned(), "CAP_SYS_CHROOT".to_owned()]);
        let with = names(&render(&profile(), &caps));
        assert!(with.contains(&"ptrace".to_owned()));
        assert!(!with.contains(&"chroot".to_owned()), "excluded by the cap");
    }

    #[test]
    fn architectures_and_arguments_carry_over() {
        let rendered = render(&profile(), &BTreeSet::new());
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                rendered["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
            );
            assert!(names(&rendered).contains(&"arch_prctl".to_owned()));
        }
        let personality = rendered["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["names"] == json!(["personality"]))
            .cloned()
            .unwrap_or_default();
        assert_eq!(personality["args"][0]["op"], "SCMP_CMP_EQ");
    }

    #[test]
    fn the_installed_profile_parses() {
        // containers-common comes with buildah, which CI installs for the images.
        let rendered = runtime_default(&BTreeSet::new()).expect("the installed profile");
        assert!(names(&rendered).contains(&"openat".to_owned()));
    }
}
