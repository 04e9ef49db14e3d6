//! The external tools a benchmark runs as its load or its competitor.

use std::process::{Command, Stdio};

/// Panics with the packages to install unless `tool --version` runs.
pub fn require(tool: &str, bench: &str, packages: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "the {bench} benchmark needs `{tool}`: apt-get install -y {packages}"
    );
}
