//! Checks on the raw request heads of the HTTP/1 connections hyper serves, where hyper is
//! more lenient than nginx. This wrapper reads the heads as they pass, and records the first
//! one Kong would refuse, and why, for the proxy to answer with Kong's page:
//! - Framing: hyper resolves a request carrying both `Content-Length` and
//!   `Transfer-Encoding` by dropping the length (RFC 9112 §6.3) before the proxy sees the
//!   headers, and accepts a repeated length that agrees, or codings around `chunked`; nginx
//!   refuses them all.
//! - Size: Kong's limits ([`MAX_LINE`], [`MAX_HEAD`]), which the direct path applies to the
//!   heads it reads. hyper's own are its buffer (about twice the head limit here) and a
//!   hundred fields, past which it answers an empty 431.
//!
//! It follows message framing (length, chunked, trailers) to find each head, and stops looking
//! after an `Upgrade` request, when the connection may stop being HTTP.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::h1::limits::{MAX_HEAD, MAX_LINE};

/// Longest line kept for inspection. A longer one refuses its head, so it is never needed
/// whole; cutting lines shorter would let padding hide a framing field's value from this
/// guard but not from hyper, and the two would disagree on where the next head starts.
const LINE: usize = MAX_LINE + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Off,
}

/// Why a head is refused, which decides the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// Framing nginx refuses (see the module's text): 400.
    Ambiguous,
    /// A request line over [`MAX_LINE`]: 414.
    UriTooLong,
    /// A header line over [`MAX_LINE`], or a head over [`MAX_HEAD`]: 400.
    TooLong,
    /// A transfer coding other than `chunked` alone: nginx's 501.
    UnknownCoding,
}

/// What the proxy checks for each request: which head on the connection (counting from 1)
/// was the first refused, and why. hyper serves an HTTP/1 connection's requests one at a
/// time and in order, so the requests before it are answered as usual.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// 0 while no head was refused.
    first_refused: AtomicU64,
    /// Why the first refused head was (a [`Refusal`]).
    why: AtomicU8,
    served: AtomicU64,
}

impl Refusals {
    /// Called once per request, in order: whether this one is refused (the first refused
    /// head, or one after it), and why.
    pub fn refuse_next(&self) -> Option<Refusal> {
        let this = self.0.served.fetch_add(1, Ordering::Relaxed) + 1;
        let first = self.0.first_refused.load(Ordering::Acquire);
        if first == 0 || this < first {
            return None;
        }
        Some(match self.0.why.load(Ordering::Relaxed) {
            w if w == Refusal::UriTooLong as u8 => Refusal::UriTooLong,
            w if w == Refusal::TooLong as u8 => Refusal::TooLong,
            w if w == Refusal::UnknownCoding as u8 => Refusal::UnknownCoding,
            _ => Refusal::Ambiguous,
        })
    }

    /// Records the refusal of head `n`, unless an earlier one was refused.
    fn refuse(&self, n: u64, why: Refusal) {
        if self.0.first_refused.load(Ordering::Relaxed) == 0 {
            self.0.why.store(why as u8, Ordering::Relaxed);
            self.0.first_refused.store(n, Ordering::Release);
        }
    }
}

pub struct HeadGuard<IO> {
    io: IO,
    flag: Refusals,
    state: State,
    line: Vec<u8>,
    saw_length: Option<u64>,
    saw_chunked: bool,
    saw_te: bool,
    /// A second length or coding field.
    ambiguous: bool,
    /// A coding other than `chunked` alone.
    unknown_coding: bool,
    upgrade: bool,
    first_line: bool,
    /// Heads seen so far.
    heads: u64,
    /// The length of the line being read, and of the head so far, while in a head.
    line_len: usize,
    head_len: usize,
    /// The head being read is already refused.
    refused: bool,
}

impl<IO> HeadGuard<IO> {
    pub fn new(io: IO) -> (Self, Refusals) {
        let flag = Refusals::default();
        let guard = HeadGuard {
            io,
            flag: flag.clone(),
            state: State::Head,
            line: Vec::with_capacity(64),
            saw_length: None,
            saw_chunked: false,
            saw_te: false,
            ambiguous: false,
            unknown_coding: false,
            upgrade: false,
            first_line: true,
            heads: 0,
            line_len: 0,
            head_len: 0,
            refused: false,
        };
        (guard, flag)
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if n == take { State::Head } else { State::Body(n - take) };
                    self.first_line = true;
                }
                State::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if n == take { State::ChunkDataEnd } else { State::ChunkData(n - take) };
                }
                State::Head | State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        self.push_line(bytes);
                        return;
                    };
                    self.push_line(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    self.end_line();
                }
            }
        }
    }

    fn push_line(&mut self, part: &[u8]) {
        let room = LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        if self.state == State::Head {
            self.line_len += part.len();
            self.head_len += part.len();
            self.check_limits();
        }
    }

    /// Refuses the head being read once a line or the whole outgrows Kong's limits.
    fn check_limits(&mut self) {
        if self.refused {
            return;
        }
        let why = match (self.line_len > MAX_LINE, self.first_line) {
            (true, true) => Refusal::UriTooLong,
            (true, false) => Refusal::TooLong,
            _ if self.head_len > MAX_HEAD => Refusal::TooLong,
            _ => return,
        };
        self.refused = true;
        self.flag.refuse(self.heads + 1, why);
    }

    /// Acts on the line just ended, then keeps its buffer for the next.
    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        self.on_line(line.strip_suffix(b"\r").unwrap_or(&line));
        line.clear();
        self.line = line;
    }

    fn on_line(&mut self, line: &[u8]) {
        match self.state {
            State::Head => {
                self.head_len += 1;
                self.check_limits();
                self.line_len = 0;
                if line.is_empty() {
                    if self.first_line {
                        self.head_len = 0;
                        return; // stray CRLF between messages
                    }
                    self.end_head();
                } else if self.first_line && self.heads == 0 && line == b"PRI * HTTP/2.0" {
                    // HTTP/2's preface (ALPN or prior knowledge): its frames are not heads.
                    self.state = State::Off;
                } else if self.first_line {
                    self.first_line = false;
                } else {
                    self.header(line);
                }
            }
            State::ChunkSize => {
                let hex = line.split(|b| *b == b';').next().unwrap_or_default();
                match std::str::from_utf8(hex).ok().and_then(|h| u64::from_str_radix(h.trim(), 16).ok()) {
                    Some(0) => self.state = State::Trailers,
                    Some(n) => self.state = State::ChunkData(n),
                    None => self.state = State::Off,
                }
            }
            State::ChunkDataEnd => self.state = State::ChunkSize,
            State::Trailers if line.is_empty() => {
                self.state = State::Head;
                self.first_line = true;
            }
            _ => {}
        }
    }

    fn header(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { return };
        let name = &line[..colon];
        let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            self.ambiguous |= self.saw_length.is_some();
            self.saw_length = Some(value.parse().unwrap_or(0));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.ambiguous |= self.saw_te;
            self.unknown_coding |= !value.eq_ignore_ascii_case("chunked");
            self.saw_te = true;
            self.saw_chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
    }

    fn end_head(&mut self) {
        self.heads += 1;
        if !self.refused {
            // In the direct path's order: framing that cannot be trusted first, then a coding.
            if self.ambiguous || (self.saw_te && self.saw_length.is_some()) {
                self.flag.refuse(self.heads, Refusal::Ambiguous);
            } else if self.unknown_coding {
                self.flag.refuse(self.heads, Refusal::UnknownCoding);
            }
        }
        self.head_len = 0;
        self.refused = false;
        self.state = if self.upgrade {
            State::Off
        } else if self.saw_te {
            if self.saw_chunked {
                State::ChunkSize
            } else {
                State::Off
            }
        } else {
            match self.saw_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }
        };
        self.first_line = true;
        self.saw_length = None;
        self.saw_te = false;
        self.saw_chunked = false;
        self.ambiguous = false;
        self.unknown_coding = false;
        self.upgrade = false;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeadGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if self.state != State::Off {
                self.scan(&buf.filled()[before..]);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeadGuard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether any head in `chunks` is ambiguous.
    fn scan(chunks: &[&[u8]]) -> bool {
        let (mut g, flag) = HeadGuard::new(());
        for c in chunks {
            g.scan(c);
        }
        flag.0.first_refused.load(Ordering::Relaxed) != 0
    }

    #[test]
    fn only_the_ambiguous_request_and_those_after_it_are_refused() {
        let (mut g, flag) = HeadGuard::new(());
        g.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        let refused = Some(Refusal::Ambiguous);
        assert_eq!([flag.refuse_next(), flag.refuse_next(), flag.refuse_next()], [None, refused, refused]);
    }

    #[test]
    fn looks_no_further_than_http2s_preface() {
        let (mut g, flag) = HeadGuard::new(());
        g.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        g.scan(&[b'x'; 20_000]);
        g.scan(b"\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(flag.refuse_next(), None);
    }

    #[test]
    fn holds_later_heads_to_kongs_limits() {
        let verdicts = |head: String| {
            let (mut g, flag) = HeadGuard::new(());
            g.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            // Split mid-line, as reads may.
            let (a, b) = head.as_bytes().split_at(head.len() / 2);
            g.scan(a);
            g.scan(b);
            [flag.refuse_next(), flag.refuse_next()]
        };
        let a = |n: usize| "a".repeat(n);
        assert_eq!(
            verdicts(format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", a(9000))),
            [None, Some(Refusal::UriTooLong)]
        );
        assert_eq!(verdicts(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", a(9000))), [None, Some(Refusal::TooLong)]);
        let lines = format!("X: {}\r\n", a(5000)).repeat(7);
        assert_eq!(verdicts(format!("GET / HTTP/1.1\r\n{lines}\r\n")), [None, Some(Refusal::TooLong)]);
        // Within the limits: a 7,000-byte line, 24 KB of lines, and a long body after a head.
        let lines = format!("X: {}\r\n", a(6000)).repeat(4);
        assert_eq!(verdicts(format!("GET / HTTP/1.1\r\nX: {}\r\n{lines}\r\n", a(7000))), [None, None]);
        let body = a(40_000);
        assert_eq!(verdicts(format!("POST / HTTP/1.1\r\nContent-Length: 40000\r\n\r\n{body}")), [None, None]);
    }

    #[test]
    fn flags_length_with_transfer_encoding_in_either_order() {
        assert!(scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"]));
        assert!(scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\ncontent-length: 4\r\n\r\n"]));
    }

    #[test]
    fn flags_repeated_framing_fields_and_codings_besides_chunked() {
        assert!(scan(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"]));
        assert!(scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"]));
        assert!(scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"]));
        // Padding does not hide a length: the body after it is not taken for a head.
        let padded = format!("POST / HTTP/1.1\r\nContent-Length:{}5\r\n\r\nG\r\n\r\n", " ".repeat(300));
        let pipelined = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        let (mut g, flag) = HeadGuard::new(());
        g.scan(format!("{padded}{pipelined}").as_bytes());
        assert_eq!([flag.refuse_next(), flag.refuse_next()], [None, Some(Refusal::Ambiguous)]);
        assert!(!scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"]));
        assert!(!scan(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"]));
    }

    #[test]
    fn follows_framing_across_pipelined_requests_and_split_reads() {
        let clean = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 27\r\n\r\nContent-Length: 1\r\nX: y\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!scan(&[clean]));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        assert!(!scan(&[chunked]));
        let (a, b) = chunked.split_at(20);
        assert!(!scan(&[a, b]));
        assert!(scan(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Len",
            b"gth: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }
}
