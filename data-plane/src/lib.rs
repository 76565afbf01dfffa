//! The Gatehouse data plane. It holds no database: it follows a control plane's change stream
//! (`sync`), compiles each configuration off the request path (`compiled`), swaps it in
//! atomically (`live`) and keeps a copy on disk so it can start while the control plane is
//! away.
//!
//! Request path (arriving with the proxy work): accept (TCP/TLS+SNI) → parse → route match →
//! plugin phases (rewrite, access) → balancer → upstream request → header/body filters →
//! response → log phase off the hot path.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod balancer;
pub mod busy_poll;
pub mod codec;
pub mod compiled;
pub mod config;
pub mod credentials;
pub mod ip_net;
pub mod live;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod plugins;
pub mod proxy;
pub mod router;
pub mod row;
pub mod server;
pub mod service;
pub mod status;
pub mod sync;
pub mod tls;
pub mod trace;

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::compiled::Compiled;
use crate::config::Config;
use crate::live::Live;
use crate::sync::disk_cache::DiskCache;
use crate::sync::Identity;

/// Runs the data plane until SIGTERM/SIGINT.
///
/// # Errors
/// Start-up failures (listeners, cache directory).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = start(config).await?;
    shutdown_signal().await;
    started.stop().await;
    Ok(())
}

/// A running data plane; [`Started::stop`] drains it.
pub struct Started {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where the plain proxy listener is bound (useful when configured with port 0).
    pub proxy_addr: Option<std::net::SocketAddr>,
}

impl Started {
    pub async fn stop(self) {
        tracing::info!("data plane shutting down");
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), t).await;
        }
    }
}

/// Starts listeners and the sync client; returns once everything is bound.
///
/// # Errors
/// Start-up failures (listeners, cache directory, TLS material).
pub async fn start(config: Config) -> anyhow::Result<Started> {
    // Before anything is compiled: routes take their metric series then.
    metrics::enable(config.proxy_metrics);
    let live = Arc::new(Live::new(balancer::Registry::system()));
    let plugins: HashSet<String> = config.plugins.iter().cloned().collect();
    if let Some(source) = &config.declarative {
        // DB-less: a configuration that does not compile stops start-up.
        let set = (source.0)(1).await.context("cannot load the declarative configuration")?;
        live.balancers.prepare(&set).await;
        let compiled = Compiled::compile(Arc::new(set), &plugins, &live.balancers)
            .map_err(|e| anyhow::anyhow!("the declarative configuration cannot be served: {e}"))?;
        tracing::info!(entities = compiled.set.len(), "serving the declarative configuration");
        live.store(compiled);
    } else if let Some(set) = DiskCache::new(config.cache_dir.clone()).load() {
        // Never serve an empty configuration when a cache exists.
        live.balancers.prepare(&set).await;
        match Compiled::compile(Arc::new(set), &plugins, &live.balancers) {
            Ok(compiled) => {
                tracing::info!(revision = compiled.revision(), "serving the cached configuration");
                live.set_cached_revision(compiled.revision());
                live.store(compiled);
            }
            Err(e) => tracing::warn!(error = %e, "the cached configuration cannot be served"),
        }
    }
    tokio::spawn(balancer::Registry::refresh_loop(Arc::downgrade(&live.balancers)));
    // The cached or declarative configuration was compiled on this runtime's threads (the
    // sync client decodes and compiles on a thread of its own, `sync::spawn`).
    tokio::spawn(memory::trim());
    let identity = Identity { node_id: node_id(&config)?, hostname: hostname() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(addr) = config.status_listen {
        let fut =
            status::serve(addr, live.clone(), identity.node_id.clone(), config.client_header_timeout, stop_rx.clone())
                .await
                .with_context(|| format!("cannot listen on {addr} (status_listen)"))?;
        tasks.push(tokio::spawn(fut));
    }
    if let Some(endpoint) = config.telemetry.endpoint.clone() {
        let live = live.clone();
        let export = gatehouse_shared::otlp_metrics::export_loop(
            endpoint,
            config.telemetry.service_name.clone(),
            config.telemetry.metrics_interval,
            move || status::metrics_text(&live),
        );
        tasks.push(tokio::spawn(gatehouse_shared::otlp_metrics::until_stopped(export, stop_rx.clone())));
    }
    let proxy = Arc::new(proxy::Proxy {
        live: live.clone(),
        connector: proxy::Connector::new(),
        trusted: config.trusted_ips.clone(),
        headers: config.headers,
    });
    let mut proxy_addr = None;
    let workers = server::Workers {
        count: config.proxy_workers.unwrap_or_else(server::default_workers),
        busy_poll: config.proxy_busy_poll.then(busy_poll::Tuning::default),
    };
    if let Some(addr) = config.proxy_listen {
        let (bound, fut) = server::bind(addr, None, proxy.clone(), stop_rx.clone(), workers)
            .with_context(|| format!("cannot listen on {addr} (proxy_listen)"))?;
        proxy_addr = Some(bound);
        tasks.push(tokio::spawn(fut));
    }
    if let Some(addr) = config.proxy_ssl_listen {
        let fallback = match (&config.ssl_cert, &config.ssl_cert_key) {
            (Some(c), Some(k)) => {
                let cert = std::fs::read(c).with_context(|| format!("cannot read {}", c.display()))?;
                let key = std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?;
                tls::certified_key(&cert, &key).map_err(anyhow::Error::msg)?
            }
            _ => tls::default_certificate().map_err(anyhow::Error::msg)?,
        };
        let tls_config = server::tls_config(live.clone(), fallback).map_err(anyhow::Error::msg)?;
        let (_, fut) = server::bind(addr, Some(tls_config.into()), proxy.clone(), stop_rx.clone(), workers)
            .with_context(|| format!("cannot listen on {addr} (proxy_ssl_listen)"))?;
        tasks.push(tokio::spawn(fut));
    }
    match config.declarative.clone() {
        Some(source) => tasks.push(tokio::spawn(reload_on_sighup(source, plugins, live, stop_rx))),
        None => tasks.push(sync::spawn(config, identity, live, stop_rx).context("cannot start the sync thread")?),
    }
    Ok(Started { stop: stop_tx, tasks, proxy_addr })
}

/// A DB-less data plane builds its configuration again on SIGHUP; one that does not build or
/// compile is refused, and the one serving stays.
async fn reload_on_sighup(
    source: config::Declarative,
    plugins: HashSet<String>,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: the declarative configuration will not reload");
            return;
        }
    };
    let mut revision = 1;
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = stop.changed() => return,
        }
        revision += 1;
        let built = match (source.0)(revision).await {
            Ok(set) => {
                live.balancers.prepare(&set).await;
                Compiled::compile(Arc::new(set), &plugins, &live.balancers).map_err(|e| anyhow::anyhow!("{e}"))
            }
            Err(e) => Err(e),
        };
        match built {
            Ok(compiled) => {
                tracing::info!(revision, entities = compiled.set.len(), "declarative configuration reloaded");
                live.store(compiled);
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "declarative configuration refused; the previous one keeps serving"
            ),
        }
    }
}

/// The configured id, else one kept in the cache directory so restarts keep their identity.
fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.node_id {
        return Ok(id.clone());
    }
    let path = config.cache_dir.join("node_id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    gatehouse_shared::private_fs::create_dir(&config.cache_dir)
        .with_context(|| format!("cannot create {}", config.cache_dir.display()))?;
    gatehouse_shared::private_fs::write(&path, id.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

pub use gatehouse_shared::process::{hostname, shutdown_signal};
