//! What the benchmarks share: where results go and how progress is shown.

use std::path::PathBuf;

/// `bench-results/` at the workspace root (gitignored).
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench-results")
}

/// Writes `value` as pretty JSON to `bench-results/<name>.json` and says where.
pub fn write_results(name: &str, value: &serde_json::Value) {
    let dir = results_dir();
    let path = dir.join(format!("{name}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        )
    });
    match written {
        Ok(()) => eprintln!("results written to {}", path.display()),
        Err(error) => eprintln!("could not write {}: {error}", path.display()),
    }
}

/// A progress line on stderr.
pub fn progress(message: impl std::fmt::Display) {
    eprintln!("[bench] {message}");
}
