//! Service names for the host: while the demo runs, `/etc/hosts` maps each published
//! Service's cluster DNS name (`<name>.<ns>.svc.cluster.local`) to its ClusterIP, which
//! kube-proxy routes, so that `curl http://demo.default.svc.cluster.local:8080/...` works from
//! the host's shell as it does from a pod. The host's resolver knows nothing of the cluster
//! DNS (and Debian's curl has no `--dns-servers`), so this is the one way a name reaches it.
//!
//! Every line carries a marker naming this process; the lines are removed when the entries
//! are dropped, and by the signal handler on Ctrl-C (a registered cleanup). The file is
//! rewritten in place rather than replaced, because in a container `/etc/hosts` is often a
//! bind mount that cannot be renamed over.

use std::net::IpAddr;
use std::path::Path;

use crate::control_plane::process::{forget_cleanup, register_cleanup};
use crate::control_plane::{Error, Result};

const HOSTS: &str = "/etc/hosts";

/// Lines added to `/etc/hosts`, removed on drop.
#[derive(Debug)]
pub struct HostEntries {
    marker: String,
}

impl HostEntries {
    /// Adds `ip name` for each entry.
    ///
    /// # Errors
    /// When `/etc/hosts` cannot be read or written.
    pub fn add(entries: &[(IpAddr, String)]) -> Result<Self> {
        let marker = format!("# tidecache-demo-{}", std::process::id());
        let current = read()?;
        let mut text = without(&current, &marker);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for (ip, name) in entries {
            text.push_str(&format!("{ip} {name} {marker}\n"));
        }
        let key = format!("0-hosts-{}", std::process::id());
        // What the signal handler runs: the same filtering, in place. Only lines ending in
        // this marker go (pid 12's must not match pid 123's); the file is rewritten only from
        // a complete filtered copy (grep exits 1 when no line is left, still complete).
        let script = format!(
            "t=$(mktemp) || exit 1; grep -v -e ' {marker}$' {HOSTS} > \"$t\"; \
             [ $? -le 1 ] && cat \"$t\" > {HOSTS}; rm -f \"$t\""
        );
        register_cleanup(&key, "sh", &["-c", &script]);
        write(&text)?;
        Ok(Self { marker })
    }
}

impl Drop for HostEntries {
    fn drop(&mut self) {
        if let Ok(current) = read() {
            let _ = write(&without(&current, &self.marker));
        }
        forget_cleanup(&format!("0-hosts-{}", std::process::id()));
    }
}

/// `text` without the lines carrying `marker`.
fn without(text: &str, marker: &str) -> String {
    text.lines()
        .filter(|line| !line.ends_with(&format!(" {marker}")))
        .map(|line| format!("{line}\n"))
        .collect()
}

fn read() -> Result<String> {
    std::fs::read_to_string(HOSTS).map_err(|e| Error::io(format!("reading {HOSTS}"), e))
}

/// Truncates and rewrites the file (same inode).
fn write(text: &str) -> Result<()> {
    std::fs::write(Path::new(HOSTS), text).map_err(|e| Error::io(format!("writing {HOSTS}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marked_lines_go() {
        let text = "127.0.0.1 localhost\n10.96.0.5 demo.default.svc.cluster.local # tidecache-demo-7\n::1 ip6\n";
        assert_eq!(
            without(text, "# tidecache-demo-7"),
            "127.0.0.1 localhost\n::1 ip6\n"
        );
        assert_eq!(without(text, "# tidecache-demo-8"), text);
        assert_eq!(
            without(text, "# tidecache-demo-"),
            text,
            "another pid's marker"
        );
    }
}
