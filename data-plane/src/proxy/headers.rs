//! Header rewriting in both directions (kong-0.14-core-behavior §4.6–4.7).

use super::h1::limits::BodyFraming;
use super::h1::write::line;
use crate::message::Conn;

/// Writes the forwarding fields the gateway sets (kong-0.14-core-behavior §4.7), after the
/// request's own: X-Forwarded-For, the client's (`prior`) with the peer appended; then each of
/// X-Forwarded-Proto, -Host, -Port and X-Real-IP (`Field::Forwarded`'s order) unless `kept`
/// says a trusted client's own goes instead (the caller wrote it with the other fields).
/// One writer for every route, with plugins or without.
pub(crate) fn write_forwarding(
    up: &mut Vec<u8>,
    conn: &Conn,
    host_no_port: &str,
    prior: Option<&[u8]>,
    kept: [bool; 4],
) {
    let peer = conn.peer_value.as_bytes();
    match prior {
        Some(prior) => line(up, &[b"X-Forwarded-For: ", prior, b", ", peer]),
        None => line(up, &[b"X-Forwarded-For: ", peer]),
    }
    if !kept[0] {
        line(up, &[b"X-Forwarded-Proto: ", if conn.https { b"https" } else { b"http" }]);
    }
    if !kept[1] {
        // The Host is visible ASCII (checked by the caller), so it is a valid value as it is.
        up.extend_from_slice(b"X-Forwarded-Host: ");
        up.extend(host_no_port.bytes().map(|b| b.to_ascii_lowercase()));
        up.extend_from_slice(b"\r\n");
    }
    if !kept[2] {
        line(up, &[b"X-Forwarded-Port: ", conn.port_value.as_bytes()]);
    }
    if !kept[3] {
        line(up, &[b"X-Real-IP: ", peer]);
    }
}

/// Writes how the body the upstream gets is framed (`None`: it has none, and no length is
/// sent).
pub(crate) fn write_framing(up: &mut Vec<u8>, framing: Option<BodyFraming>) {
    match framing {
        Some(BodyFraming::Length(n)) => line(up, &[b"Content-Length: ", itoa::Buffer::new().format(n).as_bytes()]),
        Some(BodyFraming::Chunked) => up.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        None => {}
    }
}

/// HTTP/1.1 requires exactly one Host (RFC 9112 §3.2); an HTTP/1.0 request may carry none.
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
        let conn = Conn::new("127.0.0.1:40000".parse().unwrap(), false, 8000);
        let mut out = Vec::new();
        write_forwarding(&mut out, &conn, "Example.com", Some(b"10.0.0.1"), [false; 4]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\
             X-Forwarded-Port: 8000\r\nX-Real-IP: 127.0.0.1\r\n"
        );
    }
}
