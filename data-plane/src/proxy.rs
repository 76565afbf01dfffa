//! The proxy: one request's life, top to bottom — route, access, balance and connect (with
//! retries), forward, answer, log — in one engine ([`direct`]), which HTTP/1 clients reach
//! directly and HTTP/2 clients through [`h2`]. Everything a request reads comes from one `Arc`
//! of the compiled configuration taken when it arrives.

mod body;

pub(crate) mod direct;
mod error;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod headers;
pub(crate) mod upstream;
mod uri;
pub(crate) mod waiting;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

pub use body::{Filtered, ReqBody, ResBody};

/// What the fuzz targets (`fuzz/`) reach inside the proxy; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::direct::serve as serve_http1;
    pub use super::h1::chunked::{ChunkedEnd, Malformed};
}
pub use error::{ProxyError, SERVER_TOKEN};
pub use upstream::{Connector, DnsAnswer};

use gatehouse_shared::enabled_headers::EnabledHeaders;

use crate::live::Live;
use crate::router;

/// Where a request came in: one per client connection, shared by its requests.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub https: bool,
    pub listener_port: u16,
    /// The peer's address and the listener's port as header values, formatted once per
    /// connection rather than once per request (X-Forwarded-For, X-Real-IP, X-Forwarded-Port).
    peer_value: HeaderValue,
    port_value: HeaderValue,
    /// The address the client connected to (nginx's `$server_addr`), when known.
    pub local: Option<SocketAddr>,
    /// This connection's number among the process's (nginx's `$connection`).
    pub serial: u64,
    /// Requests that reached plugins on this connection (nginx's `$connection_requests`, as
    /// far as plugins can see it).
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    /// The client speaks HTTP/2 (its requests reach the engine through [`h2`]).
    pub http2: bool,
}

impl Conn {
    pub fn new(peer: SocketAddr, https: bool, listener_port: u16) -> Conn {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let peer_value = HeaderValue::try_from(peer.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
        Conn {
            peer,
            https,
            listener_port,
            peer_value,
            port_value: HeaderValue::from(listener_port),
            local: None,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: Arc::default(),
            http2: false,
        }
    }

    /// The same, knowing the local address.
    pub fn at(mut self, local: Option<SocketAddr>) -> Conn {
        self.local = local;
        self
    }
}

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

/// An address range (`10.0.0.0/8`, or one address).
#[derive(Debug, Clone, Copy)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a.parse().map_err(|_| format!("'{s}' is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse().ok().filter(|n| *n <= max).ok_or_else(|| format!("'{s}' has an invalid prefix"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
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
    [Some(route.id.as_bytes()), Some(service.id_header.as_bytes()), service.name.as_ref().map(HeaderValue::as_bytes)]
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
