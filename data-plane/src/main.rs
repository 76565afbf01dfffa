//! `gatehouse-dp`: parses the command line, loads configuration, calls the library.

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
    /// Follow the control plane and serve its configuration.
    Run,
}

/// mimalloc: the proxy allocates and frees small buffers on every request, and glibc's
/// allocator (with its fastbin consolidation) cost about a tenth of a request's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &Env)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    // Sync, status and health checks; the proxy's workers run runtimes of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run => gatehouse_data_plane::run(config).await,
        }
    })
}
