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
mod openapi;
mod paginate;
mod paths;
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
use paths::Routes;
pub(crate) use root::metrics_text;
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
    pub security: crate::config::AdminSecurity,
    pub counters: Counters,
    /// Admin API requests by route and status, for `/metrics`.
    pub metrics: crate::metrics::AdminMetrics,
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
    routes()
        .into_router()
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
        .layer(axum::middleware::from_fn_with_state(node, edge))
}

/// Every route of the Admin API, one router per resource.
fn routes() -> Routes {
    Routes::new()
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
        .merge(openapi::router())
}

/// The paths the Admin API routes, as axum spells them (`/services/{svc}`).
pub fn paths() -> Vec<String> {
    routes().paths().to_vec()
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
    let started = std::time::Instant::now();
    // Any token is a valid method: only the ones the Admin API serves get their own series, so a
    // client cannot grow /metrics without bound.
    let method = match *req.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS => {
            req.method().as_str()
        }
        _ => "other",
    }
    .to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if let Some(reason) = bad_target(req.uri()) {
        ApiError::bad_request(reason).into_response()
    } else if let Some(refusal) = refused(&node.security, &req) {
        refusal
    } else if req.method() == Method::OPTIONS {
        let mut r = respond::no_content();
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, PUT, PATCH, POST, DELETE"),
        );
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type, Authorization"));
        r
    } else {
        let span = tracing::info_span!(
            "admin.request",
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
        span.record("http.response.status_code", resp.status().as_u16());
        resp
    };
    node.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    node.metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels { method, route, code: resp.status().as_u16() })
        .observe(started.elapsed().as_secs_f64());
    // Only pages from listed origins may read answers: any page a local user opens could
    // otherwise read every credential from a loopback Admin API.
    let origins = &node.security.cors_origins;
    if origins.iter().any(|o| o == "*") {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    } else if let Some(origin) = origin.filter(|o| origins.iter().any(|allowed| o.as_bytes() == allowed.as_bytes())) {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        resp.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if node.server_header {
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static(concat!("gatehouse/", env!("CARGO_PKG_VERSION"))));
    } else {
        resp.headers_mut().remove(header::SERVER);
    }
    resp
}

/// Why the Admin API will not serve this request: a wrong or missing token when one is set;
/// without one, a Host that is neither a loopback name nor listed in `admin_server_names`,
/// so that a page on another site cannot reach it through DNS rebinding. Preflights pass
/// (browsers send them without credentials) and reveal nothing.
fn refused(security: &crate::config::AdminSecurity, req: &Request) -> Option<Response> {
    if req.method() == Method::OPTIONS {
        return None;
    }
    // Health probes (an orchestrator's, which sends neither a token nor a loopback Host) read
    // no configuration.
    if req.method() == Method::GET && matches!(req.uri().path(), "/status" | "/status/ready") {
        return None;
    }
    if let Some(token) = &security.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let ok = given.is_some_and(|g| bool::from(subtle::ConstantTimeEq::ct_eq(g.as_bytes(), token.as_bytes())));
        if ok {
            return None;
        }
        let mut r = ApiError::message(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""));
        return Some(r);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if host_allowed(&host, &security.server_names) {
        return None;
    }
    Some(
        ApiError::message(
            StatusCode::FORBIDDEN,
            format!("Host '{host}' is not served: the Admin API answers loopback names and admin_server_names"),
        )
        .into_response(),
    )
}

/// A loopback name or address (`localhost`, `127.0.0.1`, `[::1]`, any port) or a listed name.
fn host_allowed(host: &str, listed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(n, port)| if port.bytes().all(|b| b.is_ascii_digit()) { n } else { host }),
    }
    .trim_end_matches('.')
    .to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || listed.contains(&name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_and_listed_hosts() {
        let listed = vec!["admin.internal".to_owned()];
        for ok in [
            "localhost",
            "localhost:8001",
            "127.0.0.1:8001",
            "127.1.2.3",
            "[::1]:8001",
            "admin.internal:8001",
            "LOCALHOST.",
        ] {
            assert!(super::host_allowed(ok, &listed), "{ok}");
        }
        for bad in
            ["evil.example", "evil.example:8001", "10.0.0.1:8001", "", "localhost.evil.example", "[2001:db8::1]:1"]
        {
            assert!(!super::host_allowed(bad, &listed), "{bad}");
        }
    }
}
