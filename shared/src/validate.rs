//! Syntactic rules Kong 0.14 applies to hosts, paths and ids, shared by several entities.
//!
//! Each check returns the exact message Kong puts in its error body, because clients compare
//! those strings.

use std::net::{Ipv4Addr, Ipv6Addr};

/// True when `s` is a canonical UUID (8-4-4-4-12 hex digits, any case), the form Kong
/// uses to decide whether a path segment is an id or an endpoint key such as a name.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// Kong's host rule for Service hosts and Route hosts: an IPv4 or IPv6 address, or a
/// hostname made of `[A-Za-z0-9._-]` labels with none empty and none ending in `-`.
///
/// # Errors
/// `must not have a port` when a port is attached, `invalid value: <host>` otherwise.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if let Some(inner) = host.strip_prefix('[') {
        if let Some((addr, rest)) = inner.split_once(']') {
            if addr.parse::<Ipv6Addr>().is_ok() {
                return if rest.is_empty() { Ok(()) } else { Err("must not have a port".to_string()) };
            }
        }
        return Err(format!("invalid value: {host}"));
    }
    if let Some((name, port)) = host.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) && valid_hostname(name) {
            return Err("must not have a port".to_string());
        }
        return Err(format!("invalid value: {host}"));
    }
    if valid_hostname(host) {
        Ok(())
    } else {
        Err(format!("invalid value: {host}"))
    }
}

fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.ends_with('-')
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// True when every character of `path` belongs to RFC 3986's unreserved set plus `/` and `%`:
/// Kong treats any other path as a regex.
pub fn is_plain_path(path: &str) -> bool {
    path.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'/' | b'%' | b'-'))
}

/// The path rule of Services and of plain Route paths.
///
/// # Errors
/// The Kong message for the first rule broken.
pub fn check_plain_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("should start with: /".to_string());
    }
    if path.contains("//") {
        return Err("must not have empty segments".to_string());
    }
    if !is_plain_path(path) {
        return Err(format!("invalid path: '{path}' (characters outside of the reserved list of RFC 3986 found)"));
    }
    check_percent_escapes(path)
}

fn check_percent_escapes(path: &str) -> Result<(), String> {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                let end = (i + 3).min(b.len());
                return Err(format!("invalid url-encoded value: '{}'", String::from_utf8_lossy(&b[i..end])));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The path rule of Route paths: plain paths as for Services but without a trailing slash
/// (except `/` itself); anything else is a regex and must compile.
///
/// # Errors
/// The Kong message for the first rule broken.
pub fn check_route_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("should start with: /".to_string());
    }
    if is_plain_path(path) {
        if path.contains("//") {
            return Err("must not have empty segments".to_string());
        }
        if path.len() > 1 && path.ends_with('/') {
            return Err("must not have a trailing slash".to_string());
        }
        return check_percent_escapes(path);
    }
    match fancy_regex::Regex::new(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("invalid regex: '{path}' (PCRE returned: {e})")),
    }
}

/// The Route host rule: at most one `*`, as the whole leftmost or rightmost label; the rest
/// must pass [`check_host`] with the wildcard replaced by `abc` (Kong's own substitution).
///
/// # Errors
/// The Kong message for the first rule broken.
pub fn check_route_host(host: &str) -> Result<(), String> {
    let stars = host.matches('*').count();
    if stars == 0 {
        return check_host(host);
    }
    if stars > 1 {
        return Err("invalid wildcard: must have at most one wildcard".to_string());
    }
    let substituted = if let Some(rest) = host.strip_prefix("*.") {
        format!("abc.{rest}")
    } else if let Some(rest) = host.strip_suffix(".*") {
        format!("{rest}.abc")
    } else {
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".to_string());
    };
    check_host(&substituted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_uuids() {
        assert!(is_uuid("4e13f54a-bbf1-47a8-8777-255fed7116f2"));
        assert!(is_uuid("4E13F54A-BBF1-47A8-8777-255FED7116F2"));
        assert!(!is_uuid("4e13f54a-bbf1-47a8-8777-255fed7116f"));
        assert!(!is_uuid("foobar"));
    }

    #[test]
    fn host_rules() {
        assert!(check_host("example.com").is_ok());
        assert!(check_host("10.0.0.1").is_ok());
        assert!(check_host("::1").is_ok());
        assert_eq!(check_host("a.com:80").unwrap_err(), "must not have a port");
        assert_eq!(check_host("[::1]:80").unwrap_err(), "must not have a port");
        assert_eq!(check_host("a..com").unwrap_err(), "invalid value: a..com");
        assert_eq!(check_host("a-.com").unwrap_err(), "invalid value: a-.com");
        assert_eq!(check_host("a b").unwrap_err(), "invalid value: a b");
    }

    #[test]
    fn route_host_wildcards() {
        assert!(check_route_host("*.example.com").is_ok());
        assert!(check_route_host("example.*").is_ok());
        assert!(check_route_host("a.*.com").is_err());
        assert_eq!(check_route_host("*.*.com").unwrap_err(), "invalid wildcard: must have at most one wildcard");
    }

    #[test]
    fn path_rules() {
        assert!(check_plain_path("/api/v1/").is_ok());
        assert_eq!(check_plain_path("api").unwrap_err(), "should start with: /");
        assert_eq!(check_plain_path("/a//b").unwrap_err(), "must not have empty segments");
        assert_eq!(check_plain_path("/a%zz").unwrap_err(), "invalid url-encoded value: '%zz'");
        assert_eq!(check_route_path("/a/").unwrap_err(), "must not have a trailing slash");
        assert!(check_route_path("/").is_ok());
        assert!(check_route_path(r"/users/\d+").is_ok());
        assert!(check_route_path("/users/(").unwrap_err().starts_with("invalid regex: '/users/(' (PCRE returned:"));
    }
}
