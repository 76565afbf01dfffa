//! The direct path for HTTP/1 connections, plain or TLS: Gatehouse works as nginx does, on
//! bytes. It parses the request head in the connection's buffer, writes the upstream request
//! straight from it, sends the body (a short one with the head; a longer or chunked one
//! streamed as it comes, `h1::request_body`), parses the upstream's response head and relays
//! the body as it comes (Content-Length; chunked, passed through as it is; or until the
//! upstream closes, re-chunked), with no header map, no per-request task and no channel
//! between a client and an upstream connection. The protocol pieces are in `super::h1`.
//!
//! Routes with plugins are served here too: the access phase runs on a header map built from
//! the parsed head (`access`), and the upstream request is written from that map; plugins
//! that act on answers get the upstream's head as a header map and its body chunk by chunk
//! (`phases`). A WebSocket handshake the upstream accepts turns the connection into a tunnel.
//!
//! This is Gatehouse's one request pipeline. HTTP/2 clients reach it too: hyper's h2 speaks
//! their protocol and hands each request to this engine as HTTP/1.1 over an in-memory pipe
//! (`super::h2`), so nothing a request goes through is written twice. A TLS client that
//! speaks HTTP/2 with prior knowledge is recognised here by its first bytes (see
//! `h1::rewind`).

mod access;
mod answer;
mod exchange;
mod log;
mod phases;
mod request;
mod respond;
mod tally;
#[cfg(test)]
mod tests;
mod tunnel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use self::answer::{linger, refuse, refusing};
use self::exchange::exchange;
use self::request::{Body, Seen};
use self::tally::Tally;
use self::tunnel::tunnel;
use super::h1::limits::{body_length, oversized, parse_head, RequestBody, MAX_HEAD, MAX_HEADERS, MAX_LINE};
use super::h1::request_body::Streamed;
use super::h1::response::READ_RESERVE;
use super::waiting::{Deadline, Stop};
use super::{Proxy, ProxyError};
use crate::message::Conn;
use crate::metrics;

/// Buffers a connection reuses for every request: the upstream request and the client response.
struct Scratch {
    up: Vec<u8>,
    out: Vec<u8>,
    /// The upstream's answer head must arrive by this (the service's read timeout).
    answer_by: Deadline,
    /// What the request being served contributes to `crate::metrics`.
    tally: Tally,
    /// Bytes the client sent while its request was with the upstream (a pipelined request):
    /// they go after the connection's unparsed bytes ([`Scratch::take_early`]).
    early: BytesMut,
}

impl Scratch {
    /// Moves what the client sent while it was watched to the end of `buf`, the connection's
    /// unparsed bytes.
    fn take_early(&mut self, buf: &mut BytesMut) {
        if !self.early.is_empty() {
            buf.extend_from_slice(&self.early);
            self.early.clear();
        }
    }
}

/// nginx's status for a request whose client closed its connection before the answer.
const CLIENT_CLOSED: u16 = 499;

/// Waits for `answer` while watching the client, as nginx watches it while an upstream works:
/// `None` when the client closes its connection first (nginx's 499: the upstream's answer is
/// then not waited for). Bytes the client sends meanwhile (a pipelined request) are kept in
/// `early`, and the client is not watched further. Reading from the client only while the
/// answer is pending costs nothing when the upstream is quick.
pub(crate) async fn unless_client_leaves<T>(
    client: &mut impl ClientIo,
    early: &mut BytesMut,
    answer: impl std::future::Future<Output = T>,
) -> Option<T> {
    use std::task::Poll;
    let mut answer = std::pin::pin!(answer);
    let mut watching = true;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if watching {
            // Read onto the stack: `early` is allocated only if the client sends something.
            let mut room = [0u8; 1024];
            let mut read = tokio::io::ReadBuf::new(&mut room);
            match std::pin::Pin::new(&mut *client).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(None),
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(())) => {
                    early.extend_from_slice(read.filled());
                    watching = false;
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// What became of one request.
enum Next {
    /// Answered; the connection goes on.
    KeepAlive,
    /// Answered (or failed mid-response); the connection ends.
    Close,
    /// Switched to a WebSocket: the connection is a tunnel to this upstream connection from
    /// now on.
    Upgrade(Box<super::upstream::RawConn>),
}

/// A client connection: plain TCP, TLS that negotiated HTTP/1.1, or the pipe behind one
/// HTTP/2 stream (`super::h2`).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// Serves an HTTP/1 client connection until it ends.
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
        early: BytesMut::new(),
    };
    let mut stop = Stop::new(shutdown);
    let mut head_by = Deadline::new(now + header_read);
    // When the head (and short body) of the request being read must be complete: one
    // deadline per request, not per read, so a client trickling bytes cannot hold the
    // connection past it.
    let mut deadline: Option<tokio::time::Instant> = None;
    // While a head is unfinished: the length of its last, unfinished line. Until a line ends
    // or outgrows the limits, parsing again could only find the same, so a client trickling
    // its head byte by byte costs a parse per line, not per byte.
    let mut unfinished_line: Option<usize> = None;
    // A complete head whose short body is not all here: how long the buffer must grow before
    // the request is parsed again (not on every read of the body).
    let mut awaiting = 0;
    // No request has been served on the connection yet.
    let mut first = true;
    loop {
        let parse = unfinished_line.is_none_or(|len| len > MAX_LINE || buf.len() >= MAX_HEAD);
        if !buf.is_empty() && parse && buf.len() >= awaiting {
            unfinished_line = None;
            awaiting = 0;
            let (mut small, mut wide) = ([httparse::EMPTY_HEADER; MAX_HEADERS], Vec::new());
            let (req, parsed) = parse_head(&buf, &mut small, &mut wide);
            let refusal = match parsed {
                Ok(httparse::Status::Complete(len)) => oversized(&buf[..len], true, conn.http2),
                Ok(httparse::Status::Partial) => oversized(&buf, false, conn.http2),
                // Over TLS, a connection may open with HTTP/2's preface (prior knowledge):
                // hyper's h2 takes it.
                Err(httparse::Error::Version) if conn.https && first && buf.starts_with(b"PRI * HTTP/2.0") => None,
                Err(httparse::Error::TooManyHeaders) => Some(ProxyError::BadRequest("more than 1000 header fields")),
                Err(_) => Some(ProxyError::BadRequest("a malformed request head")),
            };
            if let Some(refusal) = refusal {
                let seen = Seen { close: true, ..Seen::default() };
                return refuse(&mut tcp, &mut scratch.out, refusal, &seen, proxy.headers).await;
            }
            // `true`: HTTP/2 with prior knowledge, for hyper's h2.
            let h2 = match parsed {
                Ok(httparse::Status::Complete(len)) => match body_length(req.headers, req.version == Some(0)) {
                    Err(refusal) => {
                        return refuse(&mut tcp, &mut scratch.out, refusal, &refusing(&req), proxy.headers).await;
                    }
                    // A short body is read whole first, then sent with the head.
                    Ok(RequestBody::Inline(n)) if buf.len() < len + n => {
                        awaiting = len + n;
                        false
                    }
                    Ok(RequestBody::Inline(n)) => {
                        let body = Body::Inline(&buf[len..len + n]);
                        scratch.tally = Tally::new(Instant::now());
                        metrics::request_started();
                        first = false;
                        let next = exchange(&proxy, &conn, trusted, &req, body, &mut tcp, &mut scratch).await;
                        scratch.tally.record(len + n, &scratch.out);
                        match next {
                            Next::KeepAlive => {
                                buf.advance(len + n);
                                scratch.take_early(&mut buf);
                                deadline = None;
                                continue;
                            }
                            Next::Close => return,
                            Next::Upgrade(upstream) => {
                                buf.advance(len + n);
                                scratch.take_early(&mut buf);
                                // On its own task: a tunnel is no longer a connection shutdown
                                // waits for.
                                tokio::spawn(tunnel(tcp, buf, *upstream));
                                return;
                            }
                        }
                    }
                    // A longer body streams through as it comes: the head is parsed again from
                    // a buffer of its own, the body's bytes read so far being the rest.
                    Ok(RequestBody::Streamed { framing, expect }) => {
                        let mut rest = buf.split_off(len);
                        let (mut small, mut wide) = ([httparse::EMPTY_HEADER; MAX_HEADERS], Vec::new());
                        let (req, parsed) = parse_head(&buf, &mut small, &mut wide);
                        // Parsed whole a moment ago, so it parses again.
                        let Ok(httparse::Status::Complete(_)) = parsed else { return };
                        let mut streamed = Streamed::new(framing, expect, &mut rest);
                        scratch.tally = Tally::new(Instant::now());
                        metrics::request_started();
                        let body = Body::Streamed(&mut streamed);
                        first = false;
                        let next = exchange(&proxy, &conn, trusted, &req, body, &mut tcp, &mut scratch).await;
                        scratch.tally.record(len + streamed.forwarded as usize, &scratch.out);
                        let whole = streamed.sent();
                        match next {
                            Next::KeepAlive if whole => {
                                buf = rest;
                                scratch.take_early(&mut buf);
                                deadline = None;
                                continue;
                            }
                            // The rest of the body may still be coming: it is read and dropped
                            // for a while first, so the answer is not lost to a reset.
                            Next::KeepAlive | Next::Close => {
                                if !whole {
                                    linger(&mut tcp).await;
                                }
                                return;
                            }
                            Next::Upgrade(upstream) => {
                                scratch.take_early(&mut rest);
                                tokio::spawn(tunnel(tcp, rest, *upstream));
                                return;
                            }
                        }
                    }
                },
                Ok(httparse::Status::Partial) => false,
                Err(_) => true,
            };
            if h2 {
                let shutdown = stop.into_receiver();
                return super::h2::prior_knowledge(proxy, conn, tcp, buf.freeze(), shutdown, header_read).await;
            }
            if matches!(parsed, Ok(httparse::Status::Partial)) {
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
