//! `GET /clustering/data-planes`: every data plane any control-plane replica has served, with
//! the revision it applied and how far behind the head it is.

use axum::extract::State;
use axum::routing::get;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::respond::ok;
use super::Admin;
use super::Routes;

pub fn router() -> Routes {
    Routes::new().route("/clustering/data-planes", get(list))
}

async fn list(State(admin): State<Admin>) -> ApiResult {
    let head = admin.store.head_revision().await?;
    let now = crate::store::now_ms() / 1000;
    let stale = admin.node.stale_after.as_secs() as i64;
    let data: Vec<Value> = admin
        .store
        .data_planes()
        .await?
        .into_iter()
        .map(|dp| {
            let status = match dp.sync_status.as_str() {
                crate::store::INCOMPATIBLE => dp.sync_status,
                _ if !dp.connected(now, stale) => "disconnected".into(),
                _ => dp.sync_status,
            };
            let mut entry = json!({
                "id": dp.id,
                "hostname": dp.hostname,
                "ip": dp.ip,
                "version": dp.version,
                "last_seen": dp.last_seen,
                "config_revision": dp.config_revision,
                "revision_lag": (head - dp.config_revision).max(0),
                "sync_status": status,
                "control_plane": dp.control_plane,
            });
            if let (Some(obj), Value::Object(extra)) = (entry.as_object_mut(), dp.doc) {
                for (k, v) in extra {
                    if !v.is_null() {
                        obj.insert(k, v);
                    }
                }
            }
            entry
        })
        .collect();
    Ok(ok(&json!({ "data": data, "next": null })))
}
