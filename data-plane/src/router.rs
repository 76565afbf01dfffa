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

use std::collections::{HashMap, HashSet};

/// Lookups hash request strings (host, path prefixes, method) several times per request:
/// foldhash (randomly seeded per process) rather than SipHash. The tables' keys come from
/// configuration, so request input cannot grow a collision chain.
type Hasher = foldhash::fast::RandomState;
use std::sync::Arc;

pub use path::{PathRule, Strip};

use crate::compiled::Service;

/// What the proxy needs from a matched route.
#[derive(Debug)]
pub struct RouteInfo {
    pub id: Arc<str>,
    pub service: Arc<Service>,
    pub strip_path: bool,
    pub preserve_host: bool,
    /// `protocols` is `["https"]` only: plain HTTP gets a 426.
    pub https_only: bool,
    /// The plugins that apply on this route, in run order.
    pub plugins: Arc<crate::plugins::Chain>,
    /// Where its requests are counted (`crate::metrics`).
    pub series: crate::metrics::Series,
    /// The route and its service as log records show them, serialized the first time a
    /// request on the route is logged rather than on every request. A change to either entity
    /// compiles a new `RouteInfo`, so this never goes stale.
    pub logged: std::sync::OnceLock<Arc<crate::plugins::log::Entities>>,
}

impl RouteInfo {
    /// [`RouteInfo::logged`], made from the configuration the route was compiled from.
    pub fn logged(&self, set: &gatehouse_shared::snapshot::ConfigSet) -> Arc<crate::plugins::log::Entities> {
        self.logged.get_or_init(|| Arc::new(crate::plugins::log::Entities::of(set, &self.id, &self.service.id))).clone()
    }
}

/// A route as the router holds it.
#[derive(Debug)]
pub struct RouteSpec {
    pub info: Arc<RouteInfo>,
    pub hosts: Vec<String>,
    pub paths: Vec<PathRule>,
    pub methods: Vec<String>,
    pub regex_priority: i64,
    pub created_at: i64,
}

const HOST: u8 = 1;
const URI: u8 = 2;
const METHOD: u8 = 4;
const CATEGORIES: [u8; 7] = [HOST | URI | METHOD, HOST | URI, HOST | METHOD, URI | METHOD, HOST, URI, METHOD];

struct Route {
    /// Shared with the compiled configuration, which rebuilds the indexes from its routes'
    /// specs when a delta changes any route (the specs of the others are reused as they are).
    spec: Arc<RouteSpec>,
    bits: u8,
    category: usize,
}

/// Route indexes (in global order) by a host, path or method string.
type RoutesByKey = HashMap<Box<str>, Vec<u32>, Hasher>;

/// Per-category reducers: which routes of the category hold a given host, path or method.
#[derive(Default)]
struct Category {
    by_host: RoutesByKey,
    by_uri: RoutesByKey,
    by_method: RoutesByKey,
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

/// The compiled router.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    plain_hosts: HashSet<Box<str>, Hasher>,
    /// Distinct wildcard hosts in route order (the first that matches is the host hit).
    wildcards: Vec<(Box<str>, Wildcard)>,
    plain_paths: HashSet<Box<str>, Hasher>,
    /// Prefix paths grouped by length, longest first: path → routes holding it.
    prefixes: Vec<(usize, RoutesByKey)>,
    /// Every regex path in route order.
    regexes: Vec<(u32, usize)>,
    /// The regexes the fast engine runs, as one set (index = position in `regexes`), so a
    /// request is tested against all of them in one pass; `None` if any needs the slow engine.
    regex_set: Option<regex::RegexSet>,
    methods: HashSet<Box<str>, Hasher>,
    /// Candidate indexes for routes without paths.
    host_routes: RoutesByKey,
    method_routes: RoutesByKey,
    categories: Vec<Category>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes.len()).finish_non_exhaustive()
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
    /// Builds the indexes. Routes are ordered here (ties between equal `regex_priority` and
    /// `created_at` broken by id, so the order never depends on the input's).
    pub fn new(mut specs: Vec<Arc<RouteSpec>>) -> Router {
        specs.sort_by(|a, b| {
            b.regex_priority
                .cmp(&a.regex_priority)
                .then(a.created_at.cmp(&b.created_at))
                .then(a.info.id.cmp(&b.info.id))
        });
        let mut r =
            Router { categories: (0..CATEGORIES.len()).map(|_| Category::default()).collect(), ..Router::default() };
        let mut prefixes: HashMap<usize, RoutesByKey> = HashMap::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let idx = i as u32;
            let bits = (if spec.hosts.is_empty() { 0 } else { HOST })
                | (if spec.paths.is_empty() { 0 } else { URI })
                | (if spec.methods.is_empty() { 0 } else { METHOD });
            let category = CATEGORIES.iter().position(|c| *c == bits).unwrap_or(CATEGORIES.len() - 1);
            let cat = &mut r.categories[category];
            for h in &spec.hosts {
                match Wildcard::parse(h) {
                    Some(w) => {
                        if !r.wildcards.iter().any(|(s, _)| &**s == h) {
                            r.wildcards.push((h.as_str().into(), w));
                        }
                    }
                    None => {
                        r.plain_hosts.insert(h.as_str().into());
                    }
                }
                push(cat.by_host.entry(h.as_str().into()).or_default(), idx);
            }
            for (pi, p) in spec.paths.iter().enumerate() {
                match p {
                    PathRule::Prefix(s) => {
                        r.plain_paths.insert(s.as_str().into());
                        push(prefixes.entry(s.len()).or_default().entry(s.as_str().into()).or_default(), idx);
                    }
                    PathRule::Regex { .. } => r.regexes.push((idx, pi)),
                }
                push(cat.by_uri.entry(p.source().into()).or_default(), idx);
            }
            for m in &spec.methods {
                r.methods.insert(m.as_str().into());
                push(cat.by_method.entry(m.as_str().into()).or_default(), idx);
            }
            if spec.paths.is_empty() {
                if !spec.hosts.is_empty() {
                    for h in &spec.hosts {
                        push(r.host_routes.entry(h.as_str().into()).or_default(), idx);
                    }
                } else {
                    for m in &spec.methods {
                        push(r.method_routes.entry(m.as_str().into()).or_default(), idx);
                    }
                }
            }
            r.routes.push(Route { spec, bits, category });
        }
        let patterns: Option<Vec<&str>> =
            r.regexes.iter().map(|&(idx, pi)| r.routes[idx as usize].spec.paths[pi].fast_pattern()).collect();
        r.regex_set = patterns.filter(|p| p.len() > 1).and_then(|p| regex::RegexSet::new(p).ok());
        let mut prefixes: Vec<_> = prefixes.into_iter().collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0));
        r.prefixes = prefixes;
        r
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// The routes in the order they are tried.
    #[cfg(test)]
    pub(crate) fn specs(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().map(|r| &*r.spec)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route Kong 0.14 would pick for `req`, if any.
    pub fn find(&self, req: &Request<'_>) -> Option<Match> {
        let host = strip_port(req.host);
        let uri = req.path;
        // The host hit: a plain host, else the first wildcard (in route order) that matches.
        let plain_host = self.plain_hosts.contains(host);
        let wildcard_hit =
            if plain_host { None } else { self.wildcards.iter().find(|(_, w)| w.matches(host)).map(|(s, _)| &**s) };
        let host_key = wildcard_hit.unwrap_or(host);

        // Candidates: every route that can fully match, reached through one index each.
        // Inline storage: the common request has a handful of candidates and allocates nothing.
        let mut candidates: smallvec::SmallVec<[u32; 16]> = smallvec::SmallVec::new();
        let mut uri_hit: Option<&str> = None;
        let exact = self.plain_paths.contains(uri);
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
        let mut regex_match = |idx: u32, pi: usize, candidates: &mut smallvec::SmallVec<[u32; 16]>| {
            let rule = &self.routes[idx as usize].spec.paths[pi];
            if regex_hit.is_none() {
                regex_hit = Some(rule.source());
            }
            candidates.push(idx);
        };
        match &self.regex_set {
            Some(set) => {
                for i in set.matches(uri).iter() {
                    let (idx, pi) = self.regexes[i];
                    regex_match(idx, pi, &mut candidates);
                }
            }
            None => {
                for &(idx, pi) in &self.regexes {
                    if self.routes[idx as usize].spec.paths[pi].matches(uri) {
                        regex_match(idx, pi, &mut candidates);
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

        // Keep the ones that fully match, remembering how their path matched.
        let mut matched: smallvec::SmallVec<[(u32, Option<Strip>); 8]> = smallvec::SmallVec::new();
        for idx in candidates {
            if let Some(strip) = self.full_match(&self.routes[idx as usize], host_key, uri, uri_key, req.method) {
                matched.push((idx, strip));
            }
        }
        // The category walk: categories in priority order; in each, the reduced set first.
        for (ci, bits) in CATEGORIES.iter().enumerate() {
            let mut in_category =
                matched.iter().filter(|(idx, _)| self.routes[*idx as usize].category == ci).peekable();
            if in_category.peek().is_none() {
                continue;
            }
            let reduced = self.reduced(ci, *bits, host_key, uri_key, req.method);
            let pick = match reduced {
                Some(set) => matched
                    .iter()
                    .filter(|(idx, _)| self.routes[*idx as usize].category == ci)
                    .find(|(idx, _)| set.binary_search(idx).is_ok())
                    .or_else(|| in_category.next()),
                None => in_category.next(),
            };
            if let Some((idx, strip)) = pick {
                return Some(Match { route: self.routes[*idx as usize].spec.info.clone(), strip: *strip });
            }
        }
        None
    }

    /// The smallest of the category's host/uri/method route lists holding the request's keys.
    fn reduced(&self, ci: usize, bits: u8, host_key: &str, uri_key: &str, method: &str) -> Option<&Vec<u32>> {
        let cat = &self.categories[ci];
        let lists = [
            if bits & HOST != 0 { cat.by_host.get(host_key) } else { None },
            if bits & URI != 0 { cat.by_uri.get(uri_key) } else { None },
            if bits & METHOD != 0 { cat.by_method.get(method) } else { None },
        ];
        let mut best: Option<&Vec<u32>> = None;
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

fn push(list: &mut Vec<u32>, idx: u32) {
    if list.last() != Some(&idx) {
        list.push(idx);
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
