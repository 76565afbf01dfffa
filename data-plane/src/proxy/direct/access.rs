//! The access phase on the direct path: the route's plugins run on a header map built from the
//! parsed head, and what they decide is written into the upstream request as bytes.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use super::log::DirectLog;
use super::phases::Phases;
use std::time::Instant;

use crate::codec::fields::{field, Field};
use crate::compiled::Compiled;
use crate::message::{Conn, ReqBody};
use crate::proxy::h1::limits::{BodyFraming, MAX_HEADERS};
use crate::proxy::h1::write::line;
use crate::proxy::headers::{write_forwarding, write_framing};
use crate::proxy::{Proxy, ProxyError};
use crate::trace::Trace;
use crate::{plugins, router};

/// The parts of a direct-path request its plugins see besides the header fields.
pub(super) struct Plain<'r> {
    pub(super) method: &'r str,
    pub(super) http10: bool,
    pub(super) target: &'r str,
    pub(super) path: &'r str,
    pub(super) query: Option<&'r str>,
    pub(super) body: &'r [u8],
    /// The body is longer than plugins read, or it is yet to come and none of them reads it:
    /// they see it unread (`body` is empty), and it streams upstream after them. (A body that
    /// came with the head, which no plugin reads, is in `body`; they see that unread too.)
    pub(super) unread: bool,
    pub(super) started: Instant,
    pub(super) trace: Option<Box<Trace>>,
}

/// What a route's plugins made of a request on the direct path.
pub(super) enum Accessing<'r> {
    Forward(Accessed<'r>),
    /// A plugin answered instead of the upstream.
    Answer(plugins::Rejected),
    /// A request that cannot be forwarded as it is (nothing has been sent).
    Refused(ProxyError),
}

/// The request to forward after the access phase.
pub(super) struct Accessed<'r> {
    /// The fields to forward, forwarding fields included; Host and Content-Length are written
    /// apart (the Host depends on the peer tried, the length on the body).
    pub(super) headers: http::HeaderMap,
    /// The body to forward: the client's as it arrived with the head when no plugin on the
    /// route reads bodies (no copy was made for them), or as plugins read or replaced it.
    pub(super) body: Forwarded<'r>,
    /// The client's body goes upstream as it comes (one too long for plugins, or yet to come
    /// and read by none of them, which none replaced); `body` is then empty.
    pub(super) streams: bool,
    /// A Content-Length goes upstream: the client sent one, or a plugin replaced the body.
    pub(super) length: bool,
    /// The query, as plugins left it (some remove a credential from it).
    pub(super) query: Option<Cow<'r, str>>,
    /// Fields plugins set for the response.
    pub(super) response: plugins::ResponseFields,
    /// What a plugin changed besides fields (rare: boxed, so the common case stays small).
    pub(super) overrides: Option<Box<Overrides>>,
    /// The log entry, on a route whose plugins log.
    pub(super) log: Option<Box<DirectLog>>,
    /// The response phases, on a route whose plugins act on answers.
    pub(super) phases: Option<Box<Phases>>,
}

/// The body forwarded after the access phase.
pub(super) enum Forwarded<'r> {
    /// The client's, where the engine read it.
    Client(&'r [u8]),
    /// As plugins read it (or replaced it).
    Plugins(Bytes),
}

impl std::ops::Deref for Forwarded<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Forwarded::Client(b) => b,
            Forwarded::Plugins(b) => b,
        }
    }
}

/// A method or Host for the upstream other than the request's own.
pub(super) struct Overrides {
    pub(super) method: Option<http::Method>,
    pub(super) host: Option<HeaderValue>,
    /// The consumer a plugin identified, for a balancer that hashes.
    pub(super) consumer: Option<std::sync::Arc<str>>,
}

impl Accessed<'_> {
    /// Writes the fields; a name the client sent keeps the client's spelling (the map holds
    /// it lower-cased), as everywhere in the engine and in nginx. A trusted client's own
    /// forwarding fields go with the rest; the gateway writes the others
    /// ([`write_forwarding`], as for a route without plugins).
    /// `streamed`: how the client's body is framed, when it goes upstream as it comes.
    pub(super) fn write_fields(
        &self,
        up: &mut Vec<u8>,
        client: &[httparse::Header<'_>],
        (conn, trusted, host_no_port): (&Conn, bool, &str),
        streamed: Option<BodyFraming>,
    ) {
        let mut prior = None;
        let mut kept = [false; 4];
        for (name, value) in &self.headers {
            let name = name.as_str();
            match field(name) {
                Field::ForwardedFor => {
                    prior = prior.or(Some(value.as_bytes()));
                    continue;
                }
                Field::Forwarded(i) if trusted => kept[i] = true,
                Field::Forwarded(_) => continue,
                _ => {}
            }
            let spelled = client.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map_or(name, |h| h.name);
            line(up, &[spelled.as_bytes(), b": ", value.as_bytes()]);
        }
        let held = self.length.then(|| BodyFraming::Length(self.body.len() as u64));
        write_framing(up, streamed.or(held));
        write_forwarding(up, conn, host_no_port, prior, kept);
    }
}

/// Runs the route's `access` phase (every plugin in it acts only there) on a header map of
/// the request's `fields`.
pub(super) async fn access<'r, 'h, 'b: 'h>(
    proxy: &Proxy,
    conn: &Conn,
    trusted: bool,
    config: &Compiled,
    route: &router::RouteInfo,
    request: &mut Plain<'r>,
    fields: impl Iterator<Item = (&'h httparse::Header<'b>, Field)>,
) -> Accessing<'r> {
    // Room for the client's fields and what plugins and forwarding add (a consumer's three or
    // four, five forwarding fields), so the map is sized once, not for `MAX_HEADERS`.
    let mut headers = http::HeaderMap::with_capacity(fields.size_hint().1.unwrap_or(MAX_HEADERS) + 10);
    for (h, _) in fields {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return Accessing::Refused(ProxyError::BadRequest("a header field the gateway cannot forward"));
        };
        headers.append(name, value);
    }
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else {
        return Accessing::Refused(ProxyError::BadRequest("a method the gateway cannot forward"));
    };
    // A body that came with the head is copied for plugins only when one of them reads
    // bodies; the others see it unread, and it is forwarded from where it is.
    let chain = config.chain(route);
    let kept = !request.unread && !request.body.is_empty() && !chain.reads_any_body();
    let mut body = match request.body {
        _ if request.unread || kept => ReqBody::Unread,
        [] => ReqBody::Empty,
        b => ReqBody::Full(Bytes::copy_from_slice(b)),
    };
    let mut ctx = plugins::RequestCtx::new(plugins::ctx::Arrived {
        method: &method,
        version: match (conn.http2, request.http10) {
            (true, _) => http::Version::HTTP_2,
            (false, true) => http::Version::HTTP_10,
            (false, false) => http::Version::HTTP_11,
        },
        target: request.target,
        path: request.path,
        query: request.query.map(Cow::Borrowed),
        headers: &mut headers,
        body: &mut body,
        conn,
        trusted,
        route_id: &route.id,
        service_id: &route.service.id,
        logged: &route.logged,
        set: &config.set,
        creds: &config.creds,
        control_plane: &proxy.live.control_plane,
        started: request.started,
    });
    let resolved = match plugins::access(chain, &mut ctx, request.trace.as_deref_mut()).await {
        Ok(r) => r,
        Err(reply) => return Accessing::Answer(reply),
    };
    let phases =
        (!chain.direct).then(|| Box::new(Phases { resolved: resolved.clone(), hooks: std::mem::take(&mut ctx.hooks) }));
    let log = resolved.logs().then(|| {
        let mut entry = plugins::entry_for(&ctx);
        entry.request_size += request.body.len() as u64;
        entry.request_has_body = request.unread || !request.body.is_empty();
        Box::new(DirectLog { resolved, entry })
    });
    let response = std::mem::take(&mut ctx.response);
    let hashing = route.service.balancer.as_ref().is_some_and(|b| !b.hash.is_none());
    let consumer = ctx.consumer.as_ref().filter(|_| hashing).map(|c| c.id.clone());
    let overrides = match (ctx.method_override.take(), ctx.upstream_host.take(), consumer) {
        (None, None, None) => None,
        (method, host, consumer) => Some(Box::new(Overrides { method, host, consumer })),
    };
    // Plugins that change the query replace it with their own string.
    let query = match ctx.query {
        None => None,
        Some(Cow::Borrowed(q)) if request.query == Some(q) => request.query.map(Cow::Borrowed),
        Some(q) => Some(Cow::Owned(q.into_owned())),
    };
    let (body, streams) = match body {
        ReqBody::Empty => (Forwarded::Client(&[]), false),
        ReqBody::Full(b) => (Forwarded::Plugins(b), false),
        ReqBody::Unread if kept => (Forwarded::Client(request.body), false),
        ReqBody::Unread => (Forwarded::Client(&[]), true),
    };
    headers.remove(http::header::HOST);
    // The gateway answers `Expect` itself.
    headers.remove(http::header::EXPECT);
    // A body goes with its length (one read whole from a chunked request has none yet).
    let length = headers.remove(http::header::CONTENT_LENGTH).is_some() || !body.is_empty();
    // The forwarding fields are written with the rest (`write_fields`), after the access phase:
    // plugins see the client's own, as in Kong.
    Accessing::Forward(Accessed { headers, body, streams, length, query, response, overrides, log, phases })
}
