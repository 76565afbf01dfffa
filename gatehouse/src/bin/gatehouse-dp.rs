//! `gatehouse-dp`: parses the command line, loads configuration, calls the data-plane
//! library; with `--declarative-config`, serves a declarative file (DB-less) validated by the
//! control plane's rules, in a `gatehouse-cp` child process.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use clap::{Parser, Subcommand};
use gatehouse_data_plane::config::{Config, Env};
use gatehouse_shared::snapshot::ConfigSet;

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

/// The source of a DB-less data plane: the file, validated on every (re)load by
/// `gatehouse-cp config compile` in a child process. The Admin API's rules live in the control
/// plane's crate, with sqlx and the Admin API beside them; run here, they made the data plane's
/// binary 4.4 MB of code larger (the kernel maps a busy binary's code nearly whole: 2.5 MiB more
/// RSS) and kept the validation's high-water mark in its heap.
fn declarative(path: PathBuf) -> gatehouse_data_plane::config::Declarative {
    gatehouse_data_plane::config::Declarative(std::sync::Arc::new(move |revision| {
        let path = path.clone();
        Box::pin(async move { compile(&path, revision).await })
    }))
}

/// `gatehouse-cp` beside this binary (as the image and `cargo build` place them), else on PATH.
fn control_plane_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|me| me.with_file_name("gatehouse-cp"))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| PathBuf::from("gatehouse-cp"))
}

/// Runs `gatehouse-cp config compile --revision=N -- FILE` and reads the set it prints; the one
/// line it gives on failure (the file's first invalid entity, say) becomes this load's error.
async fn compile(path: &Path, revision: i64) -> anyhow::Result<ConfigSet> {
    let binary = control_plane_binary();
    let mut command = tokio::process::Command::new(&binary);
    // The data plane's settings are not the control plane's: the child reads none of them,
    // and logs nothing (what it writes to stderr is the reason it gives).
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GATEHOUSE_") {
            command.env_remove(key);
        }
    }
    let out = command
        .env_remove("RUST_LOG")
        .env("GATEHOUSE_LOG_LEVEL", "error")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .args(["config", "compile", &format!("--revision={revision}"), "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {} to validate the declarative file", binary.display()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        match said.trim() {
            "" => anyhow::bail!("{} {}", binary.display(), out.status),
            said => anyhow::bail!("{said}"),
        }
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{} printed no configuration", binary.display()))
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
    // Status and health checks, on one thread: the proxy's workers run runtimes of their own,
    // and the sync client a thread of its own (`sync::spawn`), where every configuration is
    // decoded, compiled and freed on one heap.
    gatehouse::run_main(&log_level, log_json, &telemetry, Some(1), gatehouse_data_plane::run(config))
}
