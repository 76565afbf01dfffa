//! A request body on its way upstream, as it arrives: Content-Length of any size, or chunked
//! (passed on as it is, each byte checked once, so a broken body is caught before the upstream
//! gets it). One client read and one upstream write at a time, so a body of any length takes
//! the same memory, and the slower side sets the pace.
//!
//! While the body goes, the upstream is watched: one that answers before it has taken the
//! whole body (a 413, a 401) is answered at once, as nginx does, instead of waited on.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

use tokio::io::AsyncWriteExt;

use super::limits::BodyFraming;
use super::response::{write_request, Trip};
use crate::codec::chunked::ChunkedEnd;
use crate::proxy::direct::ClientIo;
use crate::proxy::upstream::RawConn;
use crate::proxy::waiting::Deadline;
use crate::proxy::ProxyError;

/// How much of a body is read from the client at a time.
const CHUNK: usize = 64 * 1024;
/// How long a client may pause while sending its body (nginx's `client_body_timeout`).
pub(crate) const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A request body being streamed: how it is delimited, and what of it has been read.
pub(crate) struct Streamed<'a> {
    /// The client connection's buffer after the request head: the body's bytes read so far
    /// and not yet sent. Bytes after the body's end (a pipelined request) stay in it.
    pub(crate) rest: &'a mut BytesMut,
    /// Body bytes sent upstream: a body once sent cannot be sent again on a retry.
    pub(crate) forwarded: u64,
    /// The client waits to be told to send its body (`Expect: 100-continue`).
    pub(crate) expect: bool,
    /// The first `ready` bytes of `rest` are the body's, checked and due upstream.
    ready: usize,
    /// Length-delimited: body bytes not yet read into `rest`.
    remaining: u64,
    framing: BodyFraming,
    /// Chunked: the scanner that finds where the body ends.
    chunked: Option<ChunkedEnd>,
    ended: bool,
}

/// How streaming the body ended, when nothing went wrong on the client's side.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// The whole body went upstream.
    Sent,
    /// The upstream began to answer, or stopped taking the body (its answer, if any, is
    /// read next): the rest of the body is not sent and the client's connection cannot be
    /// reused after the answer.
    Stopped,
}

/// Why a body could not be streamed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    #[error("a malformed chunked body")]
    Malformed,
    #[error("the client closed the connection before the end of its body")]
    ClientGone,
    #[error("the client sent no more of its body in time")]
    ClientTimeout,
    #[error("the upstream did not take the body in time")]
    UpstreamTimeout,
}

impl<'a> Streamed<'a> {
    pub(crate) fn new(framing: BodyFraming, expect: bool, rest: &'a mut BytesMut) -> Streamed<'a> {
        let (remaining, chunked) = match framing {
            BodyFraming::Length(n) => (n, None),
            BodyFraming::Chunked => (0, Some(ChunkedEnd::default())),
        };
        Streamed { rest, forwarded: 0, expect, ready: 0, remaining, framing, chunked, ended: false }
    }

    pub(crate) fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the client has sent any of the body yet.
    pub(crate) fn started(&self) -> bool {
        self.forwarded > 0 || !self.rest.is_empty()
    }

    /// Whether all of the body was read and sent upstream.
    pub(crate) fn sent(&self) -> bool {
        self.ended && self.ready == 0
    }

    /// Marks the bytes of `rest` read since the last call as due upstream, up to the body's end.
    fn take(&mut self) -> Result<(), PumpError> {
        if self.ended {
            return Ok(());
        }
        let fresh = &self.rest[self.ready..];
        match &mut self.chunked {
            Some(scan) => match scan.feed(fresh).map_err(|_| PumpError::Malformed)? {
                Some(n) => {
                    self.ready += n;
                    self.ended = true;
                }
                None => self.ready = self.rest.len(),
            },
            None => {
                let n = (fresh.len() as u64).min(self.remaining) as usize;
                self.ready += n;
                self.remaining -= n as u64;
                self.ended = self.remaining == 0;
            }
        }
        Ok(())
    }
}

impl Streamed<'_> {
    /// Reads the whole body into memory when it is at most `limit` bytes, for plugins that
    /// read bodies: `Ok(Some(data))` (a chunked body decoded), with the body's bytes taken out
    /// of `rest`; `Ok(None)` when it is longer, with everything read still in `rest`.
    pub(crate) async fn read_whole(
        &mut self,
        client: &mut impl ClientIo,
        limit: usize,
    ) -> Result<Option<bytes::Bytes>, PumpError> {
        if matches!(self.framing, BodyFraming::Length(n) if n > limit as u64) {
            return Ok(None);
        }
        loop {
            self.take()?;
            if self.ended {
                let raw = self.rest.split_to(self.ready);
                self.ready = 0;
                self.forwarded = raw.len() as u64;
                if self.chunked.is_none() {
                    return Ok(Some(raw.freeze()));
                }
                let mut data = Vec::with_capacity(raw.len());
                ChunkedEnd::default().decode(&raw, &mut data).map_err(|_| PumpError::Malformed)?;
                return Ok(Some(data.into()));
            }
            if self.rest.len() > limit {
                return Ok(None);
            }
            if self.rest.capacity() - self.rest.len() < CHUNK / 4 {
                self.rest.reserve(CHUNK);
            }
            let read = tokio::io::AsyncReadExt::read_buf(client, self.rest);
            match tokio::time::timeout(CLIENT_BODY_TIMEOUT, read).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(PumpError::ClientGone),
                Err(_) => return Err(PumpError::ClientTimeout),
            }
        }
    }
}

impl PumpError {
    /// The answer for a body the client failed to send.
    pub(crate) fn refusal(&self) -> ProxyError {
        match self {
            PumpError::Malformed => ProxyError::BadRequest("a malformed chunked body"),
            PumpError::ClientTimeout => ProxyError::RequestTimeout,
            _ => ProxyError::BadRequest("a body cut off by the client"),
        }
    }
}

/// One wait of [`pump`]'s: whichever comes first.
enum Step {
    /// The upstream sent bytes (an early answer), closed, or failed.
    Upstream(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
}

/// Streams the rest of the body upstream (the request head has been written). The client has
/// `client_timeout` between reads to send more (nginx's `client_body_timeout`); the upstream
/// has `write_timeout` between writes to take it (Kong's `write_timeout`).
pub(crate) async fn pump(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    body: &mut Streamed<'_>,
    write_timeout: Duration,
    client_timeout: Duration,
    deadline: &mut Deadline,
) -> Result<Pumped, PumpError> {
    loop {
        body.take()?;
        let writing = body.ready > 0;
        if !writing && body.ended {
            return Ok(Pumped::Sent);
        }
        if !writing && body.rest.capacity() - body.rest.len() < CHUNK / 4 {
            body.rest.reserve(CHUNK);
        }
        if upstream.buf.capacity() - upstream.buf.len() < 1024 {
            upstream.buf.reserve(8 * 1024);
        }
        let (rest, ready) = (&mut *body.rest, body.ready);
        let step = std::future::poll_fn(|cx| {
            // Whatever the upstream sends now is an answer before the body's end (or its
            // close): the body stops there.
            if let Poll::Ready(read) = poll_read_buf(Pin::new(&mut upstream.io), cx, &mut upstream.buf) {
                return Poll::Ready(Step::Upstream(read));
            }
            if writing {
                Pin::new(&mut upstream.io).poll_write(cx, &rest[..ready]).map(Step::Wrote)
            } else {
                poll_read_buf(Pin::new(&mut *client), cx, rest).map(Step::Read)
            }
        });
        let wait = if writing { write_timeout } else { client_timeout };
        let Ok(step) = deadline.within(tokio::time::Instant::now() + wait, step).await else {
            return Err(if writing { PumpError::UpstreamTimeout } else { PumpError::ClientTimeout });
        };
        match step {
            // An interim answer (103 Early Hints, an unasked 100) is not the answer: the body goes on.
            Step::Upstream(Ok(n)) if n > 0 && interim_only(&mut upstream.buf) => {}
            Step::Upstream(_) | Step::Wrote(Err(_) | Ok(0)) => return Ok(Pumped::Stopped),
            Step::Wrote(Ok(n)) => {
                body.rest.advance(n);
                body.ready -= n;
                body.forwarded += n as u64;
            }
            Step::Read(Ok(0) | Err(_)) => return Err(PumpError::ClientGone),
            Step::Read(Ok(_)) => {}
        }
    }
}

/// Why a request with a streamed body got no answer from the upstream.
pub(crate) enum SendError {
    /// The upstream failed (the try may be retried while none of the body has gone).
    Upstream(Trip),
    UpstreamTimeout,
    /// The client's fault: answered with this, and not held against the upstream.
    Client(ProxyError),
}

/// Writes the request's head, then streams its body ([`pump`]). Once this returns `Ok`, the
/// upstream's answer is next, whether the body went whole or the upstream answered first
/// ([`Streamed::sent`] tells).
pub(crate) async fn send_streamed(
    upstream: &mut RawConn,
    head: &[u8],
    client: &mut impl ClientIo,
    body: &mut Streamed<'_>,
    write_timeout: Duration,
    deadline: &mut Deadline,
) -> Result<(), SendError> {
    match deadline.within(tokio::time::Instant::now() + write_timeout, write_request(upstream, head)).await {
        Ok(Ok(())) => {}
        Ok(Err(trip)) => return Err(SendError::Upstream(trip)),
        Err(_) => return Err(SendError::UpstreamTimeout),
    }
    match pump(upstream, client, body, write_timeout, CLIENT_BODY_TIMEOUT, deadline).await {
        Ok(Pumped::Stopped) => Ok(()),
        Ok(Pumped::Sent) => {
            // TLS holds records until flushed; for plain TCP this is a no-op.
            match deadline.within(tokio::time::Instant::now() + write_timeout, upstream.io.flush()).await {
                Ok(_) => Ok(()),
                Err(_) => Err(SendError::UpstreamTimeout),
            }
        }
        Err(PumpError::UpstreamTimeout) => Err(SendError::UpstreamTimeout),
        Err(e) => Err(SendError::Client(e.refusal())),
    }
}

/// Drops the complete interim (1xx but 101) answer heads at the front of `buf`: whether what
/// is left may still be only that (nothing, or an unfinished head), rather than the answer.
fn interim_only(buf: &mut BytesMut) -> bool {
    while !buf.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut fields);
        match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) if matches!(res.code, Some(c @ 100..=199) if c != 101) => {
                buf.advance(len)
            }
            Ok(httparse::Status::Partial) => return buf.len() < 64 * 1024,
            _ => return false,
        }
    }
    true
}
