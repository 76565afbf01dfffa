//! Gatehouse's own answers on the direct path: error pages, plugins' answers, refusals of a
//! head, written whole from memory.

use std::time::{Duration, Instant};

use http::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use gatehouse_shared::enabled_headers::EnabledHeaders;

use super::log::DirectLog;
use super::request::Seen;
use super::{ClientIo, Next};
use crate::codec::fields::{field, has_token, Field};
use crate::message::ResBody;
use crate::proxy::h1::write::{connection_field, date, line, send};
use crate::proxy::{mark_upstream_failure, ProxyError};

/// How long, and for how many bytes, a refused client is read from before it is closed.
pub(super) const LINGER: Duration = Duration::from_secs(2);
pub(super) const LINGER_BYTES: usize = 1024 * 1024;

/// Answers a refused head with Kong's page and ends the connection, [`linger`]ing first.
pub(super) async fn refuse(
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    refusal: ProxyError,
    seen: &Seen<'_>,
    on: EnabledHeaders,
) {
    answer_error(client, out, refusal, seen, on, None, None).await;
    linger(client).await;
}

/// A client whose head was refused before it was read to the end may still be sending it.
/// Closing with bytes unread resets the connection, which can destroy the answer before the
/// client reads it; so, like nginx's lingering close, what still comes is read and dropped for
/// a short while (bounded in time and bytes) first.
pub(super) async fn linger(client: &mut impl ClientIo) {
    let until = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut budget = LINGER_BYTES;
    while budget > 0 {
        match tokio::time::timeout_at(until, client.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => return,
        }
    }
}

/// What a refusal's page is shaped by, from the head it refuses.
pub(super) fn refusing<'a>(req: &httparse::Request<'_, 'a>) -> Seen<'a> {
    Seen {
        close: true,
        http10: req.version == Some(0),
        head: req.method == Some("HEAD"),
        accept: req.headers.iter().find(|h| field(h.name) == Field::Accept).map(|h| h.value),
        ..Seen::default()
    }
}

/// Writes an error page and says whether the connection goes on.
pub(super) async fn answer_error(
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    error: ProxyError,
    seen: &Seen<'_>,
    on: EnabledHeaders,
    went_upstream: Option<(&HeaderValue, Instant)>,
    log: Option<Box<DirectLog>>,
) -> Next {
    tracing::debug!(error = %error, "request not proxied");
    let accept = seen.accept.and_then(|a| HeaderValue::from_bytes(a).ok());
    let close = seen.close || matches!(error, ProxyError::BadRequest(_));
    let upstream_failure = error.is_upstream_failure();
    let mut resp = error.into_response(accept.as_ref());
    if let (true, Some((proxy_latency, sent))) = (upstream_failure, went_upstream) {
        let status = resp.status();
        mark_upstream_failure(resp.headers_mut(), status, on, proxy_latency.clone(), sent);
    }
    answer(client, out, resp, seen, close, on, log).await
}

/// Writes one of Gatehouse's own responses (an error page, a plugin's answer), whose body is
/// in memory, and says whether the connection goes on.
pub(super) async fn answer(
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    resp: http::Response<ResBody>,
    seen: &Seen<'_>,
    close: bool,
    on: EnabledHeaders,
    // An upstream failure on a logging route is logged with its page, as in Kong.
    log: Option<Box<DirectLog>>,
) -> Next {
    out.clear();
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    line(out, &[b"HTTP/1.1 ", status.as_str().as_bytes(), b" ", status.canonical_reason().unwrap_or("").as_bytes()]);
    let mut own_connection = None;
    for (name, value) in &parts.headers {
        match field(name.as_str()) {
            // The length is written here, from the body.
            Field::ContentLength | Field::TransferEncoding => continue,
            // One Connection field (the 426's `Upgrade`), with the connection's own token.
            Field::Connection => own_connection = Some(value),
            // Kong's `header_filter` drops it from its own answers when `headers` says so.
            _ if name == http::header::SERVER && !on.server => continue,
            _ => line(out, &[name.as_str().as_bytes(), b": ", value.as_bytes()]),
        }
    }
    date(out, Instant::now());
    // A plugin's answer on a logging route carries its log phase, which runs once the body
    // has been taken and the rest dropped.
    let bytes = body.take();
    line(out, &[b"Content-Length: ", itoa::Buffer::new().format(bytes.len()).as_bytes()]);
    match own_connection {
        // An answer that closes says so itself (a 400, a 414).
        Some(v) if close && has_token(&[v.as_bytes()], b"close") => line(out, &[b"Connection: ", v.as_bytes()]),
        Some(v) if close => line(out, &[b"Connection: ", v.as_bytes(), b", close"]),
        Some(v) if seen.http10 => line(out, &[b"Connection: ", v.as_bytes(), b", keep-alive"]),
        Some(v) => line(out, &[b"Connection: ", v.as_bytes()]),
        None => connection_field(out, close, seen.http10),
    }
    out.extend_from_slice(b"\r\n");
    let head_len = out.len();
    if !seen.head {
        out.extend_from_slice(&bytes);
    }
    if let Some(l) = log {
        l.finish_own(&parts, (out.len() - head_len) as u64);
    }
    drop(body);
    if !send(client, out).await || close {
        let _ = client.shutdown().await;
        return Next::Close;
    }
    Next::KeepAlive
}
