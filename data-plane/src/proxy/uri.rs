//! The upstream request target (kong-0.14-core-behavior §4.4): `strip_path`, then the
//! Service path joined on, then the query string exactly as received.

use crate::router::Strip;

/// Appends the upstream path and query for a request path `req` (no query), the route's
/// strip information (when `strip_path` applies), the Service path, and the raw query (`None`
/// when the request had no `?`): written straight into the upstream request, with no string
/// of its own per request.
pub fn write_upstream_target(
    out: &mut Vec<u8>,
    req: &str,
    strip: Option<Strip>,
    service_path: Option<&str>,
    query: Option<&str>,
) {
    let start = out.len();
    // The request URI after stripping: `rest`, behind a `/` when `slash`.
    let (slash, rest) = match strip {
        Some(s) if req != "/" => {
            let rest = req.get(s.offset..).unwrap_or("");
            (s.regex || !rest.starts_with('/'), rest)
        }
        _ => (false, req),
    };
    let uri_is_root = if slash { rest.is_empty() } else { rest == "/" };
    let push_uri = |out: &mut Vec<u8>| {
        if slash {
            out.push(b'/');
        }
        out.extend_from_slice(rest.as_bytes());
    };
    let p = service_path.unwrap_or("/");
    let f = p.strip_suffix('/').unwrap_or(p);
    if p == "/" {
        push_uri(out);
    } else if !uri_is_root {
        out.extend_from_slice(f.as_bytes());
        push_uri(out);
    } else if p.ends_with('/') {
        out.extend_from_slice(if req == "/" || req.ends_with('/') { p } else { f }.as_bytes());
    } else {
        out.extend_from_slice(f.as_bytes());
        if req != "/" && req.ends_with('/') {
            out.push(b'/');
        }
    }
    if out.len() == start {
        out.push(b'/');
    }
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_target(req: &str, strip: Option<Strip>, service_path: Option<&str>, query: Option<&str>) -> String {
        let mut out = Vec::new();
        write_upstream_target(&mut out, req, strip, service_path, query);
        String::from_utf8(out).unwrap()
    }

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
