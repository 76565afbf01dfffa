//! The upstream request target (kong-0.14-core-behavior §4.4): `strip_path`, then the
//! Service path joined on, then the query string exactly as received.

use std::borrow::Cow;

use crate::router::Strip;

/// Builds the upstream path and query for a request path `req` (no query), the route's
/// strip information (when `strip_path` applies), the Service path, and the raw query (`None`
/// when the request had no `?`).
pub fn upstream_target(req: &str, strip: Option<Strip>, service_path: Option<&str>, query: Option<&str>) -> String {
    let uri: Cow<'_, str> = match strip {
        Some(s) if req != "/" => {
            let rest = req.get(s.offset..).unwrap_or("");
            if s.regex || !rest.starts_with('/') {
                Cow::Owned(format!("/{rest}"))
            } else {
                Cow::Borrowed(rest)
            }
        }
        _ => Cow::Borrowed(req),
    };
    let uri = uri.as_ref();
    let p = service_path.unwrap_or("/");
    let f = p.strip_suffix('/').unwrap_or(p);
    let mut out = String::with_capacity(p.len() + uri.len() + query.map_or(0, |q| q.len() + 1));
    if p == "/" {
        out.push_str(uri);
    } else if uri != "/" {
        out.push_str(f);
        out.push_str(uri);
    } else if p.ends_with('/') {
        out.push_str(if req == "/" || req.ends_with('/') { p } else { f });
    } else {
        out.push_str(f);
        if req != "/" && req.ends_with('/') {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(route_path: &str) -> Option<Strip> {
        Some(Strip { offset: route_path.len(), regex: false })
    }

    /// Every row of the reference's table: (service path, route path, request, strip=true, strip=false).
    #[test]
    fn reference_table() {
        let rows = [
            ("/", "/", "/foo/bar", "/foo/bar", "/foo/bar"),
            ("/", "/foo/bar", "/foo/bar", "/", "/foo/bar"),
            ("/", "/foo", "/foo/bar/", "/bar/", "/foo/bar/"),
            ("/", "/foo", "/foobar", "/bar", "/foobar"),
            ("/foo/bar", "/", "/", "/foo/bar", "/foo/bar"),
            ("/foo/bar", "/", "/foo/bar/", "/foo/bar/foo/bar/", "/foo/bar/foo/bar/"),
            ("/foo/bar", "/foo/bar", "/foo/bar", "/foo/bar", "/foo/bar/foo/bar"),
            ("/foo/bar/", "/", "/", "/foo/bar/", "/foo/bar/"),
            ("/foo/bar/", "/foo/bar", "/foo/bar", "/foo/bar", "/foo/bar/foo/bar"),
            ("/foo/bar/", "/foo/bar", "/foo/bar/", "/foo/bar/", "/foo/bar/foo/bar/"),
        ];
        for (svc, route, req, stripped, kept) in rows {
            assert_eq!(upstream_target(req, prefix(route), Some(svc), None), stripped, "strip: {svc} {route} {req}");
            assert_eq!(upstream_target(req, None, Some(svc), None), kept, "no strip: {svc} {route} {req}");
        }
        assert_eq!(upstream_target("/x", None, Some("/api"), Some("a=1")), "/api/x?a=1");
        assert_eq!(upstream_target("/x", None, None, Some("")), "/x?");
    }

    #[test]
    fn regex_strip_prepends_a_slash() {
        let strip = Some(Strip { offset: 7, regex: true });
        assert_eq!(upstream_target("/re/12/rest", strip, None, None), "/rest");
    }
}
