//! How an HTTP/1 response's body is delimited (RFC 9112 §6.3), and the limits on the head it
//! is read from: the proxy reads upstream answers with it, http-log reads its receiver's.

use super::fields::{field, Field};

/// Response header fields accepted from an upstream (as many as hyper accepts).
pub(crate) const MAX_UPSTREAM_HEADERS: usize = 100;
/// Longest upstream response head accepted.
pub(crate) const MAX_UPSTREAM_HEAD: usize = 64 * 1024;
/// How the upstream's response body is delimited.
#[derive(Clone, Copy)]
pub(crate) enum Framing {
    /// HEAD, 204 and 304 answers.
    NoBody,
    Length(u64),
    Chunked,
    /// Until the upstream closes: re-chunked for the client, whose connection goes on.
    Close,
}

/// RFC 9112 §6.3, for a response to a request of ours; `None` when the upstream's framing
/// is invalid (a try that failed).
pub(crate) fn framing(res: &httparse::Response<'_, '_>, head_request: bool) -> Option<Framing> {
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
                let n = content_length(h.value)?;
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

/// The number a Content-Length value means: digits, or a list of one value repeated (RFC 9110
/// §8.6). `None` for anything else, or a number past `u64`.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|b| *b == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() {
            return None;
        }
        let mut n = 0u64;
        for d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}
