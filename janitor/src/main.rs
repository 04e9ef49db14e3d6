//! `janitor`: one sweep of the shared volume per CronJob firing. Events go to stderr as they
//! happen, one JSON summary line to stdout at the end; the exit code is non-zero on any error
//! so that the Job fails and the CacheCluster shows it.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use janitor::{Args, sweep};

fn main() -> ExitCode {
    let config = match Args::parse().into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("janitor: {error}");
            return ExitCode::from(2);
        }
    };
    let mut stderr = std::io::stderr();
    // One `write` per line: stderr is unbuffered and lines must not interleave with another
    // process's on a shared log stream. A log line that cannot be written is dropped.
    let summary = sweep(&config, &mut |event| {
        let _ = stderr.write_all(format!("janitor: {event}\n").as_bytes());
    });
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("janitor: cannot encode the summary: {error}");
            return ExitCode::FAILURE;
        }
    }
    if summary.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
