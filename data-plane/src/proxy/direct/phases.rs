//! The response phases, for routes whose plugins act on answers (response-transformer,
//! response-ratelimiting, correlation-id, the loggers): the upstream's head becomes a header
//! map for `header_filter`, in Kong's order, and a body that a plugin filters
//! is decoded, passed through each filter chunk by chunk and sent on chunked.

use std::io::Write as _;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::response::Parts;
use http::StatusCode;

use super::ClientIo;
use crate::codec::chunked::ChunkedEnd;
use crate::codec::framing::Framing;
use crate::plugins::filtered::{end_filters, run_filters};
use crate::plugins::{BodyFilter, Resolved, ResponseFields, ResponseHook};
use crate::proxy::h1::response::{more_body, More, Relay};
use crate::proxy::h1::write::{line, send};
use crate::proxy::upstream::RawConn;
use crate::proxy::waiting::Deadline;
use gatehouse_shared::enabled_headers::EnabledHeaders;

/// What a route's plugins do to its answers, carried from its access phase.
pub(crate) struct Phases {
    pub(crate) resolved: Resolved,
    /// Header filters that carry what access learned (response-ratelimiting's counts).
    pub(crate) hooks: Vec<Box<dyn ResponseHook>>,
}

/// What the gateway adds to a proxied answer besides its own fields, before plugins see it.
pub(super) struct Extra<'a> {
    /// A cookie a hash-balanced service minted.
    pub(super) set_cookie: Option<&'a HeaderValue>,
    /// The route, when the client sent `Kong-Debug`.
    pub(super) debug: Option<&'a crate::router::RouteInfo>,
}

/// The answer's head once every plugin has seen it, and how its body goes on.
pub(super) struct Filtered {
    pub(super) parts: Parts,
    /// A hook turned the answer into one of the gateway's own, with no body.
    pub(super) emptied: bool,
    pub(super) filters: Vec<Box<dyn BodyFilter>>,
}

/// Runs the response phase on the upstream's `fields` (those the client may see): Gatehouse's
/// own fields (and a minted cookie, and `Kong-Debug`'s), the fields plugins set in `access`, each hook, then each plugin's
/// `header_filter`; then picks the body filters for the result.
pub(super) fn header_filter<'f>(
    phases: Phases,
    status: StatusCode,
    fields: impl Iterator<Item = (&'f [u8], &'f [u8])>,
    framing: Framing,
    own: (EnabledHeaders, HeaderValue, HeaderValue),
    set: Option<&ResponseFields>,
    extra: Extra<'_>,
) -> Filtered {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    for (name, value) in fields {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            parts.headers.append(n, v);
        }
    }
    // The length the body is framed by (HEAD, 204 and 304 answers keep theirs in `fields`).
    if let Framing::Length(n) = framing {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    let bodiless = matches!(framing, Framing::NoBody);
    let (on, upstream_latency, proxy_latency) = own;
    crate::proxy::add_own_fields(&mut parts.headers, on, status, upstream_latency, proxy_latency);
    if let Some(cookie) = extra.set_cookie {
        parts.headers.append(http::header::SET_COOKIE, cookie.clone());
    }
    if let Some(route) = extra.debug {
        crate::proxy::add_debug_fields(&mut parts.headers, route);
    }
    if let Some(set) = set {
        set.apply(&mut parts.headers);
    }
    let Phases { resolved, mut hooks } = phases;
    let mut emptied = false;
    for hook in &mut hooks {
        emptied |= hook.header_filter(&mut parts);
    }
    resolved.header_filter(&mut parts);
    if emptied {
        // Kong's bodiless answer (response-ratelimiting's 429).
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    let filters = if emptied || bodiless { Vec::new() } else { resolved.body_filters(&parts) };
    Filtered { parts, emptied, filters }
}

/// Writes the filtered head into `out`: the status line (the upstream's reason phrase while
/// the status is the upstream's own) and each field, spelled as the upstream spelled it when
/// it sent that name.
pub(super) fn write_head<'f>(
    out: &mut Vec<u8>,
    parts: &Parts,
    upstream: (u16, &str),
    spelled: impl Fn(&str) -> Option<&'f [u8]>,
) {
    let status = parts.status;
    let reason = if status.as_u16() == upstream.0 { upstream.1 } else { status.canonical_reason().unwrap_or("") };
    line(out, &[b"HTTP/1.1 ", status.as_str().as_bytes(), b" ", reason.as_bytes()]);
    for (name, value) in &parts.headers {
        let name = spelled(name.as_str()).unwrap_or(name.as_str().as_bytes());
        line(out, &[name, b": ", value.as_bytes()]);
    }
}

/// Whether the filtered head still frames the body as the upstream did: its length is the
/// upstream's, and no filter will change the body.
pub(super) fn framing_kept(f: &Filtered, framing: Framing) -> bool {
    let length = f.parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    f.filters.is_empty()
        && match framing {
            Framing::Length(n) => length == Some(n),
            _ => true,
        }
}

/// Relays the upstream's body, as data, through `filters`: the head in `out` first, then each
/// piece of data the filters let through, as a chunk (`chunked`) or as it is (a length the head
/// kept, or an HTTP/1.0 client whose connection then ends with the body), then what the
/// filters add at the end. `kept` gets a copy of the data sent, up to what a log keeps (past
/// that it is dropped whole).
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_filtered(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    (framing, chunked): (Framing, bool),
    mut filters: Vec<Box<dyn BodyFilter>>,
    mut kept: Option<&mut Option<bytes::BytesMut>>,
    read_timeout: std::time::Duration,
    read_by: &mut Deadline,
    sent: &mut u64,
    watch: bool,
) -> Relay {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut scan = matches!(framing, Framing::Chunked).then(ChunkedEnd::default);
    let mut data = Vec::new();
    let mut extra = matches!(framing, Framing::Close);
    loop {
        data.clear();
        let end = match framing {
            Framing::NoBody => true,
            Framing::Length(_) => {
                let n = (upstream.buf.len() as u64).min(remaining) as usize;
                data.extend_from_slice(&upstream.buf[..n]);
                remaining -= n as u64;
                extra = upstream.buf.len() > n;
                remaining == 0
            }
            Framing::Chunked => match scan.as_mut().map(|s| s.decode(&upstream.buf, &mut data)) {
                Some(Ok(Some(n))) => {
                    extra = upstream.buf.len() > n;
                    true
                }
                Some(Ok(None)) => false,
                _ => return Relay::UpstreamBroken,
            },
            Framing::Close => {
                data.extend_from_slice(&upstream.buf);
                false
            }
        };
        upstream.buf.clear();
        if !data.is_empty() {
            // Unfiltered (a logger keeping the body), the data goes on from the read buffer.
            let filtered = (!filters.is_empty()).then(|| run_filters(&mut filters, Bytes::copy_from_slice(&data)));
            let data = filtered.as_deref().unwrap_or(&data);
            keep(kept.as_deref_mut(), data);
            piece(out, data, chunked);
        }
        if end {
            break;
        }
        if !out.is_empty() {
            if !send(client, out).await {
                return Relay::ClientGone;
            }
            *sent += out.len() as u64;
            out.clear();
        }
        match more_body(upstream, client, watch, read_timeout, read_by).await {
            More::Read(n) if n > 0 => {}
            More::Read(_) if matches!(framing, Framing::Close) => break,
            More::ClientGone => return Relay::ClientGone,
            _ => return Relay::UpstreamBroken,
        }
    }
    if let Some(tail) = end_filters(&mut filters) {
        keep(kept, &tail);
        piece(out, &tail, chunked);
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !send(client, out).await {
        return Relay::ClientGone;
    }
    *sent += out.len() as u64;
    Relay::Done { extra }
}

/// One piece of a filtered body for the client.
fn piece(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        // A chunk size: the length in hexadecimal (writing to a Vec cannot fail).
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Appends `data` to a log's copy of the body, which is dropped once it outgrows what a log
/// keeps.
fn keep(kept: Option<&mut Option<bytes::BytesMut>>, data: &[u8]) {
    let Some(slot) = kept else { return };
    match slot {
        Some(body) if body.len() + data.len() > crate::plugins::ctx::BODY_LIMIT => *slot = None,
        Some(body) => body.extend_from_slice(data),
        None => {}
    }
}
