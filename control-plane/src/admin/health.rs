//! Target health across the cluster (kong-0.14-core-behavior §6.5).
//!
//! `GET /upstreams/{u}/health` aggregates what connected data planes report on their sync
//! streams: a target is HEALTHY only where every reporting data plane says so, and each row
//! carries the per-data-plane view. `POST .../targets/{t}/healthy|unhealthy` writes a
//! `target_health` entity, which reaches every data plane (and later joiners) through the
//! change log, replacing the previous command for that target.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use gatehouse_shared::upstream::normalize_target;
use gatehouse_shared::validate::is_uuid;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::oldlayer::{now_ms, render};
use super::respond::{no_content, ok};
use super::Routes;
use super::{targets, upstreams, Admin};
use crate::store::{Doc, Filter, Op, Page, Table};

pub fn router() -> Routes {
    Routes::new()
        .route("/upstreams/{upstream}/health", get(health))
        .route("/upstreams/{upstream}/targets/{target}/healthy", post(healthy))
        .route("/upstreams/{upstream}/targets/{target}/unhealthy", post(unhealthy))
}

fn str_of<'a>(doc: &'a Doc, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Kong's rule: checks are on when a probe loop runs or a passive failure counter is set.
fn checks_enabled(upstream: &Doc) -> bool {
    let n = |path: &[&str]| {
        let mut v = upstream.get("healthchecks");
        for k in path {
            v = v.and_then(|x| x.get(*k));
        }
        v.and_then(Value::as_f64).unwrap_or(0.0) > 0.0
    };
    n(&["active", "healthy", "interval"])
        || n(&["active", "unhealthy", "interval"])
        || n(&["passive", "unhealthy", "tcp_failures"])
        || n(&["passive", "unhealthy", "timeouts"])
        || n(&["passive", "unhealthy", "http_failures"])
}

/// The cluster's verdict from the data planes' views: any UNHEALTHY wins, then DNS_ERROR,
/// then HEALTHCHECKS_OFF; HEALTHY only when every view is HEALTHY.
fn aggregate<'a>(views: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let rank = |h: &str| match h {
        "UNHEALTHY" => 3,
        "DNS_ERROR" => 2,
        "HEALTHCHECKS_OFF" => 1,
        _ => 0,
    };
    views.max_by_key(|h| rank(h))
}

async fn health(State(admin): State<Admin>, Path(upstream): Path<String>) -> ApiResult {
    let up = upstreams::fetch(&admin, &upstream).await?;
    let upstream_id = str_of(&up, "id").to_string();
    let rows = targets::active(&admin, &upstream_id).await?;
    let now = crate::store::now_ms() / 1000;
    let stale = admin.node.stale_after.as_secs() as i64;
    // target → [(data plane id, hostname, health)]
    let mut views: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
    for dp in admin.store.data_planes().await? {
        if !dp.connected(now, stale) {
            continue;
        }
        let reported = dp.doc.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
        for t in reported.iter().filter(|t| t.get("upstream_id").and_then(Value::as_str) == Some(&upstream_id)) {
            let target = t.get("target").and_then(Value::as_str).unwrap_or_default().to_string();
            let health = t.get("health").and_then(Value::as_str).unwrap_or("HEALTHY").to_string();
            views.entry(target).or_default().push((dp.id.clone(), dp.hostname.clone(), health));
        }
    }
    let unreported = if checks_enabled(&up) { "HEALTHY" } else { "HEALTHCHECKS_OFF" };
    let data: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let seen = views.get(str_of(&row, "target")).map(Vec::as_slice).unwrap_or_default();
            let overall = aggregate(seen.iter().map(|(_, _, h)| h.as_str())).unwrap_or(unreported).to_string();
            let per_dp: Vec<Value> =
                seen.iter().map(|(id, host, h)| json!({"id": id, "hostname": host, "health": h})).collect();
            let mut v = render(row);
            v["health"] = json!(overall);
            v["data_planes"] = json!(per_dp);
            v
        })
        .collect();
    Ok(ok(&json!({"node_id": admin.node.node_id, "total": data.len(), "data": data})))
}

async fn healthy(State(admin): State<Admin>, Path((upstream, target)): Path<(String, String)>) -> ApiResult {
    set_health(&admin, &upstream, &target, true).await
}

async fn unhealthy(State(admin): State<Admin>, Path((upstream, target)): Path<(String, String)>) -> ApiResult {
    set_health(&admin, &upstream, &target, false).await
}

/// Records the command for an active target (by id or `host:port`), replacing earlier ones.
async fn set_health(admin: &Admin, upstream: &str, target: &str, healthy: bool) -> ApiResult {
    let up = upstreams::fetch(admin, upstream).await?;
    let upstream_id = str_of(&up, "id").to_string();
    let wanted = normalize_target(target).ok();
    let history = targets::history(admin, &upstream_id).await?;
    let by_id =
        is_uuid(target).then(|| history.iter().find(|d| str_of(d, "id").eq_ignore_ascii_case(target))).flatten();
    let name = match by_id {
        Some(d) => str_of(d, "target").to_string(),
        None => wanted.unwrap_or_else(|| target.to_string()),
    };
    let is_active = targets::active(admin, &upstream_id).await?.iter().any(|d| str_of(d, "target") == name);
    if !is_active {
        return Err(ApiError::NotFound);
    }
    let filters =
        [Filter { field: "upstream_id", value: upstream_id.clone() }, Filter { field: "target", value: name.clone() }];
    let previous = admin.store.list(Table::TargetHealth, &filters, &Page { after: None, size: 1000 }).await?;
    let mut ops: Vec<Op> =
        previous.iter().map(|d| Op::Delete(Table::TargetHealth, str_of(d, "id").to_string())).collect();
    let mut doc = Doc::new();
    doc.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    doc.insert("created_at".into(), json!(now_ms()));
    doc.insert("upstream_id".into(), json!(upstream_id));
    doc.insert("target".into(), json!(name));
    doc.insert("healthy".into(), json!(healthy));
    ops.push(Op::Insert(Table::TargetHealth, doc));
    admin.store.commit(ops).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    #[test]
    fn aggregate_prefers_bad_news() {
        let agg = |v: &[&'static str]| super::aggregate(v.iter().copied());
        assert_eq!(agg(&["HEALTHY", "HEALTHY"]), Some("HEALTHY"));
        assert_eq!(agg(&["HEALTHY", "UNHEALTHY"]), Some("UNHEALTHY"));
        assert_eq!(agg(&["DNS_ERROR", "HEALTHY"]), Some("DNS_ERROR"));
        assert_eq!(agg(&["HEALTHCHECKS_OFF"]), Some("HEALTHCHECKS_OFF"));
        assert_eq!(agg(&[]), None);
    }
}
