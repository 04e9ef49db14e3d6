//! The `cache-node` binary: flags and logging, then [`cache_node::serve`].

use std::process::ExitCode;

use cache_node::{Config, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: every request allocates its keys and values
/// and every overwrite frees the old ones, and glibc's malloc, free and consolidation took
/// a fifth of cache-node's CPU time under `redis-benchmark` MSET.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    let shutdown = match cache_node::shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            tracing::error!(%error, "cannot install the SIGTERM/SIGINT handlers");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, listen = %settings.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match cache_node::serve(settings, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `RUST_LOG` (default `info`), as text or JSON lines.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
