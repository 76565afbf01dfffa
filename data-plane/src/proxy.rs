//! The proxy: one request's life, top to bottom — route, rewrite, connect (with retries),
//! forward, answer — in [`Proxy::handle`]. Everything it reads comes from one `Arc` of the
//! compiled configuration taken when the request arrives.

mod body;

pub(crate) mod direct;
mod error;
pub(crate) mod h1;
mod measured;
use measured::Measured;
pub(crate) mod headers;
pub(crate) mod upstream;
mod uri;
pub(crate) mod waiting;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

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

use crate::balancer::hash::{HashInput, Hashed};
use crate::live::Live;
use crate::metrics::{self, Series};
use crate::plugins::{self, RequestCtx, Resolved};
use crate::trace;

/// What a retry needs to send a request again.
type Replay = (http::Method, Uri, http::HeaderMap, Option<bytes::Bytes>);
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

const KONG_DEBUG: HeaderName = HeaderName::from_static("kong-debug");
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

/// The fields `Kong-Debug` adds to a proxied answer (Kong's `header_filter`), as the direct
/// path spells them.
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

impl Proxy {
    /// Proxies one request; every failure becomes Kong's response for it.
    pub async fn handle(&self, req: Request<Incoming>, conn: &Conn) -> Response<ResBody> {
        let started = Instant::now();
        let mut measured = Measured::begin(&req);
        let resp = self.answer(req, conn, started, &mut measured).await;
        measured.count(resp, started)
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        conn: &Conn,
        started: Instant,
        measured: &mut Measured,
    ) -> Response<ResBody> {
        // Error pages are negotiated on Accept: keep just that (a reference-counted clone).
        let accept = req.headers().get(header::ACCEPT).cloned();
        let mut went_upstream = None;
        let mut logged = None;
        match self.forward(req, conn, started, &mut went_upstream, &mut logged, measured).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, "request not proxied");
                let upstream_failure = e.is_upstream_failure();
                let mut resp = self.own(e.into_response(accept.as_ref()));
                if let (true, Some((proxy_latency, sent))) = (upstream_failure, went_upstream) {
                    let status = resp.status();
                    mark_upstream_failure(resp.headers_mut(), status, self.headers, proxy_latency, sent);
                }
                // The route's plugins log the failure too, and filter its page, as in Kong.
                match logged {
                    Some(Logged { resolved, entry }) => {
                        let (mut parts, body) = resp.into_parts();
                        resolved.header_filter(&mut parts);
                        let mut entry = *entry;
                        entry.finish_answer(&parts);
                        let body = Filtered::wrap(body, resolved, &parts, Some(entry));
                        Response::from_parts(parts, body)
                    }
                    None => resp,
                }
            }
        }
    }

    /// One of Gatehouse's own answers (an error page, a plugin's rejection): it says
    /// `Server` only if the `headers` setting lets it, as Kong's `header_filter` does.
    fn own(&self, mut resp: Response<ResBody>) -> Response<ResBody> {
        if !self.headers.server {
            resp.headers_mut().remove(header::SERVER);
        }
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        conn: &Conn,
        started: Instant,
        went_upstream: &mut Option<(HeaderValue, Instant)>,
        logged: &mut Option<Logged>,
        measured: &mut Measured,
    ) -> Result<Response<ResBody>, ProxyError> {
        let config = self.live.load();
        let client_version = req.version();
        // Smuggling shapes are refused before anything is forwarded.
        let h = req.headers();
        if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        if h.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
            return Err(ProxyError::BadRequest("several Content-Length headers"));
        }
        // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2); HTTP/2 may carry :authority.
        let hosts = h.get_all(header::HOST).iter().count();
        headers::one_host(hosts, req.version() != Version::HTTP_11)?;
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }
        // Held as a (reference-counted) header value: no copy, and `preserve_host` sends it on.
        // An absolute-form target names the host itself, and wins over Host (RFC 9112 §3.2.2).
        let authority = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let host_header = match (authority, h.get(header::HOST)) {
            (Some(a), _) => a,
            (None, Some(v)) => v.clone(),
            (None, None) => HeaderValue::from_static(""),
        };
        let raw_host = host_header.to_str().unwrap_or_default();
        if !headers::valid_host(raw_host) {
            return Err(ProxyError::BadRequest("invalid Host"));
        }
        let path = req.uri().path();
        if headers::climbs_above_root(path) {
            return Err(ProxyError::BadRequest("the path climbs above the root"));
        }
        let routing = trace::clock(&measured.trace);
        let found = config.router.find(&router::Request { method: req.method().as_str(), path, host: raw_host });
        trace::phase(&mut measured.trace, routing, "kong.router", Vec::new);
        let m = found.ok_or(ProxyError::NoRoute)?;
        let route = &m.route;
        let service = &route.service;
        if let Some(t) = measured.trace.as_mut() {
            t.attributes.extend(crate::trace::request(req.method().as_str(), path, raw_host, route));
        }
        if measured.series != Series::OFF {
            measured.series = route.series;
        }
        if route.https_only && !conn.https {
            return Err(ProxyError::HttpsRequired);
        }
        let strip = if route.strip_path { m.strip } else { None };
        let debug = req.headers().contains_key(&KONG_DEBUG);

        let (mut parts, incoming) = req.into_parts();
        // What the log phase needs of the request as it came, kept only where a plugin logs.
        let logging = route.plugins.logs;
        let mut log_uri =
            logging.then(|| parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()));
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(&KONG_DEBUG);
        let host_no_port = headers::without_port(raw_host);
        let trusted = self.trusted.iter().any(|n| n.contains(conn.peer.ip()));
        let mut body =
            if incoming_is_empty(&parts.headers, &incoming) { ReqBody::Empty } else { ReqBody::Stream(incoming) };

        // Plugins (access phase); routes without any skip all of this.
        let mut resolved = Resolved::default();
        let mut response_fields = plugins::ResponseFields::default();
        let mut hooks: Vec<Box<dyn plugins::ResponseHook>> = Vec::new();
        let mut consumer: Option<Arc<str>> = None;
        let mut rewritten_query: Option<Option<String>> = None;
        let mut new_method = None;
        let mut plugin_host: Option<HeaderValue> = None;
        let mut log_request: Option<(http::HeaderMap, Option<plugins::Credential>, Option<bytes::Bytes>)> = None;
        if !route.plugins.is_empty() {
            let mut ctx = RequestCtx::new(plugins::ctx::Arrived {
                method: &parts.method,
                version: parts.version,
                target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                path: parts.uri.path(),
                query: parts.uri.query().map(Cow::Borrowed),
                headers: &mut parts.headers,
                body: &mut body,
                conn,
                trusted,
                config: &config,
                live: &self.live,
                started,
                route,
            });
            match plugins::access(&route.plugins, &mut ctx, measured.trace.as_deref_mut()).await {
                Ok(r) => resolved = r,
                Err(response) => return Ok(self.own(*response)),
            }
            consumer = ctx.consumer.as_ref().map(|c| c.id.clone());
            response_fields = std::mem::take(&mut ctx.response);
            hooks = std::mem::take(&mut ctx.hooks);
            new_method = ctx.method_override.take();
            plugin_host = ctx.upstream_host.take();
            if logging {
                log_request = Some((ctx.headers.clone(), ctx.credential.clone(), ctx.log_body.take()));
            }
            if ctx.query.as_deref() != parts.uri.query() {
                rewritten_query = Some(ctx.query.map(Cow::into_owned));
            }
        }
        if let Some(m) = new_method {
            parts.method = m;
        }
        // Upstream headers are set after the access phase: plugins see the client's own
        // (an hmac-auth signature over `host`, say).
        headers::set_forwarding(
            &mut parts.headers,
            &headers::Forwarded {
                peer: &conn.peer_value,
                trusted,
                https: conn.https,
                listener_port: &conn.port_value,
                host: host_no_port,
            },
        );
        let host_value = match &plugin_host {
            Some(h) => h.clone(),
            None if route.preserve_host => host_header.clone(),
            None => service.host_header.clone(),
        };
        parts.headers.insert(header::HOST, host_value);
        let query = match &rewritten_query {
            Some(q) => q.as_deref(),
            None => parts.uri.query(),
        };
        let target = uri::upstream_target(parts.uri.path(), strip, service.path.as_deref(), query);
        parts.uri = Uri::try_from(target).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        parts.version = Version::HTTP_11;
        if let Some(n) = parts.headers.get(header::CONTENT_LENGTH).and_then(headers::normalized_length) {
            parts.headers.insert(header::CONTENT_LENGTH, n);
        }

        // Tries = 1 + retries, on failures before a response header (connect errors, timeouts,
        // closed connections), as nginx's `proxy_next_upstream error timeout`. A request with a
        // body can only be replayed while its body is unsent, so it is retried only then.
        let replay = match &body {
            // nginx does not resend POST, PATCH or LOCK once they were sent.
            _ if service.retries == 0 || matches!(parts.method.as_str(), "POST" | "PATCH" | "LOCK") => None,
            ReqBody::Empty => Some((parts.method.clone(), parts.uri.clone(), parts.headers.clone(), None)),
            ReqBody::Full(b) => Some((parts.method.clone(), parts.uri.clone(), parts.headers.clone(), Some(b.clone()))),
            ReqBody::Stream(_) | ReqBody::Prefixed(..) | ReqBody::Unread => None,
        };
        let sni = if route.preserve_host && service.https { Some(host_no_port.to_string()) } else { None };
        // Balanced services hash once per request; each try moves one position on (§5.4).
        let hashed = match &service.balancer {
            Some(b) if !b.hash.is_none() => b.hash.hash(&HashInput {
                headers: &parts.headers,
                client_ip: conn.peer.ip(),
                consumer: consumer.as_deref(),
            }),
            _ => Hashed::default(),
        };
        let proxy_latency = millis(started);
        let sent = Instant::now();
        *went_upstream = Some((proxy_latency.clone(), sent));
        if logging {
            // nginx's `$remote_addr` after its real-ip module: X-Real-IP from a trusted peer.
            let client_ip = match trusted {
                true => parts.headers.get("x-real-ip").and_then(|v| v.to_str().ok()?.trim().parse().ok()),
                false => None,
            };
            let mut e = plugins::LogEntry::new(
                config.set.clone(),
                route.id.clone(),
                service.id.clone(),
                route.logged(&config.set),
                started,
                client_ip.unwrap_or(conn.peer.ip()),
            );
            let (request_headers, credential, request_body) = log_request.take().unwrap_or_default();
            let uri = log_uri.take().unwrap_or_default();
            let length = request_headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
            e.consumer_id = consumer.clone();
            e.credential = credential;
            e.method = parts.method.to_string();
            e.request_size =
                plugins::log::head_size(e.method.len() + uri.len() + 10, &request_headers) + length.unwrap_or(0);
            e.uri = uri;
            e.https = conn.https;
            e.host = host_no_port.to_owned();
            e.server_port = conn.listener_port;
            e.server_addr = conn.local.map(|a| a.ip());
            e.http_version = client_version;
            e.request_body = request_body;
            e.request_has_body = body.has_body();
            e.request_headers = request_headers;
            e.upstream_uri = Some(parts.uri.to_string());
            e.kong_latency_ms = started.elapsed().as_millis() as u64;
            *logged = Some(Logged { resolved: std::mem::take(&mut resolved), entry: Box::new(e) });
        }
        let mut tries = logged.as_mut().map(|l| &mut l.entry.tries);
        if let Some(t) = &measured.trace {
            if let Ok(v) = HeaderValue::from_str(&t.traceparent()) {
                parts.headers.insert(HeaderName::from_static("traceparent"), v);
            }
        }
        let mut upstream_req = Request::from_parts(parts, body);
        let mut tries_left = service.retries;
        let mut try_number = 0;
        let mut reused_once = false;
        let mut last_failure = None;
        let (mut pooled, response, peer) = loop {
            let picking = trace::clock(&measured.trace);
            let peer = match &service.balancer {
                Some(b) => match b.ring().pick(b.position(hashed.hash, try_number)) {
                    Some(p) => Some(p.clone()),
                    None => return Err(last_failure.unwrap_or(ProxyError::NoPeer)),
                },
                None => None,
            };
            try_number += 1;
            trace::phase(&mut measured.trace, picking, "kong.balancer", || {
                trace::peer(service, peer.as_deref(), try_number)
            });
            if let Some(tries) = &mut tries {
                let (ip, port) = match (&peer, service.ip) {
                    (Some(p), _) => (p.addr.ip().to_string(), p.addr.port()),
                    (None, Some(ip)) => (ip.to_string(), service.port),
                    (None, None) => (service.host.clone(), service.port),
                };
                let balancer_start_ms = plugins::log::unix_ms(Instant::now());
                tries.push(plugins::log::Try { ip, port, balancer_start_ms, failed: None, code: None });
            }
            if let Some(p) = &peer {
                if !route.preserve_host && plugin_host.is_none() {
                    upstream_req.headers_mut().insert(header::HOST, p.host_header(service.https).clone());
                }
            }
            let key = peer.as_ref().map_or(&service.pool_key, |p| p.pool_key(service.https));
            let pooled_conn = if sni.is_some() { None } else { upstream::Connector::checkout(key) };
            let from_pool = pooled_conn.is_some();
            let connecting = trace::clock(&measured.trace);
            let mut conn = match pooled_conn {
                Some(c) => c,
                None => match self.connector.connect(service, peer.as_deref(), sni.as_deref()).await {
                    Ok(c) => {
                        crate::trace::dns(measured.trace.as_deref_mut(), service, c.resolved);
                        trace::call(&mut measured.trace, connecting, "kong.upstream.connect", || {
                            trace::peer(service, peer.as_deref(), try_number)
                        });
                        c
                    }
                    Err(e @ (ProxyError::Connect(_) | ProxyError::Timeout)) => {
                        if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                            b.observe_failure(p, matches!(e, ProxyError::Timeout), sent);
                        }
                        if tries_left == 0 {
                            return Err(e);
                        }
                        tracing::debug!(error = %e, tries_left, "upstream connect failed; retrying");
                        mark_failed(tries.as_deref_mut(), &e);
                        tries_left -= 1;
                        last_failure = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let sending = trace::clock(&measured.trace);
            let sent_upstream = tokio::time::timeout(service.read_timeout, conn.send(upstream_req)).await;
            trace::call(&mut measured.trace, sending, "kong.upstream.response", || {
                let status = match &sent_upstream {
                    Ok(Ok(r)) => Some(r.status().as_u16()),
                    _ => None,
                };
                trace::answered(trace::peer(service, peer.as_deref(), try_number), status)
            });
            let failure = match sent_upstream {
                Ok(Ok(r)) => break (conn, r, peer),
                // An answer that is not HTTP is not retried (nginx's `invalid_header` is not
                // among Kong's `proxy_next_upstream error timeout`).
                // The client's body broke off or was not valid chunked: the client's fault, a 400,
                // with no charge to the upstream's health; the upstream saw no complete request
                // (its connection goes with this error).
                Ok(Err(e)) if e.error().is_user() => {
                    tracing::debug!(error = %e.error(), "the request body could not be read");
                    return Err(ProxyError::BadRequest("invalid request body"));
                }
                Ok(Err(e)) if e.error().is_parse() || e.error().is_parse_status() => {
                    if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                        b.observe_failure(p, false, sent);
                    }
                    return Err(ProxyError::Upstream(e.into_error().to_string()));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // Not sent: a pooled connection the upstream had closed. Once, for free.
                    Some(unsent) if from_pool && !reused_once => {
                        reused_once = true;
                        try_number -= 1;
                        if let Some(t) = &mut tries {
                            t.pop();
                        }
                        upstream_req = unsent;
                        continue;
                    }
                    Some(unsent) => {
                        upstream_req = unsent;
                        ProxyError::Upstream(e.into_error().to_string())
                    }
                    None => match &replay {
                        Some(r) => {
                            upstream_req = rebuild(r);
                            ProxyError::Upstream(e.into_error().to_string())
                        }
                        None => {
                            if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                                b.observe_failure(p, false, sent);
                            }
                            return Err(ProxyError::Upstream(e.into_error().to_string()));
                        }
                    },
                },
                Err(_) => match &replay {
                    Some(r) => {
                        upstream_req = rebuild(r);
                        ProxyError::Timeout
                    }
                    None => {
                        if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                            b.observe_failure(p, true, sent);
                        }
                        return Err(ProxyError::Timeout);
                    }
                },
            };
            if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                b.observe_failure(p, matches!(failure, ProxyError::Timeout), sent);
            }
            if tries_left == 0 {
                return Err(failure);
            }
            tracing::debug!(error = %failure, tries_left, "upstream try failed; retrying");
            mark_failed(tries.as_deref_mut(), &failure);
            tries_left -= 1;
            last_failure = Some(failure);
        };
        if let (Some(b), Some(p)) = (&service.balancer, &peer) {
            b.observe_status(p, response.status().as_u16(), sent);
        }
        let answered = Instant::now();
        let upstream_latency = millis_between(sent, answered);
        measured.upstream_ms = Some(metrics::ms(sent, answered));
        measured.kong_ms = Some(metrics::ms(started, sent));

        let (mut parts, body) = response.into_parts();
        // hyper would downgrade the connection's later requests to HTTP/1.0 (and send a chunked
        // body without its framing); Kong always speaks HTTP/1.1 upstream, so it is not reused.
        // A connection whose TLS name was the client's Host serves no other client either.
        if parts.version == Version::HTTP_10 || sni.is_some() {
            pooled.retire();
        }
        // The client's connection has its own version; the upstream's (maybe 1.0) does not leak.
        parts.version = Version::HTTP_11;
        // Chunked framing wins over a length (RFC 9112 §6.3), which would cut the body short.
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            parts.headers.remove(header::CONTENT_LENGTH);
        } else if let Some(n) = parts.headers.get(header::CONTENT_LENGTH).and_then(headers::normalized_length) {
            parts.headers.insert(header::CONTENT_LENGTH, n);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        let body_empty = hyper::body::Body::is_end_stream(&body);
        let h = &mut parts.headers;
        add_own_fields(h, self.headers, parts.status, upstream_latency, proxy_latency);
        if let Some(cookie) = hashed.set_cookie {
            h.append(header::SET_COOKIE, cookie);
        }
        if debug {
            add_debug_fields(h, route);
        }
        response_fields.apply(&mut parts.headers);
        // A hook may turn the answer into one of the gateway's own, with no body.
        let mut emptied = false;
        for hook in &mut hooks {
            emptied |= hook.header_filter(&mut parts);
        }
        let (body, keep_alive_upstream) = if emptied {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            (None, false)
        } else {
            (Some(body), true)
        };
        let (resolved, entry) = match logged.take() {
            Some(Logged { resolved, entry }) => (resolved, Some(entry)),
            None => (resolved, None),
        };
        resolved.header_filter(&mut parts);

        let keep = if !keep_alive_upstream {
            // An upstream body nobody reads leaves its connection unusable: it closes.
            None
        } else if body_empty {
            // Nothing will poll an empty body: the connection is free now.
            pooled.release();
            None
        } else {
            Some(pooled)
        };
        let entry = entry.map(|mut e| {
            e.proxy_latency_ms = Some(metrics::ms(sent, answered));
            e.finish_answer(&parts);
            *e
        });
        let body = match body {
            Some(b) => ResBody::Upstream(b, keep),
            None => ResBody::empty(),
        };
        let body = Filtered::wrap(body, resolved, &parts, entry);
        Ok(Response::from_parts(parts, body))
    }
}

/// A logging route's plugins and log entry, between the access phase and the answer.
pub struct Logged {
    resolved: Resolved,
    entry: Box<plugins::LogEntry>,
}

/// Marks the last try as failed, with the status Kong's balancer records for it.
fn mark_failed(tries: Option<&mut Vec<plugins::log::Try>>, error: &ProxyError) {
    if let Some(t) = tries.and_then(|t| t.last_mut()) {
        t.failed = Some("next");
        t.code = Some(if matches!(error, ProxyError::Timeout) { 504 } else { 502 });
    }
}

/// The request again, for another try: bodiless, or with a body held in memory.
fn rebuild((method, uri, headers, body): &Replay) -> Request<ReqBody> {
    let mut req = Request::new(body.clone().map_or(ReqBody::Empty, ReqBody::Full));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = headers.clone();
    req
}

fn incoming_is_empty(headers: &http::HeaderMap, body: &Incoming) -> bool {
    use hyper::body::Body;
    body.is_end_stream()
        || (headers.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            && !headers.contains_key(header::TRANSFER_ENCODING))
}
