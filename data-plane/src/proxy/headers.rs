//! Header rewriting in both directions (kong-0.14-core-behavior §4.6–4.7).

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The number a Content-Length value means: digits, or a list of one value repeated (RFC 9110
/// §8.6). `None` for anything else, or a number past `u64`.
pub fn content_length(value: &[u8]) -> Option<u64> {
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the upstream request's forwarding headers are computed from.
pub struct Forwarded<'a> {
    /// The client's address, formatted once per connection.
    pub peer: &'a HeaderValue,
    pub trusted: bool,
    pub https: bool,
    /// The listener's port, formatted once per listener.
    pub listener_port: &'a HeaderValue,
    /// The client's Host without port, as received.
    pub host: &'a str,
}

/// A forwarding field's value: the per-connection values are formatted once per connection.
enum Value<'a> {
    Shared(&'a HeaderValue),
    Static(&'static str),
    Bytes(Cow<'a, [u8]>),
}

impl Value<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Shared(v) => v.as_bytes(),
            Value::Static(s) => s.as_bytes(),
            Value::Bytes(b) => b,
        }
    }
}

/// A forwarding field: how it is spelled, its name, and its value (`None`: the trusted
/// client's own is kept).
type Field<'a> = (&'static [u8], HeaderName, Option<Value<'a>>);

/// The five forwarding fields the upstream gets: each with its spelling, its name, and its
/// value — `None`
/// when a trusted client's own field is kept. X-Forwarded-For appends the client's address to
/// what the request carries.
fn forwarding<'a>(headers: &'a HeaderMap, f: &'a Forwarded<'a>) -> [Field<'a>; 5] {
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => {
            let mut v = Vec::with_capacity(prior.len() + 2 + f.peer.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(f.peer.as_bytes());
            Value::Bytes(Cow::Owned(v))
        }
        None => Value::Shared(f.peer),
    };
    // Only a trusted client's own are kept: an untrusted request looks none of them up.
    let ours = |name: &HeaderName, value: Value<'a>| (!(f.trusted && headers.contains_key(name))).then_some(value);
    let host = if f.host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(f.host.to_ascii_lowercase().into_bytes())
    } else {
        Cow::Borrowed(f.host.as_bytes())
    };
    let proto = if f.https { "https" } else { "http" };
    [
        (b"X-Forwarded-For", X_FORWARDED_FOR, Some(xff)),
        (b"X-Forwarded-Proto", X_FORWARDED_PROTO, ours(&X_FORWARDED_PROTO, Value::Static(proto))),
        (b"X-Forwarded-Host", X_FORWARDED_HOST, ours(&X_FORWARDED_HOST, Value::Bytes(host))),
        (b"X-Forwarded-Port", X_FORWARDED_PORT, ours(&X_FORWARDED_PORT, Value::Shared(f.listener_port))),
        (b"X-Real-IP", X_REAL_IP, ours(&X_REAL_IP, Value::Shared(f.peer))),
    ]
}

/// Whether `name` is one of the forwarding fields [`write_forwarding`] writes.
pub fn is_forwarding(name: &HeaderName) -> bool {
    [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_FORWARDED_PORT, &X_REAL_IP].contains(&name)
}

/// The forwarding fields written straight into an HTTP/1 request head, from `headers` (the
/// request's fields after the access phase, which the caller writes without these): the direct
/// path does not insert five fields into a map only to read them back out.
pub fn write_forwarding(out: &mut Vec<u8>, headers: &HeaderMap, f: &Forwarded<'_>) {
    for (spelled, name, value) in forwarding(headers, f) {
        let value = match &value {
            Some(v) => v.as_bytes(),
            None => headers.get(&name).map_or(&b""[..], HeaderValue::as_bytes),
        };
        for part in [spelled, b": ", value, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
}

/// HTTP/1.1 requires exactly one Host (RFC 9112 §3.2); an HTTP/1.0 request (or HTTP/2, with
/// `:authority`) may carry none.
pub(crate) fn one_host(hosts: usize, optional: bool) -> Result<(), super::ProxyError> {
    if hosts > 1 || (hosts == 0 && !optional) {
        return Err(super::ProxyError::BadRequest("a request needs exactly one Host header"));
    }
    Ok(())
}

/// A host[:port] without its port: `a.test:8000` is `a.test`, `[::1]:8443` is `[::1]`.
pub(crate) fn without_port(host: &str) -> &str {
    let name_end = if host.starts_with('[') { host.find(']').map_or(host.len(), |i| i + 1) } else { 0 };
    match host[name_end..].find(':') {
        Some(i) => &host[..name_end + i],
        None => host,
    }
}

/// A Host value as RFC 9110 §7.2 allows it: a registered name (letters, digits and
/// `-._~!$&'()*+,;=` or `%` escapes), an IPv4 address or a bracketed IPv6 literal, and an
/// optional numeric port. An empty one is not.
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                ("v6", after.strip_prefix(':'))
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    let name_ok = name == "v6"
        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)));
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// Whether a path's dot segments (also written `%2e`) climb above its root, as
/// `/a/../../etc/passwd` does: nginx refuses such a request with a 400.
pub fn climbs_above_root(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    if !path.contains('.') && !path.contains('%') {
        return false;
    }
    let mut depth = 0usize;
    for segment in path.split('/').skip(1) {
        let dots = segment.replace("%2e", ".").replace("%2E", ".");
        match dots.as_str() {
            "." | "" => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_loses_only_its_port() {
        assert_eq!(without_port("a.test:8000"), "a.test");
        assert_eq!(without_port("a.test"), "a.test");
        assert_eq!(without_port("[::1]:8443"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("10.0.0.1:80"), "10.0.0.1");
    }

    #[test]
    fn hosts_and_dot_segments() {
        for ok in ["a.test", "a.test:8000", "127.0.0.1", "[::1]:80", "xn--bcher-kva.test", "a_b"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "a b/c", "a.test:80x", "[::1", "[zz]:1", "a/b", ":80", "a.test:123456"] {
            assert!(!valid_host(bad), "{bad}");
        }
        assert!(climbs_above_root("/a/../../etc/passwd"));
        assert!(climbs_above_root("/.."));
        assert!(climbs_above_root("/%2e%2E/x"));
        assert!(!climbs_above_root("/a/../b"));
        assert!(!climbs_above_root("/a/./b/.."));
        assert!(!climbs_above_root("/a..b/c"));
    }

    #[test]
    fn forwarded_for_appends_and_untrusted_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let f = Forwarded {
            peer: &HeaderValue::from_static("127.0.0.1"),
            trusted: false,
            https: false,
            listener_port: &HeaderValue::from(8000u16),
            host: "Example.com",
        };
        let mut out = Vec::new();
        write_forwarding(&mut out, &h, &f);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\
             X-Forwarded-Port: 8000\r\nX-Real-IP: 127.0.0.1\r\n"
        );
    }
}
