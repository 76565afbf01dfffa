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
///
/// Kept small: a data plane holds one per Service for as long as it serves it (10,000 of
/// them were 2.9 MiB at 296 bytes each, with four more heap blocks apiece). The host is a
/// prefix of the `Host` value rather than a second copy, the id and name are written into
/// headers straight from their strings, and timeouts are milliseconds.
#[derive(Debug)]
pub struct Service {
    pub id: Arc<str>,
    /// Only a name that is a valid header value (others are left out of `Kong-Service-Name`,
    /// as before, and their series labelled with the host); shared with the metrics label,
    /// which is now the name for a name with bytes beyond ASCII too, as Kong labels it.
    pub name: Option<Arc<str>>,
    /// `host[:port]`, the port omitted when it is the scheme's default.
    pub host_header: HeaderValue,
    /// The host's length at the start of `host_header`.
    host_len: u16,
    pub port: u16,
    pub https: bool,
    pub retries: u32,
    /// Connect, write and read timeouts in milliseconds.
    timeouts_ms: [u32; 3],
    /// `None` means `/`.
    pub path: Option<Box<str>>,
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
        let row: ServiceRow = doc.decode().map_err(|e| e.to_string())?;
        let id = row.id.as_deref().ok_or("missing id")?;
        let host = row.host.as_deref().ok_or("missing host")?;
        let https = row.protocol.as_deref() == Some("https");
        let default_port = if https { 443 } else { 80 };
        let port = match row.port {
            Some(port) => u16::try_from(port).map_err(|_| "port out of range")?,
            None => default_port,
        };
        let host_header = if port == default_port { host.to_string() } else { format!("{host}:{port}") };
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let balancer = if ip.is_none() { balancers.get(host).cloned() } else { None };
        let ms = |t: Option<u64>| t.map_or(60_000, |t| u32::try_from(t).unwrap_or(u32::MAX));
        HeaderValue::from_str(id).map_err(|_| "invalid id")?;
        Ok(Service {
            balancer,
            id: shared_id(key, id),
            name: row.name.as_deref().filter(|n| HeaderValue::from_str(n).is_ok()).map(Arc::from),
            https,
            port,
            path: row.path,
            retries: row.retries.unwrap_or(5) as u32,
            timeouts_ms: [ms(row.connect_timeout), ms(row.write_timeout), ms(row.read_timeout)],
            host_len: u16::try_from(host.len()).map_err(|_| "invalid host")?,
            pool_key: format!("{}://{host}:{port}", if https { "https" } else { "http" }).into(),
            host_header: HeaderValue::from_str(&host_header).map_err(|_| "invalid host")?,
            ip,
        })
    }

    /// The host the service names (an upstream's name, a DNS name or an IP address).
    pub fn host(&self) -> &str {
        // `host_header` was made from a `&str` that starts with the host.
        std::str::from_utf8(&self.host_header.as_bytes()[..usize::from(self.host_len)]).unwrap_or_default()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts_ms[0].into())
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts_ms[1].into())
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts_ms[2].into())
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
        assert_eq!((s.read_timeout(), s.connect_timeout()), (Duration::from_millis(5), Duration::from_millis(60_000)));
        assert_eq!((s.host(), s.write_timeout()), ("a.test", Duration::from_millis(60_000)));
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
        // The host is read back from the start of the `Host` value, a bracketed IPv6 one too.
        let v6 = compile(serde_json::json!({"id": "s1", "host": "[::1]", "port": 8080, "name": "web"})).unwrap();
        assert_eq!(
            (v6.host(), v6.host_header.as_bytes(), v6.name.as_deref()),
            ("[::1]", &b"[::1]:8080"[..], Some("web"))
        );
        assert_eq!(v6.ip, Some(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)));
        // A name that cannot be a header value is left out (of `Kong-Service-Name` and labels).
        let odd = compile(serde_json::json!({"id": "s1", "host": "a.test", "name": "a\u{1}b"})).unwrap();
        assert_eq!((odd.name.as_deref(), odd.host()), (None, "a.test"));
    }
}
