//! `/plugins` and the nested `/services|routes|consumers/{x}/plugins` endpoints (old DAO),
//! plus `/plugins/enabled` and `/plugins/schema/{name}`. Configs are validated and filled
//! with defaults by the plugin's schema in `gatehouse_shared::schema`.

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::schema::{self, ConfigError};
use gatehouse_shared::validate::is_uuid;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::body::{coerce_old_layer, Input};
use super::crud;
use super::error::{ApiError, ApiResult};
use super::oldlayer::{already_exists, empty_body, now_ms, render, take_id};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Routes;
use super::{services, Admin};
use crate::store::{Doc, Filter, Op, StoreError, Table};

pub fn router() -> Routes {
    Routes::new()
        .route("/plugins", get(list).post(create).put(upsert))
        .route("/plugins/enabled", get(enabled))
        .route("/plugins/schema/{name}", get(schema_of))
        .route("/plugins/{id}", get(show).patch(update).delete(remove))
        .route("/services/{svc}/plugins", get(nested_list).post(nested_create).put(nested_upsert))
        .route("/routes/{route}/plugins", get(nested_list).post(nested_create).put(nested_upsert))
        .route("/consumers/{consumer}/plugins", get(nested_list).post(nested_create).put(nested_upsert))
        .route("/consumers/{consumer}/plugins/{id}", get(consumer_show).patch(consumer_update).delete(consumer_remove))
}

const SCOPES: [(&str, &str); 3] = [("service_id", "service"), ("route_id", "route"), ("consumer_id", "consumer")];

/// Which parent a nested endpoint pins, resolved to its id.
struct Parent {
    column: &'static str,
    id: String,
}

/// Resolves the nested path's parent: services by UUID or name, routes by UUID, consumers by
/// UUID (falling back to the username) or username. A missing parent is a 404.
async fn parent(admin: &Admin, path: &Map<String, Value>) -> ApiResult<Parent> {
    let seg = |k: &str| path.get(k).and_then(Value::as_str).map(str::to_owned);
    if let Some(svc) = seg("svc") {
        let doc = crud::fetch(&admin.store, &services::KIND, &svc).await?;
        return Ok(Parent { column: "service_id", id: crud::id_of(&doc) });
    }
    if let Some(route) = seg("route") {
        if !is_uuid(&route) {
            return Err(ApiError::NotFound);
        }
        let doc = admin.store.get(Table::Routes, &route).await?.ok_or(ApiError::NotFound)?;
        return Ok(Parent { column: "route_id", id: crud::id_of(&doc) });
    }
    let consumer = seg("consumer").unwrap_or_default();
    let mut doc = None;
    if is_uuid(&consumer) {
        doc = admin.store.get(Table::Consumers, &consumer).await?;
    }
    if doc.is_none() {
        doc = admin.store.find(Table::Consumers, "username", &consumer).await?;
    }
    let doc = doc.ok_or(ApiError::NotFound)?;
    Ok(Parent { column: "consumer_id", id: crud::id_of(&doc) })
}

/// Normalises the top-level plugin fields of a request: form coercion, the Kong 1.x
/// `{"service":{"id":…}}` form, and type checks of the id columns and `enabled`.
fn normalise(mut input: Input) -> ApiResult<Map<String, Value>> {
    coerce_old_layer(&mut input);
    let mut fields = input.map;
    fields.remove("created_at");
    for (column, short) in SCOPES {
        if let Some(reference) = fields.remove(short) {
            let id = match &reference {
                Value::Object(m) => m.get("id").cloned().unwrap_or(Value::Null),
                Value::Null => Value::Null,
                other => other.clone(),
            };
            fields.insert(column.to_string(), id);
        }
    }
    let mut errors = Map::new();
    for (key, value) in &fields {
        match key.as_str() {
            "id" | "config" => {}
            "name" => {
                if !value.is_string() && !value.is_null() {
                    errors.insert(key.clone(), json!("name is not a string"));
                }
            }
            "enabled" => {
                if !value.is_boolean() && !value.is_null() {
                    errors.insert(key.clone(), json!("enabled is not a boolean"));
                }
            }
            "service_id" | "route_id" | "consumer_id" | "api_id" => match value {
                Value::Null => {}
                Value::String(s) if is_uuid(s) => {}
                other => {
                    let shown = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                    errors.insert(key.clone(), json!(format!("{shown} is not a valid uuid")));
                }
            },
            _ => {
                errors.insert(key.clone(), json!(format!("{key} is an unknown field")));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Fields(StatusCode::BAD_REQUEST, errors));
    }
    Ok(fields)
}

fn config_error(e: ConfigError) -> ApiError {
    match e {
        ConfigError::Fields(map) => {
            ApiError::Fields(StatusCode::BAD_REQUEST, map.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
        }
        ConfigError::SelfCheck(msg) => ApiError::field(StatusCode::BAD_REQUEST, "config", msg),
    }
}

/// Builds a complete plugin row from `fields` (create or full replacement), validating the
/// config against the plugin's schema and the entity rules.
fn build(id: String, created_at: i64, mut fields: Map<String, Value>) -> ApiResult<Doc> {
    let Some(Value::String(name)) = fields.remove("name") else {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "name", "name is required"));
    };
    let name = name.trim().to_string();
    let Some(plugin) = schema::enabled_plugin(&name) else {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "config",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        ));
    };
    let config = plugin.validate_create(fields.get("config").filter(|c| !c.is_null())).map_err(config_error)?;
    finish(plugin, id, created_at, name, config, &fields)
}

fn finish(
    plugin: &schema::PluginSchema,
    id: String,
    created_at: i64,
    name: String,
    config: Value,
    fields: &Map<String, Value>,
) -> ApiResult<Doc> {
    let get = |k: &str| fields.get(k).filter(|v| !v.is_null()).cloned();
    if get("api_id").is_some() && (get("route_id").is_some() || get("service_id").is_some()) {
        return Err(ApiError::bad_request("cannot configure plugin with api_id and one of route_id or service_id"));
    }
    if plugin.no_consumer() && get("consumer_id").is_some() {
        return Err(ApiError::bad_request("No consumer can be configured for that plugin"));
    }
    let lower =
        |v: Option<Value>| v.map(|v| json!(v.as_str().unwrap_or_default().to_ascii_lowercase())).unwrap_or(Value::Null);
    let mut doc = Doc::new();
    doc.insert("id".into(), json!(id));
    doc.insert("created_at".into(), json!(created_at));
    doc.insert("name".into(), json!(name));
    doc.insert("service_id".into(), lower(get("service_id")));
    doc.insert("route_id".into(), lower(get("route_id")));
    doc.insert("consumer_id".into(), lower(get("consumer_id")));
    doc.insert("config".into(), config);
    doc.insert("enabled".into(), get("enabled").unwrap_or(Value::Bool(true)));
    Ok(doc)
}

/// The referenced service/route/consumer must exist: 404 `{"service_id":"does not exist …"}`.
async fn check_refs(admin: &Admin, doc: &Doc) -> ApiResult<()> {
    for (column, table) in
        [("service_id", Table::Services), ("route_id", Table::Routes), ("consumer_id", Table::Consumers)]
    {
        if let Some(id) = doc.get(column).and_then(Value::as_str) {
            if admin.store.get(table, id).await?.is_none() {
                return Err(ApiError::field(
                    StatusCode::NOT_FOUND,
                    column,
                    format!("does not exist with value '{id}'"),
                ));
            }
        }
    }
    Ok(())
}

async fn write(admin: &Admin, op: Op, doc: &Doc) -> ApiResult<()> {
    check_refs(admin, doc).await?;
    match admin.store.commit(vec![op]).await {
        Ok(_) => Ok(()),
        Err(StoreError::Unique { column, .. }) if column == "id" => {
            Err(already_exists("id", doc.get("id").and_then(Value::as_str).unwrap_or_default()))
        }
        Err(StoreError::Unique { .. }) => {
            Err(already_exists("name", doc.get("name").and_then(Value::as_str).unwrap_or_default()))
        }
        Err(StoreError::ForeignKey) => Err(ApiError::NotFound),
        Err(e) => Err(e.into()),
    }
}

async fn create_with(admin: &Admin, mut fields: Map<String, Value>) -> ApiResult {
    let id = take_id(&mut fields)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let doc = build(id, now_ms(), fields)?;
    write(admin, Op::Insert(Table::Plugins, doc.clone()), &doc).await?;
    Ok(created(&render(doc)))
}

/// PUT on a collection: with `id` and `name` a full replacement (404 if missing), else a create.
async fn upsert_with(admin: &Admin, mut fields: Map<String, Value>) -> ApiResult {
    let has_pk = fields.get("id").is_some_and(|v| !v.is_null()) && fields.get("name").is_some_and(|v| !v.is_null());
    if !has_pk {
        fields.remove("id");
        let doc = build(uuid::Uuid::new_v4().to_string(), now_ms(), fields)?;
        write(admin, Op::Insert(Table::Plugins, doc.clone()), &doc).await?;
        return Ok(put(true, &render(doc)));
    }
    let id = take_id(&mut fields)?.unwrap_or_default();
    let stored = admin.store.get(Table::Plugins, &id).await?.ok_or(ApiError::NotFound)?;
    let created_at = stored.get("created_at").and_then(Value::as_i64).unwrap_or_else(now_ms);
    let doc = build(id, created_at, fields)?;
    write(admin, Op::Update(Table::Plugins, doc.clone()), &doc).await?;
    Ok(put(false, &render(doc)))
}

async fn list_with(admin: &Admin, q: &ListQuery, pinned: Option<&Parent>) -> ApiResult {
    let mut filters = q.filters(&["id", "name", "service_id", "route_id", "consumer_id", "api_id"])?;
    if filters.iter().any(|f| f.field == "api_id") {
        // No legacy APIs exist, so nothing is attached to one.
        return Ok(ok(&json!({"total": 0, "data": [], "next": null})));
    }
    if let Some(p) = pinned {
        filters.push(Filter { field: p.column, value: p.id.clone() });
    }
    let rows = admin.store.list(Table::Plugins, &filters, &q.page()?).await?;
    let total = admin.store.count(Table::Plugins, &filters).await?;
    Ok(ok(&q.envelope(rows, render, Some(total))))
}

async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    list_with(&admin, &q, None).await
}

async fn create(State(admin): State<Admin>, input: Input) -> ApiResult {
    create_with(&admin, normalise(input)?).await
}

async fn upsert(State(admin): State<Admin>, input: Input) -> ApiResult {
    upsert_with(&admin, normalise(input)?).await
}

async fn nested_list(State(admin): State<Admin>, Path(path): Path<Map<String, Value>>, q: ListQuery) -> ApiResult {
    let p = parent(&admin, &path).await?;
    list_with(&admin, &q, Some(&p)).await
}

async fn nested_create(State(admin): State<Admin>, Path(path): Path<Map<String, Value>>, input: Input) -> ApiResult {
    let p = parent(&admin, &path).await?;
    let mut fields = normalise(input)?;
    fields.insert(p.column.to_string(), json!(p.id));
    create_with(&admin, fields).await
}

async fn nested_upsert(State(admin): State<Admin>, Path(path): Path<Map<String, Value>>, input: Input) -> ApiResult {
    let p = parent(&admin, &path).await?;
    let mut fields = normalise(input)?;
    fields.insert(p.column.to_string(), json!(p.id));
    upsert_with(&admin, fields).await
}

async fn fetch(admin: &Admin, id: &str) -> ApiResult<Doc> {
    if !is_uuid(id) {
        return Err(ApiError::NotFound);
    }
    admin.store.get(Table::Plugins, id).await?.ok_or(ApiError::NotFound)
}

async fn show(State(admin): State<Admin>, Path(id): Path<String>) -> ApiResult {
    Ok(ok(&render(fetch(&admin, &id).await?)))
}

async fn update_doc(admin: &Admin, stored: Doc, input: Input) -> ApiResult {
    let mut fields = normalise(input)?;
    fields.remove("id");
    if fields.is_empty() {
        return Err(empty_body());
    }
    let stored_name = stored.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let name = match fields.remove("name") {
        Some(Value::String(n)) => n.trim().to_string(),
        Some(Value::Null) => return Err(ApiError::field(StatusCode::BAD_REQUEST, "name", "name is required")),
        _ => stored_name.clone(),
    };
    let Some(plugin) = schema::enabled_plugin(&name) else {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "config",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        ));
    };
    let patch = fields.remove("config");
    let config = if name == stored_name {
        let current = stored.get("config").cloned().unwrap_or_else(|| json!({}));
        plugin.validate_update(&current, patch.as_ref()).map_err(config_error)?
    } else {
        plugin.validate_create(patch.as_ref().filter(|c| !c.is_null())).map_err(config_error)?
    };
    let mut merged: Map<String, Value> = stored.clone();
    merged.extend(fields);
    let id = stored.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let created_at = stored.get("created_at").and_then(Value::as_i64).unwrap_or_else(now_ms);
    let doc = finish(plugin, id, created_at, name, config, &merged)?;
    write(admin, Op::Update(Table::Plugins, doc.clone()), &doc).await?;
    Ok(ok(&render(doc)))
}

async fn update(State(admin): State<Admin>, Path(id): Path<String>, input: Input) -> ApiResult {
    let stored = fetch(&admin, &id).await?;
    update_doc(&admin, stored, input).await
}

async fn remove(State(admin): State<Admin>, Path(id): Path<String>) -> ApiResult {
    let stored = fetch(&admin, &id).await?;
    admin.store.commit(vec![Op::Delete(Table::Plugins, crud::id_of(&stored))]).await?;
    Ok(no_content())
}

/// A plugin addressed under a consumer must belong to that consumer.
async fn consumer_plugin(admin: &Admin, consumer: &str, id: &str) -> ApiResult<Doc> {
    let mut path = Map::new();
    path.insert("consumer".into(), json!(consumer));
    let p = parent(admin, &path).await?;
    let doc = fetch(admin, id).await?;
    if doc.get("consumer_id").and_then(Value::as_str) != Some(p.id.as_str()) {
        return Err(ApiError::NotFound);
    }
    Ok(doc)
}

async fn consumer_show(State(admin): State<Admin>, Path((consumer, id)): Path<(String, String)>) -> ApiResult {
    Ok(ok(&render(consumer_plugin(&admin, &consumer, &id).await?)))
}

async fn consumer_update(
    State(admin): State<Admin>,
    Path((consumer, id)): Path<(String, String)>,
    input: Input,
) -> ApiResult {
    let stored = consumer_plugin(&admin, &consumer, &id).await?;
    update_doc(&admin, stored, input).await
}

async fn consumer_remove(State(admin): State<Admin>, Path((consumer, id)): Path<(String, String)>) -> ApiResult {
    let stored = consumer_plugin(&admin, &consumer, &id).await?;
    admin.store.commit(vec![Op::Delete(Table::Plugins, crud::id_of(&stored))]).await?;
    Ok(no_content())
}

async fn enabled() -> ApiResult {
    Ok(ok(&json!({ "enabled_plugins": schema::enabled_names() })))
}

async fn schema_of(Path(name): Path<String>) -> ApiResult {
    match schema::plugin(&name) {
        Some(p) => Ok(ok(&p.render())),
        None => Err(ApiError::message(StatusCode::NOT_FOUND, format!("No plugin named '{name}'"))),
    }
}
