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
        "entities": current.set.len(),
        "control_plane_connected": s.live.connected(),
        "version": env!("CARGO_PKG_VERSION"),
        "sync": {
            "connects": s.live.counters.connects.load(Ordering::Relaxed),
            "snapshots_applied": s.live.counters.snapshots.load(Ordering::Relaxed),
            "deltas_applied": s.live.counters.deltas.load(Ordering::Relaxed),
            "nacks_sent": s.live.counters.nacks.load(Ordering::Relaxed),
        },
        "log_records_dropped": crate::plugins::log::DROPPED.load(Ordering::Relaxed),
    }))
}

/// Binds now and returns the serving future.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    live: Arc<Live>,
    node_id: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "status listener bound");
    let app = Router::new().route("/status", get(status)).with_state(StatusState { live, node_id: node_id.into() });
    Ok(async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "status listener failed");
        }
    })
}
