//! The upstream request target (kong-0.14-core-behavior.md §4.4): `strip_path`, the
//! Service's `path`, and the query string, as the upstream receives them.

use gatehouse_tests::json;
use gatehouse_tests::proxy::{Standalone, Upstream};

/// One row: service path (`None` = no path), route path (`None` = a hosts-only route),
/// request target, expected upstream target with `strip_path=true`, with `strip_path=false`.
struct Row {
    service_path: Option<&'static str>,
    route_path: Option<&'static str>,
    request: &'static str,
    stripped: &'static str,
    kept: &'static str,
}

const fn row(
    service_path: Option<&'static str>,
    route_path: Option<&'static str>,
    request: &'static str,
    stripped: &'static str,
    kept: &'static str,
) -> Row {
    Row { service_path, route_path, request, stripped, kept }
}

const ROWS: &[Row] = &[
    // The table of §4.4, row by row.
    row(Some("/"), Some("/"), "/foo/bar", "/foo/bar", "/foo/bar"),
    row(Some("/"), Some("/foo/bar"), "/foo/bar", "/", "/foo/bar"),
    row(Some("/"), Some("/foo"), "/foo/bar/", "/bar/", "/foo/bar/"),
    row(Some("/"), Some("/foo"), "/foobar", "/bar", "/foobar"),
    row(Some("/foo/bar"), Some("/"), "/", "/foo/bar", "/foo/bar"),
    row(Some("/foo/bar"), Some("/"), "/foo/bar/", "/foo/bar/foo/bar/", "/foo/bar/foo/bar/"),
    row(Some("/foo/bar"), Some("/foo/bar"), "/foo/bar", "/foo/bar", "/foo/bar/foo/bar"),
    row(Some("/foo/bar/"), Some("/"), "/", "/foo/bar/", "/foo/bar/"),
    row(Some("/foo/bar/"), Some("/foo/bar"), "/foo/bar", "/foo/bar", "/foo/bar/foo/bar"),
    row(Some("/foo/bar/"), Some("/foo/bar"), "/foo/bar/", "/foo/bar/", "/foo/bar/foo/bar/"),
    row(Some("/api"), None, "/x?a=1", "/api/x?a=1", "/api/x?a=1"),
    // No service path behaves as `/`; a bare `?` is kept.
    row(None, Some("/foo"), "/foo/bar?", "/bar?", "/foo/bar?"),
    // The query string is appended unchanged, escapes and all.
    row(Some("/"), Some("/foo"), "/foo?a=1&b=%20x&c", "/?a=1&b=%20x&c", "/foo?a=1&b=%20x&c"),
    // The whole request path stripped, service path without a trailing slash.
    row(Some("/svc"), Some("/foo"), "/foo", "/svc", "/svc/foo"),
    row(Some("/svc"), Some("/foo"), "/foo/", "/svc/", "/svc/foo/"),
    // The path is used raw: no percent-decoding, no dot-segment normalisation.
    row(Some("/"), Some("/foo"), "/foo/%2E%2E/x%2Fy", "/%2E%2E/x%2Fy", "/foo/%2E%2E/x%2Fy"),
    // A regex route path strips what the regex matched (plus one `/`).
    row(Some("/"), Some(r"/users/\d+"), "/users/12/profile?x=1", "/profile?x=1", "/users/12/profile?x=1"),
    row(Some("/base"), Some(r"/users/\d+"), "/users/12", "/base", "/base/users/12"),
];

/// Every row of §4.4's table (and a few more), each with `strip_path` true and false.
/// Rows are told apart by the route's host, so all of them live in one configuration.
#[tokio::test]
async fn upstream_uri_table() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("uri").await;
    for (i, r) in ROWS.iter().enumerate() {
        let mut service = json!({"name": format!("row{i}")});
        if let Some(p) = r.service_path {
            service["path"] = json!(p);
        }
        let service = gw.service_for(&up, service).await;
        for strip in [true, false] {
            let mut route = json!({"hosts": [host(i, strip)], "strip_path": strip});
            if let Some(p) = r.route_path {
                route["paths"] = json!([p]);
            }
            gw.route(&service, route).await;
        }
    }
    gw.sync().await;

    let mut failures = Vec::new();
    for (i, r) in ROWS.iter().enumerate() {
        for (strip, want) in [(true, r.stripped), (false, r.kept)] {
            let reply = gw.get_with(r.request, &[("Host", &host(i, strip))]).await;
            let got =
                if reply.status == 200 { reply.echo().path().to_owned() } else { format!("HTTP {}", reply.status) };
            if got != want {
                failures.push(format!(
                    "row {i}: service path {:?}, route path {:?}, strip_path={strip}, request {:?}: \
                     upstream got {got:?}, expected {want:?}",
                    r.service_path, r.route_path, r.request
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), ROWS.len() * 2, failures.join("\n"));
}

fn host(row: usize, strip: bool) -> String {
    format!("row{row}-{}.test", if strip { "strip" } else { "keep" })
}

/// A route that matches by host only never strips, whatever `strip_path` says, and the
/// method and body reach the upstream unchanged.
#[tokio::test]
async fn host_only_route_keeps_path_method_and_body() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("hosts-only").await;
    gw.expose(&up, json!({}), json!({"hosts": ["only.test"], "strip_path": true})).await;
    gw.sync().await;

    let body = "x".repeat(1234);
    let raw = format!(
        "PUT /deep/path/?q=%41 HTTP/1.1\r\nHost: only.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let reply = gw.send_raw(raw.as_bytes()).await.expect("a response");
    let echo = reply.echo();
    assert_eq!(echo.path(), "/deep/path/?q=%41");
    assert_eq!(echo.method(), "PUT");
    assert_eq!(echo.body_len(), 1234);
}
