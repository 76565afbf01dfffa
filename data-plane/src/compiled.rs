//! The configuration a data plane serves, compiled from a [`ConfigSet`] off the request path:
//! the router, the services routes point at, and the TLS certificates by SNI. Compilation is
//! also the data plane's validation: a set it cannot compile is refused (NACK) and the
//! previous one keeps serving.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_shared::snapshot::ConfigSet;
use http::HeaderValue;
use rustls::sign::CertifiedKey;
use serde_json::Value;

use crate::balancer::{Balancer, Registry};
use crate::credentials::Credentials;
use crate::plugins::{self, chain::Plugins, Chain};
use crate::router::{PathRule, RouteInfo, RouteSpec, Router};

/// Whether `entity` feeds only the consumer and credential indexes (a consumer, or one of
/// the shared credential registry's entities).
pub fn credentials_only(entity: &str) -> bool {
    entity == "consumers" || gatehouse_shared::credential::schema(entity).is_some()
}

/// Why a configuration cannot be served here.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{entity} {id}: {reason}")]
pub struct CompileError {
    pub entity: String,
    pub id: String,
    pub reason: String,
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

impl Service {
    fn compile(doc: &Value, balancers: &HashMap<Arc<str>, Arc<Balancer>>) -> Result<Service, String> {
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
            id: id.into(),
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
        Service::compile(&serde_json::json!({"id": id, "host": "example.com", "port": 80}), &HashMap::new()).unwrap()
    }
}

/// A compiled configuration; requests read it through one `Arc`.
#[derive(Default)]
pub struct Compiled {
    pub set: Arc<ConfigSet>,
    pub router: Arc<Router>,
    /// Certificates by exact SNI name.
    pub certs: Arc<HashMap<String, Arc<CertifiedKey>>>,
    /// Consumers and credentials for the auth plugins.
    pub creds: Credentials,
    /// Global plugin configurations that act before routing (the rewrite phase). None of the
    /// bundled plugins does, so this is usually empty and the direct path serves everything.
    pub global: Vec<Arc<dyn plugins::Plugin>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("revision", &self.set.revision).field("router", &self.router).finish()
    }
}

fn err(entity: &str, doc: &Value, reason: impl Into<String>) -> CompileError {
    CompileError {
        entity: entity.into(),
        id: doc.get("id").and_then(Value::as_str).unwrap_or_default().into(),
        reason: reason.into(),
    }
}

impl Compiled {
    /// # Errors
    /// The first entity this data plane cannot serve (a plugin it does not have, a regex its
    /// engines refuse, a certificate that does not load).
    pub fn compile(
        set: Arc<ConfigSet>,
        plugins: &HashSet<String>,
        balancers: &Registry,
    ) -> Result<Compiled, CompileError> {
        for plugin in set.table("plugins") {
            let name = plugin.get("name").and_then(Value::as_str).unwrap_or_default();
            if !plugins.contains(name) {
                return Err(err("plugins", plugin, format!("plugin '{name}' is not available on this data plane")));
            }
        }
        let mut services = HashMap::new();
        let staged = balancers.stage(&set);
        let by_name = &staged.by_name;
        for doc in set.table("services") {
            let service = Service::compile(doc, by_name).map_err(|e| err("services", doc, e))?;
            services.insert(service.id.clone(), Arc::new(service));
        }
        let plugins = Plugins::index(set.table("plugins"), |name, config, row| {
            plugins::build(name, config, row).map_err(|e| e.0)
        })
        .map_err(|(id, reason)| CompileError { entity: "plugins".into(), id, reason })?;
        let none = Arc::new(Chain::default());
        let mut specs = Vec::new();
        for doc in set.table("routes") {
            specs.push(route_spec(doc, &services, &plugins, &none).map_err(|e| err("routes", doc, e))?);
        }
        let certs = compile_certs(&set)?;
        let creds = Credentials::compile(&set);
        // Everything that can refuse the configuration has run: the balancers may change now.
        balancers.commit(staged);
        Ok(Compiled {
            router: Arc::new(Router::new(specs)),
            certs: Arc::new(certs),
            creds,
            global: plugins.global(),
            set,
        })
    }

    /// `set` differs from this configuration's only in [`credentials_only`] entities: the router,
    /// certificates, plugins and balancers are reused and only the credential indexes rebuilt
    /// (an OAuth2 token issued on some data plane must not cost every data plane a full compile).
    pub fn with_credentials(&self, set: Arc<ConfigSet>) -> Compiled {
        Compiled {
            router: self.router.clone(),
            certs: self.certs.clone(),
            global: self.global.clone(),
            creds: Credentials::compile(&set),
            set,
        }
    }

    pub fn revision(&self) -> i64 {
        self.set.revision
    }
}

/// The strings of an array field (other elements skipped); empty when absent.
pub(crate) fn strings(doc: &Value, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn route_spec(
    doc: &Value,
    services: &HashMap<Arc<str>, Arc<Service>>,
    plugins: &Plugins,
    none: &Arc<Chain>,
) -> Result<RouteSpec, String> {
    let id = doc.get("id").and_then(Value::as_str).ok_or("missing id")?;
    let service_id = doc.get("service").and_then(|s| s.get("id")).and_then(Value::as_str).ok_or("missing service")?;
    let service = services.get(service_id).cloned().ok_or_else(|| format!("service {service_id} is missing"))?;
    let protocols = strings(doc, "protocols");
    let paths = strings(doc, "paths").iter().map(|p| PathRule::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let id: Arc<str> = id.into();
    let chain = plugins.chain(&id, &service.id);
    // Kong's Prometheus plugin labels a series with the service's name, else its host, and
    // the route's name, else its id (0.14's routes have no name).
    let service_label = service.name.as_ref().and_then(|n| n.to_str().ok()).unwrap_or(&service.host);
    let series = crate::metrics::Series::of(service_label, &id);
    Ok(RouteSpec {
        info: Arc::new(RouteInfo {
            series,
            plugins: if chain.is_empty() { none.clone() } else { Arc::new(chain) },
            id,
            service,
            strip_path: doc.get("strip_path").and_then(Value::as_bool).unwrap_or(true),
            preserve_host: doc.get("preserve_host").and_then(Value::as_bool).unwrap_or(false),
            https_only: protocols.iter().any(|p| p == "https") && !protocols.iter().any(|p| p == "http"),
            logged: std::sync::OnceLock::new(),
        }),
        hosts: strings(doc, "hosts"),
        paths,
        methods: strings(doc, "methods"),
        regex_priority: doc.get("regex_priority").and_then(Value::as_i64).unwrap_or(0),
        created_at: doc.get("created_at").and_then(Value::as_i64).unwrap_or(0),
    })
}

fn compile_certs(set: &ConfigSet) -> Result<HashMap<String, Arc<CertifiedKey>>, CompileError> {
    let mut by_id = HashMap::new();
    for doc in set.table("certificates") {
        let pem = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
        let key = crate::tls::certified_key(pem("cert").as_bytes(), pem("key").as_bytes())
            .map_err(|e| err("certificates", doc, e))?;
        by_id.insert(doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string(), Arc::new(key));
    }
    let mut by_name = HashMap::new();
    for sni in set.table("snis") {
        let cert_id = sni.get("certificate").and_then(|c| c.get("id")).and_then(Value::as_str).unwrap_or_default();
        let name = sni.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Some(key) = by_id.get(cert_id) {
            by_name.insert(name.to_string(), Arc::clone(key));
        }
    }
    Ok(by_name)
}

#[cfg(test)]
mod tests {
    use gatehouse_shared::proto::Change;
    use serde_json::json;

    use super::*;

    fn change(entity: &str, doc: serde_json::Value) -> Change {
        Change {
            entity: entity.into(),
            id: doc["id"].as_str().unwrap().into(),
            document: doc.to_string(),
            deleted: false,
        }
    }

    #[test]
    fn a_credential_change_reuses_the_router_and_sees_the_new_key() {
        let mut set = ConfigSet::new("e", 1);
        set.apply(&[
            change("services", json!({"id": "s1", "host": "127.0.0.1", "port": 80})),
            change("routes", json!({"id": "r1", "paths": ["/a"], "service": {"id": "s1"}})),
            change("consumers", json!({"id": "c1", "username": "alice"})),
        ])
        .unwrap();
        let first = Compiled::compile(Arc::new(set.clone()), &HashSet::new(), &Registry::default()).unwrap();
        set.apply(&[change("keyauth_credentials", json!({"id": "k1", "consumer_id": "c1", "key": "secret"}))]).unwrap();
        let second = first.with_credentials(Arc::new(set));
        assert!(Arc::ptr_eq(&first.router, &second.router));
        assert!(!first.creds.keys.contains_key("secret"));
        assert_eq!(second.creds.owner(&second.creds.keys["secret"]).unwrap().id.as_ref(), "c1");
    }
}
