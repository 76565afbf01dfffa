//! Helpers for the old-DAO entities (plugins, upstreams, targets): millisecond timestamps,
//! client-supplied ids, nulls omitted from output, and flat error maps.

use gatehouse_shared::upstream::OldError;
use gatehouse_shared::validate::is_uuid;
use http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::store::Doc;

pub fn now_ms() -> i64 {
    crate::store::now_ms()
}

/// The id for a new row: the body's when it is a valid UUID (the old DAO honours it).
pub fn take_id(fields: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    match fields.remove("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_uuid(&s) => Ok(Some(s.to_ascii_lowercase())),
        Some(other) => {
            let shown = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
            Err(ApiError::field(StatusCode::BAD_REQUEST, "id", format!("{shown} is not a valid uuid")))
        }
    }
}

/// Output form: null members dropped (recursively in nested objects).
pub fn render(doc: Doc) -> Value {
    Value::Object(strip_nulls(doc))
}

fn strip_nulls(doc: Map<String, Value>) -> Map<String, Value> {
    doc.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::Object(m) => (k, Value::Object(strip_nulls(m))),
            other => (k, other),
        })
        .collect()
}

impl From<OldError> for ApiError {
    fn from(e: OldError) -> Self {
        match e {
            OldError::Fields(map) => {
                ApiError::Fields(StatusCode::BAD_REQUEST, map.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
            }
            OldError::Message(m) => ApiError::bad_request(m),
        }
    }
}

/// 409 `{"<col>":"already exists with value '<v>'"}`.
pub fn already_exists(column: &str, value: &str) -> ApiError {
    ApiError::field(StatusCode::CONFLICT, column, format!("already exists with value '{value}'"))
}

pub fn empty_body() -> ApiError {
    ApiError::bad_request("empty body")
}
