//! A Service as the proxy uses it: where its requests go (host, port, or the ring balancer
//! of the Upstream its host names), with what timeouts and retries, and the header values
//! written for it, formatted once when the configuration compiles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_shared::snapshot::Doc;
use http::HeaderValue;
use serde::Deserialize;

use crate::balancer::Balancer;
use crate::row;

/// What a Service's stored row holds that the proxy uses.
#[derive(Deserialize)]
struct ServiceRow {
    #[serde(default, deserialize_with = "row::string")]
    id: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::string")]
    name: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::string")]
    protocol: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::string")]
    host: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::unsigned")]
    port: Option<u64>,
    #[serde(default, deserialize_with = "row::string")]
    path: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::unsigned")]
    retries: Option<u64>,
    #[serde(default, deserialize_with = "row::unsigned")]
    connect_timeout: Option<u64>,
    #[serde(default, deserialize_with = "row::unsigned")]
    write_timeout: Option<u64>,
    #[serde(default, deserialize_with = "row::unsigned")]
    read_timeout: Option<u64>,
}

/// A Service as the proxy uses it: parsed once, with its `Host` header value precomputed.
#[derive(Debug)]
pub struct Service {
    pub id: Arc<str>,
    pub name: Option<HeaderValue>,
    pub id_header: HeaderValue,
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `None` means `/`.
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    /// `host[:port]`, the port omitted when it is the scheme's default.
    pub host_header: HeaderValue,
    /// The host when it is an IP address (no DNS needed).
    pub ip: Option<std::net::IpAddr>,
    /// Identifies the destination in the connection pool.
    pub pool_key: Arc<str>,
    /// The ring balancer when the host names an Upstream (its port is then ignored).
    pub balancer: Option<Arc<Balancer>>,
}

/// The configuration's own copy of an entity's id (`key`, the id it is stored under) when the
/// document agrees with it: a second copy per Service and Route cost about 1 MiB at 10,000 of
/// each.
pub(crate) fn shared_id(key: &Arc<str>, id: &str) -> Arc<str> {
    if **key == *id {
        key.clone()
    } else {
        id.into()
    }
}

impl Service {
    /// Compiles the service stored under `key` (its id: kept rather than copied).
    pub(crate) fn compile(
        key: &Arc<str>,
        doc: &Doc,
        balancers: &HashMap<Arc<str>, Arc<Balancer>>,
    ) -> Result<Service, String> {
        let row: ServiceRow = row::decode(doc).map_err(|e| e.to_string())?;
        let id = row.id.as_deref().ok_or("missing id")?;
        let host = row.host.as_deref().ok_or("missing host")?.to_string();
        let https = row.protocol.as_deref() == Some("https");
        let default_port = if https { 443 } else { 80 };
        let port = match row.port {
            Some(port) => u16::try_from(port).map_err(|_| "port out of range")?,
            None => default_port,
        };
        let host_header = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let balancer = if ip.is_none() { balancers.get(host.as_str()).cloned() } else { None };
        let ms = |t: Option<u64>| Duration::from_millis(t.unwrap_or(60_000));
        Ok(Service {
            balancer,
            id: shared_id(key, id),
            id_header: HeaderValue::from_str(id).map_err(|_| "invalid id")?,
            name: row.name.as_deref().and_then(|n| HeaderValue::from_str(n).ok()),
            https,
            port,
            path: row.path.map(String::from),
            retries: row.retries.unwrap_or(5) as u32,
            connect_timeout: ms(row.connect_timeout),
            write_timeout: ms(row.write_timeout),
            read_timeout: ms(row.read_timeout),
            host_header: HeaderValue::from_str(&host_header).map_err(|_| "invalid host")?,
            ip,
            pool_key: format!("{}://{host}:{port}", if https { "https" } else { "http" }).into(),
            host,
        })
    }

    #[cfg(test)]
    pub fn for_tests(id: &str) -> Service {
        let doc = Doc::of(&serde_json::json!({"id": id, "host": "example.com", "port": 80}));
        Service::compile(&Arc::from(id), &doc, &HashMap::new()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(doc: serde_json::Value) -> Result<Service, String> {
        Service::compile(&Arc::from("s1"), &Doc::of(&doc), &HashMap::new())
    }

    /// The row is read field by field: a mistyped optional field takes its default, a port
    /// out of range or a row without a host is refused with the reason.
    #[test]
    fn a_service_row_compiles_with_kongs_defaults() {
        let s = compile(serde_json::json!({"id": "s1", "host": "a.test", "protocol": "https", "retries": "x",
            "read_timeout": 5, "path": "/p"}))
        .unwrap();
        assert_eq!((s.https, s.port, s.retries), (true, 443, 5));
        assert_eq!((s.read_timeout, s.connect_timeout), (Duration::from_millis(5), Duration::from_millis(60_000)));
        assert_eq!((s.host_header.as_bytes(), s.path.as_deref()), (&b"a.test"[..], Some("/p")));
        assert_eq!(
            compile(serde_json::json!({"id": "s1", "host": "a.test", "port": 8080})).unwrap().host_header,
            "a.test:8080"
        );
        assert_eq!(
            compile(serde_json::json!({"id": "s1", "host": "a.test", "port": 70000})).unwrap_err(),
            "port out of range"
        );
        assert_eq!(compile(serde_json::json!({"id": "s1", "port": 80})).unwrap_err(), "missing host");
    }
}
