//! Kong's basic serializer (kong-0.14-plugins §7.1) written straight from a [`LogEntry`] to
//! JSON text: the record is the largest thing a logger makes per request, so it is not built
//! as a document first.

use std::sync::atomic::Ordering;

use http::HeaderMap;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::{query_json, LogEntry};
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
            "querystring": query_json(&e.uri),
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
            "headers": Headers(e.response_headers()),
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

struct Authenticated<'a>(&'a Value);

impl Serialize for Authenticated<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let null = Value::Null;
        object!(s, {
            "id": self.0.get("id").unwrap_or(&null),
            "consumer_id": self.0.get("consumer_id").unwrap_or(&null),
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
            Some(Credential::Row(doc)) => map.serialize_entry("authenticated_entity", &Authenticated(doc))?,
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
        if let Some(consumer) = e.consumer_doc() {
            map.serialize_entry("consumer", &WithoutNulls(consumer))?;
        }
        map.end()
    }
}
