//! The upstream's side of an exchange on bytes: the request written, the answer's head read
//! and parsed once (kept as offsets), and its body relayed to the client as it comes.

use std::io::Write as _;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::write::send;
use crate::codec::chunked::ChunkedEnd;
use crate::codec::framing::{framing, Framing, MAX_UPSTREAM_HEAD, MAX_UPSTREAM_HEADERS};
use crate::proxy::direct::ClientIo;
use crate::proxy::upstream::RawConn;
use crate::proxy::waiting::Deadline;

pub(crate) const READ_RESERVE: usize = 8 * 1024;
/// The largest read of a response body ([`read_body`]).
pub(crate) const MAX_READ: usize = 256 * 1024;

pub(crate) enum Relay {
    Done { extra: bool },
    UpstreamBroken,
    ClientGone,
}

/// Sends the response head in `out` with the body that follows it in `upstream.buf`, then the
/// rest of the body as it is read: one write per read, so a large body streams through in
/// constant memory. For an HTTP/1.0 client (`unchunk`), a chunked body goes as its data alone.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    framing: Framing,
    unchunk: bool,
    read_timeout: Duration,
    read_by: &mut Deadline,
    sent: &mut u64,
    watch: bool,
) -> Relay {
    let mut remaining = match framing {
        Framing::NoBody => 0,
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
        Framing::Close => {
            return relay_until_close(upstream, client, out, !unchunk, read_timeout, read_by, sent, watch).await
        }
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
        match more_body(upstream, client, watch, read_timeout, read_by).await {
            More::Read(n) if n > 0 => {}
            More::ClientGone => return Relay::ClientGone,
            _ => return Relay::UpstreamBroken,
        }
    }
}

/// Relays a body that ends when the upstream closes, as chunks (`chunk`): one per read, written
/// with the head in `out` for the first, then the last chunk when the upstream closes. Without
/// `chunk` (an HTTP/1.0 client) the bytes go as they are, and the client's connection ends too.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_until_close(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    out: &mut Vec<u8>,
    chunk: bool,
    read_timeout: Duration,
    read_by: &mut Deadline,
    sent: &mut u64,
    watch: bool,
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
        match more_body(upstream, client, watch, read_timeout, read_by).await {
            More::Read(n) if n > 0 => {}
            More::Read(_) => break,
            More::Failed => return Relay::UpstreamBroken,
            More::ClientGone => return Relay::ClientGone,
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

/// What waiting for more of a response body came to.
pub(crate) enum More {
    /// The bytes read (0: the upstream closed).
    Read(usize),
    /// A read error, or `read_timeout` passed.
    Failed,
    /// The client left while the upstream was quiet.
    ClientGone,
}

/// [`read_body`], watching the client too when `watch`: the pipe behind an HTTP/2 stream
/// (`super::super::h2`), whose end can only mean the stream was reset. A client that leaves
/// while the upstream is quiet (a stream of events, a long poll) then frees the upstream
/// connection at once, not at the upstream's next byte.
pub(crate) async fn more_body(
    upstream: &mut RawConn,
    client: &mut impl ClientIo,
    watch: bool,
    read_timeout: Duration,
    read_by: &mut Deadline,
) -> More {
    let read = read_body(upstream, read_timeout, read_by);
    let read = if watch {
        match crate::proxy::direct::unless_client_leaves(client, &mut bytes::BytesMut::new(), read).await {
            Some(read) => read,
            None => return More::ClientGone,
        }
    } else {
        read.await
    };
    read.map_or(More::Failed, More::Read)
}

/// Reads more of a response body into the emptied `upstream.buf`: the bytes read (0 when the
/// upstream closed), or `None` for an error or `read_timeout` passing first (Kong's
/// `read_timeout`, nginx's `proxy_read_timeout`: between reads).
///
/// A read that fills the buffer means the body comes faster than it is taken: the buffer
/// doubles (up to [`MAX_READ`]) so a long body moves in fewer, larger reads and writes. The
/// connection's pool gives a grown buffer back (`RawConn::release`).
pub(crate) async fn read_body(upstream: &mut RawConn, read_timeout: Duration, read_by: &mut Deadline) -> Option<usize> {
    if upstream.buf.capacity() < READ_RESERVE {
        upstream.buf.reserve(READ_RESERVE);
    }
    let spare = upstream.buf.capacity() - upstream.buf.len();
    let at = tokio::time::Instant::now() + read_timeout;
    let n = read_by.within(at, upstream.io.read_buf(&mut upstream.buf)).await.ok()?.ok()?;
    if n == spare && upstream.buf.capacity() < MAX_READ {
        upstream.buf.reserve(upstream.buf.capacity());
    }
    Some(n)
}

/// A response head as [`round_trip`] parsed it, as offsets into the upstream's buffer: the
/// head is then rewritten for the client without being parsed a second time.
pub(crate) struct Head {
    pub(crate) len: usize,
    pub(crate) framing: Framing,
    pub(crate) code: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub(crate) version: u8,
    pub(crate) reason: std::ops::Range<usize>,
    /// Name and value of each field.
    pub(crate) fields: smallvec::SmallVec<[(std::ops::Range<usize>, std::ops::Range<usize>); 24]>,
}

impl Head {
    pub(crate) fn of(res: &httparse::Response<'_, '_>, buf: &[u8], len: usize, framing: Framing) -> Head {
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
    pub(crate) fn fields<'b>(&'b self, buf: &'b [u8]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 'b {
        self.fields.iter().map(move |(n, v)| (&buf[n.clone()], &buf[v.clone()]))
    }

    pub(crate) fn reason<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(&buf[self.reason.clone()]).unwrap_or("")
    }
}

/// Why a try on the upstream failed before a response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Trip {
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
/// returns it, with how its body is delimited.
pub(crate) async fn round_trip(
    raw: &mut RawConn,
    request: &[u8],
    head_request: bool,
    upgrade: bool,
) -> Result<Head, Trip> {
    write_request(raw, request).await?;
    read_head(raw, head_request, upgrade).await
}

/// Writes (a request's head, or all of it) on a connection whose last exchange is over.
pub(crate) async fn write_request(raw: &mut RawConn, request: &[u8]) -> Result<(), Trip> {
    raw.buf.clear();
    // TLS holds records until flushed; for plain TCP the flush is a no-op.
    let written = async {
        raw.io.write_all(request).await?;
        raw.io.flush().await
    };
    written.await.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Trip::Stale,
        _ => Trip::Io(e),
    })
}

/// Reads until a final (non-1xx) response head is in `raw.buf`, beginning with what it holds
/// already (an answer that came while the body was still going). A 101 is final when the
/// request asked to `upgrade`, and a broken answer otherwise.
pub(crate) async fn read_head(raw: &mut RawConn, head_request: bool, upgrade: bool) -> Result<Head, Trip> {
    let mut answered = false;
    loop {
        while !raw.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&raw.buf) {
                Ok(httparse::Status::Complete(len)) => match res.code {
                    // Interim responses (100 Continue, 103 Early Hints) are not relayed.
                    Some(c @ 100..=199) if c != 101 => {
                        raw.buf.advance(len);
                        answered = true;
                    }
                    Some(101) if upgrade => return Ok(Head::of(&res, &raw.buf, len, Framing::NoBody)),
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
    }
}
