//! Kong 0.14's router, compiled once per configuration into indexes so that a request is
//! matched without locks and, in the common case, without scanning the route table.
//!
//! Semantics (kong-0.14-core-behavior §4.1–4.3): routes in global order (`regex_priority`
//! descending, then `created_at`); the request's hits (plain or first wildcard host; exact URI,
//! longest prefix, overridden by the first matching regex; method) decide the categories
//! tried (`HOST+URI+METHOD` … `METHOD`), and inside a category the reduced set (routes holding
//! the hit) is tried before the rest. Here the routes that can fully match are first gathered
//! through indexes (by path prefix, regex, host, method), then the same category walk picks
//! among them: the result is the route Kong would pick, found without a full scan.

mod path;

use std::collections::HashMap;

/// Lookups hash request strings (host, path prefixes, method) several times per request:
/// foldhash (randomly seeded per process) rather than SipHash. The tables' keys come from
/// configuration, so request input cannot grow a collision chain.
type Hasher = foldhash::fast::RandomState;
use std::sync::Arc;

pub use path::{PathRule, Strip};

use crate::service::Service;

/// What the proxy needs from a matched route.
#[derive(Debug)]
pub struct RouteInfo {
    pub id: Arc<str>,
    pub service: Arc<Service>,
    pub strip_path: bool,
    pub preserve_host: bool,
    /// `protocols` is `["https"]` only: plain HTTP gets a 426.
    pub https_only: bool,
    /// The plugins that apply on this route, in run order, when a plugin row names the route
    /// or its service; `None`: the configuration's shared chain ([`Compiled::chain`]), so that
    /// a global row's change leaves such routes as they are.
    ///
    /// [`Compiled::chain`]: crate::compiled::Compiled::chain
    pub plugins: Option<Arc<crate::plugins::Chain>>,
    /// Where its requests are counted (`crate::metrics`).
    pub series: crate::metrics::Series,
    /// The route and its service as log records show them, serialized the first time a
    /// request on the route is logged rather than on every request. A change to either entity
    /// compiles a new `RouteInfo`, so this never goes stale.
    pub logged: std::sync::OnceLock<Arc<crate::plugins::log::Entities>>,
}

/// A route as the router holds it.
#[derive(Debug)]
pub struct RouteSpec {
    pub info: Arc<RouteInfo>,
    // Boxed slices, exactly sized: collected into a `Vec`, one path took four slots' room
    // (128 bytes a route at 10,000 routes; a `Vec` also carries a capacity word).
    pub hosts: Box<[String]>,
    pub paths: Box<[PathRule]>,
    pub methods: Box<[String]>,
    pub regex_priority: i64,
    pub created_at: i64,
}

const HOST: u8 = 1;
const URI: u8 = 2;
const METHOD: u8 = 4;
const CATEGORIES: [u8; 7] = [HOST | URI | METHOD, HOST | URI, HOST | METHOD, URI | METHOD, HOST, URI, METHOD];

/// Where a route stands in Kong's global order: `regex_priority` descending, then
/// `created_at`, then (so that the order never depends on input order) the id.
type Rank = (std::cmp::Reverse<i64>, i64, Arc<str>);

#[derive(Clone)]
struct Route {
    /// Shared with the compiled configuration and with earlier routers.
    spec: Arc<RouteSpec>,
    bits: u8,
    category: usize,
    rank: Rank,
}

/// A route's position in the router's slot table: stable while the route stays, so that a
/// delta inserts and removes slots in the indexes without renumbering the others.
type Slot = u32;

/// The routes holding a wildcard host: each one's rank and the host's position in its list.
type Holders = std::collections::BTreeSet<(Rank, usize)>;

/// Slots are kept in chunks shared between routers: a delta copies the chunks it changes.
const CHUNK: usize = 256;

/// Shards per index: a delta copies only the shards holding the keys it changes (at 100,000
/// routes, a few hundred entries each), so applying one costs about the same at any size.
const SHARDS: usize = 256;

/// A map from a host, path or method to what the router keeps for it, in shards shared
/// between routers (copy on write). A key is hashed once (seeded randomly per index): the
/// hash picks the shard (bits 32 and up, which the shard's table does not use for its bucket
/// or its tag) and finds the key within it.
#[derive(Clone)]
struct Index<V: Clone> {
    hasher: Hasher,
    shards: Vec<Arc<Shard<V>>>,
}

/// One shard of an [`Index`]: its keys with their values.
type Shard<V> = hashbrown::HashTable<(Box<str>, V)>;

impl<V: Clone> Default for Index<V> {
    fn default() -> Self {
        Index { hasher: Hasher::default(), shards: Vec::new() }
    }
}

impl<V: Clone + Default> Index<V> {
    #[inline]
    fn hash(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    #[inline]
    fn get(&self, key: &str) -> Option<&V> {
        let hash = self.hash(key);
        let shard = self.shards.get((hash >> 32) as usize % SHARDS)?;
        shard.find(hash, |(k, _)| **k == *key).map(|(_, v)| v)
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// Changes the value for `key` in place (a default one when absent), removing the entry
    /// when `keep` says it is empty.
    fn update(&mut self, key: &str, change: impl FnOnce(&mut V), keep: impl FnOnce(&V) -> bool) {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| Arc::default()).collect();
        }
        let hash = self.hash(key);
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[(hash >> 32) as usize % SHARDS]);
        let entry = shard.entry(hash, |(k, _)| **k == *key, |(k, _)| std::hash::BuildHasher::hash_one(hasher, &**k));
        let mut entry = entry.or_insert_with(|| (key.into(), V::default()));
        change(&mut entry.get_mut().1);
        if !keep(&entry.get().1) {
            entry.remove();
        }
    }
}

/// Routes holding a key, by slot (sorted, for membership tests). Most keys have one holder:
/// up to four are kept inline, in the room a `Vec` header takes (smallvec's `union`), where a
/// `Vec` was a heap block per key (16 bytes for one slot: a first push reserves four) that a
/// delta's copy of the shard allocated again.
type Slots = smallvec::SmallVec<[Slot; 4]>;

/// Adds or removes `slot` in a key's list (a route listing a key twice is in it once).
fn mark(index: &mut Index<Slots>, key: &str, slot: Slot, add: bool) {
    index.update(
        key,
        |list| match (list.binary_search(&slot), add) {
            (Err(at), true) => list.insert(at, slot),
            (Ok(at), false) => {
                list.remove(at);
            }
            _ => {}
        },
        |list| !list.is_empty(),
    );
}

/// Counts a key's holders (`+1` per route and occurrence, as removal mirrors insertion).
fn count(index: &mut Index<u32>, key: &str, add: bool) {
    index.update(key, |n| if add { *n += 1 } else { *n = n.saturating_sub(1) }, |n| *n > 0);
}

/// Per-category reducers: which routes of the category hold a given host, path or method.
#[derive(Default, Clone)]
struct Category {
    by_host: Index<Slots>,
    by_uri: Index<Slots>,
    by_method: Index<Slots>,
}

/// A wildcard host: `*.example.com` (suffix) or `example.*` (prefix).
enum Wildcard {
    Suffix(Box<str>),
    Prefix(Box<str>),
}

impl Wildcard {
    fn parse(host: &str) -> Option<Wildcard> {
        if let Some(rest) = host.strip_prefix('*') {
            return Some(Wildcard::Suffix(rest.into()));
        }
        host.strip_suffix('*').map(|rest| Wildcard::Prefix(rest.into()))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Wildcard::Suffix(s) => host.len() > s.len() && host.ends_with(&**s),
            Wildcard::Prefix(p) => host.len() > p.len() && host.starts_with(&**p),
        }
    }
}

/// The compiled router. Cloning one shares everything; [`Router::with_changes`] copies only
/// what a delta changes.
#[derive(Default, Clone)]
pub struct Router {
    chunks: Vec<Arc<Vec<Option<Route>>>>,
    len: usize,
    /// Slots below this have been used; freed ones are reused first.
    high: Slot,
    free: Vec<Slot>,
    /// Each route's slot, by id.
    slots: crate::credentials::Index<Arc<str>, Slot>,
    plain_hosts: Index<u32>,
    /// Distinct wildcard hosts in route order (the first that matches is the host hit).
    wildcards: Arc<Vec<(Box<str>, Wildcard)>>,
    /// The routes holding each wildcard host, in route order (to keep `wildcards` in order).
    /// Each holder is the route's rank and the host's position among its hosts: Kong takes a
    /// route's wildcards in the order it lists them.
    wildcard_routes: Arc<HashMap<Box<str>, Holders>>,
    plain_paths: Index<u32>,
    /// Prefix paths grouped by length, longest first: path → routes holding it.
    prefixes: Vec<(usize, Index<Slots>)>,
    /// Every regex path in route order.
    regexes: Arc<Vec<(Slot, usize)>>,
    /// The regexes the fast engine runs, as one set (index = position in `regexes`), so a
    /// request is tested against all of them in one pass; `None` if any needs the slow engine.
    regex_set: Option<Arc<regex::RegexSet>>,
    /// Candidate indexes for routes without paths.
    host_routes: Index<Slots>,
    method_routes: Index<Slots>,
    categories: Vec<Category>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.len).finish_non_exhaustive()
    }
}

/// The request as the router sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The raw path, without the query string.
    pub path: &'a str,
    /// The raw `Host` header (a port is ignored).
    pub host: &'a str,
}

/// A match: the route and how its path matched (for `strip_path`).
#[derive(Debug, Clone)]
pub struct Match {
    pub route: Arc<RouteInfo>,
    pub strip: Option<Strip>,
}

impl Router {
    /// Builds the indexes for `specs` (in any order: routes are ranked here).
    pub fn new(specs: Vec<Arc<RouteSpec>>) -> Router {
        Router::default().with_changes(&[], specs)
    }

    /// This router without the routes `removed` (ids; unknown ones are ignored) and with
    /// `added`, which replace routes of the same id. Copies only the index shards and slot
    /// chunks the change touches; the regex set is rebuilt only when a regex route changed,
    /// the wildcard list only when a wildcard route did.
    pub fn with_changes(&self, removed: &[Arc<str>], added: Vec<Arc<RouteSpec>>) -> Router {
        let mut r = self.clone();
        if r.categories.is_empty() {
            r.categories = vec![Category::default(); CATEGORIES.len()];
        }
        let (mut regexes_changed, mut wildcards_changed) = (false, false);
        for id in removed {
            let (regex, wildcard) = r.remove(id);
            regexes_changed |= regex;
            wildcards_changed |= wildcard;
        }
        for spec in added {
            // A route of the same id (this router's, or earlier in `added`) is replaced.
            let (regex, wildcard) = r.remove(&spec.info.id);
            regexes_changed |= regex;
            wildcards_changed |= wildcard;
            let bits = (if spec.hosts.is_empty() { 0 } else { HOST })
                | (if spec.paths.is_empty() { 0 } else { URI })
                | (if spec.methods.is_empty() { 0 } else { METHOD });
            let category = CATEGORIES.iter().position(|c| *c == bits).unwrap_or(CATEGORIES.len() - 1);
            let rank = (std::cmp::Reverse(spec.regex_priority), spec.created_at, spec.info.id.clone());
            let route = Route { spec, bits, category, rank };
            regexes_changed |= route.spec.paths.iter().any(|p| matches!(p, PathRule::Regex { .. }));
            let slot = r.free.pop().unwrap_or_else(|| {
                r.high += 1;
                r.high - 1
            });
            wildcards_changed |= r.index(&route, slot, true);
            r.slots.insert(route.spec.info.id.clone(), slot);
            r.put(slot, route);
        }
        r.prefixes.retain(|(_, paths)| !paths.is_empty());
        if wildcards_changed {
            let mut wildcards: Vec<(&(Rank, usize), &Box<str>)> =
                r.wildcard_routes.iter().filter_map(|(host, ranks)| Some((ranks.first()?, host))).collect();
            wildcards.sort();
            r.wildcards =
                Arc::new(wildcards.into_iter().filter_map(|(_, h)| Some((h.clone(), Wildcard::parse(h)?))).collect());
        }
        if regexes_changed {
            let mut regexes: Vec<(&Rank, Slot, usize)> = Vec::new();
            for (slot, route) in r.routes() {
                for (pi, p) in route.spec.paths.iter().enumerate() {
                    if matches!(p, PathRule::Regex { .. }) {
                        regexes.push((&route.rank, slot, pi));
                    }
                }
            }
            regexes.sort();
            let regexes: Vec<(Slot, usize)> = regexes.into_iter().map(|(_, slot, pi)| (slot, pi)).collect();
            let patterns: Option<Vec<&str>> = regexes
                .iter()
                .map(|&(slot, pi)| r.route(slot).and_then(|route| route.spec.paths[pi].fast_pattern()))
                .collect();
            r.regex_set = patterns.filter(|p| p.len() > 1).and_then(|p| regex::RegexSet::new(p).ok()).map(Arc::new);
            r.regexes = Arc::new(regexes);
        }
        r
    }

    /// Takes the route `id` out, if it is here. Returns whether it had a regex path and
    /// whether it had a wildcard host.
    fn remove(&mut self, id: &Arc<str>) -> (bool, bool) {
        let Some(slot) = self.slots.remove(id) else { return (false, false) };
        let Some(route) = self.take(slot) else { return (false, false) };
        let regex = route.spec.paths.iter().any(|p| matches!(p, PathRule::Regex { .. }));
        let wildcard = self.index(&route, slot, false);
        self.free.push(slot);
        (regex, wildcard)
    }

    /// Adds (or removes) `route`, at `slot`, to (from) every index. Returns whether it holds a
    /// wildcard host.
    fn index(&mut self, route: &Route, slot: Slot, add: bool) -> bool {
        let spec = &route.spec;
        let mut wildcard = false;
        for (position, h) in spec.hosts.iter().enumerate() {
            if Wildcard::parse(h).is_some() {
                wildcard = true;
                let holders = Arc::make_mut(&mut self.wildcard_routes);
                let ranks = holders.entry(h.as_str().into()).or_default();
                let holder = (route.rank.clone(), position);
                if add {
                    ranks.insert(holder);
                } else {
                    ranks.remove(&holder);
                    if ranks.is_empty() {
                        holders.remove(h.as_str());
                    }
                }
            } else {
                count(&mut self.plain_hosts, h, add);
            }
            mark(&mut self.categories[route.category].by_host, h, slot, add);
        }
        for p in &spec.paths {
            if let PathRule::Prefix(s) = p {
                count(&mut self.plain_paths, s, add);
                let at = match self.prefixes.binary_search_by(|(len, _)| s.len().cmp(len)) {
                    Ok(at) => at,
                    Err(at) => {
                        self.prefixes.insert(at, (s.len(), Index::default()));
                        at
                    }
                };
                mark(&mut self.prefixes[at].1, s, slot, add);
            }
            mark(&mut self.categories[route.category].by_uri, p.source(), slot, add);
        }
        for m in &spec.methods {
            mark(&mut self.categories[route.category].by_method, m, slot, add);
        }
        if spec.paths.is_empty() {
            if !spec.hosts.is_empty() {
                for h in &spec.hosts {
                    mark(&mut self.host_routes, h, slot, add);
                }
            } else {
                for m in &spec.methods {
                    mark(&mut self.method_routes, m, slot, add);
                }
            }
        }
        wildcard
    }

    #[inline]
    fn route(&self, slot: Slot) -> Option<&Route> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)?.as_ref()
    }

    fn put(&mut self, slot: Slot, route: Route) {
        let slot = slot as usize;
        while slot / CHUNK >= self.chunks.len() {
            self.chunks.push(Arc::new(vec![None; CHUNK]));
        }
        Arc::make_mut(&mut self.chunks[slot / CHUNK])[slot % CHUNK] = Some(route);
        self.len += 1;
    }

    fn take(&mut self, slot: Slot) -> Option<Route> {
        let slot = slot as usize;
        let route = Arc::make_mut(self.chunks.get_mut(slot / CHUNK)?)[slot % CHUNK].take();
        self.len -= usize::from(route.is_some());
        route
    }

    /// Every route with its slot, in slot order.
    fn routes(&self) -> impl Iterator<Item = (Slot, &Route)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(i, r)| Some(((c * CHUNK + i) as Slot, r.as_ref()?)))
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The routes in the order they are tried.
    #[cfg(test)]
    pub(crate) fn specs(&self) -> impl Iterator<Item = &RouteSpec> {
        let mut routes: Vec<&Route> = self.routes().map(|(_, r)| r).collect();
        routes.sort_by(|a, b| a.rank.cmp(&b.rank));
        routes.into_iter().map(|r| &*r.spec)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route Kong 0.14 would pick for `req`, if any.
    pub fn find(&self, req: &Request<'_>) -> Option<Match> {
        let host = strip_port(req.host);
        let uri = req.path;
        // The host hit: a plain host, else the first wildcard (in route order) that matches.
        let plain_host = self.plain_hosts.get(host).is_some();
        let wildcard_hit =
            if plain_host { None } else { self.wildcards.iter().find(|(_, w)| w.matches(host)).map(|(s, _)| &**s) };
        let host_key = wildcard_hit.unwrap_or(host);

        // Candidates: every route that can fully match, reached through one index each.
        // Inline storage: the common request has a handful of candidates and allocates nothing.
        let mut candidates: smallvec::SmallVec<[Slot; 16]> = smallvec::SmallVec::new();
        let mut uri_hit: Option<&str> = None;
        let exact = self.plain_paths.get(uri).is_some();
        for (len, paths) in &self.prefixes {
            let Some(prefix) = uri.get(..*len) else { continue };
            if let Some(routes) = paths.get(prefix) {
                if uri_hit.is_none() {
                    uri_hit = Some(prefix);
                }
                candidates.extend_from_slice(routes);
            }
        }
        let mut regex_hit = None;
        let mut regex_match = |slot: Slot, pi: usize, candidates: &mut smallvec::SmallVec<[Slot; 16]>| {
            let Some(rule) = self.route(slot).and_then(|r| r.spec.paths.get(pi)) else { return };
            if regex_hit.is_none() {
                regex_hit = Some(rule.source());
            }
            candidates.push(slot);
        };
        match &self.regex_set {
            Some(set) => {
                for i in set.matches(uri).iter() {
                    let (idx, pi) = self.regexes[i];
                    regex_match(idx, pi, &mut candidates);
                }
            }
            None => {
                for &(slot, pi) in self.regexes.iter() {
                    if self.route(slot).and_then(|r| r.spec.paths.get(pi)).is_some_and(|p| p.matches(uri)) {
                        regex_match(slot, pi, &mut candidates);
                    }
                }
            }
        }
        if exact {
            uri_hit = Some(uri);
        } else if regex_hit.is_some() {
            uri_hit = regex_hit;
        }
        if let Some(routes) = self.host_routes.get(host_key) {
            candidates.extend_from_slice(routes);
        }
        if let Some(routes) = self.method_routes.get(req.method) {
            candidates.extend_from_slice(routes);
        }
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_unstable();
        candidates.dedup();
        let uri_key = uri_hit.unwrap_or(uri);

        // Keep the ones that fully match, remembering how their path matched, in route order.
        let mut matched: smallvec::SmallVec<[(&Route, Slot, Option<Strip>); 8]> = smallvec::SmallVec::new();
        for slot in candidates {
            let Some(route) = self.route(slot) else { continue };
            if let Some(strip) = self.full_match(route, host_key, uri, uri_key, req.method) {
                matched.push((route, slot, strip));
            }
        }
        if matched.len() > 1 {
            matched.sort_unstable_by(|a, b| a.0.rank.cmp(&b.0.rank));
        }
        // The category walk: categories in priority order; in each, the reduced set first.
        for (ci, bits) in CATEGORIES.iter().enumerate() {
            let mut in_category = matched.iter().filter(|(route, ..)| route.category == ci).peekable();
            if in_category.peek().is_none() {
                continue;
            }
            let reduced = self.reduced(ci, *bits, host_key, uri_key, req.method);
            let pick = match reduced {
                Some(set) => matched
                    .iter()
                    .filter(|(route, ..)| route.category == ci)
                    .find(|(_, slot, _)| set.binary_search(slot).is_ok())
                    .or_else(|| in_category.next()),
                None => in_category.next(),
            };
            if let Some((route, _, strip)) = pick {
                return Some(Match { route: route.spec.info.clone(), strip: *strip });
            }
        }
        None
    }

    /// The smallest of the category's host/uri/method route lists holding the request's keys.
    fn reduced(&self, ci: usize, bits: u8, host_key: &str, uri_key: &str, method: &str) -> Option<&Slots> {
        let cat = &self.categories[ci];
        let lists = [
            if bits & HOST != 0 { cat.by_host.get(host_key) } else { None },
            if bits & URI != 0 { cat.by_uri.get(uri_key) } else { None },
            if bits & METHOD != 0 { cat.by_method.get(method) } else { None },
        ];
        let mut best: Option<&Slots> = None;
        for l in lists.into_iter().flatten() {
            if best.is_none_or(|b| l.len() < b.len()) {
                best = Some(l);
            }
        }
        best
    }

    /// Kong's per-route check; `Some(strip)` when every criterion the route defines matches.
    #[allow(clippy::option_option)]
    fn full_match(
        &self,
        route: &Route,
        host_key: &str,
        uri: &str,
        uri_key: &str,
        method: &str,
    ) -> Option<Option<Strip>> {
        let spec = &route.spec;
        if route.bits & HOST != 0 && !spec.hosts.iter().any(|h| h == host_key) {
            return None;
        }
        if route.bits & METHOD != 0 && !spec.methods.iter().any(|m| m == method) {
            return None;
        }
        if route.bits & URI == 0 {
            return Some(None);
        }
        // The hit itself when the route holds it, else the first of its paths that matches.
        if let Some(rule) = spec.paths.iter().find(|p| p.source() == uri_key) {
            if let Some(strip) = rule.strip(uri) {
                return Some(Some(strip));
            }
        }
        spec.paths.iter().find_map(|p| p.strip(uri)).map(Some)
    }
}

/// The Host header without its port: everything from the first `:` after position 1 is cut.
fn strip_port(host: &str) -> &str {
    match host.get(1..).and_then(|rest| rest.find(':')) {
        Some(i) => &host[..i + 1],
        None => host,
    }
}

#[cfg(test)]
mod tests;
