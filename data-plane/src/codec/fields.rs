//! The request and response header fields the direct path acts on, classified by name once.

/// Header fields the direct path treats specially, by lower-case name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
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

pub(crate) fn field(name: &str) -> Field {
    field_of(name.as_bytes())
}

/// [`field`] of a name as bytes.
pub(crate) fn field_of(name: &[u8]) -> Field {
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
pub(crate) fn named_by(connection: &[&[u8]], name: &str) -> bool {
    has_token(connection, name.as_bytes())
}

/// Whether `token` is one of the comma-separated tokens of `values` (case-insensitive).
pub(crate) fn has_token(values: &[&[u8]], token: &[u8]) -> bool {
    values.iter().any(|v| v.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
}

/// A request target forwarded as it came: origin-form, no fragment, and only characters that
/// need no escaping. Anything else is held to the `http` crate's reading first.
pub(crate) fn plain_target(target: &str) -> bool {
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

/// The fields of an upstream request head written in `up` (its request line, then a line per
/// field, as far as written), with `host` as its Host: what a hash on a field the gateway
/// writes reads: the fields as forwarded. Rare (a hash on Host or a
/// forwarding field), so it may allocate.
pub(crate) fn forwarded_fields(up: &[u8], host: &[u8]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for line in up.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    if let Ok(v) = http::HeaderValue::from_bytes(host) {
        headers.insert(http::header::HOST, v);
    }
    headers
}
