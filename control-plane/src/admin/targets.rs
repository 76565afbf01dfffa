//! `/upstreams/{u}/targets`: an append-only history per target, where the newest entry wins
//! and weight 0 means removed. `DELETE` appends a weight-0 entry.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use gatehouse_shared::upstream::{normalize_target, validate_target};
use gatehouse_shared::validate::is_uuid;
use serde_json::{json, Value};

use super::body::{coerce_old_layer, Input};
use super::error::{ApiError, ApiResult};
use super::oldlayer::{now_ms, render, take_id};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok};
use super::Routes;
use super::{upstreams, Admin};
use crate::store::{Doc, Filter, Op, Page, Table};

pub fn router() -> Routes {
    Routes::new()
        .route("/upstreams/{upstream}/targets", get(list_active).post(create))
        .route("/upstreams/{upstream}/targets/all", get(list_all))
        .route("/upstreams/{upstream}/targets/{target}", delete(remove))
}

fn str_of<'a>(doc: &'a Doc, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn created_of(doc: &Doc) -> i64 {
    doc.get("created_at").and_then(Value::as_i64).unwrap_or_default()
}

/// The whole history of an upstream's targets, oldest first.
pub(super) async fn history(admin: &Admin, upstream_id: &str) -> ApiResult<Vec<Doc>> {
    let filter = [Filter { field: "upstream_id", value: upstream_id.to_string() }];
    let mut rows = admin.store.list(Table::Targets, &filter, &Page { after: None, size: u32::MAX / 2 }).await?;
    rows.sort_by(|a, b| created_of(a).cmp(&created_of(b)).then_with(|| str_of(a, "id").cmp(str_of(b, "id"))));
    Ok(rows)
}

/// Appends an entry. Its `created_at` is strictly after every earlier entry of the upstream,
/// so "newest entry wins" holds even for writes within one millisecond.
async fn append(
    admin: &Admin,
    upstream_id: &str,
    id: String,
    fields: serde_json::Map<String, Value>,
) -> ApiResult<Doc> {
    let last = history(admin, upstream_id).await?.iter().map(created_of).max().unwrap_or(0);
    let mut doc = Doc::new();
    doc.insert("id".into(), json!(id));
    doc.insert("created_at".into(), json!(now_ms().max(last + 1)));
    doc.insert("upstream_id".into(), json!(upstream_id));
    doc.extend(fields);
    admin.store.commit(vec![Op::Insert(Table::Targets, doc.clone())]).await.map_err(|e| match e {
        crate::store::StoreError::Unique { .. } => super::oldlayer::already_exists("id", str_of(&doc, "id")),
        other => other.into(),
    })?;
    Ok(doc)
}

async fn create(State(admin): State<Admin>, Path(upstream): Path<String>, mut input: Input) -> ApiResult {
    let up = upstreams::fetch(&admin, &upstream).await?;
    coerce_old_layer(&mut input);
    input.map.remove("created_at");
    input.map.remove("upstream_id");
    let id = take_id(&mut input.map)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let fields = validate_target(input.map)?;
    let doc = append(&admin, str_of(&up, "id"), id, fields).await?;
    Ok(created(&render(doc)))
}

/// The current targets: newest entry per target string, weight above 0, by target descending.
async fn list_active(State(admin): State<Admin>, Path(upstream): Path<String>, q: ListQuery) -> ApiResult {
    // The list is whole, but `size` and `offset` are checked as on every list: a bad one is
    // the same 400.
    q.page()?;
    let up = upstreams::fetch(&admin, &upstream).await?;
    let data: Vec<Value> = active(&admin, str_of(&up, "id")).await?.into_iter().map(render).collect();
    Ok(ok(&json!({"total": data.len(), "data": data, "next": null})))
}

/// An upstream's current targets, in `GET /targets` order.
pub(super) async fn active(admin: &Admin, upstream_id: &str) -> ApiResult<Vec<Doc>> {
    let rows = history(admin, upstream_id).await?;
    let mut latest: HashMap<String, Doc> = HashMap::new();
    for row in rows {
        latest.insert(str_of(&row, "target").to_string(), row);
    }
    let mut active: Vec<Doc> =
        latest.into_values().filter(|d| d.get("weight").and_then(Value::as_f64).unwrap_or(0.0) > 0.0).collect();
    // Kong sorts by "<target>:<created_at>:<id>" descending, i.e. by target string.
    active.sort_by(|a, b| str_of(b, "target").cmp(str_of(a, "target")));
    Ok(active)
}

async fn list_all(State(admin): State<Admin>, Path(upstream): Path<String>, q: ListQuery) -> ApiResult {
    let up = upstreams::fetch(&admin, &upstream).await?;
    let mut filters = q.filters(&["id", "target", "weight"])?;
    filters.push(Filter { field: "upstream_id", value: str_of(&up, "id").to_string() });
    let rows = admin.store.list(Table::Targets, &filters, &q.page()?).await?;
    let total = admin.store.count(Table::Targets, &filters).await?;
    Ok(ok(&q.envelope(rows, render, Some(total))))
}

/// Disables a target (by id or by `host:port`) by appending a weight-0 entry.
async fn remove(State(admin): State<Admin>, Path((upstream, target)): Path<(String, String)>) -> ApiResult {
    let up = upstreams::fetch(&admin, &upstream).await?;
    let upstream_id = str_of(&up, "id").to_string();
    let rows = history(&admin, &upstream_id).await?;
    let wanted = normalize_target(&target).ok();
    let found = rows.iter().rev().find(|d| {
        (is_uuid(&target) && str_of(d, "id").eq_ignore_ascii_case(&target))
            || str_of(d, "target") == target
            || wanted.as_deref() == Some(str_of(d, "target"))
    });
    let Some(found) = found else { return Err(ApiError::NotFound) };
    let mut fields = serde_json::Map::new();
    fields.insert("target".into(), json!(str_of(found, "target")));
    fields.insert("weight".into(), json!(0));
    append(&admin, &upstream_id, uuid::Uuid::new_v4().to_string(), fields).await?;
    Ok(no_content())
}
