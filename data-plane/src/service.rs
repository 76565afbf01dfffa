//! A Service as the proxy uses it: where its requests go (host, port, or the ring balancer
//! of the Upstream its host names), with what timeouts and retries, and the header values
//! written for it, formatted once when the configuration compiles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde_json::Value;

use crate::balancer::Balancer;

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
        doc: &Value,
        balancers: &HashMap<Arc<str>, Arc<Balancer>>,
    ) -> Result<Service, String> {
        let s = |k: &str| doc.get(k).and_then(Value::as_str);
        let n = |k: &str, d: u64| doc.get(k).and_then(Value::as_u64).unwrap_or(d);
        let id = s("id").ok_or("missing id")?;
        let host = s("host").ok_or("missing host")?.to_string();
        let https = s("protocol") == Some("https");
        let port = u16::try_from(n("port", if https { 443 } else { 80 })).map_err(|_| "port out of range")?;
        let default_port = if https { 443 } else { 80 };
        let host_header = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let balancer = if ip.is_none() { balancers.get(host.as_str()).cloned() } else { None };
        Ok(Service {
            balancer,
            id: shared_id(key, id),
            id_header: HeaderValue::from_str(id).map_err(|_| "invalid id")?,
            name: s("name").and_then(|n| HeaderValue::from_str(n).ok()),
            https,
            port,
            path: s("path").map(str::to_owned),
            retries: n("retries", 5) as u32,
            connect_timeout: Duration::from_millis(n("connect_timeout", 60_000)),
            write_timeout: Duration::from_millis(n("write_timeout", 60_000)),
            read_timeout: Duration::from_millis(n("read_timeout", 60_000)),
            host_header: HeaderValue::from_str(&host_header).map_err(|_| "invalid host")?,
            ip,
            pool_key: format!("{}://{host}:{port}", if https { "https" } else { "http" }).into(),
            host,
        })
    }

    #[cfg(test)]
    pub fn for_tests(id: &str) -> Service {
        let doc = serde_json::json!({"id": id, "host": "example.com", "port": 80});
        Service::compile(&Arc::from(id), &doc, &HashMap::new()).unwrap()
    }
}
