//! `gatehouse-dp`: parses the command line, loads configuration, calls the data-plane
//! library; with `--declarative-config`, serves a declarative file (DB-less) validated by the
//! control plane's rules.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gatehouse_data_plane::config::{Config, Env};

#[derive(Parser)]
#[command(name = "gatehouse-dp", version, about = "Gatehouse data plane")]
struct Cli {
    /// A TOML configuration file; GATEHOUSE_* environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the control plane and serve its configuration, or serve a declarative file.
    Run {
        /// Serve this declarative file (Kong's format, YAML or JSON) instead of following a
        /// control plane; SIGHUP reads it again (a file that does not validate is refused and
        /// the configuration serving stays). Also `GATEHOUSE_DECLARATIVE_CONFIG`.
        #[arg(long, env = "GATEHOUSE_DECLARATIVE_CONFIG")]
        declarative_config: Option<PathBuf>,
    },
}

/// The source of a DB-less data plane: the file, parsed and validated on every (re)load.
fn declarative(path: PathBuf) -> gatehouse_data_plane::config::Declarative {
    gatehouse_data_plane::config::Declarative(std::sync::Arc::new(move |revision| {
        let path = path.clone();
        Box::pin(async move {
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let doc = gatehouse_control_plane::declarative::parse(&text)?;
            Ok(gatehouse_control_plane::declarative::config_set(&doc, revision).await?)
        })
    }))
}

/// mimalloc: the proxy allocates and frees small buffers on every request, and glibc's
/// allocator (with its fastbin consolidation) cost about a tenth of a request's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref(), &Env)?;
    let Command::Run { declarative_config } = cli.command;
    config.declarative = declarative_config.map(declarative);
    let (log_level, log_json, telemetry) = (config.log_level.clone(), config.log_json, config.telemetry.clone());
    // Sync, status and health checks, on one thread: the proxy's workers run runtimes of their
    // own. A snapshot is decoded and compiled on that one thread's heap, where on two it left
    // both heaps with partly used pages: two data planes taking 10,000 Services + Routes peaked
    // at 109 MiB together, against 127 MiB on two threads. A full compile hands the thread's
    // other work (status, health checks) to another thread while it runs (`block_in_place`).
    gatehouse::run_main(&log_level, log_json, &telemetry, Some(1), gatehouse_data_plane::run(config))
}
