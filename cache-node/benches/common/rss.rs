//! Resident memory of a process, for the benchmarks that compare memory per entry.

/// Resident bytes of process `pid`, from `/proc/<pid>/status` (Linux); panics naming `what`
/// when it cannot be read.
pub fn rss(pid: u32, what: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{what}: cannot read {path}: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("{what}: no VmRSS in {path}"))
}
