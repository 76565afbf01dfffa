//! `GET /` (node information), `GET /status` (traffic counters, database reachability and
//! the head revision of the configuration) and `GET /status/ready` (the readiness probe).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use gatehouse_shared::schema;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::respond::ok;
use super::Admin;
use super::Routes;

/// The Kong version clients see; they parse it to choose request shapes.
pub const KONG_VERSION: &str = "0.14.1";

pub fn router() -> Routes {
    Routes::new()
        .route("/", get(info))
        .route("/status", get(status))
        .route("/status/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// Prometheus text: see `crate::metrics`.
async fn metrics(State(admin): State<Admin>) -> axum::response::Response {
    let body = metrics_text(&admin).await;
    ([(axum::http::header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], body)
        .into_response()
}

/// The text `/metrics` serves (also what is exported over OTLP).
pub(crate) async fn metrics_text(admin: &Admin) -> String {
    let (reachable, head) = head_if_reachable(&admin.store).await;
    let planes = if reachable {
        tokio::time::timeout(STORE_PATIENCE, admin.store.data_planes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let now = crate::store::now_ms() / 1000;
    let stale = admin.node.stale_after.as_secs() as i64;
    let connected: Vec<_> = planes.iter().filter(|dp| dp.connected(now, stale)).collect();
    let lag =
        connected.iter().map(|dp| (dp.id.clone(), dp.hostname.clone(), (head - dp.config_revision).max(0))).collect();
    let scraped = crate::metrics::Scraped {
        changelog_head: head,
        data_planes_connected: connected.len() as i64,
        data_planes_known: planes.len() as i64,
        connections_active: admin.node.counters.active.load(Ordering::Relaxed) as i64,
        database_reachable: reachable,
        lag,
    };
    crate::metrics::render(&admin.node.metrics, &admin.node.counters, &scraped)
}

/// Ready to serve: the database answers, within a probe's patience, and no migration is
/// pending (`run` refuses to start with pending ones, but another replica may have been
/// upgraded meanwhile). Otherwise 503 with the reason, in Kong's error shape.
async fn ready(State(admin): State<Admin>) -> ApiResult {
    let unready = |why: String| ApiError::message(axum::http::StatusCode::SERVICE_UNAVAILABLE, why);
    match tokio::time::timeout(STORE_PATIENCE, admin.store.migration_status()).await {
        Ok(Ok(s)) if s.pending.is_empty() => Ok(ok(&json!({"ready": true}))),
        Ok(Ok(s)) => Err(unready(format!("migrations pending: {}", s.pending.join(", ")))),
        Ok(Err(_)) | Err(_) => Err(unready("the database does not answer".into())),
    }
}

async fn info(State(admin): State<Admin>) -> ApiResult {
    let available: Map<String, Value> =
        schema::enabled_names().iter().map(|n| ((*n).to_string(), json!(true))).collect();
    let enabled = admin.store.distinct_plugin_names().await?;
    Ok(ok(&json!({
        "tagline": "Welcome to kong",
        "version": KONG_VERSION,
        "gatehouse_version": env!("CARGO_PKG_VERSION"),
        "hostname": admin.node.hostname,
        "node_id": admin.node.node_id,
        "timers": {"running": 0, "pending": 0},
        "plugins": {"available_on_server": available, "enabled_in_cluster": enabled},
        "lua_version": "none (Gatehouse is written in Rust)",
        "configuration": admin.node.configuration,
        "prng_seeds": {},
    })))
}

/// How long `/status` and `/metrics` wait for the store: a database that does not answer is
/// reported as such (`reachable: false`) within a probe's or scrape's patience, not after the
/// pool's own timeout.
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the store answers, and its head revision (0 when it does not).
async fn head_if_reachable(store: &crate::store::Store) -> (bool, i64) {
    let read = async {
        if !store.reachable().await {
            return (false, 0);
        }
        (true, store.head_revision().await.unwrap_or(0))
    };
    tokio::time::timeout(STORE_PATIENCE, read).await.unwrap_or((false, 0))
}

async fn status(State(admin): State<Admin>) -> ApiResult {
    let (reachable, revision) = head_if_reachable(&admin.store).await;
    let c = &admin.node.counters;
    let active = c.active.load(Ordering::Relaxed);
    // Requests being handled, this one included; the rest of the open connections wait
    // for their next request (hyper hands a head on as soon as it is read, so "reading"
    // is the instant between, counted as none).
    let writing = c.in_flight.load(Ordering::Relaxed).min(active.max(1));
    Ok(ok(&json!({
        "server": {
            "total_requests": c.requests.load(Ordering::Relaxed),
            "connections_active": active,
            "connections_accepted": c.accepted.load(Ordering::Relaxed),
            "connections_handled": c.accepted.load(Ordering::Relaxed),
            "connections_reading": 0,
            "connections_writing": writing,
            "connections_waiting": active.saturating_sub(writing),
        },
        "database": {"reachable": reachable},
        "config_revision": revision,
    })))
}
