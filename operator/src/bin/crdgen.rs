//! Writes the CacheCluster CRD: to the path given as the only argument, or to stdout.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match operator::crdgen::render() {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("crdgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args().nth(1) {
        Some(path) => match std::fs::write(&path, yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("crdgen: cannot write {path}: {error}");
                ExitCode::FAILURE
            }
        },
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
    }
}
