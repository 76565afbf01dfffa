//! Consistent-hashing input (kong-0.14-core-behavior §5.5): `hash_on`, then `hash_fallback`,
//! hashed with CRC-32 as Kong's `crc32_short` does. Nothing here allocates unless a cookie
//! has to be minted.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{HeaderName, COOKIE};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;

/// Slice-by-16 tables: a 36-byte consumer id hashes in a few nanoseconds.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

#[derive(Debug, Clone, PartialEq)]
pub enum HashOn {
    None,
    Consumer,
    Ip,
    Header(HeaderName),
    Cookie { name: String, path: String },
}

/// What a request offers the hash.
pub struct HashInput<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    /// The authenticated consumer's id (or credential's), when a plugin set one.
    pub consumer: Option<&'a str>,
}

/// The outcome: a hash, or round robin; and a cookie to hand the client when one was minted.
#[derive(Debug, Default)]
pub struct Hashed {
    pub hash: Option<u32>,
    pub set_cookie: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub primary: HashOn,
    pub fallback: HashOn,
}

fn parse(doc: &Value, which: &str, header_field: &str) -> HashOn {
    let s = |k: &str| doc.get(k).and_then(Value::as_str);
    match s(which).unwrap_or("none") {
        "consumer" => HashOn::Consumer,
        "ip" => HashOn::Ip,
        "header" => {
            s(header_field).and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()).map_or(HashOn::None, HashOn::Header)
        }
        "cookie" => match s("hash_on_cookie") {
            Some(name) => {
                HashOn::Cookie { name: name.to_string(), path: s("hash_on_cookie_path").unwrap_or("/").into() }
            }
            None => HashOn::None,
        },
        _ => HashOn::None,
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    cookie_in(headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes), name)
}

/// The value of cookie `name` in `fields`, the values of a request's Cookie fields in order.
fn cookie_in<'a>(fields: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    for header in fields {
        let mut rest = header;
        while !rest.is_empty() {
            let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
            let pair = rest[..end].trim_ascii_start();
            if let Some(v) = pair.strip_prefix(name).and_then(|p| p.trim_ascii_start().strip_prefix(b"=")) {
                return Some(v.trim_ascii());
            }
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }
    None
}

/// The address as text without going through `fmt` (IPv4 by hand; IPv6 rarely hashes).
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            Some(len)
        }
        IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            write!(w, "{ip}").ok()?;
            let left = w.len();
            Some(48 - left)
        }
    }
}

impl HashPolicy {
    pub fn parse(upstream: &Value) -> HashPolicy {
        HashPolicy {
            primary: parse(upstream, "hash_on", "hash_on_header"),
            fallback: parse(upstream, "hash_fallback", "hash_fallback_header"),
        }
    }

    pub fn is_none(&self) -> bool {
        self.primary == HashOn::None
    }

    pub fn hash(&self, input: &HashInput<'_>) -> Hashed {
        if let Some(h) = one(&self.primary, input) {
            return h;
        }
        one(&self.fallback, input).unwrap_or_default()
    }

    /// The same hash from a request's raw header fields, for a request without a consumer
    /// (no plugin ran).
    pub fn hash_fields(&self, fields: &[httparse::Header<'_>], client_ip: IpAddr) -> Hashed {
        if let Some(h) = one_field(&self.primary, fields, client_ip) {
            return h;
        }
        one_field(&self.fallback, fields, client_ip).unwrap_or_default()
    }

    /// The header fields this policy reads.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        [&self.primary, &self.fallback].into_iter().filter_map(|on| match on {
            HashOn::Header(name) => Some(name),
            _ => None,
        })
    }
}

fn one_field(on: &HashOn, fields: &[httparse::Header<'_>], client_ip: IpAddr) -> Option<Hashed> {
    let hash = match on {
        HashOn::None | HashOn::Consumer => return None,
        HashOn::Ip => ip_hash(client_ip)?,
        HashOn::Header(name) => {
            // Repeated fields concatenate in order, as `HeaderMap::get_all` yields them.
            let mut values = fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name.as_str())).peekable();
            values.peek()?;
            let mut digest = CRC.digest();
            for f in values {
                digest.update(f.value);
            }
            digest.finalize()
        }
        HashOn::Cookie { name, path } => {
            let cookies = fields.iter().filter(|f| f.name.eq_ignore_ascii_case("cookie")).map(|f| f.value);
            match cookie_in(cookies, name) {
                Some(v) => CRC.checksum(v),
                None => return Some(mint_cookie(name, path)),
            }
        }
    };
    Some(Hashed { hash: Some(hash), set_cookie: None })
}

/// The client has no cookie to hash on yet: one is minted, hashed on now, and handed to the
/// client with the answer (Kong's `Set-Cookie`).
fn mint_cookie(name: &str, path: &str) -> Hashed {
    let id = uuid::Uuid::new_v4().to_string();
    let set_cookie = HeaderValue::from_str(&format!("{name}={id}; Path={path}")).ok();
    Hashed { hash: Some(CRC.checksum(id.as_bytes())), set_cookie }
}

fn ip_hash(ip: IpAddr) -> Option<u32> {
    let mut buf = [0u8; 48];
    let len = ip_text(ip, &mut buf)?;
    Some(CRC.checksum(&buf[..len]))
}

fn one(on: &HashOn, input: &HashInput<'_>) -> Option<Hashed> {
    let hash = match on {
        HashOn::None => return None,
        HashOn::Consumer => CRC.checksum(input.consumer?.as_bytes()),
        HashOn::Ip => ip_hash(input.client_ip)?,
        HashOn::Header(name) => {
            let mut values = input.headers.get_all(name).iter().peekable();
            values.peek()?;
            let mut digest = CRC.digest();
            for v in values {
                digest.update(v.as_bytes());
            }
            digest.finalize()
        }
        HashOn::Cookie { name, path } => match cookie_value(input.headers, name) {
            Some(v) => CRC.checksum(v),
            None => return Some(mint_cookie(name, path)),
        },
    };
    Some(Hashed { hash: Some(hash), set_cookie: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(headers: &HeaderMap) -> HashInput<'_> {
        HashInput { headers, client_ip: IpAddr::from([10, 0, 0, 1]), consumer: None }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(CRC.checksum(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn header_then_fallback_then_round_robin() {
        let p = HashPolicy::parse(&json!({"hash_on": "header", "hash_on_header": "x-a",
            "hash_fallback": "header", "hash_fallback_header": "x-b"}));
        let mut h = HeaderMap::new();
        assert!(p.hash(&input(&h)).hash.is_none());
        h.insert("x-b", HeaderValue::from_static("v"));
        assert_eq!(p.hash(&input(&h)).hash, Some(CRC.checksum(b"v")));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        assert_eq!(p.hash(&input(&h)).hash, Some(CRC.checksum(b"12")), "repeated headers concatenate");
    }

    /// The hash over raw fields equals the hash over a header map of the same fields.
    #[test]
    fn raw_fields_hash_as_the_header_map_does() {
        let ip = IpAddr::from([10, 0, 0, 1]);
        let policies = [
            json!({"hash_on": "header", "hash_on_header": "X-A"}),
            json!({"hash_on": "header", "hash_on_header": "x-a", "hash_fallback": "ip"}),
            json!({"hash_on": "consumer", "hash_fallback": "header", "hash_fallback_header": "X-B"}),
            json!({"hash_on": "ip"}),
            json!({"hash_on": "cookie", "hash_on_cookie": "c"}),
        ];
        let requests: [&[(&str, &str)]; 5] = [
            &[("Cookie", "a=1; c=xyz")],
            &[("X-A", "1")],
            &[("x-a", "1"), ("X-A", "2")],
            &[("X-B", "v")],
            &[("cookie", "a=1"), ("Cookie", "c = q ")],
        ];
        for doc in &policies {
            let p = HashPolicy::parse(doc);
            for fields in requests {
                let mut map = HeaderMap::new();
                let raw: Vec<httparse::Header<'_>> = fields
                    .iter()
                    .map(|(n, v)| {
                        map.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static(v));
                        httparse::Header { name: n, value: v.as_bytes() }
                    })
                    .collect();
                let by_map = p.hash(&HashInput { headers: &map, client_ip: ip, consumer: None });
                let by_fields = p.hash_fields(&raw, ip);
                // A cookie minted is a new one each time: both mint, and hash on what they minted.
                if by_map.set_cookie.is_some() {
                    assert!(by_fields.set_cookie.is_some(), "{doc} with {fields:?}");
                    continue;
                }
                assert_eq!((by_fields.hash, by_fields.set_cookie), (by_map.hash, None), "{doc} with {fields:?}");
            }
        }
        // Without the cookie, one is minted (a new one each time), hashed on, and to be set.
        let cookie = HashPolicy::parse(&json!({"hash_on": "header", "hash_on_header": "X-A",
            "hash_fallback": "cookie", "hash_on_cookie": "c", "hash_on_cookie_path": "/p"}));
        let minted = cookie.hash_fields(&[], ip);
        let set = minted.set_cookie.expect("a cookie to set");
        let id = set.to_str().unwrap().strip_prefix("c=").and_then(|s| s.strip_suffix("; Path=/p")).unwrap().to_owned();
        assert_eq!(minted.hash, Some(CRC.checksum(id.as_bytes())), "hashed on the minted cookie");
        let cookie_field = format!("c={id}");
        let again = cookie.hash_fields(&[httparse::Header { name: "Cookie", value: cookie_field.as_bytes() }], ip);
        assert_eq!((again.hash, again.set_cookie), (minted.hash, None), "the client's cookie, once set");
        assert!(cookie.hash_fields(&[httparse::Header { name: "X-A", value: b"1" }], ip).set_cookie.is_none());
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in ["0.0.0.0", "10.0.0.1", "192.168.100.255", "1.20.3.40", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 48];
            let len = ip_text(ip, &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn ip_hashes_the_address_text() {
        let p = HashPolicy::parse(&json!({"hash_on": "ip"}));
        assert_eq!(p.hash(&input(&HeaderMap::new())).hash, Some(CRC.checksum(b"10.0.0.1")));
    }

    #[test]
    fn cookie_is_read_or_minted() {
        let p =
            HashPolicy::parse(&json!({"hash_on": "cookie", "hash_on_cookie": "sid", "hash_on_cookie_path": "/app"}));
        let mut h = HeaderMap::new();
        let minted = p.hash(&input(&h));
        let set = minted.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("sid=") && set.ends_with("; Path=/app"), "{set}");
        let id = &set[4..40];
        assert_eq!(minted.hash, Some(CRC.checksum(id.as_bytes())));
        h.insert(COOKIE, HeaderValue::from_str(&format!("a=b; sid={id}; c=d")).unwrap());
        let again = p.hash(&input(&h));
        assert_eq!(again.hash, minted.hash);
        assert!(again.set_cookie.is_none());
    }
}
