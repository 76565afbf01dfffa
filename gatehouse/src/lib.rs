//! What Gatehouse's two binaries share: the runtime they run on, with logging and telemetry,
//! and `standalone`, the one place both planes meet in one process.
//!
//! Neither plane's library depends on the other: the control plane serves an in-process link
//! ([`gatehouse_shared::link`]) as it serves a socket, and the data plane follows whatever it
//! is given. Only this crate puts them together.

use std::future::Future;
use std::time::Duration;

use gatehouse_control_plane::config::Config;
use gatehouse_shared::telemetry::Settings;

/// Runs a binary's `main` work on a multi-threaded runtime with logging and telemetry set up
/// inside it (the OTLP exporters run on it), the proxy's tracer installed when traces are on;
/// spans still buffered are exported before it returns.
///
/// `workers` sets the runtime's threads (`None`: one per core); `TOKIO_WORKER_THREADS`, when
/// set, wins.
///
/// # Errors
/// The runtime or the exporter cannot be built, or `main` fails.
pub fn run_main(
    log_level: &str,
    log_json: bool,
    telemetry: &Settings,
    workers: Option<usize>,
    main: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers.filter(|_| std::env::var_os("TOKIO_WORKER_THREADS").is_none()) {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build()?;
    let telemetry = {
        let _entered = runtime.enter();
        gatehouse_shared::telemetry::init(log_level, log_json, telemetry)?
    };
    if let Some((tracer, ratio)) = telemetry.proxy.clone() {
        gatehouse_data_plane::trace::install(tracer, ratio);
    }
    let result = runtime.block_on(main);
    runtime.block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await })?;
    result
}

/// The control plane and a data plane in one process (`gatehouse-cp standalone`). The data
/// plane follows the control plane through the same sync session as a remote one, over an
/// in-process link: no socket carries the configuration, so no other local user can read it.
/// A cluster listener for further data planes is opened only when `cluster_listen` is set,
/// and then exactly as `run` opens it (with the configured mTLS).
///
/// # Errors
/// Start-up failures of either plane.
pub async fn standalone(mut config: Config, mut dp_config: gatehouse_data_plane::config::Config) -> anyhow::Result<()> {
    if !config.cluster_listen_explicit {
        config.cluster_listen = None;
    }
    let (link, accepted) = gatehouse_shared::link::link();
    let cp = gatehouse_control_plane::start_with(config, Some(accepted)).await?;
    dp_config.control_plane = "in-process".to_owned();
    dp_config.link = Some(link);
    dp_config.backoff_max = dp_config.backoff_max.min(Duration::from_secs(2));
    let dp = gatehouse_data_plane::start(dp_config).await?;
    gatehouse_shared::process::shutdown_signal().await;
    dp.stop().await;
    cp.stop().await;
    Ok(())
}
