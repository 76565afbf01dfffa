//! The Admin API: Kong 0.14's REST interface over the store. `router()` merges one router per
//! resource (modules are named like their URLs); `service()` wraps it with what every response
//! gets (CORS, trailing-slash tolerance, Kong's 404/405 bodies, request counting).

mod body;
mod certificates;
mod clustering;
mod consumers;
mod credentials;
mod crud;
mod error;
mod health;
mod oldlayer;
mod paginate;
mod plugins;
mod respond;
mod root;
mod routes;
mod services;
mod snis;
mod targets;
mod upstreams;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderValue, Method, StatusCode, Uri};
use serde_json::Value;

pub use error::{set_strategy, ApiError};
pub use root::KONG_VERSION;

use crate::store::Store;

/// What handlers share: the store and this node's identity. Nothing mutable lives here but
/// the traffic counters, which are atomics.
#[derive(Clone)]
pub struct Admin {
    pub store: Store,
    pub node: Arc<Node>,
}

/// This control-plane process as `GET /` and `/status` describe it.
#[derive(Debug, Default)]
pub struct Node {
    pub node_id: String,
    pub hostname: String,
    /// The effective configuration, secrets redacted.
    pub configuration: Value,
    /// A data plane not heard from for this long is shown as disconnected.
    pub stale_after: std::time::Duration,
    /// Whether answers carry `Server` (the `headers` setting's `server` entry).
    pub server_header: bool,
    /// A connection's time to send a head, or to stay idle between requests.
    pub header_timeout: std::time::Duration,
    /// Connections served at once.
    pub max_connections: usize,
    pub counters: Counters,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    /// Requests being handled now (nginx's "writing").
    pub in_flight: AtomicU64,
}

/// Which listener a request came in on, for building absolute `next` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

pub fn router(admin: Admin) -> Router {
    let method_not_allowed =
        || async { ApiError::message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response() };
    let node = admin.node.clone();
    Router::new()
        .merge(root::router())
        .merge(services::router())
        .merge(routes::router())
        .merge(consumers::router())
        .merge(credentials::router())
        .merge(plugins::router())
        .merge(certificates::router())
        .merge(snis::router())
        .merge(upstreams::router())
        .merge(targets::router())
        .merge(health::router())
        .merge(clustering::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
        .layer(axum::middleware::from_fn_with_state(node, edge))
}

/// The Admin API as one service: the router behind a path normaliser, which must run before
/// routing so that every path also works with a trailing `/`.
pub type AdminService = tower::util::MapRequest<Router, fn(Request) -> Request>;

pub fn service(admin: Admin) -> AdminService {
    tower::util::MapRequest::new(router(admin), strip_trailing_slash as fn(Request) -> Request)
}

fn strip_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Why a request target is refused before routing.
fn bad_target(uri: &Uri) -> Option<&'static str> {
    let decoded = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
    let path = decoded(uri.path());
    // Query components are decoded one by one, `+` and all, as the handlers will read them.
    let query: Vec<Vec<u8>> =
        uri.query().unwrap_or_default().split(['&', '=']).map(|p| decoded(&p.replace('+', " "))).collect();
    if path.contains(&0) || query.iter().any(|q| q.contains(&0)) {
        return Some("Invalid request: the URL holds a NUL character");
    }
    if std::str::from_utf8(&path).is_err() || query.iter().any(|q| std::str::from_utf8(q).is_err()) {
        return Some("Invalid request: the URL is not valid UTF-8 once decoded");
    }
    None
}

/// CORS on every response and `OPTIONS` answered with 204, as Kong's Admin API does. A
/// target no handler could read (a NUL, which Postgres cannot store, or bytes that are not
/// UTF-8) is refused here, the same on both stores.
async fn edge(axum::extract::State(node): axum::extract::State<Arc<Node>>, req: Request, next: Next) -> Response {
    node.counters.requests.fetch_add(1, Ordering::Relaxed);
    node.counters.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut resp = if let Some(reason) = bad_target(req.uri()) {
        ApiError::bad_request(reason).into_response()
    } else if req.method() == Method::OPTIONS {
        let mut r = respond::no_content();
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, PUT, PATCH, POST, DELETE"),
        );
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type"));
        r
    } else {
        next.run(req).await
    };
    node.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if node.server_header {
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static(concat!("gatehouse/", env!("CARGO_PKG_VERSION"))));
    } else {
        resp.headers_mut().remove(header::SERVER);
    }
    resp
}
