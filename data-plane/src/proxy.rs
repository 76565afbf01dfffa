//! The proxy: one request's life, top to bottom — route, access, balance and connect (with
//! retries), forward, answer, log — in one engine ([`direct`]), which HTTP/1 clients reach
//! directly and HTTP/2 clients through [`h2`]. Everything a request reads comes from one `Arc`
//! of the compiled configuration taken when it arrives.

pub(crate) mod direct;
mod error;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod headers;
pub(crate) mod upstream;
mod uri;
pub(crate) mod waiting;

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

/// What the fuzz targets (`fuzz/`) reach inside the proxy; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::direct::serve as serve_http1;
}
pub use error::ProxyError;
pub use upstream::Connector;

use gatehouse_shared::enabled_headers::EnabledHeaders;

use crate::ip_net::IpNet;
use crate::live::Live;
use crate::message::SERVER_TOKEN;
use crate::router;

/// Shared by every connection of every listener.
pub struct Proxy {
    pub live: Arc<Live>,
    pub connector: Connector,
    /// Peers whose X-Forwarded-* and X-Real-IP headers are believed.
    pub trusted: Vec<IpNet>,
    /// Which of Server, Via and the latency headers answers carry (Kong's `headers`).
    pub headers: EnabledHeaders,
}

#[cfg(test)]
impl Proxy {
    /// A proxy with no configuration and the default settings (unit tests' listeners).
    pub(crate) fn unconfigured() -> Arc<Proxy> {
        Arc::new(Proxy {
            live: Arc::new(Live::new(crate::balancer::Registry::default())),
            connector: Connector::new(),
            trusted: Vec::new(),
            headers: EnabledHeaders::default(),
        })
    }
}

const X_KONG_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-kong-upstream-latency");
const X_KONG_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-kong-proxy-latency");
const X_KONG_UPSTREAM_STATUS: HeaderName = HeaderName::from_static("x-kong-upstream-status");

/// Kong's `header_filter` on a proxied answer: each of Gatehouse's fields the `headers`
/// setting turns on replaces the upstream's field of that name; one turned off leaves the
/// upstream's alone.
pub(crate) fn add_own_fields(
    h: &mut http::HeaderMap,
    on: EnabledHeaders,
    status: StatusCode,
    upstream_latency: HeaderValue,
    proxy_latency: HeaderValue,
) {
    if on.upstream_status {
        h.insert(X_KONG_UPSTREAM_STATUS, HeaderValue::from(status.as_u16()));
    }
    if on.upstream_latency {
        h.insert(X_KONG_UPSTREAM_LATENCY, upstream_latency);
    }
    if on.proxy_latency {
        h.insert(X_KONG_PROXY_LATENCY, proxy_latency);
    }
    if on.via {
        h.insert(header::VIA, HeaderValue::from_static(SERVER_TOKEN));
    }
}

/// The fields `Kong-Debug` adds to a proxied answer (Kong's `header_filter`), spelled as
/// Kong spells them.
pub(crate) const DEBUG_FIELDS: [&str; 3] = ["Kong-Route-Id", "Kong-Service-Id", "Kong-Service-Name"];

/// The values of [`DEBUG_FIELDS`] for an answer on `route`: its id, its service's id, and its
/// service's name when it has one (else the upstream's field of that name, if any, stays).
pub(crate) fn debug_values(route: &router::RouteInfo) -> [Option<&[u8]>; 3] {
    let service = &route.service;
    [Some(route.id.as_bytes()), Some(service.id.as_bytes()), service.name.as_deref().map(str::as_bytes)]
}

/// Adds what `Kong-Debug` asks for to an answer's fields, each replacing the upstream's field
/// of that name.
pub(crate) fn add_debug_fields(h: &mut http::HeaderMap, route: &router::RouteInfo) {
    for (name, value) in DEBUG_FIELDS.iter().zip(debug_values(route)) {
        let name = HeaderName::from_bytes(name.as_bytes());
        if let (Ok(name), Some(Ok(value))) = (name, value.map(HeaderValue::from_bytes)) {
            h.insert(name, value);
        }
    }
}

/// The page for an upstream failure (a 502 or 504) counts as proxied in Kong, which marks a
/// request so once its access phase has ended: it gets [`add_own_fields`], the upstream's
/// latency being the time up to the failure and its status the page's own (nginx's
/// `$upstream_status` for a failed try).
pub(crate) fn mark_upstream_failure(
    h: &mut http::HeaderMap,
    status: StatusCode,
    on: EnabledHeaders,
    proxy_latency: HeaderValue,
    sent: Instant,
) {
    add_own_fields(h, on, status, millis(sent), proxy_latency);
}

/// Milliseconds since `since` as a header value. Latencies are almost always small: those
/// come from a table of static values, so the two latency headers cost no allocation.
fn millis(since: Instant) -> HeaderValue {
    millis_between(since, Instant::now())
}

/// [`millis`] between two readings already taken.
fn millis_between(from: Instant, to: Instant) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..1024u32).map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str()))).collect()
    });
    let ms = to.saturating_duration_since(from).as_millis();
    match usize::try_from(ms).ok().and_then(|i| SMALL.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(ms as u64),
    }
}
