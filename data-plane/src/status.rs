//! The data plane's status endpoint: which revision it serves and whether it is connected.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::live::Live;

/// Status connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

#[derive(Clone)]
struct StatusState {
    live: Arc<Live>,
    node_id: Arc<str>,
}

async fn status(State(s): State<StatusState>) -> Json<Value> {
    let current = s.live.load();
    Json(json!({
        "node_id": &*s.node_id,
        "config_revision": current.set.revision,
        "config_epoch": current.set.epoch,
        // What a restart without the control plane would serve.
        "config_cache_revision": s.live.cached_revision(),
        "entities": current.set.len(),
        "control_plane_connected": s.live.connected(),
        "version": env!("CARGO_PKG_VERSION"),
        "sync": {
            "connects": s.live.counters.connects.load(Ordering::Relaxed),
            "snapshots_applied": s.live.counters.snapshots.load(Ordering::Relaxed),
            "deltas_applied": s.live.counters.deltas.load(Ordering::Relaxed),
            "nacks_sent": s.live.counters.nacks.load(Ordering::Relaxed),
            "refused": s.live.refused(),
        },
        "log_records_dropped": crate::plugins::log::DROPPED.load(Ordering::Relaxed),
    }))
}

/// The readiness probe: 200 once a configuration is loaded (from the control plane or the
/// cache), 503 before.
async fn ready(State(s): State<StatusState>) -> (axum::http::StatusCode, Json<Value>) {
    if s.live.loaded() {
        (axum::http::StatusCode::OK, Json(json!({"ready": true, "config_revision": s.live.load().set.revision})))
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({"message": "no configuration loaded yet"})))
    }
}

/// Prometheus text (format 0.0.4): the configuration this data plane serves, what its sync
/// client has done, log records dropped, and each balanced target's health as Kong's
/// Prometheus plugin names it (`kong_upstream_target_health`, one series per state, 1 for the
/// current one).
async fn metrics(State(s): State<StatusState>) -> impl axum::response::IntoResponse {
    let body = metrics_text(&s.live);
    ([(axum::http::header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], body)
}

/// The text `/metrics` serves (also what is exported over OTLP).
pub fn metrics_text(live: &Live) -> String {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::{ConstGauge, Gauge};

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct TargetLabels {
        upstream: String,
        target: String,
        state: &'static str,
    }

    let current = live.load();
    let counter = |a: &std::sync::atomic::AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register(
        "gatehouse_config_revision",
        "The change-log revision this data plane serves",
        ConstGauge::new(current.set.revision),
    );
    registry.register(
        "gatehouse_config_entities",
        "Entities in the configuration served",
        ConstGauge::new(current.set.len() as i64),
    );
    registry.register(
        "gatehouse_control_plane_connected",
        "1 while the sync stream to the control plane is up",
        ConstGauge::new(i64::from(live.connected())),
    );
    let c = &live.counters;
    registry.register("gatehouse_sync_connects", "Sync streams opened to the control plane", counter(&c.connects));
    registry.register("gatehouse_sync_snapshots_applied", "Full configurations applied", counter(&c.snapshots));
    registry.register("gatehouse_sync_deltas_applied", "Incremental changes applied", counter(&c.deltas));
    registry.register("gatehouse_sync_nacks", "Configurations refused (NACKed)", counter(&c.nacks));
    registry.register(
        "gatehouse_log_records_dropped",
        "Log-plugin records dropped because their receiver was slow or down",
        counter(&crate::plugins::log::DROPPED),
    );
    let upstreams: Vec<serde_json::Value> =
        current.set.table("upstreams").map(gatehouse_shared::snapshot::Doc::value).collect();
    let names: std::collections::HashMap<&str, &str> =
        upstreams.iter().filter_map(|u| Some((u.get("id")?.as_str()?, u.get("name")?.as_str()?))).collect();
    let health: Family<TargetLabels, Gauge> = Family::default();
    for report in live.balancers.reports() {
        let upstream = names.get(report.upstream_id.as_str()).map_or(report.upstream_id.clone(), |n| (*n).to_owned());
        for state in ["healthy", "unhealthy", "healthchecks_off"] {
            let now = report.health.eq_ignore_ascii_case(state);
            health
                .get_or_create(&TargetLabels { upstream: upstream.clone(), target: report.target.clone(), state })
                .set(i64::from(now));
        }
    }
    registry.register("kong_upstream_target_health", "Health of each balanced target, by state", health);
    let mut body = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, &registry);
    crate::metrics::render(&mut body);
    body
}

/// Binds now and returns the serving future.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    live: Arc<Live>,
    node_id: String,
    header_timeout: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "status listener bound");
    let app = Router::new()
        .route("/status", get(status))
        .route("/status/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(StatusState { live, node_id: node_id.into() });
    Ok(async move {
        // Few connections, each held to the header timeout: an idle or trickling client
        // cannot keep the status endpoint busy.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (tcp, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "status accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            tokio::spawn(async move {
                let io = gatehouse_shared::idle::Idle::new(tcp, header_timeout);
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc).await;
                drop(slot);
            });
        }
    })
}
