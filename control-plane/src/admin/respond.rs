//! Response builders with Kong's framing: `application/json; charset=utf-8`, body followed by
//! a newline; empty bodies for 204.

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use serde_json::Value;

pub fn json(status: StatusCode, body: &Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}

pub fn ok(body: &Value) -> Response {
    json(StatusCode::OK, body)
}

pub fn created(body: &Value) -> Response {
    json(StatusCode::CREATED, body)
}

/// 201 when the PUT created the entity, 200 when it replaced one.
pub fn put(created_new: bool, body: &Value) -> Response {
    json(if created_new { StatusCode::CREATED } else { StatusCode::OK }, body)
}

pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

pub fn no_content() -> Response {
    empty(StatusCode::NO_CONTENT)
}
