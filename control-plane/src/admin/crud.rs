//! The new-DB-layer write path shared by services, routes, consumers, certificates and SNIs:
//! resolving `{name or id}` segments, building a candidate from defaults or the stored entity,
//! validating it with the entity's schema, stamping ids and timestamps, and turning store
//! constraint errors into Kong's error objects.

use gatehouse_shared::entity::Schema;
use gatehouse_shared::validate::is_uuid;
use gatehouse_shared::Violation;
use serde_json::{Map, Value};

use super::body::Input;
use super::error::{ApiError, ApiResult};
use crate::store::{Doc, Store, StoreError, Table};

/// An entity of the new layer: its schema, table and endpoint key (`name`, `username`).
#[derive(Debug)]
pub struct Kind {
    pub schema: &'static Schema,
    pub table: Table,
    pub key: Option<&'static str>,
}

pub fn now_s() -> i64 {
    crate::store::now_ms() / 1000
}

/// Looks up `segment` by id when it is a UUID, else by the endpoint key; kinds without a key
/// (routes) refuse non-UUID segments with code 1.
pub async fn resolve(store: &Store, kind: &Kind, segment: &str) -> ApiResult<Option<Doc>> {
    if is_uuid(segment) {
        return Ok(store.get(kind.table, segment).await?);
    }
    match kind.key {
        Some(key) => Ok(store.find(kind.table, key, segment).await?),
        None => Err(ApiError::invalid_primary_key()),
    }
}

/// Like [`resolve`] but a missing entity is a plain 404.
pub async fn fetch(store: &Store, kind: &Kind, segment: &str) -> ApiResult<Doc> {
    resolve(store, kind, segment).await?.ok_or(ApiError::NotFound)
}

/// The request's fields, without what the store generates, with form strings coerced. An
/// `id` in the body is ignored (the URL or the store decides it) but must still be a UUID.
pub fn fields(kind: &Kind, mut input: Input) -> ApiResult<Map<String, Value>> {
    match input.map.remove("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if is_uuid(&id) => {}
        Some(_) => return Err(ApiError::schema(Violation::field("id", "expected a valid UUID"))),
    }
    for generated in ["created_at", "updated_at"] {
        input.map.remove(generated);
    }
    if input.form {
        kind.schema.coerce_form(&mut input.map);
    }
    Ok(input.map)
}

/// A new entity from defaults overlaid with `fields`.
pub fn fresh(kind: &Kind, id: String, fields: Map<String, Value>) -> ApiResult<Doc> {
    let mut candidate = kind.schema.defaults();
    candidate.extend(fields);
    let valid = kind.schema.build(candidate).map_err(ApiError::schema)?;
    let now = now_s();
    Ok(stamp(kind, id, now, valid))
}

/// A full replacement (PUT): defaults overlaid with `fields`, keeping id and creation time.
pub fn replaced(kind: &Kind, stored: &Doc, fields: Map<String, Value>) -> ApiResult<Doc> {
    let mut candidate = kind.schema.defaults();
    candidate.extend(fields);
    let valid = kind.schema.build(candidate).map_err(ApiError::schema)?;
    Ok(stamp(kind, id_of(stored), created_of(stored), valid))
}

/// A partial update (PATCH): the stored entity overlaid with `fields`.
pub fn patched(kind: &Kind, stored: &Doc, fields: Map<String, Value>) -> ApiResult<Doc> {
    let mut candidate: Map<String, Value> =
        stored.iter().filter(|(k, _)| kind.schema.field(k).is_some()).map(|(k, v)| (k.clone(), v.clone())).collect();
    candidate.extend(fields);
    let valid = kind.schema.build(candidate).map_err(ApiError::schema)?;
    Ok(stamp(kind, id_of(stored), created_of(stored), valid))
}

fn stamp(kind: &Kind, id: String, created_at: i64, fields: Map<String, Value>) -> Doc {
    let mut doc = Map::new();
    doc.insert("id".into(), Value::String(id));
    doc.insert("created_at".into(), Value::from(created_at));
    if kind.schema.has_updated_at {
        doc.insert("updated_at".into(), Value::from(now_s()));
    }
    doc.extend(fields);
    doc
}

pub fn id_of(doc: &Doc) -> String {
    doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn created_of(doc: &Doc) -> i64 {
    doc.get("created_at").and_then(Value::as_i64).unwrap_or_else(now_s)
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// For PUT by endpoint key: the URL's value is the entity's; a different one in the body is a
/// 400 (the Admin API document forbids it).
pub fn pin_key(kind: &Kind, segment: &str, fields: &mut Map<String, Value>) -> ApiResult<()> {
    let Some(key) = kind.key else { return Ok(()) };
    if is_uuid(segment) {
        return Ok(());
    }
    match fields.get(key) {
        Some(Value::String(s)) if s != segment => {
            Err(ApiError::schema(Violation::field(key, format!("must match the {key} in the URL ('{segment}')"))))
        }
        _ => {
            fields.insert(key.to_string(), Value::String(segment.to_string()));
            Ok(())
        }
    }
}

/// Maps a failed write of `doc` to Kong's error object.
pub fn write_error(doc: &Doc, e: StoreError) -> ApiError {
    match e {
        StoreError::Unique { column, .. } if column == "id" => ApiError::primary_key_violation(&id_of(doc)),
        StoreError::Unique { column, .. } => {
            let value = doc.get(&column).cloned().unwrap_or(Value::Null);
            ApiError::unique(&column, &value)
        }
        other => other.into(),
    }
}

/// Runs a PUT attempt again when it lost a race to create the same entity (a concurrent PUT
/// inserted it between our lookup and our insert): the second attempt finds it and replaces
/// it, so concurrent identical PUTs behave as one upsert.
pub async fn retry_put<F, Fut>(mut attempt: F) -> ApiResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult>,
{
    match attempt().await {
        Err(ApiError::Entity { code: 3 | 5, .. }) => attempt().await,
        other => other,
    }
}
