//! The direct path for HTTP/1 connections, plain or TLS. Most proxied requests are bodiless (or
//! short-bodied) requests: for those Gatehouse works as nginx does, on bytes. It
//! parses the request head in the connection's buffer, writes the upstream request straight
//! from it, parses the upstream's response head and relays the body as it comes (Content-Length;
//! chunked, passed through as it is; or until the upstream closes, re-chunked), with no header
//! map, no per-request task
//! and no channel between a client and an upstream connection.
//!
//! Routes with plugins are served here too when their plugins act only in `access` (all the
//! bundled ones do): the access phase runs on a header map built from the parsed head, and the
//! upstream request is written from that map.
//!
//! Anything else — a chunked or long body, an upgrade, a plugin with a response phase,
//! `Kong-Debug`, a head hyper would refuse — is handed to the general path: hyper serves the rest of the connection,
//! starting from the bytes already read (see [`Rewind`]), so both paths answer alike and the
//! direct one never has to know every corner of the protocol.

use std::borrow::Cow;
use std::future::Future as _;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use gatehouse_shared::enabled_headers::EnabledHeaders;

use super::chunked::ChunkedEnd;
use super::upstream::{Connector, RawConn};
use super::waiting::{Deadline, Stop};
use super::{mark_upstream_failure, millis_between, uri, Conn, Proxy, ProxyError, ReqBody, ResBody, SERVER_TOKEN};
use crate::compiled::Compiled;
use crate::metrics::{self, Series};
use crate::trace::{self, Trace};
use crate::{plugins, router};

/// Kong's limits on a request head, nginx's `large_client_header_buffers 4 8k`: each line
/// must fit one 8 KiB buffer, and the head four of them. A longer head is refused (414 for the
/// request line, else 400) and never forwarded.
pub(crate) const MAX_LINE: usize = 8 * 1024;
pub(crate) const MAX_HEAD: usize = 4 * MAX_LINE;
/// hyper's read buffer on connections handed to it: later heads on them are held to about
/// Kong's limit too (hyper answers a longer one with an empty 431 and closes).
const HYPER_MAX_BUF: usize = 2 * MAX_HEAD;
/// Request headers parsed here; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// Request headers hyper parses; it answers a request with more with 431.
const HYPER_MAX_HEADERS: usize = 100;
/// Longest request body the direct path takes (read whole, then sent with the head: a body
/// this short fits the socket buffers, so an upstream that answers before reading it all
/// cannot stall the write). Longer bodies stream through hyper.
const MAX_BODY: usize = 16 * 1024;
/// Response headers accepted from an upstream: hyper's own limit, as on the general path.
const MAX_UPSTREAM_HEADERS: usize = 100;
/// Longest upstream response head accepted.
const MAX_UPSTREAM_HEAD: usize = 64 * 1024;
const READ_RESERVE: usize = 8 * 1024;
/// How long, and for how many bytes, a refused client is read from before it is closed.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// How long a client may take to accept bytes of a response before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Buffers a connection reuses for every request: the upstream request and the client response.
struct Scratch {
    up: Vec<u8>,
    out: Vec<u8>,
    /// The upstream's answer head must arrive by this (the service's read timeout).
    answer_by: Deadline,
    /// What the request being served contributes to `crate::metrics`.
    tally: Tally,
}

/// One request's contribution to `crate::metrics`, filled in as it is served.
struct Tally {
    /// When the request's head was complete.
    started: Instant,
    series: Series,
    /// 0 until an upstream's answer is relayed; Gatehouse's own answers are read back from
    /// `Scratch::out`, which holds each of them whole once sent.
    status: u16,
    upstream_ms: Option<u64>,
    kong_ms: Option<u64>,
    egress: u64,
    /// The request's trace, when it is sampled (`crate::trace`).
    trace: Option<Box<Trace>>,
}

impl Tally {
    fn new(started: Instant) -> Tally {
        Tally {
            started,
            series: Series::unrouted(),
            status: 0,
            upstream_ms: None,
            kong_ms: None,
            egress: 0,
            trace: None,
        }
    }

    /// Records the request answered, `ingress` bytes long.
    fn record(&mut self, ingress: usize, out: &[u8]) {
        if self.series == Series::OFF && self.trace.is_none() {
            return;
        }
        if self.status == 0 {
            // "HTTP/1.1 NNN ...": one of Gatehouse's own answers, whole in `out`.
            self.status = out.get(9..12).and_then(|c| std::str::from_utf8(c).ok()?.parse().ok()).unwrap_or(0);
            self.egress = out.len() as u64;
        }
        let request_ms = metrics::ms(self.started, Instant::now());
        metrics::record(&metrics::Observation {
            series: self.series,
            status: self.status,
            request_ms,
            upstream_ms: self.upstream_ms,
            kong_ms: self.kong_ms.unwrap_or(request_ms),
            ingress: ingress as u64,
            egress: self.egress,
        });
        if let Some(t) = self.trace.take() {
            (*t).finish(self.status);
        }
    }
}

/// What became of one request.
enum Next {
    /// Answered; the connection goes on.
    KeepAlive,
    /// Answered (or failed mid-response); the connection ends.
    Close,
    /// Not for this path: hyper takes the connection from this request on.
    Handoff,
}

/// A client connection: plain TCP, or TLS that negotiated HTTP/1.1.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// Serves an HTTP/1 client connection until it ends, on the direct path while it can.
pub async fn serve<S: ClientIo>(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    mut tcp: S,
    shutdown: watch::Receiver<bool>,
    header_read: Duration,
) {
    let trusted = proxy.trusted.iter().any(|n| n.contains(conn.peer.ip()));
    let mut buf = BytesMut::with_capacity(READ_RESERVE);
    let now = tokio::time::Instant::now();
    let mut scratch = Scratch {
        up: Vec::with_capacity(1024),
        out: Vec::with_capacity(4096),
        answer_by: Deadline::new(now + header_read),
        tally: Tally::new(now.into_std()),
    };
    let mut stop = Stop::new(shutdown);
    let mut head_by = Deadline::new(now + header_read);
    // When the head (and short body) of the request being read must be complete: one
    // deadline per request, not per read, so a client trickling bytes cannot hold the
    // connection past it.
    let mut deadline: Option<tokio::time::Instant> = None;
    // While a head is unfinished: the length of its last, unfinished line. Until a line ends
    // or outgrows the limits, parsing again could only find the same, so a client trickling
    // its head byte by byte costs a parse per line (and hyper takes over past 100), not per byte.
    let mut unfinished_line: Option<usize> = None;
    loop {
        if !buf.is_empty() && unfinished_line.is_none_or(|len| len > MAX_LINE || buf.len() >= MAX_HEAD) {
            unfinished_line = None;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let parsed = req.parse(&buf);
            // A head with more fields than parsed here is hyper's (it takes up to 100) once it
            // is complete and within Kong's limits: until then it is read here.
            let head = match parsed {
                Err(httparse::Error::TooManyHeaders) => wide_head(&buf),
                other => other,
            };
            let refusal = match head {
                Ok(httparse::Status::Complete(len)) => oversized(&buf[..len], true),
                Ok(httparse::Status::Partial) => oversized(&buf, false),
                // More fields than hyper takes: its 431. Over TLS, a version that is not
                // HTTP/1 may be HTTP/2 with prior knowledge, which hyper detects.
                Err(httparse::Error::TooManyHeaders) => None,
                Err(httparse::Error::Version) if conn.https => None,
                // hyper would refuse it too, with an empty 400; Kong answers with its page.
                Err(_) => Some(ProxyError::BadRequest("a malformed request head")),
            };
            if let Some(refusal) = refusal {
                let seen = Seen { close: true, ..Seen::default() };
                return refuse(&mut tcp, &mut scratch.out, refusal, &seen, proxy.headers).await;
            }
            // `true` hands the connection to hyper.
            let hand_off = match parsed {
                Ok(httparse::Status::Complete(len)) => match body_length(req.headers, req.version == Some(0)) {
                    Err(refusal) => {
                        return refuse(&mut tcp, &mut scratch.out, refusal, &refusing(&req), proxy.headers).await;
                    }
                    // A short body is read whole first, then sent with the head.
                    Ok(Some(n)) if buf.len() < len + n => false,
                    Ok(Some(n)) => {
                        let body = &buf[len..len + n];
                        scratch.tally = Tally::new(Instant::now());
                        metrics::request_started();
                        let next = exchange(&proxy, &conn, trusted, &req, body, &mut tcp, &mut scratch).await;
                        match next {
                            Next::Handoff => metrics::request_handed_over(),
                            _ => scratch.tally.record(len + n, &scratch.out),
                        }
                        match next {
                            Next::KeepAlive => {
                                buf.advance(len + n);
                                deadline = None;
                                continue;
                            }
                            Next::Close => return,
                            Next::Handoff => true,
                        }
                    }
                    Ok(None) => true,
                },
                Ok(httparse::Status::Partial) => false,
                Err(_) => !matches!(head, Ok(httparse::Status::Partial)),
            };
            if hand_off {
                let shutdown = stop.into_receiver();
                return handoff(proxy, conn, tcp, buf.freeze(), shutdown, header_read).await;
            }
            if matches!(head, Ok(httparse::Status::Partial)) {
                let line_start = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                unfinished_line = Some(buf.len() - line_start);
            }
        }
        // Between requests, a shutdown ends the connection.
        if buf.is_empty() && stop.requested() {
            return;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_RESERVE);
        }
        let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + header_read);
        match head_by.within(until, stop.unless(tcp.read_buf(&mut buf))).await {
            Ok(Some(Ok(n))) if n > 0 => {
                if let Some(len) = unfinished_line.as_mut() {
                    if buf[buf.len() - n..].contains(&b'\n') {
                        unfinished_line = None;
                    } else {
                        *len += n;
                    }
                }
            }
            _ => return,
        }
    }
}

/// hyper serves the rest of the connection, beginning with the bytes already read (none for
/// a connection that negotiated HTTP/2), until it ends or shutdown drains it.
pub async fn handoff<S: ClientIo>(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    tcp: S,
    read: Bytes,
    mut shutdown: watch::Receiver<bool>,
    header_read: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let https = conn.https;
    let (io, refusals) = crate::head_guard::HeadGuard::new(Rewind { read, inner: tcp });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Over TLS without ALPN a client may still speak HTTP/2 (prior knowledge): hyper tells.
    if !https {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .keep_alive(true)
        .max_buf_size(HYPER_MAX_BUF);
    let service = crate::server::service(proxy, conn, refusals);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shutdown.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Answers a refused head with Kong's page and ends the connection, [`linger`]ing first.
async fn refuse(
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
async fn linger(client: &mut impl ClientIo) {
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

/// How far a head with more than [`MAX_HEADERS`] fields goes, parsed as hyper parses it.
fn wide_head(buf: &[u8]) -> Result<httparse::Status<usize>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    httparse::Request::new(&mut headers).parse(buf)
}

/// The refusal of a head over Kong's limits ([`MAX_LINE`], [`MAX_HEAD`]), `head` being all
/// of it or, unfinished, all read so far. Heads of a line's length or less pass unscanned.
fn oversized(head: &[u8], complete: bool) -> Option<ProxyError> {
    if head.len() <= MAX_LINE {
        return None;
    }
    // Empty lines before a request line are skipped, as httparse and nginx skip them.
    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(head.len());
    let mut lines = head[start..].split(|b| *b == b'\n');
    // An unfinished last line counts as it stands: it can only grow.
    if lines.next().is_some_and(|request_line| request_line.len() > MAX_LINE) {
        return Some(ProxyError::UriTooLong);
    }
    if lines.any(|field| field.len() > MAX_LINE) {
        return Some(ProxyError::BadRequest("a header line longer than 8 KiB"));
    }
    if head.len() > MAX_HEAD || (!complete && head.len() == MAX_HEAD) {
        return Some(ProxyError::BadRequest("a request head longer than 32 KiB"));
    }
    None
}

/// The body length a request declares when the direct path can take its body: none is 0.
/// `Ok(None)` leaves the request to hyper: a chunked body, one over [`MAX_BODY`], or `Expect`
/// (the client waits for an interim answer before its body). Framing nginx refuses is refused
/// here with Kong's page, as hyper would only answer it with an empty 400: several or invalid
/// lengths, a length with `Transfer-Encoding` (a smuggling shape), `Transfer-Encoding` in
/// HTTP/1.0 or more than once, and any coding but `chunked` (nginx's 501).
fn body_length(headers: &[httparse::Header<'_>], http10: bool) -> Result<Option<usize>, ProxyError> {
    let mut length = None;
    let mut coding = None;
    let mut expect = false;
    for h in headers {
        match field(h.name) {
            Field::ContentLength => {
                let digits = h.value.trim_ascii();
                if length.is_some() {
                    return Err(ProxyError::BadRequest("several Content-Length fields"));
                }
                // Leading zeros are fine; a value past nginx's offset type (i64) is not.
                let value = digits.iter().try_fold(0i64, |n, d| {
                    let digit = d.is_ascii_digit().then(|| i64::from(d - b'0'))?;
                    n.checked_mul(10)?.checked_add(digit)
                });
                match value {
                    Some(n) if !digits.is_empty() => length = Some(n as u64),
                    _ => return Err(ProxyError::BadRequest("an invalid Content-Length")),
                }
            }
            Field::TransferEncoding if coding.is_some() => {
                return Err(ProxyError::BadRequest("several Transfer-Encoding fields"));
            }
            Field::TransferEncoding => coding = Some(h.value),
            Field::Expect => expect = true,
            _ => {}
        }
    }
    if let Some(coding) = coding {
        if http10 {
            return Err(ProxyError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
        if length.is_some() {
            return Err(ProxyError::BadRequest("Content-Length with Transfer-Encoding"));
        }
        if !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::NotImplemented);
        }
        return Ok(None);
    }
    match length {
        _ if expect => Ok(None),
        Some(n) if n > MAX_BODY as u64 => Ok(None),
        // Within MAX_BODY, so it fits.
        n => Ok(Some(n.unwrap_or(0) as usize)),
    }
}

/// What a refusal's page is shaped by, from the head it refuses.
fn refusing<'a>(req: &httparse::Request<'_, 'a>) -> Seen<'a> {
    Seen {
        close: true,
        http10: req.version == Some(0),
        head: req.method == Some("HEAD"),
        accept: req.headers.iter().find(|h| field(h.name) == Field::Accept).map(|h| h.value),
        ..Seen::default()
    }
}

/// The header fields of a request that decide what happens to it.
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a [u8]>,
    hosts: u8,
    /// The client sent a Content-Length (at most one reaches here).
    length: bool,
    other_framing: bool,
    close: bool,
    /// An HTTP/1.0 client: answered in HTTP/1.1 as nginx does, but never chunked, and kept
    /// alive only when it asked to be.
    http10: bool,
    /// A HEAD request: error pages go without their body.
    head: bool,
    accept: Option<&'a [u8]>,
    connection: smallvec::SmallVec<[&'a [u8]; 2]>,
}

/// What the log phase needs of a request on the direct path: the plugins that log, and the
/// entry the answer completes.
struct DirectLog {
    resolved: plugins::Resolved,
    entry: plugins::LogEntry,
}

impl DirectLog {
    /// Records an upstream try (Kong's `tries`).
    fn try_peer(&mut self, service: &crate::compiled::Service, peer: Option<&crate::balancer::ring::Peer>) {
        let (ip, port) = match (peer, service.ip) {
            (Some(p), _) => (p.addr.ip().to_string(), p.addr.port()),
            (None, Some(ip)) => (ip.to_string(), service.port),
            (None, None) => (service.host.clone(), service.port),
        };
        let balancer_start_ms = plugins::log::unix_ms(Instant::now());
        self.entry.tries.push(plugins::log::Try { ip, port, balancer_start_ms, failed: None, code: None });
    }

    /// Marks the last try failed, with the status Kong's balancer records for it.
    fn failed(&mut self, error: &ProxyError) {
        if let Some(t) = self.entry.tries.last_mut() {
            t.failed = Some("next");
            t.code = Some(if matches!(error, ProxyError::Timeout) { 504 } else { 502 });
        }
    }

    /// The answer's head as written in `head` (a complete HTTP/1 response head).
    fn answered(&mut self, head: &[u8]) {
        let mut fields = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS + 16];
        let mut res = httparse::Response::new(&mut fields);
        if res.parse(head).is_err() {
            return;
        }
        let mut map = http::HeaderMap::with_capacity(res.headers.len());
        for h in res.headers.iter() {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
                map.append(n, v);
            }
        }
        self.entry.status = res.code.unwrap_or(0);
        self.entry.response_headers = map;
        self.entry.response_head_size = head.len() as u64;
    }

    /// Hands the entry to the log phase with one of Gatehouse's own answers (an upstream
    /// failure's page), recorded as the general path records it.
    fn finish_own(mut self, answer: &http::response::Parts, body: u64) {
        self.entry.finish_answer(answer);
        self.entry.response_size.fetch_add(body, std::sync::atomic::Ordering::Relaxed);
        self.resolved.log(self.entry);
    }

    /// Hands the entry to the log phase, with the bytes sent for the answer.
    fn finish(self, sent: u64) {
        let DirectLog { resolved, entry } = self;
        entry.response_size.store(sent, std::sync::atomic::Ordering::Relaxed);
        resolved.log_now(entry);
    }
}

/// The trace of a request, when it is sampled; the client's `traceparent` is then marked
/// not to be forwarded, as the upstream receives the gateway's own.
fn begin_trace(headers: &[httparse::Header<'_>], kinds: &mut [Field], started: Instant) -> Option<Box<Trace>> {
    let find = |name: &str| headers.iter().position(|h| h.name.eq_ignore_ascii_case(name));
    let trace = Trace::begin(crate::trace::incoming(|name| find(name).map(|i| headers[i].value)), started)?;
    if let Some(kind) = find("traceparent").and_then(|i| kinds.get_mut(i)) {
        *kind = Field::HopByHop;
    }
    Some(trace)
}

/// Header fields the direct path treats specially, by lower-case name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Upgrade,
    Expect,
    KongDebug,
    /// Connection-scoped fields: never forwarded.
    HopByHop,
    Connection,
    Accept,
    Via,
    ForwardedFor,
    /// X-Forwarded-Proto, -Host, -Port and X-Real-IP (index into `Seen::forwarded`).
    Forwarded(usize),
    LatencyUpstream,
    LatencyProxy,
    UpstreamStatus,
    Date,
    Other,
}

fn field(name: &str) -> Field {
    field_of(name.as_bytes())
}

/// [`field`] of a name as bytes.
fn field_of(name: &[u8]) -> Field {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 if is("te") => Field::HopByHop,
        3 if is("via") => Field::Via,
        4 if is("host") => Field::Host,
        4 if is("date") => Field::Date,
        6 if is("accept") => Field::Accept,
        6 if is("expect") => Field::Expect,
        7 if is("upgrade") => Field::Upgrade,
        7 if is("trailer") => Field::HopByHop,
        9 if is("x-real-ip") => Field::Forwarded(3),
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        10 if is("kong-debug") => Field::KongDebug,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::ForwardedFor,
        16 if is("x-forwarded-host") => Field::Forwarded(1),
        16 if is("x-forwarded-port") => Field::Forwarded(2),
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::Forwarded(0),
        20 if is("x-kong-proxy-latency") => Field::LatencyProxy,
        22 if is("x-kong-upstream-status") => Field::UpstreamStatus,
        23 if is("x-kong-upstream-latency") => Field::LatencyUpstream,
        _ => Field::Other,
    }
}

/// Whether `name` is one of the comma-separated tokens of the Connection fields seen.
fn named_by(connection: &[&[u8]], name: &str) -> bool {
    has_token(connection, name.as_bytes())
}

/// Whether `token` is one of the comma-separated tokens of `values` (case-insensitive).
fn has_token(values: &[&[u8]], token: &[u8]) -> bool {
    values.iter().any(|v| v.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
}

/// A request target the general path would accept unchanged: origin-form, no fragment, and
/// only characters that need no escaping. Anything unusual is left to hyper.
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                        | b'%'
                )
        })
}

/// One request on the direct path, or [`Next::Handoff`] before anything was sent.
async fn exchange(
    proxy: &Proxy,
    conn: &Conn,
    trusted: bool,
    req: &httparse::Request<'_, '_>,
    body: &[u8],
    client: &mut impl ClientIo,
    scratch: &mut Scratch,
) -> Next {
    let Scratch { up, out, answer_by, tally } = scratch;
    let started = tally.started;
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Next::Handoff;
    };
    let mut seen = Seen { head: method == "HEAD", http10: version == 0, ..Seen::default() };
    // A logging route's entry, finished by whichever answer the request gets.
    let mut log: Option<Box<DirectLog>> = None;
    // A gateway is no tunnel: CONNECT is refused and its connection closed, so nothing after
    // it is read as a request.
    if method == "CONNECT" {
        return answer_error(
            client,
            out,
            ProxyError::BadRequest("CONNECT is not supported"),
            &seen,
            proxy.headers,
            None,
            log.take(),
        )
        .await;
    }
    // Each field classified once. The fields `Connection` names are not forwarded (and so
    // not believed either).
    let mut kinds = [Field::Other; MAX_HEADERS];
    for (kind, h) in kinds.iter_mut().zip(req.headers.iter()) {
        *kind = field(h.name);
        if *kind == Field::Connection {
            seen.connection.push(h.value);
        }
    }
    if crate::trace::on() {
        tally.trace = begin_trace(req.headers, &mut kinds, tally.started);
    }
    let fields = || req.headers.iter().zip(kinds.iter().copied());
    // HTTP/1.1 keeps the connection unless told not to; HTTP/1.0 only when asked to.
    seen.close =
        if seen.http10 { !has_token(&seen.connection, b"keep-alive") } else { has_token(&seen.connection, b"close") };
    let dropped = |name: &str| !seen.connection.is_empty() && named_by(&seen.connection, name);
    let mut forwarded_for = None;
    let mut forwarded = [false; 4];
    for (h, kind) in fields() {
        match kind {
            Field::ContentLength => seen.length = true,
            Field::Host => {
                seen.hosts += 1;
                seen.host = Some(h.value);
            }
            // Bodies, upgrades and debug answers are the general path's.
            Field::TransferEncoding | Field::Upgrade | Field::Expect | Field::KongDebug => seen.other_framing = true,
            // The first, as the general path reads it from its header map.
            Field::Accept if seen.accept.is_none() => seen.accept = Some(h.value),
            Field::ForwardedFor if forwarded_for.is_none() && !dropped(h.name) => forwarded_for = Some(h.value),
            Field::Forwarded(i) if !dropped(h.name) => forwarded[i] = true,
            _ => {}
        }
    }
    if seen.hosts != 1 || seen.other_framing || !plain_target(target) {
        return Next::Handoff;
    }
    // A Host of visible ASCII only; anything else is routed as the general path does it.
    let Some(host) =
        seen.host.filter(|h| h.iter().all(|b| b.is_ascii_graphic())).and_then(|h| std::str::from_utf8(h).ok())
    else {
        return Next::Handoff;
    };
    if !super::headers::valid_host(host) {
        return answer_error(
            client,
            out,
            ProxyError::BadRequest("invalid Host"),
            &seen,
            proxy.headers,
            None,
            log.take(),
        )
        .await;
    }
    let config = proxy.live.load();
    // Plugins acting before routing are the general path's.
    if !config.global.is_empty() {
        return Next::Handoff;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if super::headers::climbs_above_root(path) {
        let refused = ProxyError::BadRequest("the path climbs above the root");
        return answer_error(client, out, refused, &seen, proxy.headers, None, log.take()).await;
    }
    let routing = trace::clock(&tally.trace);
    let found = config.router.find(&router::Request { method, path, host });
    trace::phase(&mut tally.trace, routing, "kong.router", Vec::new);
    let Some(m) = found else {
        return answer_error(client, out, ProxyError::NoRoute, &seen, proxy.headers, None, log.take()).await;
    };
    let route = &m.route;
    let service = &route.service;
    tally.series = route.series;
    if let Some(t) = tally.trace.as_mut() {
        t.attributes.extend(crate::trace::request(method, path, host, route));
    }
    if route.https_only && !conn.https {
        return answer_error(client, out, ProxyError::HttpsRequired, &seen, proxy.headers, None, log.take()).await;
    }
    // A preserved Host is also the TLS server name: such connections are not pooled, which
    // the general path handles.
    if service.https && route.preserve_host {
        return Next::Handoff;
    }
    let hashing = service.balancer.as_ref().is_some_and(|b| !b.hash.is_none());
    let host_no_port = match host.get(1..).and_then(|r| r.find(':')) {
        Some(i) => &host[..=i],
        None => host,
    };
    // The route's plugins, when all of them act only in `access` (a hash that may be on the
    // consumer they find, or on fields they change, is the general path's).
    let accessed = if route.plugins.is_empty() {
        None
    } else if !route.plugins.direct || hashing {
        return Next::Handoff;
    } else {
        let mut request =
            Plain { method, http10: seen.http10, target, path, query, body, started, trace: tally.trace.take() };
        // The general path hides a Host or length that `Connection` names from plugins (and
        // forwards them all the same): rare enough to leave to it.
        if dropped("host") || dropped("content-length") {
            return Next::Handoff;
        }
        let fields = fields().filter(|(h, kind)| match kind {
            Field::HopByHop | Field::Connection => false,
            _ => !dropped(h.name),
        });
        let accessing = access(proxy, conn, trusted, &config, route, &mut request, fields).await;
        tally.trace = request.trace.take();
        match accessing {
            Accessing::Forward(mut a) => {
                log = a.log.take();
                Some(a)
            }
            Accessing::Answer(reply) => {
                let close = seen.close;
                return answer(client, out, *reply, &seen, close, proxy.headers, None).await;
            }
            Accessing::Handoff => return Next::Handoff,
        }
    };
    let (body, query) = match &accessed {
        Some(a) => (&a.body[..], a.query.as_deref()),
        None => (body, query),
    };
    // A plugin may send the request on with another method or Host.
    let overrides = accessed.as_ref().and_then(|a| a.overrides.as_deref());
    let method = overrides.and_then(|o| o.method.as_ref()).map_or(method, http::Method::as_str);
    let plugin_host = overrides.and_then(|o| o.host.as_ref()).map(HeaderValue::as_bytes);
    // Balanced services hash once per request, as on the general path, which hashes the
    // fields as it forwards them: a field rewritten or dropped here, or a cookie to mint,
    // is left to it.
    let hash = match &service.balancer {
        Some(b) if hashing => {
            if b.hash.header_names().any(|n| field(n.as_str()) != Field::Other || dropped(n.as_str())) {
                return Next::Handoff;
            }
            match b.hash.hash_fields(req.headers, conn.peer.ip()) {
                Ok(h) => h,
                Err(_) => return Next::Handoff,
            }
        }
        _ => None,
    };

    // The upstream request, all but its Host line (which depends on the peer).
    let strip = if route.strip_path { m.strip } else { None };
    up.clear();
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    uri::write_upstream_target(up, path, strip, service.path.as_deref(), query);
    up.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = &accessed {
        let forwarded = super::headers::Forwarded {
            peer: &conn.peer_value,
            trusted,
            https: conn.https,
            listener_port: &conn.port_value,
            host: host_no_port,
        };
        a.write_fields(up, req.headers, &forwarded);
    } else {
        for (h, kind) in fields() {
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
        if seen.length {
            line(up, &[b"Content-Length: ", itoa::Buffer::new().format(body.len()).as_bytes()]);
        }
        let peer = conn.peer_value.as_bytes();
        match forwarded_for {
            Some(prior) => line(up, &[b"X-Forwarded-For: ", prior, b", ", peer]),
            None => line(up, &[b"X-Forwarded-For: ", peer]),
        }
        if !(trusted && forwarded[0]) {
            line(up, &[b"X-Forwarded-Proto: ", if conn.https { b"https" } else { b"http" }]);
        }
        if !(trusted && forwarded[1]) {
            // The Host is visible ASCII (checked above), so it is a valid value as it is.
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
    if let Some(t) = &tally.trace {
        line(up, &[b"traceparent: ", t.traceparent().as_bytes()]);
    }
    let base = up.len();

    // Tries = 1 + retries, as on the general path.
    // A body, once sent, is not sent again (the general path streams bodies and cannot), except
    // on a plugin route: the general path holds such a body in memory once a plugin has read
    // it, and replays it then (as nginx replays the body it buffered).
    let replayable = !matches!(method, "POST" | "PATCH" | "LOCK") && (body.is_empty() || accessed.is_some());
    if let Some(l) = log.as_mut() {
        let e = &mut l.entry;
        e.method = method.to_owned();
        // The upstream target, as written on the request line.
        e.upstream_uri = up
            .get(method.len() + 1..)
            .and_then(|rest| rest.iter().position(|b| *b == b' ').map(|end| &rest[..end]))
            .map(|t| String::from_utf8_lossy(t).into_owned());
        e.kong_latency_ms = started.elapsed().as_millis() as u64;
    }
    let sent = Instant::now();
    let proxy_latency = millis_between(started, sent);
    let went_upstream = Some((&proxy_latency, sent));
    let mut tries_left = service.retries;
    let mut try_number = 0;
    let mut reused_once = false;
    let mut last_failure = None;
    let (mut upstream, head, peer) = loop {
        let picking = trace::clock(&tally.trace);
        let peer = match &service.balancer {
            Some(b) => match b.ring().pick(b.position(hash, try_number)) {
                Some(p) => Some(p.clone()),
                None => {
                    return answer_error(
                        client,
                        out,
                        last_failure.unwrap_or(ProxyError::NoPeer),
                        &seen,
                        proxy.headers,
                        went_upstream,
                        log.take(),
                    )
                    .await
                }
            },
            None => None,
        };
        try_number += 1;
        if let Some(l) = log.as_mut() {
            l.try_peer(service, peer.as_deref());
        }
        trace::phase(&mut tally.trace, picking, "kong.balancer", || trace::peer(service, peer.as_deref(), try_number));
        up.truncate(base);
        let host_value = match &peer {
            _ if plugin_host.is_some() => plugin_host.unwrap_or_default(),
            _ if route.preserve_host => host.as_bytes(),
            Some(p) => p.host_header(service.https).as_bytes(),
            None => service.host_header.as_bytes(),
        };
        line(up, &[b"Host: ", host_value]);
        up.extend_from_slice(b"\r\n");
        up.extend_from_slice(body);
        let key = peer.as_ref().map_or(&service.pool_key, |p| p.pool_key(service.https));
        let pooled = Connector::checkout_raw(key);
        let from_pool = pooled.is_some();
        let connecting = trace::clock(&tally.trace);
        let mut raw = match pooled {
            Some(c) => c,
            None => match proxy.connector.connect_raw(service, peer.as_deref()).await {
                Ok(c) => {
                    crate::trace::dns(tally.trace.as_deref_mut(), service, c.resolved);
                    trace::call(&mut tally.trace, connecting, "kong.upstream.connect", || {
                        trace::peer(service, peer.as_deref(), try_number)
                    });
                    c
                }
                Err(e @ (ProxyError::Connect(_) | ProxyError::Timeout)) => {
                    if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                        b.observe_failure(p, matches!(e, ProxyError::Timeout), sent);
                    }
                    if tries_left == 0 {
                        return answer_error(client, out, e, &seen, proxy.headers, went_upstream, log.take()).await;
                    }
                    if let Some(l) = log.as_mut() {
                        l.failed(&e);
                    }
                    tries_left -= 1;
                    last_failure = Some(e);
                    continue;
                }
                Err(e) => return answer_error(client, out, e, &seen, proxy.headers, went_upstream, log.take()).await,
            },
        };
        // The first try on a pooled connection starts when the request was sent; others, after
        // their connect.
        let began = if from_pool && try_number == 1 && !reused_once { sent } else { Instant::now() };
        let answer_at = tokio::time::Instant::from_std(began) + service.read_timeout;
        let tripped = answer_by.within(answer_at, round_trip(&mut raw, up, seen.head)).await;
        trace::call(&mut tally.trace, Some(began), "kong.upstream.response", || {
            let status = match &tripped {
                Ok(Ok(head)) => Some(head.code),
                _ => None,
            };
            trace::answered(trace::peer(service, peer.as_deref(), try_number), status)
        });
        let failure = match tripped {
            Ok(Ok(head)) => break (raw, head, peer),
            // A pooled connection the upstream had closed: once, for free.
            Ok(Err(Trip::Stale)) if from_pool && !reused_once && replayable => {
                reused_once = true;
                try_number -= 1;
                if let Some(l) = log.as_mut() {
                    l.entry.tries.pop();
                }
                continue;
            }
            // An answer that is not HTTP is not retried (nginx's `invalid_header` is not among
            // Kong's `proxy_next_upstream error timeout`).
            Ok(Err(e @ (Trip::Invalid | Trip::TooLarge))) => {
                if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                    b.observe_failure(p, false, sent);
                }
                return answer_error(
                    client,
                    out,
                    ProxyError::Upstream(e.to_string()),
                    &seen,
                    proxy.headers,
                    went_upstream,
                    log.take(),
                )
                .await;
            }
            Ok(Err(e)) => ProxyError::Upstream(e.to_string()),
            Err(_) => ProxyError::Timeout,
        };
        if let (Some(b), Some(p)) = (&service.balancer, &peer) {
            b.observe_failure(p, matches!(failure, ProxyError::Timeout), sent);
        }
        if tries_left == 0 || service.retries == 0 || !replayable {
            return answer_error(client, out, failure, &seen, proxy.headers, went_upstream, log.take()).await;
        }
        // Kong marks a try failed when another follows it.
        if let Some(l) = log.as_mut() {
            l.failed(&failure);
        }
        tries_left -= 1;
        last_failure = Some(failure);
    };
    let answered = Instant::now();
    let upstream_latency = millis_between(sent, answered);
    tally.upstream_ms = Some(metrics::ms(sent, answered));
    tally.kong_ms = Some(metrics::ms(started, sent));

    // The response head, rewritten for the client.
    let (head_len, framing) = (head.len, head.framing);
    let head_buf = &upstream.buf[..head_len];
    let status = head.code;
    if let (Some(b), Some(p)) = (&service.balancer, &peer) {
        b.observe_status(p, status, sent);
    }
    let mut connection: smallvec::SmallVec<[&[u8]; 2]> = smallvec::SmallVec::new();
    for (name, value) in head.fields(head_buf) {
        if field_of(name) == Field::Connection {
            connection.push(value);
        }
    }
    // The upstream keeps the connection unless it says otherwise (HTTP/1.0: unless it says so).
    let keeps_alive =
        if head.version == 1 { !has_token(&connection, b"close") } else { has_token(&connection, b"keep-alive") };
    let mut upstream_reusable = !matches!(framing, Framing::Close) && keeps_alive;
    // A body that ends when the upstream closes goes to the client chunked (as nginx does), so
    // the client's connection outlives it. An HTTP/1.0 client cannot read chunks: a body
    // without a length ends with its connection.
    let unsized_body = matches!(framing, Framing::Chunked | Framing::Close);
    let close = seen.close || (seen.http10 && unsized_body);
    out.clear();
    let Ok(code) = http::StatusCode::from_u16(status) else {
        tally.upstream_ms = None;
        return answer_error(
            client,
            out,
            ProxyError::Upstream("invalid status".into()),
            &seen,
            proxy.headers,
            went_upstream,
            log.take(),
        )
        .await;
    };
    // The upstream's own reason phrase, even an empty one: nginx passes the status line on,
    // and hyper keeps it on the general path.
    let reason = head.reason(head_buf);
    line(out, &[b"HTTP/1.1 ", code.as_str().as_bytes(), b" ", reason.as_bytes()]);
    let mut dated = false;
    let on = proxy.headers;
    // Fields plugins set replace the upstream's of the same name.
    let plugin_fields = accessed.as_ref().map(|a| &a.response).filter(|r| !r.is_empty());
    for (name, value) in head.fields(head_buf) {
        if plugin_fields.is_some_and(|f| f.has(name)) {
            continue;
        }
        let kind = field_of(name);
        let keep = match kind {
            Field::Other | Field::Accept | Field::Host | Field::ForwardedFor | Field::Forwarded(_) => true,
            Field::Expect | Field::KongDebug => true,
            // Gatehouse's own replace the upstream's, each unless the `headers` setting
            // turned it off (as Kong assigns them in `header_filter`).
            Field::Via => !on.via,
            Field::LatencyProxy => !on.proxy_latency,
            Field::LatencyUpstream => !on.upstream_latency,
            Field::UpstreamStatus => !on.upstream_status,
            // A length is written below from the framing used; HEAD and 304 answers keep
            // theirs as they are (it describes a body not sent). A 204 has none (RFC 9110 §8.6).
            Field::ContentLength => matches!(framing, Framing::NoBody) && status != 204,
            Field::Date => {
                dated = true;
                true
            }
            _ => false,
        };
        // `Connection` may not remove the fields framing and dating the answer.
        let removable = !matches!(kind, Field::ContentLength | Field::Date);
        if keep && !(removable && !connection.is_empty() && has_token(&connection, name)) {
            line(out, &[name, b": ", value]);
        }
    }
    if let Framing::Length(n) = framing {
        line(out, &[b"Content-Length: ", itoa::Buffer::new().format(n).as_bytes()]);
    }
    if !dated {
        date(out, answered);
    }
    if on.upstream_status {
        line(out, &[b"X-Kong-Upstream-Status: ", code.as_str().as_bytes()]);
    }
    if on.upstream_latency {
        line(out, &[b"X-Kong-Upstream-Latency: ", upstream_latency.as_bytes()]);
    }
    if on.proxy_latency {
        line(out, &[b"X-Kong-Proxy-Latency: ", proxy_latency.as_bytes()]);
    }
    if on.via {
        line(out, &[b"Via: ", SERVER_TOKEN.as_bytes()]);
    }
    for (name, value) in plugin_fields.into_iter().flat_map(plugins::ResponseFields::iter) {
        line(out, &[name.as_str().as_bytes(), b": ", value.as_bytes()]);
    }
    if unsized_body && !seen.http10 {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    connection_field(out, close, seen.http10);
    out.extend_from_slice(b"\r\n");

    drop(connection);
    let mut log = log.take();
    if let Some(l) = &mut log {
        l.answered(out);
        l.entry.proxy_latency_ms = Some(answered.saturating_duration_since(sent).as_millis() as u64);
    }

    // The body: what came with the head, then the rest as it arrives.
    upstream.buf.advance(head_len);
    let mut bytes_sent = 0;
    let done =
        relay(&mut upstream, client, out, framing, seen.http10, service.read_timeout, answer_by, &mut bytes_sent).await;
    if let Some(l) = log {
        let logging = Instant::now();
        l.finish(bytes_sent);
        if let Some(t) = tally.trace.as_mut() {
            t.child("kong.log", logging, Instant::now(), Vec::new());
        }
    }
    tally.status = status;
    tally.egress = bytes_sent;
    match done {
        Relay::Done { extra } => upstream_reusable &= !extra,
        Relay::UpstreamBroken | Relay::ClientGone => return Next::Close,
    }
    if upstream_reusable {
        upstream.buf.clear();
        upstream.release();
    }
    if close {
        let _ = client.shutdown().await;
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// The parts of a direct-path request its plugins see besides the header fields.
struct Plain<'r> {
    method: &'r str,
    http10: bool,
    target: &'r str,
    path: &'r str,
    query: Option<&'r str>,
    body: &'r [u8],
    started: Instant,
    trace: Option<Box<Trace>>,
}

/// What a route's plugins made of a request on the direct path.
enum Accessing<'r> {
    Forward(Accessed<'r>),
    /// A plugin answered instead of the upstream.
    Answer(plugins::Rejected),
    /// Not for this path after all (nothing has been sent).
    Handoff,
}

/// The request to forward after the access phase: as the general path would send it.
struct Accessed<'r> {
    /// The fields to forward, forwarding fields included; Host and Content-Length are written
    /// apart (the Host depends on the peer tried, the length on the body).
    headers: http::HeaderMap,
    body: Bytes,
    /// A Content-Length goes upstream: the client sent one, or a plugin replaced the body.
    length: bool,
    /// The query, as plugins left it (some remove a credential from it).
    query: Option<Cow<'r, str>>,
    /// Fields plugins set for the response.
    response: plugins::ResponseFields,
    /// What a plugin changed besides fields (rare: boxed, so the common case stays small).
    overrides: Option<Box<Overrides>>,
    /// The log entry, on a route whose plugins log.
    log: Option<Box<DirectLog>>,
}

/// A method or Host for the upstream other than the request's own.
struct Overrides {
    method: Option<http::Method>,
    host: Option<HeaderValue>,
}

impl Accessed<'_> {
    /// Writes the fields; a name the client sent keeps the client's spelling (the map holds
    /// it lower-cased), as on the rest of the direct path and in nginx.
    fn write_fields(
        &self,
        up: &mut Vec<u8>,
        client: &[httparse::Header<'_>],
        forwarded: &super::headers::Forwarded<'_>,
    ) {
        for (name, value) in &self.headers {
            if super::headers::is_forwarding(name) {
                continue;
            }
            let name = name.as_str();
            let spelled = client.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map_or(name, |h| h.name);
            line(up, &[spelled.as_bytes(), b": ", value.as_bytes()]);
        }
        if self.length {
            line(up, &[b"Content-Length: ", itoa::Buffer::new().format(self.body.len()).as_bytes()]);
        }
        super::headers::write_forwarding(up, &self.headers, forwarded);
    }
}

/// Runs the route's `access` phase (every plugin in it acts only there) on a header map of
/// the request's `fields`, which are those the general path would show plugins.
async fn access<'r, 'h, 'b: 'h>(
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
            return Accessing::Handoff;
        };
        headers.append(name, value);
    }
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else { return Accessing::Handoff };
    let mut body =
        if request.body.is_empty() { ReqBody::Empty } else { ReqBody::Full(Bytes::copy_from_slice(request.body)) };
    let mut ctx = plugins::RequestCtx {
        method: &method,
        version: if request.http10 { http::Version::HTTP_10 } else { http::Version::HTTP_11 },
        target: request.target,
        path: request.path,
        query: request.query.map(Cow::Borrowed),
        headers: &mut headers,
        body: &mut body,
        client_ip: conn.peer.ip(),
        https: conn.https,
        trusted,
        route_id: &route.id,
        service_id: &route.service.id,
        config,
        live: &proxy.live,
        consumer: None,
        credential: None,
        response: plugins::ResponseFields::default(),
        conn,
        method_override: None,
        upstream_host: None,
        log_body: None,
        started: request.started,
        hooks: Vec::new(),
    };
    let resolved = match plugins::access(&route.plugins, &mut ctx, request.trace.as_deref_mut()).await {
        Ok(r) => r,
        Err(reply) => return Accessing::Answer(reply),
    };
    let log = resolved.logs().then(|| {
        let mut entry = plugins::entry_for(&ctx);
        entry.request_size += request.body.len() as u64;
        entry.request_has_body = !request.body.is_empty();
        Box::new(DirectLog { resolved, entry })
    });
    let response = std::mem::take(&mut ctx.response);
    let overrides = match (ctx.method_override.take(), ctx.upstream_host.take()) {
        (None, None) => None,
        (method, host) => Some(Box::new(Overrides { method, host })),
    };
    // Plugins that change the query replace it with their own string.
    let query = match ctx.query {
        None => None,
        Some(Cow::Borrowed(q)) if request.query == Some(q) => request.query.map(Cow::Borrowed),
        Some(q) => Some(Cow::Owned(q.into_owned())),
    };
    let body = match body {
        ReqBody::Empty => Bytes::new(),
        ReqBody::Full(b) => b,
        // Plugins only replace a body held in memory with another.
        ReqBody::Stream(_) | ReqBody::Prefixed(..) => return Accessing::Handoff,
    };
    headers.remove(http::header::HOST);
    let length = headers.remove(http::header::CONTENT_LENGTH).is_some();
    // The forwarding fields are written with the rest (`write_fields`), after the access phase
    // as on the general path: plugins see the client's own.
    Accessing::Forward(Accessed { headers, body, length, query, response, overrides, log })
}

/// How the upstream's response body is delimited.
#[derive(Clone, Copy)]
enum Framing {
    /// HEAD, 204 and 304 answers.
    NoBody,
    Length(u64),
    Chunked,
    /// Until the upstream closes: re-chunked for the client, whose connection goes on.
    Close,
}

/// RFC 9112 §6.3, for a response to a request of ours; `None` when the upstream's framing
/// is invalid (a try that failed).
fn framing(res: &httparse::Response<'_, '_>, head_request: bool) -> Option<Framing> {
    let status = res.code.unwrap_or(0);
    if head_request || status == 204 || status == 304 {
        return Some(Framing::NoBody);
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in res.headers.iter() {
        match field(h.name) {
            Field::TransferEncoding => {
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"").trim_ascii();
                // Not chunked last: the body runs until the upstream closes (RFC 9112 §6.3).
                if !last.eq_ignore_ascii_case(b"chunked") {
                    return Some(Framing::Close);
                }
                chunked = true;
            }
            Field::ContentLength => {
                let n = super::headers::content_length(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            }
            _ => {}
        }
    }
    Some(match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    })
}

enum Relay {
    Done { extra: bool },
    UpstreamBroken,
    ClientGone,
}

/// Sends the response head in `out` with the body that follows it in `upstream.buf`, then the
/// rest of the body as it is read: one write per read, so a large body streams through in
/// constant memory. For an HTTP/1.0 client (`unchunk`), a chunked body goes as its data alone.
#[allow(clippy::too_many_arguments)]
async fn relay(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    framing: Framing,
    unchunk: bool,
    read_timeout: Duration,
    read_by: &mut Deadline,
    sent: &mut u64,
) -> Relay {
    let mut remaining = match framing {
        Framing::NoBody => 0,
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
        Framing::Close => return relay_until_close(upstream, client, out, !unchunk, read_timeout, read_by, sent).await,
    };
    let mut chunked = matches!(framing, Framing::Chunked).then(ChunkedEnd::default);
    let decode = unchunk && chunked.is_some();
    let mut first = true;
    loop {
        // Decoded data goes out through `out`, which holds the head until the first write.
        if decode && !first {
            out.clear();
        }
        // The body bytes now in the buffer, and whether they end it.
        let (take, end) = match &mut chunked {
            Some(scan) => match if decode { scan.decode(&upstream.buf, out) } else { scan.feed(&upstream.buf) } {
                Ok(Some(n)) => (n, true),
                Ok(None) => (upstream.buf.len(), false),
                Err(_) => return Relay::UpstreamBroken,
            },
            None => {
                let n = (upstream.buf.len() as u64).min(remaining) as usize;
                remaining -= n as u64;
                (n, remaining == 0)
            }
        };
        let extra = upstream.buf.len() > take;
        if first || decode {
            if !decode {
                out.extend_from_slice(&upstream.buf[..take]);
            }
            if !out.is_empty() && !send(client, out).await {
                return Relay::ClientGone;
            }
            *sent += out.len() as u64;
            first = false;
        } else if take > 0 {
            if !send(client, &upstream.buf[..take]).await {
                return Relay::ClientGone;
            }
            *sent += take as u64;
        }
        if end {
            if extra {
                upstream.buf.clear();
            }
            return Relay::Done { extra };
        }
        upstream.buf.clear();
        match read_body(upstream, read_timeout, read_by).await {
            Some(n) if n > 0 => {}
            _ => return Relay::UpstreamBroken,
        }
    }
}

/// Relays a body that ends when the upstream closes, as chunks (`chunk`): one per read, written
/// with the head in `out` for the first, then the last chunk when the upstream closes. Without
/// `chunk` (an HTTP/1.0 client) the bytes go as they are, and the client's connection ends too.
async fn relay_until_close(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    chunk: bool,
    read_timeout: Duration,
    read_by: &mut Deadline,
    sent: &mut u64,
) -> Relay {
    loop {
        if !upstream.buf.is_empty() {
            if chunk {
                // A chunk size: the length in hexadecimal (writing to a Vec cannot fail).
                let _ = write!(out, "{:x}\r\n", upstream.buf.len());
                out.extend_from_slice(&upstream.buf);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&upstream.buf);
            }
            upstream.buf.clear();
        }
        if !out.is_empty() && !send(client, out).await {
            return Relay::ClientGone;
        }
        *sent += out.len() as u64;
        out.clear();
        match read_body(upstream, read_timeout, read_by).await {
            Some(n) if n > 0 => {}
            Some(_) => break,
            None => return Relay::UpstreamBroken,
        }
    }
    if chunk {
        if !send(client, b"0\r\n\r\n").await {
            return Relay::ClientGone;
        }
        *sent += 5;
    }
    Relay::Done { extra: true }
}

/// Reads more of a response body into the emptied `upstream.buf`: the bytes read (0 when the
/// upstream closed), or `None` for an error or `read_timeout` passing first (Kong's
/// `read_timeout`, nginx's `proxy_read_timeout`: between reads).
async fn read_body(upstream: &mut RawConn, read_timeout: Duration, read_by: &mut Deadline) -> Option<usize> {
    if upstream.buf.capacity() < READ_RESERVE {
        upstream.buf.reserve(READ_RESERVE);
    }
    let at = tokio::time::Instant::now() + read_timeout;
    read_by.within(at, upstream.io.read_buf(&mut upstream.buf)).await.ok()?.ok()
}

/// A response head as [`round_trip`] parsed it, as offsets into the upstream's buffer: the
/// head is then rewritten for the client without being parsed a second time.
struct Head {
    len: usize,
    framing: Framing,
    code: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    version: u8,
    reason: std::ops::Range<usize>,
    /// Name and value of each field.
    fields: smallvec::SmallVec<[(std::ops::Range<usize>, std::ops::Range<usize>); 24]>,
}

impl Head {
    fn of(res: &httparse::Response<'_, '_>, buf: &[u8], len: usize, framing: Framing) -> Head {
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        Head {
            len,
            framing,
            code: res.code.unwrap_or(502),
            version: res.version.unwrap_or(1),
            reason: res.reason.map_or(0..0, |r| at(r.as_bytes())),
            fields: res.headers.iter().map(|h| (at(h.name.as_bytes()), at(h.value))).collect(),
        }
    }

    /// The fields as (name, value), read from the buffer the head was parsed from.
    fn fields<'b>(&'b self, buf: &'b [u8]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 'b {
        self.fields.iter().map(move |(n, v)| (&buf[n.clone()], &buf[v.clone()]))
    }

    fn reason<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[self.reason.clone()]).unwrap_or("")
    }
}

/// Why a try on the upstream failed before a response head.
#[derive(Debug, thiserror::Error)]
enum Trip {
    /// Closed before answering anything: on a pooled connection, the keep-alive race.
    #[error("connection closed before a response")]
    Stale,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("closed in the middle of the response head")]
    Truncated,
    #[error("invalid response head")]
    Invalid,
    #[error("response head too large")]
    TooLarge,
}

/// Writes the request and reads until a final (non-1xx) response head is in `raw.buf`;
/// returns its length and how its body is delimited.
async fn round_trip(raw: &mut RawConn, request: &[u8], head_request: bool) -> Result<Head, Trip> {
    raw.buf.clear();
    // TLS holds records until flushed; for plain TCP the flush is a no-op.
    if let Err(e) = async {
        raw.io.write_all(request).await?;
        raw.io.flush().await
    }
    .await
    {
        return Err(match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Trip::Stale,
            _ => Trip::Io(e),
        });
    }
    let mut answered = false;
    loop {
        if raw.buf.capacity() - raw.buf.len() < 1024 {
            raw.buf.reserve(READ_RESERVE);
        }
        let n = match raw.io.read_buf(&mut raw.buf).await {
            Ok(n) => n,
            // Reset before answering anything: the keep-alive race.
            Err(e) if !answered && raw.buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(Trip::Stale)
            }
            Err(e) => return Err(Trip::Io(e)),
        };
        if n == 0 {
            return Err(if answered || !raw.buf.is_empty() { Trip::Truncated } else { Trip::Stale });
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&raw.buf) {
                Ok(httparse::Status::Complete(len)) => match res.code {
                    // Interim responses (100 Continue, 103 Early Hints) are not relayed.
                    Some(c @ 100..=199) if c != 101 => {
                        raw.buf.advance(len);
                        answered = true;
                        continue;
                    }
                    Some(101) => return Err(Trip::Invalid),
                    _ => {
                        let framing = framing(&res, head_request).ok_or(Trip::Invalid)?;
                        return Ok(Head::of(&res, &raw.buf, len, framing));
                    }
                },
                Ok(httparse::Status::Partial) if raw.buf.len() < MAX_UPSTREAM_HEAD => break,
                Ok(httparse::Status::Partial) => return Err(Trip::TooLarge),
                Err(_) => return Err(Trip::Invalid),
            }
        }
    }
}

/// Writes an error page and says whether the connection goes on.
async fn answer_error(
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
async fn answer(
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
    let bytes = match &mut body {
        ResBody::Full(Some(b)) => b.clone(),
        // A plugin's answer on a logging route carries its log phase, which runs once the
        // body has been taken and the rest dropped.
        ResBody::Filtered(f) => f.take_full().unwrap_or_default(),
        _ => Bytes::new(),
    };
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

/// Writes to the client, which has [`SEND_TIMEOUT`] to take the bytes (nginx's
/// `send_timeout`); false when it did not or has gone. The timer only exists if the socket's
/// buffer is full, so a write that completes at once costs none.
async fn send(client: &mut impl ClientIo, bytes: &[u8]) -> bool {
    // TLS holds written records until flushed; for plain TCP the flush is a no-op.
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    let mut write = std::pin::pin!(write);
    // Polled once before any timer exists: most writes complete at once.
    match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        Poll::Ready(done) => done.is_ok(),
        Poll::Pending => matches!(tokio::time::timeout(SEND_TIMEOUT, write).await, Ok(Ok(()))),
    }
}

/// The answer's own `Connection` field: `close` when the connection ends with it, and for an
/// HTTP/1.0 client that stays, `keep-alive` (its default is to close), as nginx sends them.
fn connection_field(out: &mut Vec<u8>, close: bool, http10: bool) {
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

fn line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// The Date header, formatted once a second per thread (as hyper does). `now` is a reading
/// the caller has already taken: the wall clock is read only when its second turns.
fn date(out: &mut Vec<u8>, now: Instant) {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        /// The header's text, and until when it is right.
        static CACHED: RefCell<Option<(Instant, String)>> = const { RefCell::new(None) };
    }
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        let text = match &mut *c {
            Some((until, text)) if now < *until => text,
            cached => {
                let wall = SystemTime::now();
                let into_second =
                    wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()));
                let until = now + Duration::from_nanos(1_000_000_000 - into_second);
                &mut cached.insert((until, httpdate::fmt_http_date(wall))).1
            }
        };
        line(out, &[b"Date: ", text.as_bytes()]);
    });
}

/// The client connection with the bytes already read put back in front, for hyper.
pub struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Live;
    use tokio::net::TcpStream;

    /// A direct-path listener with no configuration, whose heads are due within `header_read`.
    async fn serving(header_read: Duration) -> std::net::SocketAddr {
        let proxy = Arc::new(Proxy {
            live: Arc::new(Live::new(crate::balancer::Registry::default())),
            connector: Connector::new(),
            trusted: Vec::new(),
            headers: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let conn = Arc::new(Conn::new(peer, false, addr.port()));
            let (_stop, stopped) = watch::channel(false);
            serve(proxy, conn, tcp, stopped, header_read).await;
        });
        addr
    }

    /// Writes `bytes` one at a time, `gap` apart, until the connection refuses one; returns
    /// how many went.
    async fn trickle(client: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
        let mut sent = 0;
        for b in bytes {
            if client.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(gap).await;
        }
        sent
    }

    /// Between line ends an unfinished head is not parsed again; the one that ends it is.
    #[tokio::test]
    async fn a_head_trickled_byte_by_byte_is_answered_when_it_ends() {
        let addr = serving(Duration::from_secs(10)).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = b"GET /trickled HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
        assert_eq!(trickle(&mut client, head, Duration::from_millis(2)).await, head.len());
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer)).await.unwrap().unwrap();
        // No configuration: the no-route 404, written as soon as the blank line came.
        assert_eq!(&answer, b"HTTP/1.1 404");
    }

    /// A client trickling its request head one byte at a time is cut off when the head's
    /// deadline passes, however recent its last byte.
    #[tokio::test]
    async fn a_trickled_head_is_cut_off_at_its_deadline() {
        let addr = serving(Duration::from_millis(300)).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = b"GET /a-rather-long-path-sent-slowly HTTP/1.1\r\nHost: x\r\n\r\n";
        let sent = trickle(&mut client, head, Duration::from_millis(50)).await;
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        assert!(sent < head.len(), "the connection outlived the head's deadline");
        assert!(rest.is_empty(), "nothing is answered to an incomplete head: {rest:?}");
    }

    /// A head with more fields than the direct path parses is still read here, under the
    /// deadline it began with, until it ends: hyper, taking it unfinished, would start afresh.
    #[tokio::test]
    async fn a_head_with_many_fields_keeps_its_deadline() {
        let addr = serving(Duration::from_millis(1000)).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        // More fields than the direct path parses, 700 ms in, with 300 ms left.
        for i in 0..MAX_HEADERS + 1 {
            client.write_all(format!("X-F{i}: 1\r\n").as_bytes()).await.unwrap();
        }
        client.write_all(b"X-Pad: ").await.unwrap();
        // At 50 ms a byte, the head's deadline allows about 6 more bytes; a fresh one, about 20.
        let sent = trickle(&mut client, &[b'a'; 60], Duration::from_millis(50)).await;
        assert!(sent < 13, "{sent} bytes were taken after the head's deadline");
    }
}
