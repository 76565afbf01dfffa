//! The Gatehouse control plane: Kong 0.14's Admin API over a Postgres or SQLite store whose
//! every write is recorded in a change log, for data planes to follow.
//!
//! The `gatehouse` crate's `gatehouse-cp` parses the command line and calls [`run`] or
//! [`migrations`]; everything else is here so that tests can drive the same code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod config;
pub mod config_cli;
pub mod declarative;
pub mod expiry;
pub mod metrics;
pub mod server;
pub mod store;
pub mod sync;
pub mod tls;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::admin::{Admin, Node};
use crate::config::Config;
use crate::store::{Dialect, Store};

/// Opens the store, applying migrations when embedded (SQLite) and refusing to start on a
/// Postgres with pending ones, as Kong does.
///
/// # Errors
/// Connection or migration failures.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("cannot open database {}", config::redact(&config.database_url)))?;
    match store.dialect() {
        Dialect::Sqlite => {
            store.migrate_up().await.context("cannot migrate the SQLite database")?;
        }
        Dialect::Postgres => {
            let status = store.migration_status().await.context("cannot read migration status")?;
            if !status.pending.is_empty() {
                anyhow::bail!(
                    "the database has {} pending migration(s) ({}): run `gatehouse-cp migrations up` first",
                    status.pending.len(),
                    status.pending.join(", ")
                );
            }
        }
    }
    Ok(store)
}

/// Runs the control plane until SIGTERM/SIGINT.
///
/// # Errors
/// Start-up failures (store, listeners, TLS material).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let cp = start(config).await?;
    server::shutdown_signal().await;
    cp.stop().await;
    Ok(())
}

/// A running control plane.
pub struct Started {
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// Where the cluster listener is bound.
    pub cluster_addr: Option<std::net::SocketAddr>,
}

impl Started {
    pub async fn stop(self) {
        tracing::info!("control plane shutting down");
        let _ = self.stop.send(true);
        let drained = async {
            for s in self.servers {
                let _ = s.await;
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(15), drained).await.is_err() {
            tracing::warn!("listeners did not stop in time");
        }
    }
}

/// Opens the store and binds every listener.
///
/// # Errors
/// Start-up failures (store, listeners, TLS material).
pub async fn start(config: Config) -> anyhow::Result<Started> {
    start_with(config, None).await
}

/// [`start`], also serving an embedded data plane's in-process link when there is one.
///
/// # Errors
/// Start-up failures (store, listeners, TLS material).
pub async fn start_with(config: Config, embedded: Option<gatehouse_shared::link::Accepted>) -> anyhow::Result<Started> {
    config.check_admin_exposure().map_err(anyhow::Error::msg)?;
    let store = open_store(&config).await?;
    admin::set_strategy(store.dialect().name());
    let cluster_id = store.cluster_id().await?;
    tracing::info!(%cluster_id, backend = store.dialect().name(), "store ready");
    let node = Arc::new(Node {
        node_id: uuid::Uuid::new_v4().to_string(),
        hostname: gatehouse_shared::process::hostname(),
        configuration: config.to_json(),
        stale_after: config.sync.stale_after,
        server_header: config.headers.server,
        header_timeout: config.client_header_timeout,
        security: config.admin_security.clone(),
        max_connections: config.admin_max_connections,
        counters: Default::default(),
        metrics: Default::default(),
    });
    let admin = Admin { store: store.clone(), node: node.clone() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut exporter = None;
    if let Some(endpoint) = config.telemetry.endpoint.clone() {
        let admin = admin.clone();
        let export = gatehouse_shared::otlp_metrics::export_loop_async(
            endpoint,
            config.telemetry.service_name.clone(),
            config.telemetry.metrics_interval,
            move || {
                let admin = admin.clone();
                async move { admin::metrics_text(&admin).await }
            },
        );
        exporter = Some(tokio::spawn(gatehouse_shared::otlp_metrics::until_stopped(export, stop_rx.clone())));
    }
    let service = admin::service(admin);
    let mut servers: Vec<_> = exporter.into_iter().collect();
    let mut cluster_addr = None;
    if config.cluster_listen.is_some() || embedded.is_some() {
        let tail =
            sync::Tail::start(store.clone(), config.database_url.clone(), config.sync.clone(), stop_rx.clone()).await;
        let server = sync::SyncServer::new(store.clone(), tail, &config.sync, cluster_id.clone(), node.node_id.clone());
        if let Some(addr) = config.cluster_listen {
            let mut tls = config.cluster_tls.clone();
            if tls.mode == sync::MtlsMode::Shared && tls.cert.is_none() {
                tls = default_cluster_cert(&config, tls)?;
            }
            let (bound, fut) = server
                .listen(addr, &tls, stop_rx.clone())
                .await
                .with_context(|| format!("cannot start the cluster listener on {addr} (cluster_listen)"))?;
            cluster_addr = Some(bound);
            servers.push(tokio::spawn(fut));
        }
        if let Some(accepted) = embedded {
            servers.push(tokio::spawn(server.in_process(accepted, stop_rx.clone())));
        }
    }
    servers.push(tokio::spawn(expiry::run(store.clone(), std::time::Duration::from_secs(60), stop_rx.clone())));
    if let Some(addr) = config.admin_listen {
        let fut = server::bind(addr, None, service.clone(), node.clone(), stop_rx.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} (admin_listen)"))?;
        servers.push(tokio::spawn(fut));
    }
    if let Some(addr) = config.admin_ssl_listen {
        let tls =
            tls::server_config(config.admin_ssl_cert.as_deref(), config.admin_ssl_cert_key.as_deref(), &config.prefix)
                .context("cannot set up the admin TLS certificate")?;
        let fut = server::bind(addr, Some(tls.into()), service.clone(), node.clone(), stop_rx.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} (admin_ssl_listen)"))?;
        servers.push(tokio::spawn(fut));
    }
    Ok(Started { stop: stop_tx, servers, cluster_addr })
}

/// Shared mode without configured files: use (creating once) a pair under the prefix, so a
/// development set-up works with no steps; data planes need a copy of these two files.
fn default_cluster_cert(config: &Config, mut tls: sync::ClusterTls) -> anyhow::Result<sync::ClusterTls> {
    let cert = config.prefix.join("cluster.crt");
    let key = config.prefix.join("cluster.key");
    if !cert.exists() || !key.exists() {
        gatehouse_shared::private_fs::create_dir(&config.prefix)
            .with_context(|| format!("cannot create {}", config.prefix.display()))?;
        sync::generate_shared_cert(&cert, &key)?;
        tracing::warn!(cert = %cert.display(), key = %key.display(), "generated a shared cluster certificate; copy it to data planes");
    }
    tls.cert = Some(cert);
    tls.key = Some(key);
    Ok(tls)
}

/// `gatehouse-cp migrations up|status`.
///
/// # Errors
/// Connection or migration failures.
pub async fn migrations(config: &Config, up: bool) -> anyhow::Result<String> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("cannot open database {}", config::redact(&config.database_url)))?;
    if up {
        let applied = store.migrate_up().await?;
        if applied.is_empty() {
            return Ok("database is up to date".to_string());
        }
        return Ok(format!("applied {} migration(s): {}", applied.len(), applied.join(", ")));
    }
    let status = store.migration_status().await?;
    let mut out = String::new();
    for m in &status.applied {
        out.push_str(&format!("applied  {m}\n"));
    }
    for m in &status.pending {
        out.push_str(&format!("pending  {m}\n"));
    }
    out.push_str(&format!("{} applied, {} pending", status.applied.len(), status.pending.len()));
    Ok(out)
}
