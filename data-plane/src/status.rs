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

/// The readiness probe: 200 once a configuration is loaded (from the control plane or the
/// cache), 503 before.
async fn ready(State(s): State<StatusState>) -> (axum::http::StatusCode, Json<Value>) {
    if s.live.loaded() {
        (axum::http::StatusCode::OK, Json(json!({"ready": true, "config_revision": s.live.load().set.revision})))
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({"message": "no configuration loaded yet"})))
    }
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
                let io = crate::idle::Idle::new(tcp, header_timeout);
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc).await;
                drop(slot);
            });
        }
    })
}
