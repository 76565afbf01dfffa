use std::sync::Arc;

use super::*;
use crate::service::Service;

fn spec(id: &str, hosts: &[&str], paths: &[&str], methods: &[&str], priority: i64, created: i64) -> Arc<RouteSpec> {
    Arc::new(RouteSpec {
        info: Arc::new(RouteInfo {
            id: id.into(),
            service: Arc::new(Service::for_tests(id)),
            strip_path: true,
            preserve_host: false,
            https_only: false,
            plugins: None,
            series: crate::metrics::Series::OFF,
            logged: std::sync::OnceLock::new(),
        }),
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
        paths: paths.iter().map(|p| PathRule::parse(p).unwrap()).collect(),
        methods: methods.iter().map(|s| s.to_string()).collect(),
        regex_priority: priority,
        created_at: created,
    })
}

fn find(r: &Router, method: &str, host: &str, path: &str) -> Option<String> {
    r.find(&Request { method, path, host }).map(|m| m.route.id.to_string())
}

#[test]
fn longest_prefix_wins_without_segment_boundaries() {
    let r = Router::new(vec![spec("short", &[], &["/foo"], &[], 0, 1), spec("long", &[], &["/foo/bar"], &[], 0, 2)]);
    assert_eq!(find(&r, "GET", "", "/foo/bar/baz").as_deref(), Some("long"));
    assert_eq!(find(&r, "GET", "", "/foobar").as_deref(), Some("short"));
    assert_eq!(find(&r, "GET", "", "/other"), None);
}

#[test]
fn regex_priority_then_age() {
    let r = Router::new(vec![
        spec("old", &[], &[r"/users/\d+"], &[], 0, 1),
        spec("young", &[], &[r"/users/\d+/profile"], &[], 0, 2),
        spec("prio", &[], &[r"/users/[0-9]+/profile"], &[], 5, 3),
    ]);
    assert_eq!(find(&r, "GET", "", "/users/12/profile").as_deref(), Some("prio"));
    assert_eq!(find(&r, "GET", "", "/users/12").as_deref(), Some("old"));
}

#[test]
fn a_matching_regex_beats_a_prefix_but_an_exact_path_skips_regexes() {
    let r =
        Router::new(vec![spec("prefix", &[], &["/api"], &[], 0, 1), spec("regex", &[], &["/api/v[0-9]"], &[], 0, 2)]);
    assert_eq!(find(&r, "GET", "", "/api/v1/x").as_deref(), Some("regex"));
    assert_eq!(find(&r, "GET", "", "/api").as_deref(), Some("prefix"));
}

#[test]
fn hosts_plain_wildcard_and_port_ignored() {
    let r = Router::new(vec![
        spec("plain", &["api.example.com"], &[], &[], 0, 1),
        spec("suffix", &["*.example.com"], &[], &[], 0, 2),
        spec("prefix", &["example.*"], &[], &[], 0, 3),
    ]);
    assert_eq!(find(&r, "GET", "api.example.com:8000", "/").as_deref(), Some("plain"));
    assert_eq!(find(&r, "GET", "a.b.example.com", "/").as_deref(), Some("suffix"));
    assert_eq!(find(&r, "GET", "example.org", "/").as_deref(), Some("prefix"));
    assert_eq!(find(&r, "GET", "example.com", "/").as_deref(), Some("prefix"), "example.* covers example.com");
    assert_eq!(find(&r, "GET", "example", "/"), None);
}

#[test]
fn more_criteria_beat_fewer() {
    let r = Router::new(vec![
        spec("uri", &[], &["/x"], &[], 0, 1),
        spec("host", &["h.com"], &[], &[], 0, 2),
        spec("host-uri", &["h.com"], &["/x"], &[], 0, 3),
        spec("all", &["h.com"], &["/x"], &["POST"], 0, 4),
        spec("method", &[], &[], &["PUT"], 0, 5),
    ]);
    assert_eq!(find(&r, "POST", "h.com", "/x").as_deref(), Some("all"));
    assert_eq!(find(&r, "GET", "h.com", "/x").as_deref(), Some("host-uri"));
    assert_eq!(find(&r, "GET", "h.com", "/y").as_deref(), Some("host"));
    assert_eq!(find(&r, "GET", "other", "/x").as_deref(), Some("uri"));
    assert_eq!(find(&r, "PUT", "other", "/y").as_deref(), Some("method"));
    assert_eq!(find(&r, "GET", "other", "/y"), None);
}

#[test]
fn strip_offsets_for_prefix_and_regex() {
    let r = Router::new(vec![spec("p", &[], &["/foo"], &[], 0, 1), spec("re", &[], &[r"/re/\d+"], &[], 0, 2)]);
    let m = r.find(&Request { method: "GET", path: "/foo/bar", host: "" }).unwrap();
    assert_eq!(m.strip, Some(Strip { offset: 4, regex: false }));
    let m = r.find(&Request { method: "GET", path: "/re/12/rest", host: "" }).unwrap();
    assert_eq!(m.strip, Some(Strip { offset: 7, regex: true }));
}

#[test]
fn ten_thousand_routes_match_through_indexes() {
    let specs = (0..10_000).map(|i| spec(&format!("r{i}"), &[], &[&format!("/svc/{i}")], &[], 0, i)).collect();
    let r = Router::new(specs);
    assert_eq!(find(&r, "GET", "", "/svc/9999/x").as_deref(), Some("r9999"));
    assert_eq!(find(&r, "GET", "", "/svc/1/x").as_deref(), Some("r1"));
}

/// A random route over a small vocabulary, so that routes share hosts, paths and methods and
/// tie on priority and creation time.
fn random_route(rng: &mut fastrand::Rng, id: &str) -> Arc<RouteSpec> {
    let some = |rng: &mut fastrand::Rng, from: &[&'static str]| -> Vec<&'static str> {
        from.iter().copied().filter(|_| rng.u8(..3) == 0).collect()
    };
    let hosts = some(rng, &["a.test", "b.test", "*.w.test", "x.*"]);
    let paths = some(rng, &["/a", "/a/b", "/ab", r"/r/\d+", r"/r/(?=1)\d", "/c"]);
    let methods = some(rng, &["GET", "POST"]);
    spec(id, &hosts, &paths, &methods, rng.i64(0..2), rng.i64(0..3))
}

/// Routers reached by random sequences of route changes match every request as a router
/// built at once from the same routes does.
#[test]
fn a_router_changed_route_by_route_matches_as_one_built_at_once() {
    let requests: Vec<(&str, &str, &str)> = ["GET", "POST", "PUT"]
        .iter()
        .flat_map(|m| {
            ["a.test", "b.test:8000", "q.w.test", "x.y", ""].iter().flat_map(move |h| {
                ["/a", "/a/b/c", "/ab", "/r/12", "/r/x", "/c", "/d", "/"].iter().map(move |p| (*m, *h, *p))
            })
        })
        .collect();
    let describe = |r: &Router| -> Vec<Option<(String, Option<Strip>)>> {
        requests
            .iter()
            .map(|(method, host, path)| {
                r.find(&Request { method, path, host }).map(|m| (m.route.id.to_string(), m.strip))
            })
            .collect()
    };
    for seed in 0..60 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut current: std::collections::BTreeMap<String, Arc<RouteSpec>> = Default::default();
        let mut router = Router::default();
        for step in 0..40 {
            let (mut removed, mut added) = (Vec::new(), Vec::new());
            for _ in 0..1 + rng.usize(..3) {
                let id = format!("r{}", rng.usize(..16));
                if rng.u8(..4) == 0 {
                    current.remove(&id);
                    added.retain(|a: &Arc<RouteSpec>| *a.info.id != *id);
                    removed.push(Arc::from(id.as_str()));
                } else {
                    let route = random_route(&mut rng, &id);
                    current.insert(id, route.clone());
                    added.retain(|a: &Arc<RouteSpec>| a.info.id != route.info.id);
                    added.push(route);
                }
            }
            // A route removed then added again in one change is added.
            removed.retain(|id| !added.iter().any(|a| &a.info.id == id));
            assert!(!added.is_empty() || !removed.is_empty());
            router = router.with_changes(&removed, added);
            let whole = Router::new(current.values().cloned().collect());
            assert_eq!(router.len(), current.len());
            assert_eq!(describe(&router), describe(&whole), "seed {seed} step {step}");
        }
    }
}

/// Routes fill the slot table densely, and freed slots are reused.
#[test]
fn slots_are_dense_and_reused() {
    let specs: Vec<Arc<RouteSpec>> = (0..1_000).map(|i| spec(&format!("r{i}"), &[], &["/p"], &[], 0, i)).collect();
    let r = Router::new(specs);
    assert_eq!(r.chunks.len(), 1_000usize.div_ceil(CHUNK));
    let r = r.with_changes(&[Arc::from("r5")], vec![spec("new", &[], &["/q"], &[], 0, 0)]);
    assert_eq!((r.len(), r.high), (1_000, 1_000), "the freed slot was reused");
    assert_eq!(find(&r, "GET", "", "/q").as_deref(), Some("new"));
}

/// A route's wildcard hosts are tried in the order it lists them, not alphabetically: here
/// `api.*` is the host hit (it comes first in route A), so route B serves the GET.
#[test]
fn a_routes_wildcards_are_tried_in_the_order_it_lists_them() {
    let r = Router::new(vec![
        spec("a", &["api.*", "*.example.com"], &[], &["POST"], 0, 1),
        spec("b", &["api.*"], &[], &[], 0, 2),
    ]);
    assert_eq!(find(&r, "GET", "api.example.com", "/").as_deref(), Some("b"));
}

/// Two routes of one id in one change: the last is kept, and removing the id removes it.
#[test]
fn a_route_added_twice_in_one_change_is_kept_once() {
    let r = Router::default()
        .with_changes(&[], vec![spec("x", &[], &["/one"], &[], 0, 1), spec("x", &[], &["/two"], &[], 0, 1)]);
    assert_eq!((r.len(), find(&r, "GET", "", "/one"), find(&r, "GET", "", "/two").as_deref()), (1, None, Some("x")));
    let r = r.with_changes(&[Arc::from("x")], Vec::new());
    assert_eq!((r.len(), find(&r, "GET", "", "/two")), (0, None));
}
