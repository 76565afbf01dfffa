//! `/upstreams` and `/upstreams/{name or id}` (old DAO).

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::upstream::validate_upstream;
use gatehouse_shared::validate::is_uuid;
use serde_json::{json, Value};

use super::body::{coerce_old_layer, Input};
use super::error::{ApiError, ApiResult};
use super::oldlayer::{already_exists, empty_body, now_ms, render, take_id};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Admin;
use super::Routes;
use crate::store::{Doc, Op, StoreError, Table};

pub fn router() -> Routes {
    Routes::new()
        .route("/upstreams", get(list).post(create).put(upsert))
        .route("/upstreams/{upstream}", get(show).patch(update).delete(remove))
}

/// By id when the segment is a UUID (falling back to the name), else by name.
pub async fn resolve(admin: &Admin, segment: &str) -> ApiResult<Option<Doc>> {
    if is_uuid(segment) {
        if let Some(doc) = admin.store.get(Table::Upstreams, segment).await? {
            return Ok(Some(doc));
        }
    }
    Ok(admin.store.find(Table::Upstreams, "name", segment).await?)
}

pub async fn fetch(admin: &Admin, segment: &str) -> ApiResult<Doc> {
    resolve(admin, segment).await?.ok_or(ApiError::NotFound)
}

fn assemble(id: String, created_at: i64, fields: serde_json::Map<String, Value>) -> Doc {
    let mut doc = Doc::new();
    doc.insert("id".into(), json!(id));
    doc.insert("created_at".into(), json!(created_at));
    doc.extend(fields);
    doc
}

async fn write(admin: &Admin, op: Op, doc: &Doc) -> ApiResult<()> {
    // Changing an upstream rebuilds its balancers with every target healthy (as Kong does),
    // so manual health commands for it are void.
    let mut ops = Vec::new();
    if let Op::Update(_, d) = &op {
        let id = d.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        ops.push(Op::DeleteWhere(Table::TargetHealth, "upstream_id", id));
    }
    ops.push(op);
    match admin.store.commit(ops).await {
        Ok(_) => Ok(()),
        Err(StoreError::Unique { column, .. }) => {
            let value = doc.get(&column).and_then(Value::as_str).unwrap_or_default();
            Err(already_exists(&column, value))
        }
        Err(e) => Err(e.into()),
    }
}

async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    let filters = q.filters(&["id", "name", "hash_on", "hash_fallback", "slots"])?;
    let rows = admin.store.list(Table::Upstreams, &filters, &q.page()?).await?;
    let total = admin.store.count(Table::Upstreams, &filters).await?;
    Ok(ok(&q.envelope(rows, render, Some(total))))
}

async fn create(State(admin): State<Admin>, mut input: Input) -> ApiResult {
    coerce_old_layer(&mut input);
    input.map.remove("created_at");
    let id = take_id(&mut input.map)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let fields = validate_upstream(None, input.map)?;
    let doc = assemble(id, now_ms(), fields);
    write(&admin, Op::Insert(Table::Upstreams, doc.clone()), &doc).await?;
    Ok(created(&render(doc)))
}

/// `PUT /upstreams`: with an `id` a full replacement of that row (404 if none), else a create.
async fn upsert(State(admin): State<Admin>, mut input: Input) -> ApiResult {
    coerce_old_layer(&mut input);
    input.map.remove("created_at");
    let Some(id) = take_id(&mut input.map)? else {
        let fields = validate_upstream(None, input.map)?;
        let doc = assemble(uuid::Uuid::new_v4().to_string(), now_ms(), fields);
        write(&admin, Op::Insert(Table::Upstreams, doc.clone()), &doc).await?;
        return Ok(put(true, &render(doc)));
    };
    let stored = admin.store.get(Table::Upstreams, &id).await?.ok_or(ApiError::NotFound)?;
    let fields = validate_upstream(None, input.map)?;
    let created_at = stored.get("created_at").and_then(Value::as_i64).unwrap_or_else(now_ms);
    let doc = assemble(id, created_at, fields);
    write(&admin, Op::Update(Table::Upstreams, doc.clone()), &doc).await?;
    Ok(put(false, &render(doc)))
}

async fn show(State(admin): State<Admin>, Path(upstream): Path<String>) -> ApiResult {
    Ok(ok(&render(fetch(&admin, &upstream).await?)))
}

async fn update(State(admin): State<Admin>, Path(upstream): Path<String>, mut input: Input) -> ApiResult {
    let stored = fetch(&admin, &upstream).await?;
    coerce_old_layer(&mut input);
    input.map.remove("created_at");
    input.map.remove("id");
    if input.is_empty() {
        return Err(empty_body());
    }
    let fields = validate_upstream(Some(&stored), input.map)?;
    let id = stored.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let created_at = stored.get("created_at").and_then(Value::as_i64).unwrap_or_else(now_ms);
    let doc = assemble(id, created_at, fields);
    write(&admin, Op::Update(Table::Upstreams, doc.clone()), &doc).await?;
    Ok(ok(&render(doc)))
}

/// Deletes the upstream and its target history.
async fn remove(State(admin): State<Admin>, Path(upstream): Path<String>) -> ApiResult {
    let stored = fetch(&admin, &upstream).await?;
    let id = stored.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    admin
        .store
        .commit(vec![
            Op::DeleteWhere(Table::TargetHealth, "upstream_id", id.clone()),
            Op::DeleteWhere(Table::Targets, "upstream_id", id.clone()),
            Op::Delete(Table::Upstreams, id),
        ])
        .await?;
    Ok(no_content())
}
