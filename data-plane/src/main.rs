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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.proxy_workers {
        builder.worker_threads(workers);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run => gatehouse_data_plane::run(config).await,
        }
    })
}
