//! Requests written back to back on one kept-alive HTTP/1.1 connection, their answers read as
//! they come (RFC 9112 §9.3.2): what lets a logger that makes one request per record keep up
//! with the proxy. Kong 0.14.1's http-log writes each record on its pooled connection without
//! reading the answer at all; the receiver sees the same requests here, and the answers are
//! read so a failure or a closing receiver is noticed and counted.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::tcp_log::Stream;
use crate::codec::chunked::ChunkedEnd;
use crate::codec::fields::has_token;
use crate::codec::framing::{framing, Framing, MAX_UPSTREAM_HEAD, MAX_UPSTREAM_HEADERS};

/// Why an exchange ended early.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the receiver closed the connection")]
    Closed,
    #[error("the receiver's answer is not HTTP/1")]
    Invalid,
}

impl Broken {
    /// The receiver closed or reset the connection (rather than taking too long or answering
    /// nonsense). A TLS peer that leaves without `close_notify` reads as an unexpected end.
    pub fn closed(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        match self {
            Broken::Closed => true,
            Broken::Io(e) => matches!(e.kind(), BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof),
            Broken::Invalid => false,
        }
    }
}

/// What became of a batch of requests written together.
pub struct Outcome {
    /// Requests answered, in order.
    pub answered: usize,
    /// The receiver said it closes the connection after its last answer (`Connection: close`,
    /// HTTP/1.0 without keep-alive, or a body that ends with the connection), so the requests
    /// after it were not processed (RFC 9112 §9.6) and may be sent again.
    pub closing: bool,
    /// The connection broke before every request was answered.
    pub broken: Option<Broken>,
}

/// One connection to a receiver, with answer bytes read but not yet consumed.
pub struct Connection {
    io: Stream,
    answers: Answers,
    /// Answers read on this connection, all batches together.
    pub answered: usize,
}

/// The reading side: what has been read of the answers, and how long one read may take.
struct Answers {
    buf: BytesMut,
    /// The longest any one write or read may take (Kong's `timeout`, per socket operation).
    timeout: Duration,
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")
}

impl Connection {
    pub fn new(io: Stream, timeout: Duration) -> Connection {
        Connection { io, answers: Answers { buf: BytesMut::with_capacity(8 * 1024), timeout }, answered: 0 }
    }

    /// Whether the connection can carry another batch: a receiver that closed it while it was
    /// idle, or sent something unasked (a 408 before closing), has left it unusable, and an
    /// answer read from it would be taken for the next request's.
    pub fn reusable(&mut self) -> bool {
        if !self.answers.buf.is_empty() {
            return false;
        }
        let mut scratch = [0u8; 1];
        let mut probe = ReadBuf::new(&mut scratch);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut probe), Poll::Pending)
    }

    /// Writes `requests` (`count` complete requests, back to back) while reading their answers:
    /// a receiver whose answers fill the socket before it has read every request is still
    /// read, and the answers it sent before closing still count when the write fails.
    pub async fn exchange(&mut self, requests: &[u8], count: usize) -> Outcome {
        let timeout = self.answers.timeout;
        let (mut reader, mut writer) = tokio::io::split(&mut self.io);
        let write = async {
            let written = tokio::time::timeout(timeout, async {
                writer.write_all(requests).await?;
                writer.flush().await
            });
            written.await.unwrap_or_else(|_| Err(timed_out()))
        };
        let answers = &mut self.answers;
        let read = async {
            for answered in 0..count {
                match answers.next(&mut reader).await {
                    Ok(true) => {}
                    Ok(false) => return Outcome { answered: answered + 1, closing: true, broken: None },
                    Err(e) => return Outcome { answered, closing: false, broken: Some(e) },
                }
            }
            Outcome { answered: count, closing: false, broken: None }
        };
        let (written, mut outcome) = tokio::join!(write, read);
        if let (Err(e), None, false) = (written, &outcome.broken, outcome.closing) {
            if outcome.answered < count {
                outcome.broken = Some(Broken::Io(e));
            }
        }
        self.answered += outcome.answered;
        outcome
    }
}

impl Answers {
    /// Reads more answer bytes; the receiver closing is an error (an answer was owed).
    async fn fill(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), Broken> {
        self.buf.reserve(8 * 1024);
        let read = tokio::time::timeout(self.timeout, io.read_buf(&mut self.buf));
        match read.await.unwrap_or_else(|_| Err(timed_out()))? {
            0 => Err(Broken::Closed),
            _ => Ok(()),
        }
    }

    /// Reads one final answer and skips its body; `Ok(false)` when the receiver closes after it.
    async fn next(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<bool, Broken> {
        loop {
            let (len, framing, keep) = {
                let mut fields = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS];
                let mut res = httparse::Response::new(&mut fields);
                match res.parse(&self.buf).map_err(|_| Broken::Invalid)? {
                    httparse::Status::Partial => {
                        if self.buf.len() > MAX_UPSTREAM_HEAD {
                            return Err(Broken::Invalid);
                        }
                        self.fill(io).await?;
                        continue;
                    }
                    httparse::Status::Complete(len) => {
                        let connection: smallvec::SmallVec<[&[u8]; 2]> = res
                            .headers
                            .iter()
                            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                            .map(|h| h.value)
                            .collect();
                        let keep = match res.version {
                            Some(1) => !has_token(&connection, b"close"),
                            _ => has_token(&connection, b"keep-alive"),
                        };
                        let interim = res.code.is_some_and(|c| (100..200).contains(&c));
                        let framing = if interim { None } else { Some(framing(&res, false).ok_or(Broken::Invalid)?) };
                        (len, framing, keep)
                    }
                }
            };
            self.buf.advance(len);
            match framing {
                // An interim answer (100 Continue): the final one follows.
                None => continue,
                Some(Framing::NoBody) => {}
                Some(Framing::Length(n)) => self.skip(io, n).await?,
                Some(Framing::Chunked) => self.skip_chunked(io).await?,
                Some(Framing::Close) => {
                    // The body runs to the close (or the reset a receiver with requests left
                    // unread sends): nothing can follow it.
                    loop {
                        self.buf.clear();
                        match self.fill(io).await {
                            Ok(()) => {}
                            Err(e) if e.closed() => return Ok(false),
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            return Ok(keep);
        }
    }

    async fn skip(&mut self, io: &mut (impl AsyncRead + Unpin), mut n: u64) -> Result<(), Broken> {
        loop {
            let here = (self.buf.len() as u64).min(n);
            self.buf.advance(here as usize);
            n -= here;
            if n == 0 {
                return Ok(());
            }
            self.fill(io).await?;
        }
    }

    async fn skip_chunked(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Result<(), Broken> {
        let mut end = ChunkedEnd::default();
        loop {
            match end.feed(&self.buf).map_err(|_| Broken::Invalid)? {
                Some(n) => {
                    self.buf.advance(n);
                    return Ok(());
                }
                None => {
                    self.buf.clear();
                    self.fill(io).await?;
                }
            }
        }
    }
}
