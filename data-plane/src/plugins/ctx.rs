//! What plugins see of a request, and the authentication state they build on it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};

use gatehouse_shared::snapshot::ConfigSet;

use super::control_plane::ControlPlane;
use super::log::Entities;
pub use crate::credentials::Consumer;
use crate::credentials::{Credentials, Row};
use crate::message::{Conn, ReqBody};

/// A query argument's name or value as nginx's `get_uri_args` decodes it: `+` as a space,
/// then percent-decoding (invalid UTF-8 replaced); borrowed when there is nothing to decode.
pub(crate) fn query_decoded(s: &str) -> Cow<'_, str> {
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// What authenticated the request.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A credential row (key-auth, basic-auth, hmac-auth, jwt, oauth2): what log records and
    /// rate limits name of it.
    Row { id: Arc<str>, consumer_id: Option<Arc<str>> },
    /// ldap-auth: a directory user with no consumer.
    Ldap { username: String },
}

impl Credential {
    /// The credential of a row.
    pub fn of(row: &impl Row) -> Credential {
        Credential::Row { id: row.id().clone(), consumer_id: row.consumer_id().cloned() }
    }

    /// The owning consumer's id, for plugins (acl) that need one without a consumer.
    pub fn consumer_id(&self) -> Option<&str> {
        match self {
            Credential::Row { consumer_id, .. } => consumer_id.as_deref(),
            Credential::Ldap { .. } => None,
        }
    }
}

/// Response header fields plugins set during `access`, as Kong's plugins assign `ngx.header`
/// there (rate-limiting's counters, cors's origin, correlation-id's echo): each replaces any
/// field of its name on whatever answer the request gets, proxied or a plugin's own. A route
/// whose plugins set none allocates nothing.
#[derive(Debug, Default)]
pub struct ResponseFields(Vec<(http::HeaderName, HeaderValue)>);

impl ResponseFields {
    /// Sets `name` (replacing what an earlier plugin set under it).
    pub fn set(&mut self, name: http::HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` (any case) is among them: the upstream's field of that name is replaced.
    pub fn has(&self, name: impl AsRef<[u8]>) -> bool {
        let name = name.as_ref();
        self.0.iter().any(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &(http::HeaderName, HeaderValue)> {
        self.0.iter()
    }

    /// Puts them on an answer's header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// A plugin's header filter for one request, carrying what its access phase learned.
pub trait ResponseHook: Send + Sync {
    /// Edits the head; `true` answers with an empty body instead of the upstream's.
    fn header_filter(&mut self, response: &mut http::response::Parts) -> bool;
}

/// The request during the access phase. Header changes go to the upstream.
pub struct RequestCtx<'a> {
    pub method: &'a Method,
    pub version: http::Version,
    /// The request target (path and query) as received.
    pub target: &'a str,
    /// The path as received.
    pub path: &'a str,
    /// The query string; plugins that hide credentials rewrite it.
    pub query: Option<Cow<'a, str>>,
    pub headers: &'a mut HeaderMap,
    pub body: &'a mut ReqBody,
    pub client_ip: IpAddr,
    /// The client connection is TLS.
    pub https: bool,
    /// The client is in `trusted_ips` (its X-Forwarded-* headers are believed).
    pub trusted: bool,
    pub route_id: &'a Arc<str>,
    pub service_id: &'a Arc<str>,
    /// The route and its service as log records show them, made once per route.
    pub logged: &'a OnceLock<Arc<Entities>>,
    /// The configuration the request is served with.
    pub set: &'a Arc<ConfigSet>,
    /// Its consumers and credentials.
    pub creds: &'a Credentials,
    /// The write path to the control plane, and the counters shared through it.
    pub control_plane: &'a Arc<ControlPlane>,
    pub consumer: Option<Arc<Consumer>>,
    pub credential: Option<Credential>,
    /// Fields for the response, whichever it is.
    pub response: ResponseFields,
    /// The client connection the request came on.
    pub conn: &'a Conn,
    /// When the request arrived.
    pub started: std::time::Instant,
    /// Per-request work a plugin left for the response head (its `header_filter` with what
    /// `access` learned), run in plugin order after the response fields are set.
    pub hooks: Vec<Box<dyn ResponseHook>>,
    /// A method for the upstream request other than the client's (request-transformer).
    pub method_override: Option<Method>,
    /// A Host for the upstream request other than the service's (request-transformer
    /// setting `host`, as Kong sets `upstream_host`).
    pub upstream_host: Option<HeaderValue>,
    /// The request body a logger keeps for its record (galileo's `log_bodies`).
    pub log_body: Option<Bytes>,
}

/// What a request brings to its access phase, from either proxy path; the rest of a
/// [`RequestCtx`] (consumer, credential, what plugins set) starts empty.
pub struct Arrived<'a> {
    pub method: &'a Method,
    pub version: http::Version,
    pub target: &'a str,
    pub path: &'a str,
    pub query: Option<Cow<'a, str>>,
    pub headers: &'a mut HeaderMap,
    pub body: &'a mut ReqBody,
    pub conn: &'a Conn,
    pub trusted: bool,
    pub route_id: &'a Arc<str>,
    pub service_id: &'a Arc<str>,
    pub logged: &'a OnceLock<Arc<Entities>>,
    pub set: &'a Arc<ConfigSet>,
    pub creds: &'a Credentials,
    pub control_plane: &'a Arc<ControlPlane>,
    pub started: std::time::Instant,
}

impl<'a> RequestCtx<'a> {
    pub fn new(a: Arrived<'a>) -> RequestCtx<'a> {
        RequestCtx {
            method: a.method,
            version: a.version,
            target: a.target,
            path: a.path,
            query: a.query,
            headers: a.headers,
            body: a.body,
            client_ip: a.conn.peer.ip(),
            https: a.conn.https,
            trusted: a.trusted,
            route_id: a.route_id,
            service_id: a.service_id,
            logged: a.logged,
            set: a.set,
            creds: a.creds,
            control_plane: a.control_plane,
            consumer: None,
            credential: None,
            response: ResponseFields::default(),
            conn: a.conn,
            started: a.started,
            hooks: Vec::new(),
            method_override: None,
            upstream_host: None,
            log_body: None,
        }
    }
}

/// Bodies plugins read are buffered up to this size; larger ones are not parsed.
pub const BODY_LIMIT: usize = 1024 * 1024;

impl RequestCtx<'_> {
    /// The query arguments named `name` (case-sensitive), decoded.
    pub fn query_args(&self, name: &str) -> Vec<String> {
        let Some(q) = self.query.as_deref() else { return Vec::new() };
        url::form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == name).map(|(_, v)| v.into_owned()).collect()
    }

    /// Every `name` argument, decoded, in order: `None` for one with no `=` at all (`?jwt`),
    /// which nginx's `get_uri_args` gives as `true` rather than as a string.
    pub fn query_values(&self, name: &str) -> Vec<Option<String>> {
        let Some(q) = self.query.as_deref() else { return Vec::new() };
        let decode = |s: &str| query_decoded(s).into_owned();
        // A key without `+` or `%` is compared without a copy (`query_decoded` borrows it):
        // most are, and the request path then allocates only for the value it returns.
        let named = |key: &str| query_decoded(key) == name;
        q.split('&')
            .filter_map(|p| {
                let (key, value) = match p.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (p, None),
                };
                (!p.is_empty() && named(key)).then(|| value.map(decode))
            })
            .collect()
    }

    /// Removes every `name` argument from the query, re-encoding the rest.
    pub fn remove_query_arg(&mut self, name: &str) {
        let Some(q) = self.query.as_deref() else { return };
        let kept: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k != name)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        self.query = if kept.is_empty() {
            None
        } else {
            Some(Cow::Owned(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish()))
        };
    }

    /// The request body, when it is in memory (at most [`BODY_LIMIT`]; the engine reads it
    /// before the access phase when a plugin on the route may read it). `None` when it is
    /// larger, or no plugin said it reads bodies: it then goes upstream untouched.
    pub fn read_body(&self) -> Option<Bytes> {
        match &*self.body {
            ReqBody::Empty => Some(Bytes::new()),
            ReqBody::Full(b) => Some(b.clone()),
            ReqBody::Unread => None,
        }
    }

    /// Replaces the body the upstream gets (Content-Length follows).
    pub fn set_body(&mut self, bytes: Bytes) {
        self.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        *self.body = ReqBody::Full(bytes);
    }

    /// The header's value as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The client's address as Kong's nginx sees it (`remote_addr`): the peer's, or, when the
    /// peer is in `trusted_ips`, the address in its `X-Real-IP` (nginx's real-ip module with
    /// Kong's `real_ip_header`).
    pub fn remote_addr(&self) -> IpAddr {
        if self.trusted {
            if let Some(ip) = self.header("x-real-ip").and_then(|v| v.trim().parse().ok()) {
                return ip;
            }
        }
        self.client_ip
    }
}
