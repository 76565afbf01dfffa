//! hyper answers a request head it cannot parse (a bad request line, too many header fields,
//! an overlong URI, an unreadable Content-Length) itself, before any service sees it, with an
//! empty body. Every Admin API error is JSON in Kong's shape, so this connection wrapper
//! recognises those answers as hyper writes them and writes the same status with a JSON
//! body instead. hyper offers no hook for its own error responses; what is recognised is
//! pinned by `tests/tests/admin_errors.rs` (`hyper_refusals_are_json`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct JsonRefusals<S> {
    inner: S,
    /// A replacement answer not yet all written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonRefusals<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, pending: None }
    }
}

/// hyper's own error answer: a 4xx status line, then `connection: close` and an empty body,
/// in that order (a handler's answer always carries a content type first).
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix(b"HTTP/1.1 ").or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?;
    if !code.starts_with('4') || lines.next()? != b"connection: close" || lines.next()? != b"content-length: 0" {
        return None;
    }
    let message = match code {
        "413" => "Request body too large",
        "414" => "URI too long",
        "431" => "Request header fields too large",
        _ => "Bad request",
    };
    let body = format!("{{\"message\":\"{message}\"}}\n");
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\ncontent-type: application/json; charset=utf-8\r\nconnection: close\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<S: AsyncWrite + Unpin> JsonRefusals<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            if *done == buf.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(out) = replacement(buf) {
            self.pending = Some((out, 0));
            // What hyper asked for counts as written; the replacement goes out on this call
            // if it can, else on the next write or flush.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn only_hypers_own_answers_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 06:59:47 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(hyper).unwrap_or_default()).unwrap_or_default();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json"),
            "{out}"
        );
        assert!(out.contains("\r\ndate: Sun, 06 Dec 2026 06:59:47 GMT\r\n\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n{\"message\":\"Request header fields too large\"}\n"), "{out}");
        let ours =
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: 2\r\n\r\n";
        assert!(replacement(ours).is_none());
        let no_content = b"HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(no_content).is_none());
    }
}
