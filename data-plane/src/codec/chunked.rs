//! Finds where a chunked message body ends (RFC 9112 §7.1): the direct path relays chunked
//! bytes to an HTTP/1.1 client as they are and only needs to know when the upstream's response
//! is over, to reuse the connection. An HTTP/1.0 client cannot read chunks: it gets the data
//! alone ([`ChunkedEnd::decode`]).

/// Longest chunk-size line accepted, in hex digits (a `u64`).
const MAX_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// The body's framing is broken: the connection cannot be trusted past it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct Malformed;

#[derive(Debug)]
pub struct ChunkedEnd {
    state: State,
    size: u64,
    digits: u8,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        ChunkedEnd { state: State::Size, size: 0, digits: 0 }
    }
}

impl ChunkedEnd {
    /// Scans the next bytes of the body. `Some(n)`: the body ends after the first `n` bytes
    /// of `bytes` (the rest is not part of it); `None`: it goes on.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        self.scan(bytes, |_| {})
    }

    /// [`feed`](Self::feed), appending the chunks' data (without sizes, extensions or
    /// trailers) to `data`.
    pub fn decode(&mut self, bytes: &[u8], data: &mut Vec<u8>) -> Result<Option<usize>, Malformed> {
        self.scan(bytes, |d| data.extend_from_slice(d))
    }

    fn scan(&mut self, bytes: &[u8], mut data: impl FnMut(&[u8])) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == MAX_DIGITS {
                            return Err(Malformed);
                        }
                        self.digits += 1;
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size << 4 | u64::from(d);
                        State::Size
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => State::Extension,
                    b'\r' if self.digits > 0 => State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(Malformed),
                    _ => State::Extension,
                },
                State::SizeLf => match b {
                    b'\n' if self.size == 0 => State::TrailerStart,
                    b'\n' => State::Data,
                    _ => return Err(Malformed),
                },
                State::Data => {
                    let available = (bytes.len() - i) as u64;
                    let take = self.size.min(available);
                    self.size -= take;
                    data(&bytes[i..i + take as usize]);
                    i += take as usize;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(Malformed),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.digits = 0;
                        State::Size
                    }
                    _ => return Err(Malformed),
                },
                // A line ends with CRLF only: a bare LF, which other parsers take as a line's
                // end, would let the two disagree on where the body ends (a smuggled request).
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\t' => State::TrailerLine,
                    _ if b.is_ascii_control() => return Err(Malformed),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\t' => State::TrailerLine,
                    _ if b.is_ascii_control() => return Err(Malformed),
                    _ => State::TrailerLine,
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(Malformed),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(Some(i + 1));
                    }
                    _ => return Err(Malformed),
                },
                State::Done => return Ok(Some(i)),
            };
            i += 1;
        }
        Ok(if self.state == State::Done { Some(0) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";

    #[test]
    fn a_trailer_line_ended_by_a_bare_lf_is_malformed() {
        for body in [&b"0\r\n\nGET /admin HTTP/1.1\r\n\r\n"[..], b"0\r\nX: 1\nGET / HTTP/1.1\r\n\r\n"] {
            assert_eq!(ChunkedEnd::default().feed(body), Err(Malformed), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(ChunkedEnd::default().feed(b"0\r\nX:\t1\r\n\r\n"), Ok(Some(11)));
    }

    #[test]
    fn the_end_is_found_however_the_body_is_split() {
        for cut in 0..=BODY.len() {
            let mut scan = ChunkedEnd::default();
            let first = scan.feed(&BODY[..cut]).unwrap();
            if cut < BODY.len() {
                assert_eq!(first, None, "cut at {cut}");
                let mut rest = BODY[cut..].to_vec();
                rest.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
                assert_eq!(scan.feed(&rest).unwrap(), Some(BODY.len() - cut), "cut at {cut}");
            } else {
                assert_eq!(first, Some(BODY.len()));
            }
        }
    }

    #[test]
    fn decoding_keeps_only_the_data_however_the_body_is_split() {
        for cut in 0..=BODY.len() {
            let mut scan = ChunkedEnd::default();
            let mut data = Vec::new();
            let first = scan.decode(&BODY[..cut], &mut data).unwrap();
            if cut < BODY.len() {
                assert_eq!(first, None, "cut at {cut}");
                assert_eq!(scan.decode(&BODY[cut..], &mut data).unwrap(), Some(BODY.len() - cut), "cut at {cut}");
            }
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "cut at {cut}");
        }
    }

    #[test]
    fn a_body_without_trailers_ends_after_the_blank_line() {
        assert_eq!(ChunkedEnd::default().feed(b"0\r\n\r\nextra"), Ok(Some(5)));
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"11111111111111111\r\n", b"5\nhello"] {
            assert_eq!(ChunkedEnd::default().feed(bad), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
