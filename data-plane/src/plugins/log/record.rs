//! Kong's basic serializer (kong-0.14-plugins §7.1) written straight from a [`LogEntry`] to
//! JSON text: the record is the largest thing a logger makes per request, so it is not built
//! as a document first.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use http::HeaderMap;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::{query_json, LogEntry};
use crate::plugins::ctx::query_decoded;
use crate::plugins::Credential;

/// The whole record.
pub(super) struct Record<'a>(pub &'a LogEntry);

/// Bytes as text (invalid UTF-8 replaced).
struct Text<'a>(&'a [u8]);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => s.serialize_str(&String::from_utf8_lossy(self.0)),
        }
    }
}

/// Fields as Kong's `get_headers()` gives them: lower-case names, a repeated one as a list.
struct Headers<'a>(&'a HeaderMap);

struct Values<'a>(http::header::GetAll<'a, http::HeaderValue>);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for v in self.0.iter() {
            seq.serialize_element(&Text(v.as_bytes()))?;
        }
        seq.end()
    }
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let all = self.0.get_all(name);
            let mut values = all.iter();
            match (values.next(), values.next()) {
                (Some(one), None) => map.serialize_entry(name.as_str(), &Text(one.as_bytes()))?,
                _ => map.serialize_entry(name.as_str(), &Values(all))?,
            }
        }
        map.end()
    }
}

/// The fields of a response head as written (`HTTP/1.1 200 OK\r\n…`), serialized as
/// [`Headers`] would serialize them parsed into a map, without building the map: the record
/// is made per request, and a map costs an allocation per field.
struct HeadFields<'a>(&'a [httparse::Header<'a>]);

/// Fields a head may have for [`HeadFields`]; one with more is parsed into a map instead.
const HEAD_FIELDS: usize = 48;

/// A field name lower-cased, as `get_headers()` names fields (names are ASCII tokens).
struct Lower<'a>(&'a str);

impl Serialize for Lower<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.0.bytes().any(|b| b.is_ascii_uppercase()) {
            return s.serialize_str(self.0);
        }
        let mut buf = [0u8; 64];
        match buf.get_mut(..self.0.len()) {
            Some(lower) => {
                lower.copy_from_slice(self.0.as_bytes());
                lower.make_ascii_lowercase();
                s.serialize_str(std::str::from_utf8(lower).unwrap_or(self.0))
            }
            None => s.serialize_str(&self.0.to_ascii_lowercase()),
        }
    }
}

/// The values of every field named as the `i`-th, in order.
struct Named<'a>(&'a [httparse::Header<'a>], usize);

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Named(fields, i) = *self;
        let name = fields[i].name;
        let mut seq = s.serialize_seq(None)?;
        for f in fields[i..].iter().filter(|f| f.name.eq_ignore_ascii_case(name)) {
            seq.serialize_element(&Text(f.value))?;
        }
        seq.end()
    }
}

impl Serialize for HeadFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.0;
        let mut map = s.serialize_map(None)?;
        for (i, f) in fields.iter().enumerate() {
            // A repeated field is written once, with every value, where it first appears.
            if fields[..i].iter().any(|e| e.name.eq_ignore_ascii_case(f.name)) {
                continue;
            }
            if fields[i + 1..].iter().any(|e| e.name.eq_ignore_ascii_case(f.name)) {
                map.serialize_entry(&Lower(f.name), &Named(fields, i))?;
            } else {
                map.serialize_entry(&Lower(f.name), &Text(f.value))?;
            }
        }
        map.end()
    }
}

/// The answer's fields: straight from the head the direct path wrote, or from the map of an
/// answer built as parts.
struct ResponseHeaders<'a>(&'a LogEntry);

impl Serialize for ResponseHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        // Fields parsed into a map (or an answer given as one) are shown from the map.
        if let Some(head) = e.response_head.as_deref().filter(|_| e.response_headers.get().is_none()) {
            let mut fields = [httparse::EMPTY_HEADER; HEAD_FIELDS];
            let mut res = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(_)) = res.parse(head) {
                return HeadFields(res.headers).serialize(s);
            }
        }
        Headers(e.response_headers()).serialize(s)
    }
}

/// The query as Kong's `get_uri_args()` reads it ([`query_json`]), written without building
/// a document for it: repeated arguments as a list, one without `=` as `true`.
struct Query<'a>(&'a str);

/// Arguments a query may have for [`Query`] to compare them pairwise; one with more is read
/// into a map instead.
const QUERY_ARGS: usize = 32;

/// An argument's value as `get_uri_args()` gives it: `true` when it has no `=`.
struct Arg<'a>(Option<&'a str>);

impl Serialize for Arg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => s.serialize_str(&query_decoded(v)),
            None => s.serialize_bool(true),
        }
    }
}

/// Every value of the argument named `name`, in order.
struct Args<'a>(&'a [(Cow<'a, str>, Option<&'a str>)], usize);

impl Serialize for Args<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Args(args, i) = *self;
        let mut seq = s.serialize_seq(None)?;
        for (_, v) in args[i..].iter().filter(|(k, _)| *k == args[i].0) {
            seq.serialize_element(&Arg(*v))?;
        }
        seq.end()
    }
}

impl Serialize for Query<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let query = self.0.split_once('?').map_or("", |(_, q)| q);
        let parts = || query.split('&').filter(|p| !p.is_empty());
        if parts().nth(QUERY_ARGS).is_some() {
            return query_json(self.0).serialize(s);
        }
        let args: smallvec::SmallVec<[(Cow<'_, str>, Option<&str>); 8]> = parts()
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (query_decoded(k), Some(v)),
                None => (query_decoded(p), None),
            })
            .collect();
        let mut map = s.serialize_map(None)?;
        for (i, (k, v)) in args.iter().enumerate() {
            if args[..i].iter().any(|(e, _)| e == k) {
                continue;
            }
            if args[i + 1..].iter().any(|(e, _)| e == k) {
                map.serialize_entry(k, &Args(&args, i))?;
            } else {
                map.serialize_entry(k, &Arg(*v))?;
            }
        }
        map.end()
    }
}

/// An entity as Kong's log shows it: nulls left out.
pub(super) struct WithoutNulls<'a>(pub(super) &'a Value);

impl Serialize for WithoutNulls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut map = s.serialize_map(None)?;
                for (k, v) in m.iter().filter(|(_, v)| !v.is_null()) {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A map from a fixed list of entries whose values differ in type.
macro_rules! object {
    ($s:expr, { $($k:literal : $v:expr),* $(,)? }) => {{
        let mut map = $s.serialize_map(None)?;
        $(map.serialize_entry($k, &$v)?;)*
        map.end()
    }};
}

struct Request<'a>(&'a LogEntry);

impl Serialize for Request<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let scheme = if e.https { "https" } else { "http" };
        object!(s, {
            "uri": e.uri,
            "url": format_args!("{scheme}://{}:{}{}", e.host, e.server_port, e.uri),
            "querystring": Query(&e.uri),
            "method": e.method,
            "headers": Headers(&e.request_headers),
            "size": itoa::Buffer::new().format(e.request_size),
        })
    }
}

struct Response<'a>(&'a LogEntry);

impl Serialize for Response<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        object!(s, {
            "status": e.status,
            "headers": ResponseHeaders(e),
            "size": itoa::Buffer::new().format(e.response_size.load(Ordering::Relaxed)),
        })
    }
}

struct Latencies<'a>(&'a LogEntry);

impl Serialize for Latencies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        object!(s, {
            "kong": e.kong_latency_ms,
            "proxy": e.proxy_latency_ms.map_or(-1, |l| l as i64),
            "request": e.request_latency_ms(),
        })
    }
}

struct Tries<'a>(&'a [super::Try]);

struct Try<'a>(&'a super::Try);

impl Serialize for Try<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("ip", &t.ip)?;
        map.serialize_entry("port", &t.port)?;
        map.serialize_entry("balancer_start", &t.balancer_start_ms)?;
        map.serialize_entry("balancer_latency", &0)?;
        if let Some(state) = t.failed {
            map.serialize_entry("state", state)?;
            map.serialize_entry("code", &t.code)?;
        }
        map.end()
    }
}

impl Serialize for Tries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Kong's quirk: routed but not proxied, `tries` is an empty table, encoded as `{}`.
        if self.0.is_empty() {
            return s.serialize_map(Some(0))?.end();
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for t in self.0 {
            seq.serialize_element(&Try(t))?;
        }
        seq.end()
    }
}

struct Authenticated<'a> {
    id: &'a str,
    consumer_id: Option<&'a str>,
}

impl Serialize for Authenticated<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        object!(s, {
            "id": self.id,
            "consumer_id": &self.consumer_id,
        })
    }
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("request", &Request(e))?;
        map.serialize_entry("upstream_uri", e.upstream_uri.as_deref().unwrap_or_default())?;
        map.serialize_entry("response", &Response(e))?;
        map.serialize_entry("latencies", &Latencies(e))?;
        map.serialize_entry("client_ip", &format_args!("{}", e.client_ip))?;
        map.serialize_entry("started_at", &e.started_at_ms)?;
        map.serialize_entry("api", &serde_json::Map::new())?;
        map.serialize_entry("tries", &Tries(&e.tries))?;
        match &e.credential {
            Some(Credential::Row { id, consumer_id }) => {
                map.serialize_entry("authenticated_entity", &Authenticated { id, consumer_id: consumer_id.as_deref() })?
            }
            Some(Credential::Ldap { .. }) => map.serialize_entry("authenticated_entity", &serde_json::Map::new())?,
            None => {}
        }
        let entities = &e.entities;
        if let Some(route) = &entities.route {
            map.serialize_entry("route", route)?;
        }
        if let Some(service) = &entities.service {
            map.serialize_entry("service", service)?;
        }
        if let Some(consumer) = e.consumer_row() {
            map.serialize_entry("consumer", consumer)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The query written straight to JSON reads as the document `query_json` builds.
    #[test]
    fn a_query_written_directly_reads_as_its_document() {
        let many: String = (0..40).map(|i| format!("k{}={i}&", i % 3)).collect();
        for uri in [
            "/p",
            "/p?",
            "/p?a=1&a=2&b&c=x%20y&d=1+2&&e=",
            "/p?x=1&y=2&x=3&x&z=%E2%82%AC&bad=%ff",
            "/p?a+b=1&a%20b=2",
            &format!("/p?{many}"),
        ] {
            // As text: documents compare equal whatever the order of their keys.
            let written = serde_json::to_string(&Query(uri)).expect("serializes");
            assert_eq!(written, query_json(uri).to_string(), "{uri}");
        }
        assert_eq!(
            serde_json::to_value(Query("/p?a=1&b&a=2")).expect("serializes"),
            json!({"a": ["1", "2"], "b": true})
        );
    }

    /// A head's fields written straight to JSON read as those of the map they parse into:
    /// names lower-cased, a repeated field (in any spelling) once, with its values in order.
    #[test]
    fn a_heads_fields_written_directly_read_as_the_parsed_map() {
        let head = b"HTTP/1.1 200 OK\r\nServer: up\r\nSet-Cookie: a=1\r\nX-Long-Field-Name-That-Is-Mixed-Case: v\r\n\
set-cookie: b=2\r\nVia: gatehouse\r\nSET-COOKIE: c=3\r\n\r\n";
        let mut fields = [httparse::EMPTY_HEADER; HEAD_FIELDS];
        let mut res = httparse::Response::new(&mut fields);
        assert!(matches!(res.parse(head), Ok(httparse::Status::Complete(_))));
        let text = serde_json::to_string(&HeadFields(res.headers)).expect("serializes");
        let mut map = HeaderMap::new();
        for h in res.headers.iter() {
            map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).expect("name"),
                http::HeaderValue::from_bytes(h.value).expect("value"),
            );
        }
        // As text: documents compare equal whatever the order of their keys.
        assert_eq!(text, serde_json::to_string(&Headers(&map)).expect("serializes"));
        let written: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(written["set-cookie"], json!(["a=1", "b=2", "c=3"]));
        assert_eq!(written["x-long-field-name-that-is-mixed-case"], "v");
    }
}
