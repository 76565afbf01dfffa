//! The configuration a data plane serves, compiled from a [`ConfigSet`] off the request path:
//! the router, the services routes point at, and the TLS certificates by SNI. Compilation is
//! also the data plane's validation: a set it cannot compile is refused (NACK) and the
//! previous one keeps serving.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::{ConfigSet, Doc};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use crate::balancer::{Balancer, Registry};
use crate::credentials::Credentials;
use crate::plugins::{self, chain::Plugins, Chain};
use crate::router::{PathRule, RouteInfo, RouteSpec, Router};
use crate::row;
use crate::service::Service;

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

/// A compiled configuration; requests read it through one `Arc`.
#[derive(Default)]
pub struct Compiled {
    pub set: Arc<ConfigSet>,
    pub router: Arc<Router>,
    /// Certificates by exact SNI name.
    pub certs: Arc<HashMap<String, Arc<CertifiedKey>>>,
    /// Consumers and credentials for the auth plugins.
    pub creds: Arc<Credentials>,
    /// What the next delta reuses.
    parts: Parts,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("revision", &self.set.revision).field("router", &self.router).finish()
    }
}

/// A plugin row's instance and the document it was built from.
type Built = (Doc, Arc<dyn plugins::Plugin>);

/// The compiled entities by id: persistent maps (a delta makes a new one sharing all but what
/// it changed), hashed with foldhash rather than SipHash (ids come from the control plane,
/// and a full compile hashes every id several times).
type Map<K, V> = crate::credentials::Index<K, V>;

/// Every compiled piece of a configuration by id, kept so that a delta compiles only what it
/// touches. Persistent maps: the copy a delta starts from shares every untouched entry, so
/// applying one costs the same at a hundred routes as at a hundred thousand.
#[derive(Clone, Default)]
struct Parts {
    services: Map<Arc<str>, Arc<Service>>,
    routes: Map<Arc<str>, Arc<RouteSpec>>,
    /// The routes pointing at each service: a changed service recompiles exactly these.
    routes_of: Map<Arc<str>, RouteIds>,
    plugins: Arc<Plugins>,
    /// Each built plugin row, with the document it was built from: a row whose document is
    /// still the same `Arc` keeps its instance (and the state it holds, such as counters).
    instances: Map<Arc<str>, Built>,
    /// The balancers the services were compiled against, by upstream name.
    balancers: Arc<HashMap<Arc<str>, Arc<Balancer>>>,
}

/// The error of the row stored under `id`.
fn at(entity: &str, id: &str, reason: impl Into<String>) -> CompileError {
    CompileError { entity: entity.into(), id: id.into(), reason: reason.into() }
}

/// The ids a delta touches, by table; `None` for a full compile (everything is new).
struct Touched<'a>(Option<HashMap<&'a str, HashSet<&'a str>>>);

impl<'a> Touched<'a> {
    fn of(changes: &'a [Change]) -> Touched<'a> {
        let mut by_table: HashMap<&str, HashSet<&str>> = HashMap::new();
        for c in changes {
            by_table.entry(c.entity.as_str()).or_default().insert(c.id.as_str());
        }
        Touched(Some(by_table))
    }

    fn everything(&self) -> bool {
        self.0.is_none()
    }

    /// Whether any row of these tables changed.
    fn any(&self, tables: &[&str]) -> bool {
        self.0.as_ref().is_none_or(|t| tables.iter().any(|name| t.contains_key(name)))
    }

    /// Whether any credential-side row changed (consumers or a credential registry table).
    fn credentials(&self) -> bool {
        self.0.as_ref().is_none_or(|t| t.keys().any(|name| credentials_only(name)))
    }

    /// The touched ids of one table (empty for a full compile: callers handle that first).
    fn ids(&self, table: &str) -> impl Iterator<Item = &'a str> + '_ {
        self.0.as_ref().and_then(|t| t.get(table)).into_iter().flatten().copied()
    }
}

impl Compiled {
    /// Compiles a whole configuration (a snapshot, the disk cache, a declarative file).
    ///
    /// # Errors
    /// The first entity this data plane cannot serve (a plugin it does not have, a regex its
    /// engines refuse, a certificate that does not load).
    pub fn compile(
        set: Arc<ConfigSet>,
        plugins: &HashSet<String>,
        balancers: &Registry,
    ) -> Result<Compiled, CompileError> {
        Compiled::default().update(set, Touched(None), plugins, balancers)
    }

    /// Compiles `set`, which is this configuration's set with `changes` applied, recompiling
    /// only what the changes touch: the changed services and the routes pointing at them, the
    /// changed routes, the routes a changed plugin row names (for a global or consumer-only
    /// row: the routes any row names; the others share one chain), the certificates when a
    /// certificate or SNI changed, the credential indexes when a consumer or credential did.
    /// Everything else is shared with this configuration. The result equals a full compile of
    /// `set` (the property test below holds the two to that).
    ///
    /// # Errors
    /// As [`Compiled::compile`], for what the changes touch (the rest compiled before).
    pub fn apply(
        &self,
        set: Arc<ConfigSet>,
        changes: &[Change],
        plugins: &HashSet<String>,
        balancers: &Registry,
    ) -> Result<Compiled, CompileError> {
        self.update(set, Touched::of(changes), plugins, balancers)
    }

    fn update(
        &self,
        set: Arc<ConfigSet>,
        touched: Touched<'_>,
        available: &HashSet<String>,
        registry: &Registry,
    ) -> Result<Compiled, CompileError> {
        let available_here = |id: &str, plugin: &Doc| {
            let name = plugin.value().get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            if available.contains(&name) {
                return Ok(());
            }
            Err(at("plugins", id, format!("plugin '{name}' is not available on this data plane")))
        };
        if touched.everything() {
            set.entries("plugins").try_for_each(|(id, p)| available_here(id, p))?;
        } else {
            touched
                .ids("plugins")
                .filter_map(|id| set.entry("plugins", id))
                .try_for_each(|(id, p)| available_here(id, p))?;
        }
        let mut parts = if touched.everything() { Parts::default() } else { self.parts.clone() };

        // Balancers: staged only when an upstream, target or health command changed; nothing
        // a request sees changes until everything that can refuse the configuration has run.
        let staged =
            touched.any(&["upstreams", "targets", crate::balancer::COMMANDS_TABLE]).then(|| registry.stage(&set));
        let mut dirty_services: HashSet<Arc<str>> = touched.ids("services").map(Arc::from).collect();
        if let Some(staged) = &staged {
            let before = std::mem::replace(&mut parts.balancers, Arc::new(staged.by_name.clone()));
            let same = |a: Option<&Arc<Balancer>>, b: Option<&Arc<Balancer>>| match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            };
            let moved = before.len() != parts.balancers.len()
                || before.iter().any(|(name, b)| !same(Some(b), parts.balancers.get(name)));
            if moved && !touched.everything() {
                // A service naming an upstream holds its balancer: recompile those whose
                // upstream appeared, went or was replaced.
                for (id, service) in &parts.services {
                    if service.ip.is_none() && !same(service.balancer.as_ref(), parts.balancers.get(service.host())) {
                        dirty_services.insert(id.clone());
                    }
                }
            }
        }

        let mut dirty_routes: HashSet<Arc<str>> = touched.ids("routes").map(Arc::from).collect();
        if touched.everything() {
            for (key, doc) in set.entries("services") {
                let service = Service::compile(key, doc, &parts.balancers).map_err(|e| at("services", key, e))?;
                parts.services.insert(service.id.clone(), Arc::new(service));
            }
        } else {
            for id in &dirty_services {
                match set.entry("services", id) {
                    Some((key, doc)) => {
                        let service =
                            Service::compile(key, doc, &parts.balancers).map_err(|e| at("services", key, e))?;
                        parts.services.insert(id.clone(), Arc::new(service));
                    }
                    None => {
                        parts.services.remove(id);
                    }
                }
                dirty_routes.extend(parts.routes_of.get(id).into_iter().flat_map(RouteIds::list));
            }
        }

        // Plugins: the index is rebuilt over every row (rows are few next to routes), reusing
        // the instance of each row whose document did not change; then every route a changed
        // row names (by its old or its new scope) gets its chain again. A global or
        // consumer-only row changes the shared chain, and with it the chains of the routes
        // rows name (they merge it with their own); the other routes use the shared one.
        let every_route = touched.everything();
        // A global or consumer-only row changed: the shared chain follows from the new index,
        // and the routes with chains of their own take it in again.
        let mut shared_changed = false;
        if touched.any(&["plugins"]) {
            for id in touched.ids("plugins") {
                for row in [self.set.get("plugins", id), set.get("plugins", id)].into_iter().flatten() {
                    let row = row.value();
                    let scoped = |key: &str| row.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
                    match (scoped("route_id"), scoped("service_id")) {
                        (Some(route), _) => {
                            dirty_routes.insert(route.into());
                        }
                        (None, Some(service)) => {
                            dirty_routes.extend(parts.routes_of.get(service).into_iter().flat_map(RouteIds::list));
                        }
                        (None, None) => shared_changed = true,
                    }
                }
            }
            let previous = std::mem::take(&mut parts.instances);
            let mut built = Map::default();
            let rows: Vec<(Arc<Value>, &Doc)> = set.table("plugins").map(|d| (Arc::new(d.value()), d)).collect();
            let index = Plugins::index(rows.iter().map(|(row, doc)| (row, *doc)), |name, config, row, doc| {
                let id: Arc<str> = row.get("id").and_then(Value::as_str).unwrap_or_default().into();
                let instance = match previous.get(&id) {
                    Some((before, instance)) if before.same(doc) => instance.clone(),
                    _ => plugins::build(name, config, row).map_err(|e| e.0)?,
                };
                built.insert(id, (doc.clone(), instance.clone()));
                Ok(instance)
            })
            .map_err(|(id, reason)| CompileError { entity: "plugins".into(), id, reason })?;
            parts.instances = built;
            let before = std::mem::replace(&mut parts.plugins, Arc::new(index));
            if shared_changed && !every_route {
                for plugins in [&before, &parts.plugins] {
                    let (routes, services) = plugins.bound();
                    dirty_routes.extend(routes.iter().cloned());
                    for service in services {
                        dirty_routes.extend(parts.routes_of.get(service).into_iter().flat_map(RouteIds::list));
                    }
                }
            }
        }

        let router = if every_route {
            parts.routes = Map::default();
            parts.routes_of = Map::default();
            for (key, doc) in set.entries("routes") {
                let spec = route_spec(key, doc, &parts.services, &parts.plugins).map_err(|e| at("routes", key, e))?;
                parts.add_route(Arc::new(spec));
            }
            Arc::new(Router::new(parts.routes.values().cloned().collect()))
        } else if dirty_routes.is_empty() {
            self.router.clone()
        } else {
            // The router takes the changed routes out and the recompiled ones in, sharing the
            // rest of its indexes with the current configuration's.
            let (mut removed, mut added) = (Vec::new(), Vec::new());
            for id in dirty_routes {
                parts.remove_route(&id);
                if let Some((key, doc)) = set.entry("routes", &id) {
                    let spec = Arc::new(
                        route_spec(key, doc, &parts.services, &parts.plugins).map_err(|e| at("routes", key, e))?,
                    );
                    parts.add_route(spec.clone());
                    // The router replaces a route of the same id as it adds this one.
                    added.push(spec);
                } else {
                    removed.push(id);
                }
            }
            Arc::new(self.router.with_changes(&removed, added))
        };
        let certs =
            if touched.any(&["certificates", "snis"]) { Arc::new(compile_certs(&set)?) } else { self.certs.clone() };
        let creds = if touched.everything() {
            Arc::new(Credentials::compile(&set))
        } else if touched.credentials() {
            Arc::new(self.creds.update(&self.set, &set, |table| touched.ids(table).collect()))
        } else {
            self.creds.clone()
        };
        // Everything that can refuse the configuration has run: the balancers may change now.
        if let Some(staged) = staged {
            registry.commit(staged);
        }
        Ok(Compiled { router, certs, creds, set, parts })
    }

    /// The plugins that apply on `route` (a route of this configuration), in run order.
    #[inline]
    pub fn chain<'a>(&'a self, route: &'a RouteInfo) -> &'a Arc<Chain> {
        route.plugins.as_ref().unwrap_or_else(|| self.parts.plugins.shared())
    }

    pub fn revision(&self) -> i64 {
        self.set.revision
    }
}

impl Parts {
    fn add_route(&mut self, spec: Arc<RouteSpec>) {
        let id = spec.info.id.clone();
        let service = &spec.info.service.id;
        let routes =
            self.routes_of.get(service).map_or_else(|| RouteIds::Few(Arc::from([id.clone()])), |r| r.with(&id));
        self.routes_of.insert(service.clone(), routes);
        self.routes.insert(id, spec);
    }

    fn remove_route(&mut self, id: &Arc<str>) {
        let Some(old) = self.routes.remove(id) else { return };
        let service = &old.info.service.id;
        match self.routes_of.get(service).map(|r| r.without(id)) {
            Some(Some(left)) => {
                self.routes_of.insert(service.clone(), left);
            }
            Some(None) => {
                self.routes_of.remove(service);
            }
            None => {}
        }
    }
}

/// The routes of one service: a shared slice while they are few (most services have a route
/// or two, and an `imbl` set costs a whole node, kilobytes, for each), a persistent set once
/// they are many, so that adding or removing one route stays cheap for a service with
/// thousands (a change to it removes and adds every one of them).
#[derive(Clone)]
enum RouteIds {
    Few(Arc<[Arc<str>]>),
    Many(imbl::HashSet<Arc<str>>),
}

/// Routes a service holds as a slice, copied whole when one changes.
const FEW_ROUTES: usize = 16;

impl RouteIds {
    fn list(&self) -> Vec<Arc<str>> {
        match self {
            RouteIds::Few(ids) => ids.to_vec(),
            RouteIds::Many(ids) => ids.iter().cloned().collect(),
        }
    }

    /// These and `id`.
    fn with(&self, id: &Arc<str>) -> RouteIds {
        match self {
            RouteIds::Few(ids) if ids.contains(id) => self.clone(),
            RouteIds::Few(ids) if ids.len() < FEW_ROUTES => {
                RouteIds::Few(ids.iter().cloned().chain([id.clone()]).collect())
            }
            RouteIds::Few(ids) => RouteIds::Many(ids.iter().cloned().chain([id.clone()]).collect()),
            RouteIds::Many(ids) => RouteIds::Many(ids.update(id.clone())),
        }
    }

    /// These without `id`; `None` when none is left.
    fn without(&self, id: &Arc<str>) -> Option<RouteIds> {
        let left = match self {
            RouteIds::Few(ids) => RouteIds::Few(ids.iter().filter(|r| *r != id).cloned().collect()),
            RouteIds::Many(ids) => RouteIds::Many(ids.without(id)),
        };
        let empty = match &left {
            RouteIds::Few(ids) => ids.is_empty(),
            RouteIds::Many(ids) => ids.is_empty(),
        };
        (!empty).then_some(left)
    }
}

/// What a Route's stored row holds that the router and the proxy use.
#[derive(serde::Deserialize)]
struct RouteRow {
    #[serde(default, deserialize_with = "row::string")]
    id: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::foreign")]
    service: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::strings")]
    protocols: Vec<Box<str>>,
    #[serde(default, deserialize_with = "row::strings")]
    hosts: Vec<Box<str>>,
    #[serde(default, deserialize_with = "row::strings")]
    paths: Vec<Box<str>>,
    #[serde(default, deserialize_with = "row::strings")]
    methods: Vec<Box<str>>,
    #[serde(default, deserialize_with = "row::boolean")]
    strip_path: Option<bool>,
    #[serde(default, deserialize_with = "row::boolean")]
    preserve_host: Option<bool>,
    #[serde(default, deserialize_with = "row::signed")]
    regex_priority: Option<i64>,
    #[serde(default, deserialize_with = "row::signed")]
    created_at: Option<i64>,
}

fn route_spec(
    key: &Arc<str>,
    doc: &Doc,
    services: &Map<Arc<str>, Arc<Service>>,
    plugins: &Plugins,
) -> Result<RouteSpec, String> {
    let doc: RouteRow = doc.decode().map_err(|e| e.to_string())?;
    let id = doc.id.as_deref().ok_or("missing id")?;
    let service_id = doc.service.as_deref().ok_or("missing service")?;
    let service = services.get(service_id).cloned().ok_or_else(|| format!("service {service_id} is missing"))?;
    let protocols = &doc.protocols;
    let paths = doc.paths.iter().map(|p| PathRule::parse(p)).collect::<Result<Box<[_]>, _>>()?;
    let id = crate::service::shared_id(key, id);
    let chain = plugins.own_chain(&id, &service.id);
    // Kong's Prometheus plugin labels a series with the service's name, else its host, and
    // the route's name, else its id (0.14's routes have no name).
    let series = match &service.name {
        Some(name) => crate::metrics::Series::of(name, &id),
        None => crate::metrics::Series::of(&Arc::from(service.host()), &id),
    };
    Ok(RouteSpec {
        info: Arc::new(RouteInfo {
            series,
            plugins: chain,
            id,
            service,
            strip_path: doc.strip_path.unwrap_or(true),
            preserve_host: doc.preserve_host.unwrap_or(false),
            https_only: protocols.iter().any(|p| &**p == "https") && !protocols.iter().any(|p| &**p == "http"),
            logged: std::sync::OnceLock::new(),
        }),
        hosts: doc.hosts.into_iter().map(String::from).collect(),
        paths,
        methods: doc.methods.into_iter().map(String::from).collect(),
        regex_priority: doc.regex_priority.unwrap_or(0),
        created_at: doc.created_at.unwrap_or(0),
    })
}

fn compile_certs(set: &ConfigSet) -> Result<HashMap<String, Arc<CertifiedKey>>, CompileError> {
    let mut by_id = HashMap::new();
    for (id, doc) in set.entries("certificates") {
        let doc = &doc.value();
        let pem = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
        let key = crate::tls::certified_key(pem("cert").as_bytes(), pem("key").as_bytes())
            .map_err(|e| at("certificates", id, e))?;
        by_id.insert(id.to_string(), Arc::new(key));
    }
    let mut by_name = HashMap::new();
    for sni in set.table("snis") {
        let sni = sni.value();
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

    impl Compiled {
        /// Everything a request can observe of this configuration, as text: the routes in
        /// the order they are tried with their services, paths and plugin chains (each
        /// configuration named by its row), the certificates' names, the consumers and
        /// credentials.
        fn describe(&self) -> String {
            use std::fmt::Write;
            let rows: HashMap<*const (), String> = self
                .parts
                .instances
                .iter()
                .map(|(id, (_, instance))| (Arc::as_ptr(instance).cast::<()>(), id.to_string()))
                .collect();
            let row =
                |p: &Arc<dyn plugins::Plugin>| rows.get(&Arc::as_ptr(p).cast::<()>()).cloned().unwrap_or_default();
            let mut out = String::new();
            for spec in self.router.specs() {
                let (info, s) = (&spec.info, &spec.info.service);
                let paths: Vec<&str> = spec.paths.iter().map(PathRule::source).collect();
                let _ = writeln!(
                    out,
                    "route {} strip={} preserve={} https_only={} hosts={:?} paths={:?} methods={:?} \
                     priority={} created={} | service {} name={:?} {}://{}:{} path={:?} retries={} \
                     timeouts={:?}/{:?}/{:?} host_header={:?} pool={} upstream={:?} | {}",
                    info.id,
                    info.strip_path,
                    info.preserve_host,
                    info.https_only,
                    spec.hosts,
                    paths,
                    spec.methods,
                    spec.regex_priority,
                    spec.created_at,
                    s.id,
                    s.name,
                    if s.https { "https" } else { "http" },
                    s.host(),
                    s.port,
                    s.path,
                    s.retries,
                    s.connect_timeout(),
                    s.write_timeout(),
                    s.read_timeout(),
                    s.host_header,
                    s.pool_key,
                    s.balancer.as_ref().map(|b| b.name.clone()),
                    self.chain(info).describe(&row),
                );
            }
            let mut certs: Vec<&String> = self.certs.keys().collect();
            certs.sort();
            let mut consumers: Vec<String> = self.creds.consumers.values().map(|c| format!("{c:?}")).collect();
            consumers.sort();
            let c = &self.creds;
            /// Each entry with the whole row it finds.
            fn listed<T: std::fmt::Debug>(index: &crate::credentials::Index<Box<str>, Arc<T>>) -> Vec<String> {
                let mut keys: Vec<String> = index.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                keys.sort();
                keys
            }
            let indexes = [
                ("keys", listed(&c.keys)),
                ("basic", listed(&c.basic)),
                ("hmac", listed(&c.hmac)),
                ("jwt", listed(&c.jwt)),
                ("oauth2 clients", listed(&c.oauth2_clients)),
                ("oauth2 by id", listed(&c.oauth2_by_id)),
                ("tokens", listed(&c.oauth2_tokens)),
                ("refresh", listed(&c.oauth2_refresh)),
                ("codes", listed(&c.oauth2_codes)),
            ];
            for (name, keys) in indexes {
                let _ = writeln!(out, "{name} {keys:?}");
            }
            let mut jwt_keys: Vec<String> =
                c.jwt_public_keys.iter().map(|(id, key)| format!("{id}:{}", key.len())).collect();
            jwt_keys.sort();
            let _ = writeln!(out, "certs {certs:?}\nconsumers {consumers:?}\njwt keys {jwt_keys:?}");
            out
        }
    }

    fn delete(entity: &str, id: &str) -> Change {
        Change { entity: entity.into(), id: id.into(), document: String::new(), deleted: true }
    }

    /// A random change to a small configuration whose entities refer to each other a lot:
    /// services (some naming upstreams), routes (paths, hosts, methods, priorities), plugins
    /// at every scope (some disabled), consumers, key-auth credentials, upstreams, targets.
    fn random_change(rng: &mut fastrand::Rng, now: &mut i64) -> Change {
        let pick = |rng: &mut fastrand::Rng, n: usize| rng.usize(..n);
        *now += 1;
        let entity = [
            "services",
            "routes",
            "routes",
            "plugins",
            "plugins",
            "consumers",
            "keyauth_credentials",
            "upstreams",
            "targets",
            "acls",
            "basicauth_credentials",
            "jwt_secrets",
            "oauth2_tokens",
            "hmacauth_credentials",
            "oauth2_credentials",
            "oauth2_authorization_codes",
        ][pick(rng, 16)];
        let id = format!("{}{}", &entity[..3], pick(rng, if entity == "routes" { 12 } else { 5 }));
        if rng.u8(..10) == 0 {
            return delete(entity, &id);
        }
        let service = format!("ser{}", pick(rng, 5));
        let doc = match entity {
            "services" => json!({
                "id": id,
                "name": if rng.bool() { json!(format!("name-{}", pick(rng, 3))) } else { json!(null) },
                "host": (["127.0.0.1", "example.com", "up0", "up1"][pick(rng, 4)]),
                "port": ([80, 8080, 443][pick(rng, 3)]),
                "protocol": (["http", "https"][pick(rng, 2)]),
                "path": if rng.bool() { json!("/base") } else { json!(null) },
                "retries": pick(rng, 6),
            }),
            "routes" => json!({
                "id": id,
                "created_at": ([1, 2, *now][pick(rng, 3)]),
                "regex_priority": pick(rng, 3),
                "hosts": if rng.bool() { json!([(["a.test", "*.b.test", "c.*"][pick(rng, 3)])]) } else { json!(null) },
                "paths": ([json!(["/a"]), json!(["/a", "/b/c"]), json!([r"/r/\\d+"]), json!(null)][pick(rng, 4)]),
                "methods": if rng.bool() { json!(["GET"]) } else { json!(null) },
                "strip_path": rng.bool(),
                "preserve_host": rng.bool(),
                "protocols": ([json!(["http", "https"]), json!(["https"])][pick(rng, 2)]),
                "service": {"id": service},
            }),
            "plugins" => {
                let mut doc = json!({
                    "id": id,
                    "name": (["request-termination", "correlation-id", "acl"][pick(rng, 3)]),
                    "enabled": rng.u8(..5) != 0,
                    "config": {"whitelist": ["g"], "status_code": 503, "header_name": "X-Id", "generator": "uuid"},
                });
                let route = json!(format!("rou{}", pick(rng, 12)));
                let consumer = json!(format!("con{}", pick(rng, 5)));
                // Every scope of the eight levels, and none (global).
                let (on_route, on_service, on_consumer) = match pick(rng, 8) {
                    0 => (true, true, true),
                    1 => (true, false, true),
                    2 => (false, true, true),
                    3 => (true, true, false),
                    4 => (false, false, true),
                    5 => (true, false, false),
                    6 => (false, true, false),
                    _ => (false, false, false),
                };
                if on_route {
                    doc["route_id"] = route;
                }
                if on_service {
                    doc["service_id"] = json!(service);
                }
                if on_consumer {
                    doc["consumer_id"] = consumer;
                }
                doc
            }
            "consumers" => json!({"id": id, "username": format!("user-{}", pick(rng, 9))}),
            // Keys and names are unique in their tables (the control plane refuses a second);
            // a row's may change.
            "keyauth_credentials" => {
                json!({"id": id, "consumer_id": format!("con{}", pick(rng, 5)), "key": format!("key-{id}-{}", pick(rng, 3))})
            }
            "acls" => json!({
                "id": id,
                "consumer_id": format!("con{}", pick(rng, 5)),
                "group": format!("g{}", pick(rng, 3)),
                "created_at": ([1, *now][pick(rng, 2)]),
            }),
            "basicauth_credentials" => json!({
                "id": id,
                "consumer_id": format!("con{}", pick(rng, 5)),
                "username": format!("u-{id}-{}", pick(rng, 2)),
                "password": "x",
            }),
            "jwt_secrets" => json!({
                "id": id,
                "consumer_id": format!("con{}", pick(rng, 5)),
                "key": format!("iss-{id}-{}", pick(rng, 2)),
                "algorithm": (["HS256", "RS256"][pick(rng, 2)]),
                "rsa_public_key": ([json!(null), json!(RSA_PUBLIC_KEY)][pick(rng, 2)]),
            }),
            "oauth2_tokens" => json!({
                "id": id,
                "credential_id": "cred",
                "access_token": format!("at-{id}-{}", pick(rng, 2)),
                "refresh_token": if rng.bool() { json!(format!("rt-{id}-{}", pick(rng, 2))) } else { json!(null) },
            }),
            "hmacauth_credentials" => json!({
                "id": id,
                "consumer_id": format!("con{}", pick(rng, 5)),
                "username": format!("h-{id}-{}", pick(rng, 2)),
                "secret": "s",
            }),
            "oauth2_credentials" => json!({
                "id": id,
                "consumer_id": format!("con{}", pick(rng, 5)),
                "client_id": format!("cl-{id}-{}", pick(rng, 2)),
                "name": "app",
            }),
            "oauth2_authorization_codes" => {
                json!({"id": id, "credential_id": "cred", "code": format!("code-{id}-{}", pick(rng, 2))})
            }
            "upstreams" => json!({"id": id, "name": format!("up{}", pick(rng, 2)), "slots": 10}),
            _ => json!({
                "id": id,
                "upstream_id": format!("ups{}", pick(rng, 5)),
                "target": format!("127.0.0.{}:80", 1 + pick(rng, 3)),
                "weight": 100,
                "created_at": *now,
            }),
        };
        change(entity, doc)
    }

    /// A 2048-bit RSA public key, for jwt secrets whose verification key is parsed.
    const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxGvHAmRYj7Lj407+24B2
cRmQJojgsziAD9vjaGWA9t9nyattGqbUgJXWbltjqIPTnAWD4vT5bI84Mxzz3LBq
Rz7A+I7l1ufSWx3TafxeuxwF8nTwPNbOG4DkhKgry99qjZWrpOlcOTfpEESYpvVx
2LPj8jWWfQS7ot4de6ykzsJjfuuGuTyGON/QCsmjM1+kcfyDDycAFJ6JFim1iW8e
9VqwTEqyB1ThKt8eT5MLPEZaaJ/7UhN7zrLWqd88Mf3B8edNf9Vc8HEOz6ZOP9in
9gpFq0MrH37+Sk1+eWHwZ191973SZBTY/TWcRfih94fvz3obh5QCj6HvVNp99hMn
UwIDAQAB
-----END PUBLIC KEY-----";

    /// One revision moves a key from one credential to another (the first gives it up, the
    /// second takes it) and deletes a third: applied incrementally, the key finds the second
    /// row whichever order the delta lists them in.
    #[test]
    fn a_key_passed_between_credentials_in_one_revision_finds_its_new_row() {
        let key =
            |id: &str, key: &str| change("keyauth_credentials", json!({"id": id, "consumer_id": "c1", "key": key}));
        for moved_first in [true, false] {
            let mut set = ConfigSet::new("e", 1);
            let first = [change("consumers", json!({"id": "c1"})), key("k1", "shared"), key("k3", "gone")];
            set.apply(&first).unwrap();
            let available = HashSet::new();
            let registry = Registry::default();
            let before = Compiled::compile(Arc::new(set.clone()), &available, &registry).unwrap();
            let mut delta = vec![key("k1", "other"), key("k2", "shared"), delete("keyauth_credentials", "k3")];
            if !moved_first {
                delta.reverse();
            }
            set.revision += 1;
            set.apply(&delta).unwrap();
            let after = before.apply(Arc::new(set), &delta, &available, &registry).unwrap();
            assert_eq!(&*after.creds.keys["shared"].id, "k2", "listed {}", if moved_first { "first" } else { "last" });
            assert_eq!(&*after.creds.keys["other"].id, "k1");
            assert!(!after.creds.keys.contains_key("gone"));
            assert_eq!(&*before.creds.keys["shared"].id, "k1", "the configuration before is unchanged");
        }
    }

    /// A service's route list grows past the slice into a set and shrinks back to nothing,
    /// holding each route once.
    #[test]
    fn a_service_keeps_each_route_once_however_many_it_has() {
        let ids: Vec<Arc<str>> = (0..40).map(|i| Arc::from(format!("r{i}"))).collect();
        let mut routes = super::RouteIds::Few(Arc::from([ids[0].clone()]));
        for id in ids.iter().chain(&ids) {
            routes = routes.with(id);
        }
        assert!(matches!(routes, super::RouteIds::Many(_)), "past the slice's limit");
        let mut listed = routes.list();
        listed.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(listed, expected);
        for (n, id) in ids.iter().enumerate() {
            match routes.without(id) {
                Some(left) => routes = left,
                None => assert_eq!(n, ids.len() - 1, "empty only after the last"),
            }
        }
        assert!(routes.without(&ids[ids.len() - 1]).is_none(), "the last route removed leaves none");
    }

    /// Random delta sequences, applied incrementally, give what a full compile of the same
    /// revision gives; a delta the full compile refuses is refused incrementally too (and the
    /// data plane keeps what it had).
    #[tokio::test]
    async fn incremental_apply_equals_a_full_compile() {
        let available: HashSet<String> =
            ["request-termination", "correlation-id", "acl"].into_iter().map(String::from).collect();
        let (mut applied, mut refused) = (0, 0);
        // What the sequences must have reached at least once for the comparison to mean much.
        let marks = [
            "upstream=Some",
            "key-",
            "[con",
            " plu",
            "https_only=true",
            "*.b.test",
            "/r/",
            "groups_header: Some(",
            "u-bas",
            "h-hma",
            "iss-jwt",
            "rt-oau",
            "cl-oau",
            "code-oau",
            ":270\"",
        ];
        let mut seen = [false; 15];
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut now = 0;
            let (incremental, full) = (Registry::default(), Registry::default());
            let mut set = ConfigSet::new("e", 0);
            let mut current = Compiled::compile(Arc::new(set.clone()), &available, &incremental).unwrap();
            for step in 0..60 {
                let changes: Vec<Change> = (0..1 + rng.usize(..3)).map(|_| random_change(&mut rng, &mut now)).collect();
                let mut next = set.clone();
                next.revision += 1;
                next.apply(&changes).unwrap();
                let next = Arc::new(next);
                let stepped = current.apply(next.clone(), &changes, &available, &incremental);
                let whole = Compiled::compile(next.clone(), &available, &full);
                match (stepped, whole) {
                    (Ok(stepped), Ok(whole)) => {
                        let described = stepped.describe();
                        assert_eq!(described, whole.describe(), "seed {seed} step {step}: {changes:?}");
                        for (i, mark) in marks.iter().enumerate() {
                            seen[i] |= described.contains(mark);
                        }
                        current = stepped;
                        set = (*next).clone();
                        applied += 1;
                    }
                    (Err(_), Err(_)) => {
                        // The full compile's registry staged nothing either: both keep `set`.
                        refused += 1;
                    }
                    (stepped, whole) => panic!(
                        "seed {seed} step {step}: incremental {:?}, full {:?}, for {changes:?}",
                        stepped.err(),
                        whole.err()
                    ),
                }
            }
        }
        assert_eq!(seen, [true; 15], "reached: {marks:?}");
        assert!(
            applied > 1_000 && refused > 100,
            "the sequences exercise both outcomes: {applied} applied, {refused} refused"
        );
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
        let delta = [change("keyauth_credentials", json!({"id": "k1", "consumer_id": "c1", "key": "secret"}))];
        set.apply(&delta).unwrap();
        let second = first.apply(Arc::new(set), &delta, &HashSet::new(), &Registry::default()).unwrap();
        assert!(Arc::ptr_eq(&first.router, &second.router));
        assert!(!first.creds.keys.contains_key("secret"));
        assert_eq!(second.creds.owner(&*second.creds.keys["secret"]).unwrap().id.as_ref(), "c1");
    }

    /// One service with routes, compiled, taking deltas one at a time; each result is checked
    /// against a full compile of the same set.
    struct Stepped {
        set: ConfigSet,
        current: Compiled,
        available: HashSet<String>,
    }

    impl Stepped {
        fn new(available: &[&str], routes: &[(&str, &str)]) -> Stepped {
            let mut set = ConfigSet::new("e", 1);
            let mut rows = vec![change("services", json!({"id": "s1", "host": "127.0.0.1", "port": 80}))];
            rows.extend(
                routes
                    .iter()
                    .map(|(id, path)| change("routes", json!({"id": id, "paths": [path], "service": {"id": "s1"}}))),
            );
            set.apply(&rows).unwrap();
            let available: HashSet<String> = available.iter().map(|a| a.to_string()).collect();
            let current = Compiled::compile(Arc::new(set.clone()), &available, &Registry::default()).unwrap();
            Stepped { set, current, available }
        }

        /// Applies `delta`; returns the configuration it replaced.
        fn step(&mut self, delta: Change) -> Compiled {
            let delta = [delta];
            self.set.revision += 1;
            self.set.apply(&delta).unwrap();
            let set = Arc::new(self.set.clone());
            let applied = self.current.apply(set.clone(), &delta, &self.available, &Registry::default()).unwrap();
            let full = Compiled::compile(set, &self.available, &Registry::default()).unwrap();
            assert_eq!(applied.describe(), full.describe());
            std::mem::replace(&mut self.current, applied)
        }
    }

    fn info(c: &Compiled, id: &str) -> Arc<RouteInfo> {
        c.router.specs().find(|s| &*s.info.id == id).unwrap().info.clone()
    }

    fn chain_len(c: &Compiled, route: &str) -> usize {
        c.chain(&info(c, route)).entries.len()
    }

    #[test]
    fn a_global_plugin_changes_only_the_routes_rows_name() {
        let mut steps =
            Stepped::new(&["correlation-id", "request-termination"], &[("r1", "/a"), ("r2", "/b"), ("r3", "/c")]);
        let global =
            json!({"id": "g", "name": "correlation-id", "config": {"header_name": "X-Id", "generator": "uuid"}});
        let before = steps.step(change("plugins", global.clone()));
        // No row names a route: the router and every route stay, and all see the global row.
        assert!(Arc::ptr_eq(&before.router, &steps.current.router));
        assert!(["r1", "r2", "r3"].iter().all(|r| chain_len(&steps.current, r) == 1));
        let on_r1 = json!({"id": "t", "name": "request-termination", "route_id": "r1", "config": {"status_code": 503}});
        steps.step(change("plugins", on_r1));
        let mut changed = global.clone();
        changed["enabled"] = json!(false);
        let before = steps.step(change("plugins", changed));
        // r1 has a chain of its own, recompiled; r2 and r3 are the same routes as before.
        let next = &steps.current;
        assert!(!Arc::ptr_eq(&info(&before, "r1"), &info(next, "r1")));
        assert!(Arc::ptr_eq(&info(&before, "r2"), &info(next, "r2")));
        assert_eq!((chain_len(next, "r1"), chain_len(next, "r2")), (1, 0));
    }

    #[test]
    fn a_row_on_a_route_and_its_service_leaves_the_service_s_other_routes_shared() {
        let mut steps = Stepped::new(&["key-auth", "request-termination"], &[("r1", "/a"), ("r3", "/c")]);
        let both = json!({"id": "t", "name": "request-termination", "route_id": "r1", "service_id": "s1",
            "config": {"status_code": 503}});
        let r3 = json!({"id": "r3", "paths": ["/c", "/d"], "service": {"id": "s1"}});
        let global = json!({"id": "g", "name": "key-auth", "config": {"key_names": ["apikey"]}});
        // The row on r1 and s1 comes; r3 is compiled again while it is there; it goes; then a
        // global row comes, which r3 must take like any route no row names.
        for delta in [change("plugins", both), change("routes", r3), delete("plugins", "t"), change("plugins", global)]
        {
            steps.step(delta);
        }
        assert_eq!(chain_len(&steps.current, "r3"), 1, "r3 runs the global key-auth");
    }
}
