//! The client's response head on the direct path, written from the upstream's as it was parsed
//! (offsets into the upstream's buffer): the upstream's fields the client may see, Gatehouse's
//! own, and the fields plugins set; or, on a route whose plugins act on answers, the head as
//! their `header_filter` left it (`super::phases`).

use std::time::Instant;

use http::header::HeaderValue;
use http::StatusCode;

use gatehouse_shared::enabled_headers::EnabledHeaders;

use super::phases::{self, Phases};
use crate::codec::fields::{field_of, has_token, Field};
use crate::codec::framing::Framing;
use crate::message::SERVER_TOKEN;
use crate::plugins::{BodyFilter, ResponseFields};
use crate::proxy::h1::response::Head;
use crate::proxy::h1::write::{connection_field, date, line};
use crate::proxy::{debug_values, DEBUG_FIELDS};
use crate::router::RouteInfo;

/// The upstream's answer head, and what the client's is written with.
pub(super) struct Answer<'a> {
    pub(super) head: &'a Head,
    /// The upstream's buffer the head was parsed from.
    pub(super) buf: &'a [u8],
    /// The values of the upstream's `Connection` fields.
    pub(super) connection: &'a [&'a [u8]],
    pub(super) on: EnabledHeaders,
    pub(super) upstream_latency: &'a HeaderValue,
    pub(super) proxy_latency: &'a HeaderValue,
    pub(super) answered: Instant,
    /// The route named in the answer, when the client sent `Kong-Debug`.
    pub(super) debug: Option<&'a RouteInfo>,
    /// The cookie a hash-balanced service minted for the client to keep.
    pub(super) set_cookie: Option<&'a HeaderValue>,
}

/// How the answer written goes on.
pub(super) struct Written {
    /// The body, when it is not the upstream's as it comes: it passes these filters (maybe
    /// none) and is re-chunked.
    pub(super) reframed: Option<Vec<Box<dyn BodyFilter>>>,
    /// A plugin turned the answer into one of the gateway's own, with no body.
    pub(super) emptied: bool,
    /// The status the client got.
    pub(super) status: u16,
    /// The client's connection ends after this answer.
    pub(super) close: bool,
}

impl Answer<'_> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head.fields(self.buf)
    }

    /// Whether `name` is one of the fields `Kong-Debug` adds to this answer (which replace the
    /// upstream's of that name).
    fn debug_replaces(&self, name: &[u8]) -> bool {
        self.debug.is_some_and(|route| {
            DEBUG_FIELDS
                .iter()
                .zip(debug_values(route))
                .any(|(n, v)| v.is_some() && n.as_bytes().eq_ignore_ascii_case(name))
        })
    }

    /// Whether the client gets this field of the upstream's.
    fn visible(&self, name: &[u8], set: Option<&ResponseFields>) -> bool {
        // Fields plugins set replace the upstream's of the same name.
        if set.is_some_and(|f| f.has(name)) {
            return false;
        }
        // So do the fields `Kong-Debug` adds.
        if self.debug_replaces(name) {
            return false;
        }
        let on = self.on;
        let kind = field_of(name);
        let keep = match kind {
            Field::Other | Field::Accept | Field::Host | Field::ForwardedFor | Field::Forwarded(_) => true,
            Field::Expect | Field::KongDebug | Field::Date => true,
            // Gatehouse's own replace the upstream's, each unless the `headers` setting
            // turned it off (as Kong assigns them in `header_filter`).
            Field::Via => !on.via,
            Field::LatencyProxy => !on.proxy_latency,
            Field::LatencyUpstream => !on.upstream_latency,
            Field::UpstreamStatus => !on.upstream_status,
            // A length is written from the framing used; HEAD and 304 answers keep theirs as
            // they are (it describes a body not sent). A 204 has none (RFC 9110 §8.6).
            Field::ContentLength => matches!(self.head.framing, Framing::NoBody) && self.head.code != 204,
            _ => false,
        };
        // `Connection` may not remove the fields framing and dating the answer.
        let removable = !matches!(kind, Field::ContentLength | Field::Date);
        keep && !(removable && !self.connection.is_empty() && has_token(self.connection, name))
    }

    /// The head of a 101 that switches the connection to a WebSocket: the upstream's fields
    /// as they are (its `Connection` and `Upgrade` included), with Gatehouse's own in place of
    /// the upstream's, as on any answer.
    pub(super) fn write_switch(&self, out: &mut Vec<u8>) {
        let on = self.on;
        line(out, &[b"HTTP/1.1 101 ", self.head.reason(self.buf).as_bytes()]);
        let mut dated = false;
        for (name, value) in self.fields() {
            let keep = match field_of(name) {
                _ if self.debug_replaces(name) => false,
                Field::ContentLength | Field::TransferEncoding => false,
                Field::Via => !on.via,
                Field::LatencyProxy => !on.proxy_latency,
                Field::LatencyUpstream => !on.upstream_latency,
                Field::UpstreamStatus => !on.upstream_status,
                Field::Date => {
                    dated = true;
                    true
                }
                _ => true,
            };
            if keep {
                line(out, &[name, b": ", value]);
            }
        }
        if !dated {
            date(out, self.answered);
        }
        self.write_own(out, b"101");
        out.extend_from_slice(b"\r\n");
    }

    /// Gatehouse's own fields, each that the `headers` setting turns on (Kong assigns them in
    /// `header_filter`); `status` is the upstream's.
    fn write_own(&self, out: &mut Vec<u8>, status: &[u8]) {
        let on = self.on;
        if on.upstream_status {
            line(out, &[b"X-Kong-Upstream-Status: ", status]);
        }
        if on.upstream_latency {
            line(out, &[b"X-Kong-Upstream-Latency: ", self.upstream_latency.as_bytes()]);
        }
        if on.proxy_latency {
            line(out, &[b"X-Kong-Proxy-Latency: ", self.proxy_latency.as_bytes()]);
        }
        if on.via {
            line(out, &[b"Via: ", SERVER_TOKEN.as_bytes()]);
        }
        if let Some(cookie) = self.set_cookie {
            line(out, &[b"Set-Cookie: ", cookie.as_bytes()]);
        }
        if let Some(route) = self.debug {
            for (name, value) in DEBUG_FIELDS.iter().zip(debug_values(route)) {
                if let Some(value) = value {
                    line(out, &[name.as_bytes(), b": ", value]);
                }
            }
        }
    }

    /// Writes the client's head into `out`. `code` is the upstream's status, `set` the fields
    /// plugins set in `access`, `phased` what plugins that act on answers do; `close` whether
    /// the client's connection ends after this answer so far.
    pub(super) fn write(
        &self,
        out: &mut Vec<u8>,
        code: StatusCode,
        set: Option<&ResponseFields>,
        phased: Option<Box<Phases>>,
        http10: bool,
        mut close: bool,
    ) -> Written {
        let framing = self.head.framing;
        // The upstream's own reason phrase, even an empty one: nginx passes the status line
        // on.
        let reason = self.head.reason(self.buf);
        let dated = self.fields().any(|(name, _)| field_of(name) == Field::Date);
        // A body that ends when the upstream closes goes to the client chunked (as nginx does),
        // so the client's connection outlives it; an HTTP/1.0 client reads it to the close.
        let unsized_body = matches!(framing, Framing::Chunked | Framing::Close);
        let on = self.on;
        let mut written = Written { reframed: None, emptied: false, status: self.head.code, close };
        match phased {
            None => {
                line(out, &[b"HTTP/1.1 ", code.as_str().as_bytes(), b" ", reason.as_bytes()]);
                for (name, value) in self.fields().filter(|(name, _)| self.visible(name, set)) {
                    line(out, &[name, b": ", value]);
                }
                if let Framing::Length(n) = framing {
                    line(out, &[b"Content-Length: ", itoa::Buffer::new().format(n).as_bytes()]);
                }
                if !dated {
                    date(out, self.answered);
                }
                self.write_own(out, code.as_str().as_bytes());
                for (name, value) in set.into_iter().flat_map(ResponseFields::iter) {
                    line(out, &[name.as_str().as_bytes(), b": ", value.as_bytes()]);
                }
                if unsized_body && !http10 {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
            }
            Some(phases) => {
                let own = (on, self.upstream_latency.clone(), self.proxy_latency.clone());
                let fields = self.fields().filter(|(name, _)| self.visible(name, set));
                let extra = phases::Extra { set_cookie: self.set_cookie, debug: self.debug };
                let mut f = phases::header_filter(*phases, code, fields, framing, own, set, extra);
                written.status = f.parts.status.as_u16();
                written.emptied = f.emptied;
                let rechunk = !f.emptied && !phases::framing_kept(&f, framing);
                // A body framed otherwise has no length (whatever a plugin set).
                if rechunk || (unsized_body && !f.emptied) {
                    f.parts.headers.remove(http::header::CONTENT_LENGTH);
                }
                let spelled =
                    |n: &str| self.fields().find(|(u, _)| u.eq_ignore_ascii_case(n.as_bytes())).map(|(u, _)| u);
                phases::write_head(out, &f.parts, (self.head.code, reason), spelled);
                if !dated {
                    date(out, self.answered);
                }
                if rechunk || (unsized_body && !f.emptied) {
                    if http10 {
                        close = true;
                    } else {
                        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                    }
                }
                if rechunk {
                    written.reframed = Some(f.filters);
                }
            }
        }
        connection_field(out, close, http10);
        out.extend_from_slice(b"\r\n");
        written.close = close;
        written
    }
}
