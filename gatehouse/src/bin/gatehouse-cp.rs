//! `gatehouse-cp`: parses the command line, loads configuration, calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gatehouse_control_plane::config::{Config, Env};

#[derive(Parser)]
#[command(name = "gatehouse-cp", version, about = "Gatehouse control plane (Kong 0.14 Admin API)")]
struct Cli {
    /// A TOML configuration file; GATEHOUSE_* environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Admin API (and the cluster listener for data planes).
    Run,
    /// Control plane and a data plane in one process: Admin API on :8001, proxy on :8000.
    Standalone,
    /// Write a new shared cluster certificate and key for control plane ↔ data plane mTLS.
    GenCert {
        #[arg(long, default_value = "cluster.crt")]
        cert: PathBuf,
        #[arg(long, default_value = "cluster.key")]
        key: PathBuf,
    },
    /// Manage database migrations.
    Migrations {
        #[command(subcommand)]
        action: Migrations,
    },
    /// Declarative configuration (Kong's format, YAML or JSON): export, import, diff.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Write the whole configuration as a declarative document.
    Export {
        /// Write here rather than to standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// `yaml` or `json`.
        #[arg(long, default_value = "yaml")]
        format: gatehouse_control_plane::config_cli::Format,
    },
    /// Make the store hold exactly the file's configuration (one transaction, one revision;
    /// entities not in the file are deleted), after validating all of it.
    Import {
        file: PathBuf,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print what importing the file would change.
    Diff { file: PathBuf },
    /// Print, as JSON, the configuration a DB-less data plane serves from the file, after
    /// validating all of it; needs no database. `gatehouse-dp run --declarative-config` runs
    /// this, so that the data plane's own process never links the Admin API.
    Compile {
        file: PathBuf,
        /// The revision to number the configuration with.
        #[arg(long, default_value_t = 1)]
        revision: i64,
    },
}

#[derive(Subcommand)]
enum Migrations {
    /// Apply pending migrations.
    Up,
    /// List applied and pending migrations.
    Status,
}

/// mimalloc: the proxy allocates and frees small buffers on every request, and glibc's
/// allocator (with its fastbin consolidation) cost about a tenth of a request's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &Env)?;
    let (log_level, log_json, telemetry) = (config.log_level.clone(), config.log_json, config.telemetry.clone());
    let dp_config = match cli.command {
        Command::Standalone => {
            let mut dp = gatehouse_data_plane::config::Config::load(None, &gatehouse_data_plane::config::Env)?;
            if std::env::var_os("GATEHOUSE_CACHE_DIR").is_none() {
                dp.cache_dir = config.prefix.join("dp-cache");
            }
            Some(dp)
        }
        _ => None,
    };
    // The Admin API, sync and health checks; a standalone data plane's proxy workers run
    // runtimes of their own.
    gatehouse::run_main(&log_level, log_json, &telemetry, None, async move {
        match cli.command {
            Command::Run => gatehouse_control_plane::run(config).await,
            Command::Standalone => match dp_config {
                Some(dp) => gatehouse::standalone(config, dp).await,
                None => Ok(()),
            },
            Command::GenCert { cert, key } => {
                gatehouse_control_plane::sync::generate_shared_cert(&cert, &key)?;
                println!("wrote {} and {}", cert.display(), key.display());
                Ok(())
            }
            Command::Migrations { action } => {
                let out = gatehouse_control_plane::migrations(&config, matches!(action, Migrations::Up)).await?;
                println!("{out}");
                Ok(())
            }
            Command::Config { action } => {
                use gatehouse_control_plane::config_cli;
                let store = || gatehouse_control_plane::open_store(&config);
                match action {
                    ConfigAction::Export { output, format } => {
                        config_cli::export(&store().await?, output.as_deref(), format).await
                    }
                    ConfigAction::Import { file, dry_run } => config_cli::import(&store().await?, &file, dry_run).await,
                    ConfigAction::Diff { file } => config_cli::diff(&store().await?, &file).await,
                    ConfigAction::Compile { file, revision } => {
                        // One line, the reason alone: the data plane that runs this logs it.
                        if let Err(e) = config_cli::compile(&file, revision).await {
                            eprintln!("{e:#}");
                            std::process::exit(1);
                        }
                        Ok(())
                    }
                }
            }
        }
    })
}
