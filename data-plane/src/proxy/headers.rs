//! Header rewriting in both directions (kong-0.14-core-behavior §4.6–4.7).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus any header
/// the `Connection` header names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the upstream request's forwarding headers are computed from.
pub struct Forwarded<'a> {
    pub peer: IpAddr,
    pub trusted: bool,
    pub https: bool,
    pub listener_port: u16,
    /// The client's Host without port, as received.
    pub host: &'a str,
}

pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    let peer = f.peer.to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {peer}"),
        None => peer.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    let keep = |headers: &HeaderMap, name: &str| f.trusted && headers.contains_key(name);
    if !keep(headers, "x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static(if f.https { "https" } else { "http" }));
    }
    if !keep(headers, "x-forwarded-host") {
        if let Ok(v) = HeaderValue::from_str(&f.host.to_ascii_lowercase()) {
            headers.insert("x-forwarded-host", v);
        }
    }
    if !keep(headers, "x-forwarded-port") {
        headers.insert("x-forwarded-port", HeaderValue::from(f.listener_port));
    }
    if !keep(headers, "x-real-ip") {
        if let Ok(v) = HeaderValue::from_str(&peer) {
            headers.insert("x-real-ip", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none() && h.get("connection").is_none());
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn forwarded_for_appends_and_untrusted_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let f = Forwarded {
            peer: "127.0.0.1".parse().unwrap(),
            trusted: false,
            https: false,
            listener_port: 8000,
            host: "Example.com",
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-port"], "8000");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
    }
}
