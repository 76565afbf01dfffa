//! Which plugin row applies, resolved per route when the configuration compiles
//! (kong-0.14-plugins §1.4). For route R, service S and consumer C the first enabled row wins
//! among (R,S,C), (R,–,C), (–,S,C), (R,S,–), (–,–,C), (R,–,–), (–,S,–), (–,–,–). Without a
//! consumer only the consumer-free levels count, so each route keeps that answer (`base`)
//! and, only for consumers that have rows of their own, the full eight-level answer.
//!
//! A route no row names (by its id or its service's) has the answer every such route has:
//! one chain, shared, kept by the configuration rather than by each route. A global or
//! consumer-only row then changes that chain and the chains of the routes rows name, not
//! every route's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::response::Parts;
use serde_json::Value;

use super::{LogEntry, Plugin};

type Instance = Arc<dyn Plugin>;

/// One plugin name's rows.
#[derive(Default)]
struct Named {
    no_consumer: bool,
    rows: HashMap<Scope, Instance>,
    /// The scopes of the rows bound to a consumer: a route's chain looks through these for
    /// the consumers with answers of their own, not through every row of the name.
    consumers: Vec<Scope>,
}

/// One plugin name's configuration for one route.
pub struct Entry {
    base: Option<Instance>,
    by_consumer: HashMap<Arc<str>, Option<Instance>>,
}

impl Entry {
    /// The configuration for the request's consumer, if any applies.
    #[inline]
    pub fn resolve(&self, consumer: Option<&Arc<str>>) -> Option<&Instance> {
        if let Some(c) = consumer {
            if !self.by_consumer.is_empty() {
                if let Some(hit) = self.by_consumer.get(c) {
                    return hit.as_ref();
                }
            }
        }
        self.base.as_ref()
    }
}

/// A route's plugins in run order (priority, highest first).
#[derive(Default)]
pub struct Chain {
    pub entries: Vec<Entry>,
    /// Every configuration in the chain, whichever consumer it resolves for, needs no
    /// response phases (see [`Plugin::direct`]): it acts in `access` and `log` only, and
    /// neither filters nor keeps bodies.
    pub direct: bool,
    /// Whether some configuration may read a body with a length (0) or a chunked one (1):
    /// worked out once here, not per request.
    reads_body: [bool; 2],
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("plugins", &self.entries.len()).finish()
    }
}

impl Chain {
    /// Whether some configuration in the chain, whichever consumer it resolves for, may read a
    /// body (chunked, or with a length) in `access` ([`Plugin::reads_body`]).
    pub fn reads_body(&self, chunked: bool) -> bool {
        self.reads_body[usize::from(chunked)]
    }

    /// Some plugin on the route may read a body, whatever its framing.
    pub fn reads_any_body(&self) -> bool {
        self.reads_body[0] || self.reads_body[1]
    }

    fn new(entries: Vec<Entry>) -> Chain {
        let all = || entries.iter().flat_map(|e| e.base.iter().chain(e.by_consumer.values().flatten()));
        let direct = all().all(|p| p.direct() && !p.filters_body() && !p.captures_bodies());
        let reads_body = [all().any(|p| p.reads_body(false)), all().any(|p| p.reads_body(true))];
        Chain { entries, direct, reads_body }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each entry as `row` names its configurations, consumers sorted (for tests that compare
    /// two compiles of one configuration).
    #[cfg(test)]
    pub(crate) fn describe(&self, row: &dyn Fn(&Instance) -> String) -> String {
        let mut out = format!("direct={} reads_body={:?}", self.direct, self.reads_body);
        for e in &self.entries {
            let mut consumers: Vec<String> = e
                .by_consumer
                .iter()
                .map(|(c, p)| format!("{c}={}", p.as_ref().map_or_else(|| "-".to_string(), row)))
                .collect();
            consumers.sort();
            out += &format!(" {}[{}]", e.base.as_ref().map_or_else(|| "-".to_string(), row), consumers.join(","));
        }
        out
    }
}

/// The plugins that had a configuration for a request, for the later phases (inline up to
/// four: no allocation for a typical chain).
#[derive(Default, Clone)]
pub struct Resolved(smallvec::SmallVec<[Instance; 4]>);

impl Resolved {
    pub(super) fn push(&mut self, p: Instance) {
        self.0.push(p);
    }

    pub fn header_filter(&self, parts: &mut Parts) {
        for p in &self.0 {
            p.header_filter(parts);
        }
    }

    /// Whether any of the plugins has a log phase.
    pub fn logs(&self) -> bool {
        self.0.iter().any(|p| p.logs())
    }

    /// Whether the response body has to pass through the plugins (body filters or logging).
    pub fn wants_body(&self) -> bool {
        self.0.iter().any(|p| p.logs() || p.filters_body())
    }

    /// Whether a logger keeps the response body.
    pub fn captures_bodies(&self) -> bool {
        self.0.iter().any(|p| p.captures_bodies())
    }

    /// The body filters for a response with this head, in plugin order.
    pub fn body_filters(&self, response: &Parts) -> Vec<Box<dyn super::BodyFilter>> {
        self.0.iter().filter(|p| p.filters_body()).filter_map(|p| p.body_filter(response)).collect()
    }

    /// Runs the log phase now, for an answer already written in full (the direct path's):
    /// nothing waits for it but the connection's next request.
    pub fn log_now(self, entry: LogEntry) {
        for p in self.0.iter().filter(|p| p.logs()) {
            p.log(&entry);
        }
    }

    /// Runs the log phase on its own task, so the response never waits for it.
    pub fn log(self, entry: LogEntry) {
        if !self.logs() {
            return;
        }
        tokio::spawn(async move {
            for p in self.0.iter().filter(|p| p.logs()) {
                p.log(&entry);
            }
        });
    }
}

/// The ids a plugin row is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    route: Option<Arc<str>>,
    service: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
}

/// Every enabled plugin row, indexed for the routes' chains ([`Plugins::own_chain`],
/// [`Plugins::shared`]).
#[derive(Default)]
pub struct Plugins {
    /// By priority (highest first), then name.
    by_name: Vec<Named>,
    /// The routes some row names, and the services some row without a route names: a row on
    /// a route applies to that route only, whatever service it also names.
    bound_routes: HashSet<Arc<str>>,
    bound_services: HashSet<Arc<str>>,
    /// The chain of every route no row names, by itself or by its service.
    shared: Arc<Chain>,
}

fn id(doc: &Value, key: &str) -> Option<Arc<str>> {
    doc.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(Into::into)
}

impl Plugins {
    /// Indexes the rows of the `plugins` table, each with what the caller keeps beside it
    /// (`T`: its stored document, say); `build` turns a row's name and config (and the row,
    /// for the ids a plugin keys state by, and what came with it) into its plugin. Disabled
    /// rows are left out: a lower level applies.
    ///
    /// # Errors
    /// The first row whose plugin is unknown or cannot be built, with the reason.
    pub fn index<'a, T>(
        rows: impl Iterator<Item = (&'a Arc<Value>, T)>,
        mut build: impl FnMut(&str, &Value, &Arc<Value>, T) -> Result<Instance, String>,
    ) -> Result<Plugins, (String, String)> {
        let mut by_name: BTreeMap<(std::cmp::Reverse<u32>, &'static str), Named> = BTreeMap::new();
        for (row, with) in rows {
            if row.get("enabled").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let name = row.get("name").and_then(Value::as_str).unwrap_or_default();
            let row_id = row.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let Some(schema) = gatehouse_shared::schema::plugin(name) else {
                return Err((row_id, format!("unknown plugin '{name}'")));
            };
            let instance =
                build(name, row.get("config").unwrap_or(&Value::Null), row, with).map_err(|e| (row_id, e))?;
            let scope = Scope {
                route: id(row, "route_id"),
                service: id(row, "service_id"),
                consumer: if schema.no_consumer() { None } else { id(row, "consumer_id") },
            };
            // A no_consumer plugin bound to a consumer never applies.
            if schema.no_consumer() && id(row, "consumer_id").is_some() {
                continue;
            }
            let named = by_name.entry((std::cmp::Reverse(schema.priority()), schema.name())).or_default();
            named.no_consumer = schema.no_consumer();
            named.rows.insert(scope, instance);
        }
        let mut by_name: Vec<Named> = by_name.into_values().collect();
        for named in &mut by_name {
            named.consumers = named.rows.keys().filter(|s| s.consumer.is_some()).cloned().collect();
        }
        let scopes = || by_name.iter().flat_map(|n| n.rows.keys());
        let mut plugins = Plugins {
            bound_routes: scopes().filter_map(|s| s.route.clone()).collect(),
            bound_services: scopes().filter(|s| s.route.is_none()).filter_map(|s| s.service.clone()).collect(),
            by_name,
            shared: Arc::default(),
        };
        plugins.shared = Arc::new(plugins.resolve(None, None));
        Ok(plugins)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The chain of a route of `service`, when a row names either: `None` when the route has
    /// the [shared](Plugins::shared) chain.
    pub fn own_chain(&self, route: &Arc<str>, service: &Arc<str>) -> Option<Arc<Chain>> {
        let named = self.bound_routes.contains(route) || self.bound_services.contains(service);
        named.then(|| Arc::new(self.resolve(Some(route), Some(service))))
    }

    /// The chain of every route no row names.
    pub fn shared(&self) -> &Arc<Chain> {
        &self.shared
    }

    /// The chain of a route of `service`, its own or the shared one.
    #[cfg(test)]
    pub fn chain(&self, route: &Arc<str>, service: &Arc<str>) -> Arc<Chain> {
        self.own_chain(route, service).unwrap_or_else(|| self.shared.clone())
    }

    /// The routes some row names, and the services (whose routes it names).
    pub fn bound(&self) -> (&HashSet<Arc<str>>, &HashSet<Arc<str>>) {
        (&self.bound_routes, &self.bound_services)
    }

    /// The chain for a route (`None`: one no row names) of a service (`None`: likewise).
    fn resolve(&self, route: Option<&Arc<str>>, service: Option<&Arc<str>>) -> Chain {
        let mut entries = Vec::new();
        for Named { no_consumer, rows, consumers } in &self.by_name {
            let at = |r: bool, s: bool, c: Option<&Arc<str>>| {
                if (r && route.is_none()) || (s && service.is_none()) {
                    return None;
                }
                rows.get(&Scope {
                    route: route.filter(|_| r).cloned(),
                    service: service.filter(|_| s).cloned(),
                    consumer: c.cloned(),
                })
                .cloned()
            };
            // Levels 4, 6, 7, 8.
            let base = at(true, true, None)
                .or_else(|| at(true, false, None))
                .or_else(|| at(false, true, None))
                .or_else(|| at(false, false, None));
            let mut by_consumer = HashMap::new();
            if !no_consumer {
                for scope in consumers {
                    let Some(c) = &scope.consumer else { continue };
                    if by_consumer.contains_key(c) {
                        continue;
                    }
                    let relevant = scope.route.as_ref().is_none_or(|r| Some(r) == route)
                        && scope.service.as_ref().is_none_or(|s| Some(s) == service);
                    if !relevant {
                        continue;
                    }
                    // Levels 1, 2, 3, then 4, then 5, then 6–8.
                    let pick = at(true, true, Some(c))
                        .or_else(|| at(true, false, Some(c)))
                        .or_else(|| at(false, true, Some(c)))
                        .or_else(|| at(true, true, None))
                        .or_else(|| at(false, false, Some(c)))
                        .or_else(|| base.clone());
                    by_consumer.insert(c.clone(), pick);
                }
            }
            if base.is_some() || !by_consumer.is_empty() {
                entries.push(Entry { base, by_consumer });
            }
        }
        Chain::new(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Labelled(&'static str);
    impl Plugin for Labelled {
        fn name(&self) -> &'static str {
            self.0
        }
    }

    fn label(p: Option<&Instance>) -> &'static str {
        p.map_or("none", |p| p.name())
    }

    #[test]
    fn eight_levels_in_order() {
        // rate-limiting accepts consumer_id; each row's config names its level.
        let rows: Vec<Arc<Value>> = [
            json!({"id": "1", "name": "rate-limiting", "route_id": "R", "service_id": "S", "consumer_id": "C", "config": "l1"}),
            json!({"id": "4", "name": "rate-limiting", "route_id": "R", "service_id": "S", "config": "l4"}),
            json!({"id": "5", "name": "rate-limiting", "consumer_id": "D", "config": "l5"}),
            json!({"id": "7", "name": "rate-limiting", "service_id": "S", "config": "l7"}),
            json!({"id": "8", "name": "rate-limiting", "config": "l8", "enabled": true}),
            json!({"id": "x", "name": "rate-limiting", "service_id": "S2", "config": "off", "enabled": false}),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let build = |_: &str, c: &Value, _: &Arc<Value>, ()| -> Result<Instance, String> {
            let name: &'static str = match c.as_str() {
                Some("l1") => "l1",
                Some("l4") => "l4",
                Some("l5") => "l5",
                Some("l7") => "l7",
                Some("l8") => "l8",
                _ => "other",
            };
            Ok(Arc::new(Labelled(name)))
        };
        let plugins = Plugins::index(rows.iter().map(|r| (r, ())), build).unwrap();
        let (r, s, other_r, s2) = (Arc::from("R"), Arc::from("S"), Arc::from("R2"), Arc::from("S2"));
        let chain = plugins.chain(&r, &s);
        let e = &chain.entries[0];
        assert_eq!(label(e.resolve(None)), "l4");
        assert_eq!(label(e.resolve(Some(&Arc::from("C")))), "l1");
        assert_eq!(label(e.resolve(Some(&Arc::from("D")))), "l4", "level 4 beats level 5");
        let chain = plugins.chain(&other_r, &s);
        assert_eq!(label(chain.entries[0].resolve(Some(&Arc::from("D")))), "l5");
        assert_eq!(label(chain.entries[0].resolve(None)), "l7");
        let chain = plugins.chain(&other_r, &s2);
        assert_eq!(label(chain.entries[0].resolve(None)), "l8", "a disabled row falls back");
    }

    /// Acts in `access` only when its name says so.
    struct Gate(&'static str);
    impl Plugin for Gate {
        fn name(&self) -> &'static str {
            self.0
        }
        fn access_only(&self) -> bool {
            self.0 == "access-only"
        }
    }

    #[test]
    fn a_chain_is_direct_when_every_configuration_for_any_consumer_is() {
        let rows: Vec<Arc<Value>> = [
            json!({"id": "a", "name": "acl", "route_id": "R", "config": "access-only"}),
            json!({"id": "k", "name": "key-auth", "config": "access-only"}),
            json!({"id": "r", "name": "rate-limiting", "consumer_id": "C", "service_id": "S", "config": "logs"}),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let build = |_: &str, c: &Value, _: &Arc<Value>, ()| -> Result<Instance, String> {
            Ok(Arc::new(Gate(if c == "access-only" { "access-only" } else { "other" })))
        };
        let plugins = Plugins::index(rows.iter().map(|r| (r, ())), build).unwrap();
        // The consumer-specific row applies on S only, but any consumer may be the one.
        assert!(!plugins.chain(&Arc::from("R"), &Arc::from("S")).direct);
        assert!(plugins.chain(&Arc::from("R"), &Arc::from("S2")).direct);
        // Global configurations without a `rewrite` phase have nothing to do before routing.
    }

    #[test]
    fn priority_orders_the_chain() {
        let rows: Vec<Arc<Value>> = [json!({"id": "a", "name": "acl"}), json!({"id": "k", "name": "key-auth"})]
            .into_iter()
            .map(Arc::new)
            .collect();
        let build = |n: &str, _: &Value, _: &Arc<Value>, ()| -> Result<Instance, String> {
            Ok(Arc::new(Labelled(if n == "acl" { "acl" } else { "key-auth" })))
        };
        let chain =
            Plugins::index(rows.iter().map(|r| (r, ())), build).unwrap().chain(&Arc::from("R"), &Arc::from("S"));
        let names: Vec<_> = chain.entries.iter().map(|e| label(e.resolve(None))).collect();
        assert_eq!(names, ["key-auth", "acl"]);
    }

    #[test]
    fn routes_no_row_names_share_one_chain() {
        let rows: Vec<Arc<Value>> = [
            json!({"id": "g", "name": "key-auth"}),
            json!({"id": "a", "name": "acl", "route_id": "R"}),
            json!({"id": "c", "name": "rate-limiting", "consumer_id": "C"}),
            json!({"id": "s", "name": "rate-limiting", "service_id": "S", "consumer_id": "D"}),
            json!({"id": "off", "name": "cors", "route_id": "R3", "enabled": false}),
            json!({"id": "rs", "name": "cors", "route_id": "R4", "service_id": "S4"}),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let build = |n: &str, _: &Value, row: &Arc<Value>, ()| -> Result<Instance, String> {
            Ok(Arc::new(Labelled(match (n, row["id"].as_str()) {
                ("rate-limiting", Some("s")) => "limit-on-s",
                ("rate-limiting", _) => "limit",
                ("acl", _) => "acl",
                _ => "key-auth",
            })))
        };
        let plugins = Plugins::index(rows.iter().map(|r| (r, ())), build).unwrap();
        let route = |r: &str, s: &str| plugins.own_chain(&Arc::from(r), &Arc::from(s));
        // Named by a row (itself, or its service): a chain of its own.
        assert!(route("R", "S2").is_some());
        assert!(route("R2", "S").is_some());
        // A disabled row names nothing; neither does a consumer-only or global one.
        assert!(route("R3", "S2").is_none());
        // A row on a route and its service names that route, not the service's others.
        assert!(route("R4", "S4").is_some());
        assert!(route("R5", "S4").is_none());
        let shared = plugins.chain(&Arc::from("R3"), &Arc::from("S2"));
        assert!(Arc::ptr_eq(&shared, plugins.shared()));
        let by = |chain: &Chain, consumer: Option<&str>| -> Vec<&'static str> {
            let consumer = consumer.map(Arc::from);
            chain.entries.iter().filter_map(|e| e.resolve(consumer.as_ref())).map(|p| p.name()).collect()
        };
        assert_eq!(by(&shared, None), ["key-auth"]);
        assert_eq!(by(&shared, Some("C")), ["key-auth", "limit"]);
        assert_eq!(by(&shared, Some("D")), ["key-auth"], "D's row is on S only");
        let on_s = route("R2", "S").unwrap();
        assert_eq!(by(&on_s, Some("D")), ["key-auth", "limit-on-s"]);
        assert_eq!(by(&route("R", "S2").unwrap(), None), ["key-auth", "acl"]);
    }
}
