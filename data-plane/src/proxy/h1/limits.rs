//! Kong's limits on a request head, and how a request's body is framed.

use crate::codec::fields::{field, Field};
use crate::proxy::ProxyError;

/// Kong's limits on a request head, nginx's `large_client_header_buffers 4 8k`: each line
/// must fit one 8 KiB buffer, and the head four of them. A longer head is refused (414 for the
/// request line, else 400) and never forwarded.
pub(crate) const MAX_LINE: usize = 8 * 1024;
pub(crate) const MAX_HEAD: usize = 4 * MAX_LINE;
/// Request fields parsed into room on the stack; a head with more is parsed again into room
/// sized for it ([`parse_head`]).
pub(crate) const MAX_HEADERS: usize = 64;
/// Most fields a request head may have. nginx counts only bytes ([`MAX_HEAD`]), which allow
/// some 10,000 tiny fields; every per-field step would then cost that many times over, so a
/// head is also held to this many, far more than any client sends (hyper took 100).
pub(crate) const MAX_FIELDS: usize = 1000;
/// Longest request body the direct path reads whole before sending it with the head (a body
/// this short fits the socket buffers, so an upstream that answers before reading it all
/// cannot stall the write). Longer ones are streamed (`super::request_body`).
pub(crate) const MAX_BODY: usize = 16 * 1024;

/// Parses the request head at the start of `buf` into `small`; one with more fields than
/// `small` holds is parsed again into `wide`, sized for it, once the head has ended (until
/// then it is `Partial`, so a head trickling in line by line costs a stack parse per line).
/// A head of more than [`MAX_FIELDS`] fields is `TooManyHeaders`.
pub(crate) fn parse_head<'h, 'b>(
    buf: &'b [u8],
    small: &'h mut [httparse::Header<'b>],
    wide: &'h mut Vec<httparse::Header<'b>>,
) -> (httparse::Request<'h, 'b>, httparse::Result<usize>) {
    let mut req = httparse::Request::new(small);
    match req.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => match field_lines(buf) {
            None => (req, Ok(httparse::Status::Partial)),
            Some(lines) if lines > MAX_FIELDS + 1 => (req, Err(httparse::Error::TooManyHeaders)),
            Some(lines) => {
                *wide = vec![httparse::EMPTY_HEADER; lines];
                let mut req = httparse::Request::new(&mut wide[..]);
                let parsed = req.parse(buf);
                (req, parsed)
            }
        },
        parsed => (req, parsed),
    }
}

/// How many lines the head at the start of `buf` has (its request line and fields, after the
/// empty lines a request may begin with), once the empty line that ends it is in `buf`.
fn field_lines(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let head = &buf[start..buf.len().min(start + MAX_HEAD + MAX_LINE)];
    head.split(|b| *b == b'\n').position(|line| matches!(line, b"" | b"\r"))
}

/// The refusal of a head over Kong's limits ([`MAX_LINE`], [`MAX_HEAD`]), `head` being all
/// of it or, unfinished, all read so far. Heads of a line's length or less pass unscanned.
///
/// `joined`: the head came from HTTP/2 (`super::super::h2`), whose cookie fields were joined
/// into one line (each within hyper's limit on the whole header list): its field lines are not
/// held to a line's length, its request line and whole head are.
pub(crate) fn oversized(head: &[u8], complete: bool, joined: bool) -> Option<ProxyError> {
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
    if !joined && lines.any(|field| field.len() > MAX_LINE) {
        return Some(ProxyError::BadRequest("a header line longer than 8 KiB"));
    }
    if head.len() > MAX_HEAD || (!complete && head.len() == MAX_HEAD) {
        return Some(ProxyError::BadRequest("a request head longer than 32 KiB"));
    }
    None
}

/// How a request's body comes: none or a short one (read whole, then sent with the head), or
/// one streamed to the upstream as it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// Up to [`MAX_BODY`] bytes (none is 0).
    Inline(usize),
    /// Longer, or chunked, or awaited with `Expect: 100-continue` (the client sends it only
    /// once told to).
    Streamed { framing: BodyFraming, expect: bool },
}

/// How a streamed request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    Length(u64),
    /// Passed on as it is, checked as it goes.
    Chunked,
}

/// How a request's body comes, from its head. Framing nginx refuses is refused here with
/// Kong's page (hyper would only answer it with an empty 400): several or invalid lengths, a
/// length with `Transfer-Encoding` (a smuggling shape), `Transfer-Encoding` in HTTP/1.0 or
/// more than once, and any coding but `chunked` (nginx's 501). An `Expect` other than
/// `100-continue` is ignored, as nginx ignores it.
pub(crate) fn body_length(headers: &[httparse::Header<'_>], http10: bool) -> Result<RequestBody, ProxyError> {
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
            Field::Expect => expect |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue"),
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
        return Ok(RequestBody::Streamed { framing: BodyFraming::Chunked, expect });
    }
    Ok(match length {
        None | Some(0) => RequestBody::Inline(0),
        // Within MAX_BODY, so it fits.
        Some(n) if !expect && n <= MAX_BODY as u64 => RequestBody::Inline(n as usize),
        Some(n) => RequestBody::Streamed { framing: BodyFraming::Length(n), expect },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hundreds of fields, after the empty lines a request may begin with: parsed whole, and an
    /// unfinished head of as many is read as unfinished (never as too many fields).
    #[test]
    fn a_head_with_more_fields_than_the_stack_holds_parses_whole() {
        let fields: String = (0..500).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let head = format!("\r\n\r\nGET / HTTP/1.1\r\n{fields}\r\n");
        let (mut small, mut wide) = ([httparse::EMPTY_HEADER; MAX_HEADERS], Vec::new());
        let (req, parsed) = parse_head(head.as_bytes(), &mut small, &mut wide);
        assert_eq!(parsed, Ok(httparse::Status::Complete(head.len())));
        assert_eq!(req.headers.len(), 500);
        assert_eq!((req.headers[499].name, req.headers[499].value), ("X-499", &b"499"[..]));

        let unfinished = &head[..head.len() - 10];
        let (mut small, mut wide) = ([httparse::EMPTY_HEADER; MAX_HEADERS], Vec::new());
        let (_, parsed) = parse_head(unfinished.as_bytes(), &mut small, &mut wide);
        assert_eq!(parsed, Ok(httparse::Status::Partial));
        assert!(wide.is_empty(), "an unfinished head is not parsed wide");

        let fields: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        let (mut small, mut wide) = ([httparse::EMPTY_HEADER; MAX_HEADERS], Vec::new());
        let (_, parsed) = parse_head(head.as_bytes(), &mut small, &mut wide);
        assert_eq!(parsed, Err(httparse::Error::TooManyHeaders), "over {MAX_FIELDS} fields");
    }
}
