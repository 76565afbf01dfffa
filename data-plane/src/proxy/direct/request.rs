//! The request head as the direct path reads it: each field classified once, what decides the
//! request noted in [`Seen`], and the fields a route without plugins forwards written straight
//! from the client's bytes.

use std::time::Instant;

use super::Seen;
use crate::proxy::h1::fields::{field, has_token, named_by, Field};
use crate::proxy::h1::limits::{BodyFraming, MAX_HEADERS};
use crate::proxy::h1::write::line;
use crate::proxy::Conn;
use crate::trace::Trace;

/// The client's fields, each with its kind.
pub(super) struct RequestHead<'h, 'b> {
    pub(super) headers: &'h [httparse::Header<'b>],
    kinds: [Field; MAX_HEADERS],
    /// The first `X-Forwarded-For` not named by `Connection`.
    forwarded_for: Option<&'b [u8]>,
    /// Which of X-Forwarded-Proto, -Host, -Port and X-Real-IP the client sent.
    forwarded: [bool; 4],
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// Classifies `headers` and notes in `seen` what decides the request: its Host, framing,
    /// upgrade, `Kong-Debug`, `Accept`, and whether the connection goes on after it.
    pub(super) fn read(headers: &'h [httparse::Header<'b>], seen: &mut Seen<'b>) -> Self {
        let mut kinds = [Field::Other; MAX_HEADERS];
        for (kind, h) in kinds.iter_mut().zip(headers.iter()) {
            *kind = field(h.name);
            if *kind == Field::Connection {
                seen.connection.push(h.value);
            }
        }
        // HTTP/1.1 keeps the connection unless told not to; HTTP/1.0 only when asked to.
        seen.close = if seen.http10 {
            !has_token(&seen.connection, b"keep-alive")
        } else {
            has_token(&seen.connection, b"close")
        };
        let mut head = RequestHead { headers, kinds, forwarded_for: None, forwarded: [false; 4] };
        for (h, kind) in headers.iter().zip(kinds.iter().copied()) {
            // The fields `Connection` names are not forwarded, and so not believed either.
            let dropped = !seen.connection.is_empty() && named_by(&seen.connection, h.name);
            match kind {
                Field::ContentLength => seen.length = true,
                Field::Host => {
                    seen.hosts += 1;
                    seen.host = Some(h.value);
                }
                Field::Upgrade => seen.websocket |= h.value.trim_ascii().eq_ignore_ascii_case(b"websocket"),
                // Debug answers are the general path's.
                Field::KongDebug => seen.other_framing = true,
                // The first, as the general path reads it from its header map.
                Field::Accept if seen.accept.is_none() => seen.accept = Some(h.value),
                Field::ForwardedFor if head.forwarded_for.is_none() && !dropped => head.forwarded_for = Some(h.value),
                Field::Forwarded(i) if !dropped => head.forwarded[i] = true,
                _ => {}
            }
        }
        head
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
        match body {
            Ok(BodyFraming::Length(n)) => line(up, &[b"Content-Length: ", itoa::Buffer::new().format(n).as_bytes()]),
            Ok(BodyFraming::Chunked) => up.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Err(n) if seen.length => line(up, &[b"Content-Length: ", itoa::Buffer::new().format(n).as_bytes()]),
            Err(_) => {}
        }
        let peer = conn.peer_value.as_bytes();
        match self.forwarded_for {
            Some(prior) => line(up, &[b"X-Forwarded-For: ", prior, b", ", peer]),
            None => line(up, &[b"X-Forwarded-For: ", peer]),
        }
        if !(trusted && forwarded[0]) {
            line(up, &[b"X-Forwarded-Proto: ", if conn.https { b"https" } else { b"http" }]);
        }
        if !(trusted && forwarded[1]) {
            // The Host is visible ASCII (checked by the caller), so it is a valid value as it is.
            up.extend_from_slice(b"X-Forwarded-Host: ");
            up.extend(host_no_port.bytes().map(|b| b.to_ascii_lowercase()));
            up.extend_from_slice(b"\r\n");
        }
        if !(trusted && forwarded[2]) {
            line(up, &[b"X-Forwarded-Port: ", conn.port_value.as_bytes()]);
        }
        if !(trusted && forwarded[3]) {
            line(up, &[b"X-Real-IP: ", peer]);
        }
    }
}
