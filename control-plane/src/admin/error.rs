//! The one place where Admin API failures become HTTP responses, in Kong 0.14's two shapes:
//! the structured error object of the new DB layer (services, routes, consumers, certificates,
//! SNIs) and the flat field map or `{"message"}` of the old DAO (plugins, upstreams, targets).

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use gatehouse_shared::Violation;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::respond::json as json_response;
use crate::store::StoreError;

/// The `strategy` reported in new-layer error objects: the backend's name.
static STRATEGY: OnceLock<&'static str> = OnceLock::new();

pub fn set_strategy(name: &'static str) {
    let _ = STRATEGY.set(name);
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 `{"message":"Not found"}`.
    #[error("not found")]
    NotFound,
    /// Any status with `{"message": …}`.
    #[error("{1}")]
    Message(StatusCode, String),
    /// A new-layer error object: `{"code","name","message","fields"?,"strategy"}`.
    #[error("{message}")]
    Entity { status: StatusCode, code: u8, name: &'static str, message: String, fields: Option<Value> },
    /// An old-layer flat map such as `{"config.minute":"minute is not a number"}`.
    #[error("invalid fields")]
    Fields(StatusCode, Map<String, Value>),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn message(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError::Message(status, msg.into())
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::Message(StatusCode::BAD_REQUEST, msg.into())
    }

    /// Old-layer single-field error.
    pub fn field(status: StatusCode, field: &str, msg: impl Into<String>) -> Self {
        let mut m = Map::new();
        m.insert(field.to_string(), Value::String(msg.into()));
        ApiError::Fields(status, m)
    }

    /// Code 1: a path segment that must be a UUID is not one.
    pub fn invalid_primary_key() -> Self {
        ApiError::Entity {
            status: StatusCode::BAD_REQUEST,
            code: 1,
            name: "invalid primary key",
            message: "invalid primary key: '{id=\"expected a valid UUID\"}'".into(),
            fields: Some(json!({"id": "expected a valid UUID"})),
        }
    }

    /// Code 2.
    pub fn schema(v: Violation) -> Self {
        ApiError::Entity {
            status: StatusCode::BAD_REQUEST,
            code: 2,
            name: "schema violation",
            message: v.message(),
            fields: Some(v.fields_json()),
        }
    }

    /// Code 3: an insert with an id that already exists.
    pub fn primary_key_violation(id: &str) -> Self {
        ApiError::Entity {
            status: StatusCode::BAD_REQUEST,
            code: 3,
            name: "primary key violation",
            message: format!("primary key violation on key '{{id=\"{id}\"}}'"),
            fields: Some(json!({"id": id})),
        }
    }

    /// Code 4: a reference to a parent that does not exist.
    pub fn foreign_key_missing(field: &str, id: &str, parent: &str) -> Self {
        let mut fields = Map::new();
        fields.insert(field.to_string(), json!({"id": id}));
        ApiError::Entity {
            status: StatusCode::BAD_REQUEST,
            code: 4,
            name: "foreign key violation",
            message: format!("the foreign key '{{id=\"{id}\"}}' does not reference an existing '{parent}' entity."),
            fields: Some(Value::Object(fields)),
        }
    }

    /// Code 4: deleting a parent that children still reference.
    pub fn referenced_by(child: &str, parent: &str) -> Self {
        ApiError::Entity {
            status: StatusCode::BAD_REQUEST,
            code: 4,
            name: "foreign key violation",
            message: format!("an existing '{child}' entity references this '{parent}' entity"),
            fields: Some(json!({"@referenced_by": child})),
        }
    }

    /// Code 5 (409).
    pub fn unique(field: &str, value: &Value) -> Self {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut fields = Map::new();
        fields.insert(field.to_string(), value.clone());
        ApiError::Entity {
            status: StatusCode::CONFLICT,
            code: 5,
            name: "unique constraint violation",
            message: format!("UNIQUE violation detected on '{{{field}=\"{shown}\"}}'"),
            fields: Some(Value::Object(fields)),
        }
    }

    /// Code 6 (404) for a PATCH of a missing entity, addressed by `key` (`id`, `name`, …).
    pub fn entity_not_found(key: &str, value: &str) -> Self {
        let message = if key == "id" {
            format!("could not find the entity with primary key '{{id=\"{value}\"}}'")
        } else {
            format!("could not find the entity with '{{{key}=\"{value}\"}}'")
        };
        let mut fields = Map::new();
        fields.insert(key.to_string(), Value::String(value.to_string()));
        ApiError::Entity {
            status: StatusCode::NOT_FOUND,
            code: 6,
            name: "not found",
            message,
            fields: Some(Value::Object(fields)),
        }
    }

    /// Code 7.
    pub fn invalid_offset(token: &str, reason: &str) -> Self {
        ApiError::Entity {
            status: StatusCode::BAD_REQUEST,
            code: 7,
            name: "invalid offset",
            message: format!("'{token}' is not a valid offset for this strategy: {reason}"),
            fields: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ForeignKey => ApiError::bad_request("foreign key violation"),
            // The database is down or unreachable, not the request at fault: a client may
            // retry, as it may on Kong's 503s. Nothing was written.
            StoreError::Db(ref db @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))) => {
                tracing::warn!(error = %db, "the database does not answer");
                ApiError::message(StatusCode::SERVICE_UNAVAILABLE, "the database does not answer")
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound => json_response(StatusCode::NOT_FOUND, &json!({"message": "Not found"})),
            ApiError::Message(status, msg) => json_response(status, &json!({ "message": msg })),
            ApiError::Entity { status, code, name, message, fields } => {
                let mut body = json!({
                    "code": code,
                    "name": name,
                    "message": message,
                    "strategy": STRATEGY.get().copied().unwrap_or("postgres"),
                });
                if let (Some(f), Some(obj)) = (fields, body.as_object_mut()) {
                    obj.insert("fields".into(), f);
                }
                json_response(status, &body)
            }
            ApiError::Fields(status, map) => json_response(status, &Value::Object(map)),
            ApiError::UnsupportedMediaType => {
                json_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &json!({"message": "Unsupported Media Type"}))
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "admin request failed");
                json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"message": "An unexpected error occurred"}))
            }
        }
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    /// A database that does not answer is a 503 in Kong's shape (it was a 500 "unexpected
    /// error" after the pool's timeout, found by scripts/chaos.py with Postgres killed).
    #[test]
    fn an_unreachable_database_is_503() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
        ] {
            let resp = ApiError::from(StoreError::Db(e)).into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let resp = ApiError::from(StoreError::Corrupt("x".into())).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
