//! The request head as the direct path reads it: each field classified once, what decides the
//! request noted in [`Seen`], and the fields a route without plugins forwards written straight
//! from the client's bytes.

use std::time::Instant;

use crate::codec::fields::{field, has_token, named_by, plain_target, Field};
use crate::message::Conn;
use crate::proxy::h1::limits::{BodyFraming, MAX_HEADERS};
use crate::proxy::h1::write::line;
use crate::proxy::headers::{write_forwarding, write_framing};
use crate::proxy::ProxyError;
use crate::trace::Trace;

/// The header fields of a request that decide what happens to it.
#[derive(Default)]
pub(super) struct Seen<'a> {
    pub(super) host: Option<&'a [u8]>,
    pub(super) hosts: u8,
    /// The client sent a Content-Length (at most one reaches here).
    pub(super) length: bool,
    /// `Kong-Debug`: the answer names the route and service that served it.
    pub(super) debug: bool,
    /// The client asks for a WebSocket (`Upgrade: websocket`); other upgrades are not
    /// forwarded.
    pub(super) websocket: bool,
    pub(super) close: bool,
    /// An HTTP/1.0 client: answered in HTTP/1.1 as nginx does, but never chunked, and kept
    /// alive only when it asked to be.
    pub(super) http10: bool,
    /// A HEAD request: error pages go without their body.
    pub(super) head: bool,
    pub(super) accept: Option<&'a [u8]>,
    pub(super) connection: smallvec::SmallVec<[&'a [u8]; 2]>,
    /// How many options the Connection fields list. Each field is checked against every one,
    /// so a request listing more than [`MAX_CONNECTION_OPTIONS`] is refused.
    pub(super) options: usize,
}

/// Most options a request's Connection fields may list (a client lists one or two).
pub(super) const MAX_CONNECTION_OPTIONS: usize = 32;

/// The client's fields, each with its kind.
pub(super) struct RequestHead<'h, 'b> {
    pub(super) headers: &'h [httparse::Header<'b>],
    kinds: smallvec::SmallVec<[Field; MAX_HEADERS]>,
    /// The first `X-Forwarded-For` not named by `Connection`.
    forwarded_for: Option<&'b [u8]>,
    /// Which of X-Forwarded-Proto, -Host, -Port and X-Real-IP the client sent.
    forwarded: [bool; 4],
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// Classifies `headers` and notes in `seen` what decides the request: its Host, framing,
    /// upgrade, `Kong-Debug`, `Accept`, and whether the connection goes on after it.
    pub(super) fn read(headers: &'h [httparse::Header<'b>], seen: &mut Seen<'b>) -> Self {
        let kinds: smallvec::SmallVec<[Field; MAX_HEADERS]> = headers.iter().map(|h| field(h.name)).collect();
        for (kind, h) in kinds.iter().zip(headers.iter()) {
            if *kind == Field::Connection {
                seen.connection.push(h.value);
                seen.options += 1 + h.value.iter().filter(|b| **b == b',').count();
            }
        }
        // Refused by the caller before any field is checked against so many options.
        if seen.options > MAX_CONNECTION_OPTIONS {
            return RequestHead { headers, kinds, forwarded_for: None, forwarded: [false; 4] };
        }
        // HTTP/1.1 keeps the connection unless told not to; HTTP/1.0 only when asked to.
        seen.close = if seen.http10 {
            !has_token(&seen.connection, b"keep-alive")
        } else {
            has_token(&seen.connection, b"close")
        };
        let (mut forwarded_for, mut forwarded) = (None, [false; 4]);
        for (h, kind) in headers.iter().zip(kinds.iter().copied()) {
            // The fields `Connection` names are not forwarded, and so not believed either.
            let dropped = !seen.connection.is_empty() && named_by(&seen.connection, h.name);
            match kind {
                Field::ContentLength => seen.length = true,
                Field::Host => {
                    // Saturating: a wide head may repeat it hundreds of times.
                    seen.hosts = seen.hosts.saturating_add(1);
                    seen.host = Some(h.value);
                }
                Field::Upgrade => seen.websocket |= h.value.trim_ascii().eq_ignore_ascii_case(b"websocket"),
                Field::KongDebug => seen.debug = true,
                // The first, as a header map's `get` reads it.
                Field::Accept if seen.accept.is_none() => seen.accept = Some(h.value),
                Field::ForwardedFor if forwarded_for.is_none() && !dropped => forwarded_for = Some(h.value),
                Field::Forwarded(i) if !dropped => forwarded[i] = true,
                _ => {}
            }
        }
        RequestHead { headers, kinds, forwarded_for, forwarded }
    }

    /// Each field with its kind.
    pub(super) fn fields(&self) -> impl Iterator<Item = (&'h httparse::Header<'b>, Field)> + '_ {
        self.headers.iter().zip(self.kinds.iter().copied())
    }

    /// Begins the request's trace when it is sampled; the client's `traceparent` is then not
    /// forwarded, as the upstream receives the gateway's own.
    pub(super) fn begin_trace(&mut self, started: Instant) -> Option<Box<Trace>> {
        let headers = self.headers;
        let find = |name: &str| headers.iter().position(|h| h.name.eq_ignore_ascii_case(name));
        let trace = Trace::begin(crate::trace::incoming(|name| find(name).map(|i| headers[i].value)), started)?;
        if let Some(kind) = find("traceparent").and_then(|i| self.kinds.get_mut(i)) {
            *kind = Field::HopByHop;
        }
        Some(trace)
    }

    /// Writes the fields a route without plugins forwards: the client's own as it spelled
    /// them, the body's framing (`body`: how a streamed body goes; else the length of one sent
    /// with the head, when the client sent a length), and the forwarding fields (the client's
    /// own kept only from a trusted peer).
    pub(super) fn write_forwarded(
        &self,
        up: &mut Vec<u8>,
        seen: &Seen<'_>,
        conn: &Conn,
        trusted: bool,
        host_no_port: &str,
        body: Result<BodyFraming, usize>,
    ) {
        let dropped = |name: &str| !seen.connection.is_empty() && named_by(&seen.connection, name);
        let forwarded = self.forwarded;
        for (h, kind) in self.fields() {
            let forward = match kind {
                Field::Other | Field::Accept | Field::Via | Field::Date => true,
                Field::LatencyProxy | Field::LatencyUpstream | Field::UpstreamStatus => true,
                Field::Forwarded(i) => trusted && forwarded[i],
                // Written below from the body actually sent, whatever `Connection` names.
                _ => false,
            };
            if forward && !dropped(h.name) {
                line(up, &[h.name.as_bytes(), b": ", h.value]);
            }
        }
        let framing = match body {
            Ok(streamed) => Some(streamed),
            Err(held) => seen.length.then_some(BodyFraming::Length(held as u64)),
        };
        write_framing(up, framing);
        write_forwarding(up, conn, host_no_port, self.forwarded_for, forwarded.map(|f| trusted && f));
    }
}

/// A request's body as the direct path takes it.
pub(super) enum Body<'b, 's> {
    /// Whole in the connection's buffer (none is empty).
    Inline(&'b [u8]),
    /// Streamed upstream as it comes.
    Streamed(&'b mut crate::proxy::h1::request_body::Streamed<'s>),
}

/// Where a request goes: its target in origin form and the host it names.
pub(super) struct Addressed<'b> {
    target: Target<'b>,
    pub(super) host: &'b str,
}

enum Target<'b> {
    AsSent(&'b str),
    /// Held to the `http` crate's origin form, its fragment dropped.
    Parsed(http::uri::PathAndQuery),
}

impl Addressed<'_> {
    pub(super) fn target(&self) -> &str {
        match &self.target {
            Target::AsSent(t) => t,
            Target::Parsed(pq) => pq.as_str(),
        }
    }
}

/// The target and host of a request: exactly one Host
/// (RFC 9112 §3.2; an HTTP/1.0 client may send none), unless an absolute-form target names
/// the host itself and wins over it (§3.2.2); a host of visible ASCII that is a valid
/// host[:port]. A target in neither origin nor absolute form (`*`) is refused, as nginx
/// refuses it.
pub(super) fn address<'b>(target: &'b str, seen: &Seen<'b>) -> Result<Addressed<'b>, ProxyError> {
    crate::proxy::headers::one_host(usize::from(seen.hosts), seen.http10)?;
    let (target, authority) = if target.starts_with('/') {
        (target, None)
    } else {
        let Some((authority, origin)) = absolute_form(target) else {
            return Err(ProxyError::BadRequest("an invalid request target"));
        };
        // Held to the `http` crate's authority (no `%` in a host).
        if authority.parse::<http::uri::Authority>().is_err() {
            return Err(ProxyError::BadRequest("invalid Host"));
        }
        (origin, Some(authority))
    };
    let target = if plain_target(target) {
        Target::AsSent(target)
    } else if target.starts_with('?') {
        // A query right after the authority: its path is `/`.
        match format!("/{target}").parse::<http::uri::PathAndQuery>() {
            Ok(pq) => Target::Parsed(pq),
            Err(_) => return Err(ProxyError::BadRequest("an invalid request target")),
        }
    } else {
        match target.parse::<http::uri::PathAndQuery>() {
            Ok(pq) if pq.as_str().starts_with('/') => Target::Parsed(pq),
            _ => return Err(ProxyError::BadRequest("an invalid request target")),
        }
    };
    let raw_host = authority.map(str::as_bytes).or(seen.host).unwrap_or_default();
    let host = std::str::from_utf8(raw_host).ok().filter(|h| h.bytes().all(|b| b.is_ascii_graphic()));
    let Some(host) = host.filter(|h| crate::proxy::headers::valid_host(h)) else {
        return Err(ProxyError::BadRequest("invalid Host"));
    };
    Ok(Addressed { target, host })
}

/// The authority and the rest of an absolute-form request target, of any scheme (as the `http`
/// crate and nginx take it): `http://a.test/x?y` is `a.test` and `/x?y`; `http://a.test?y`
/// is `a.test` and `?y` (its path being `/`); with nothing after the authority, or only a
/// fragment, the rest is `/`. `None` for any other form.
pub(super) fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let scheme = target.find("://")?;
    let valid_scheme = target.as_bytes()[0].is_ascii_alphabetic()
        && target[..scheme].bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid_scheme {
        return None;
    }
    let rest = &target[scheme + 3..];
    match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] != b'#' => Some((&rest[..i], &rest[i..])),
        Some(i) => Some((&rest[..i], "/")),
        None => Some((rest, "/")),
    }
}
