#![allow(clippy::unwrap_used)]
//! Transport-level behaviour and generic bad input: 404/405, CORS, content types,
//! unparsable and oversized bodies, wrong types. Every rejected write must store nothing.

use gatehouse_tests::reqwest::Method;
use gatehouse_tests::*;

both!(unknown_path_is_404_not_found, |gw| async move {
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/services/x/nope"),
        (Method::DELETE, "/consumers/x/y/z"),
    ] {
        let r = gw.request(method, path).await;
        r.assert_status(404);
        assert_eq!(r.body, json!({"message": "Not found"}), "{}", r.what);
        assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"), "{}", r.what);
    }
});

both!(known_path_with_wrong_method_is_405, |gw| async move {
    gw.create_upstream("up.example").await;
    let svc = gw.create_service("svc").await;
    let route = gw.create_route(&id_of(&svc), &["/r"]).await;
    let before = gw.snapshot().await;
    for (method, path) in [
        (Method::DELETE, "/services".to_owned()),
        (Method::PATCH, "/services".to_owned()),
        (Method::PUT, "/consumers".to_owned()),
        (Method::POST, "/status".to_owned()),
        (Method::DELETE, "/".to_owned()),
        (Method::POST, "/plugins/enabled".to_owned()),
        (Method::DELETE, "/plugins/schema/key-auth".to_owned()),
        (Method::PUT, "/upstreams/up.example".to_owned()),
        (Method::DELETE, "/upstreams/up.example/targets".to_owned()),
        (Method::DELETE, format!("/routes/{}/service", id_of(&route))),
        (Method::DELETE, "/snis".to_owned()),
    ] {
        let r = gw.request(method, &path).await;
        r.assert_status(405);
        assert_eq!(r.body, json!({"message": "Method not allowed"}), "{}", r.what);
    }
    gw.assert_unchanged(&before).await;
});

// Unlike Kong 0.14, no page may read the Admin API unless its origin is listed
// (`admin_cors_origins`, empty by default); OPTIONS is still answered.
both!(cors_headers_and_options, |gw| async move {
    for path in ["/", "/services", "/nope", "/routes/not-a-uuid"] {
        let r =
            gw.send(format!("GET {path}"), gw.client().get(gw.url(path)).header("Origin", "http://evil.example")).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{}", r.what);
    }

    for path in ["/services", "/services/whatever", "/plugins"] {
        let r = gw.options(path).await;
        r.assert_status(204);
        assert_eq!(r.text, "", "{}: 204 must have an empty body", r.what);
        let methods: Vec<String> = r
            .header("access-control-allow-methods")
            .unwrap_or_else(|| panic!("{}: no Access-Control-Allow-Methods", r.what))
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        for m in ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"] {
            assert!(methods.iter().any(|x| x == m), "{m} missing in {methods:?}");
        }
        let headers = r
            .header("access-control-allow-headers")
            .unwrap_or_else(|| panic!("{}: no Access-Control-Allow-Headers", r.what));
        assert!(headers.to_ascii_lowercase().contains("content-type"), "{headers}");
    }
});

both!(paths_accept_a_trailing_slash, |gw| async move {
    gw.get("/services/").await.assert_status(200);
    let c = gw.post_json("/consumers/", &json!({"username": "bob"})).await.expect(201);
    let got = gw.get("/consumers/bob/").await.expect(200);
    assert_eq!(got["id"], c["id"]);
    gw.get("/status/").await.assert_status(200);
    let s = gw.create_service("svc").await;
    gw.create_route(&id_of(&s), &["/x"]).await;
    gw.get("/services/svc/routes/").await.assert_status(200);
    gw.get("/plugins/enabled/").await.assert_status(200);
    gw.get("/plugins/schema/key-auth/").await.assert_status(200);
    gw.create_upstream("up.example").await;
    gw.create_target("up.example", "1.2.3.4:80", 10).await;
    let all = gw.get("/upstreams/up.example/targets/all/").await.expect(200);
    assert_eq!(all["total"], json!(1));
    gw.delete("/upstreams/up.example/targets/1.2.3.4:80/").await.assert_status(204);
});

both!(malformed_json_is_400_cannot_parse, |gw| async move {
    gw.create_service("svc").await;
    gw.create_consumer("bob").await;
    let p = gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    gw.create_upstream("up.example").await;
    let before = gw.snapshot().await;
    let plugin_path = format!("/plugins/{}", id_of(&p));
    for (method, path) in [
        (Method::POST, "/services"),
        (Method::PATCH, "/services/svc"),
        (Method::PUT, "/services/svc"),
        (Method::POST, "/routes"),
        (Method::PUT, "/consumers/bob"),
        (Method::POST, "/plugins"),
        (Method::PATCH, plugin_path.as_str()),
        (Method::POST, "/upstreams"),
        (Method::PUT, "/upstreams"),
        (Method::POST, "/upstreams/up.example/targets"),
        (Method::POST, "/certificates"),
        (Method::POST, "/snis"),
    ] {
        for body in ["{\"name\":", "not json at all", "", "{\"a\":1}}"] {
            let r = gw.raw(method.clone(), path, Some("application/json"), body).await;
            r.assert_status(400);
            assert_eq!(r.body, json!({"message": "Cannot parse JSON body"}), "{} body {body:?}", r.what);
        }
    }
    gw.assert_unchanged(&before).await;
});

both!(unsupported_content_type_is_415, |gw| async move {
    gw.create_service("svc").await;
    let before = gw.snapshot().await;
    for (method, path) in [
        (Method::POST, "/services"),
        (Method::PUT, "/services/other"),
        (Method::PATCH, "/services/svc"),
        (Method::POST, "/consumers"),
        (Method::POST, "/plugins"),
        (Method::POST, "/upstreams"),
    ] {
        for ct in [Some("text/plain"), Some("application/xml"), None] {
            let r = gw.raw(method.clone(), path, ct, "name=x&host=example.com").await;
            r.assert_status(415);
            assert_eq!(r.body, json!({"message": "Unsupported Media Type"}), "{}", r.what);
        }
    }
    gw.assert_unchanged(&before).await;
});

// Postgres cannot store a NUL; both stores give the same 400 for one anywhere in a request.
both!(nul_characters_are_400_on_both_stores, |gw| async move {
    gw.create_consumer("bob").await;
    let before = gw.snapshot().await;
    let nul_message = |r: &Resp| {
        r.assert_status(400);
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains("NUL")), "{}: {}", r.what, r.text);
    };
    nul_message(&gw.post_json("/consumers", &json!({"username": "a\u{0}b"})).await);
    nul_message(&gw.post_json("/consumers", &json!({"username": "ok", "custom_id": {"x\u{0}": 1}})).await);
    nul_message(&gw.post_form("/consumers", &[("username", "a\u{0}b")]).await);
    nul_message(&gw.post_json("/plugins", &json!({"name": "key-auth", "config": {"key_names": ["k\u{0}"]}})).await);
    for path in ["/consumers/a%00b", "/consumers?custom_id=x%00y", "/plugins?name=x%00y", "/services/a%00"] {
        nul_message(&gw.get(path).await);
    }
    nul_message(&gw.patch_json("/consumers/a%00b", &json!({"username": "c"})).await);
    // Bytes that do not decode to UTF-8 are a 400 in the same shape, not axum's text.
    for path in ["/services/%ff%fe", "/consumers?custom_id=%ff"] {
        let r = gw.get(path).await;
        r.assert_status(400);
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains("UTF-8")), "{}: {}", r.what, r.text);
    }
    gw.assert_unchanged(&before).await;
});

both!(json_content_type_with_charset_is_accepted, |gw| async move {
    let r = gw.raw(Method::POST, "/consumers", Some("application/json; charset=utf-8"), r#"{"username":"bob"}"#).await;
    let c = r.expect(201);
    assert_eq!(c["username"], json!("bob"));
});

both!(empty_body_without_content_type_is_an_empty_entity, |gw| async move {
    let before = gw.snapshot().await;
    let body = gw.raw(Method::POST, "/consumers", None, "").await.n_error(400, 2, "schema violation");
    assert_eq!(
        body["fields"],
        json!({"@entity": ["at least one of these fields must be non-empty: 'custom_id', 'username'"]})
    );
    gw.assert_unchanged(&before).await;
});

both!(get_and_delete_ignore_bodies, |gw| async move {
    gw.create_service("svc").await;
    let r = gw.raw(Method::GET, "/services", Some("application/json"), "{oops").await;
    r.assert_status(200);
    let r = gw.raw(Method::DELETE, "/services/svc", Some("application/json"), "{oops").await;
    r.assert_status(204);
    gw.get("/services/svc").await.assert_status(404);
});

both!(non_object_json_bodies_are_rejected, |gw| async move {
    gw.create_upstream("up.example").await;
    let before = gw.snapshot().await;
    for path in [
        "/services",
        "/routes",
        "/consumers",
        "/plugins",
        "/upstreams",
        "/upstreams/up.example/targets",
        "/certificates",
        "/snis",
    ] {
        for body in ["[]", "[{\"name\":\"x\"}]", "\"x\"", "42", "null", "true"] {
            let r = gw.raw(Method::POST, path, Some("application/json"), body).await;
            r.assert_client_error();
        }
    }
    gw.assert_unchanged(&before).await;
});

both!(huge_bodies_are_refused_and_nothing_is_stored, |gw| async move {
    let before = gw.snapshot().await;
    let mb20 = 20 * 1024 * 1024;
    let cases = [
        ("POST", "/services", "application/json", r#"{"name":"big","host":""#),
        ("POST", "/plugins", "application/x-www-form-urlencoded", "name=key-auth&config.anonymous="),
        ("PUT", "/upstreams", "application/json", r#"{"name":""#),
        (
            "POST",
            "/consumers",
            "multipart/form-data; boundary=xyz",
            "--xyz\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\n",
        ),
    ];
    for (method, path, ct, prefix) in cases {
        for chunked in [false, true] {
            let status = gw.oversized(method, path, ct, prefix, mb20, chunked).await;
            assert!(
                status.is_some_and(|s| (400..500).contains(&s)),
                "{method} {path} ({ct}) with a 20 MB body (chunked: {chunked}): expected a 4xx, got {status:?}"
            );
        }
    }
    gw.get("/status").await.assert_status(200);
    gw.assert_unchanged(&before).await;
});

both!(wrong_types_are_4xx_never_500, |gw| async move {
    let svc = gw.create_service("svc").await;
    let sid = id_of(&svc);
    gw.create_upstream("up.example").await;
    let (cert, key) = self_signed(&["a.example.com"]);
    let c = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    let before = gw.snapshot().await;
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("/services", json!({"host": 12})),
        ("/services", json!({"host": ["example.com"]})),
        ("/services", json!({"host": null})),
        ("/services", json!({"host": "example.com", "port": -1})),
        ("/services", json!({"host": "example.com", "port": 1.5})),
        ("/services", json!({"host": "example.com", "port": {"a": 1}})),
        ("/services", json!({"host": "example.com", "retries": "x"})),
        ("/services", json!({"host": "example.com", "name": 5})),
        ("/services", json!({"url": 5})),
        ("/services", json!({"url": "not a url"})),
        ("/routes", json!({"paths": "/x", "service": {"id": sid}})),
        ("/routes", json!({"paths": [1], "service": {"id": sid}})),
        ("/routes", json!({"paths": ["/x"], "service": "abc"})),
        ("/routes", json!({"paths": ["/x"], "service": {"id": 5}})),
        ("/routes", json!({"paths": ["/x"], "service": {}})),
        ("/routes", json!({"hosts": [{"a": 1}], "service": {"id": sid}})),
        ("/routes", json!({"paths": ["/x"], "regex_priority": 1.5, "service": {"id": sid}})),
        ("/routes", json!({"paths": ["/x"], "preserve_host": "yes", "service": {"id": sid}})),
        ("/consumers", json!({"username": 5})),
        ("/consumers", json!({"username": ""})),
        ("/consumers", json!({"custom_id": ["a"]})),
        ("/plugins", json!({"name": 1})),
        ("/plugins", json!({"name": "key-auth", "config": "x"})),
        ("/plugins", json!({"name": "key-auth", "enabled": "maybe"})),
        ("/plugins", json!({"name": "key-auth", "service_id": "nope"})),
        ("/plugins", json!({"name": "key-auth", "config": {"key_names": ["bad name!"]}})),
        ("/plugins", json!({"name": "key-auth", "config": {"hide_credentials": "sometimes"}})),
        ("/plugins", json!({"name": "hmac-auth", "config": {"clock_skew": -5}})),
        ("/plugins", json!({"name": "acl", "config": {}})),
        ("/plugins", json!({"name": "rate-limiting", "config": {"minute": -5}})),
        ("/upstreams", json!({"name": ["x"]})),
        ("/upstreams", json!({"name": "x.example", "slots": "abc"})),
        ("/upstreams", json!({"name": "x.example", "slots": 100000})),
        ("/upstreams", json!({"name": "x.example", "healthchecks": "no"})),
        ("/upstreams", json!({"name": "x.example", "healthchecks": {"active": {"http_statuses": "x"}}})),
        ("/upstreams/up.example/targets", json!({"target": 1})),
        ("/upstreams/up.example/targets", json!({"target": "a.example:80", "weight": "x"})),
        ("/upstreams/up.example/targets", json!({"target": "a.example:80", "weight": -1})),
        ("/upstreams/up.example/targets", json!({"target": "a.example:99999"})),
        ("/certificates", json!({"cert": 1, "key": 2})),
        ("/certificates", json!({"cert": "x"})),
        ("/snis", json!({"name": 5, "certificate": {"id": c["id"]}})),
        ("/snis", json!({"name": "s.example.com", "certificate": {"id": "nope"}})),
        ("/snis", json!({"name": "s.example.com"})),
    ];
    for (path, body) in cases {
        let r = gw.post_json(path, &body).await;
        r.assert_client_error();
    }
    // The same through PATCH on existing entities.
    for (path, body) in [
        ("/services/svc", json!({"port": "eighty"})),
        ("/services/svc", json!({"host": ""})),
        ("/upstreams/up.example", json!({"slots": "many"})),
        ("/upstreams/up.example", json!({"name": "1.2.3.4"})),
        ("/upstreams/up.example", json!({"healthchecks": {"active": {"concurrency": 0}}})),
    ] {
        let r = gw.patch_json(path, &body).await;
        r.assert_client_error();
    }
    gw.assert_unchanged(&before).await;
});

both!(invalid_ids_in_paths_are_client_errors, |gw| async move {
    let svc = gw.create_service("svc").await;
    gw.create_route(&id_of(&svc), &["/r"]).await;
    let before = gw.snapshot().await;
    for (method, path) in [
        (Method::GET, "/plugins/not-a-uuid"),
        (Method::PATCH, "/plugins/not-a-uuid"),
        (Method::DELETE, "/plugins/not-a-uuid"),
        (Method::GET, "/routes/not-a-uuid/service"),
        (Method::GET, "/routes/not-a-uuid/plugins"),
        (Method::POST, "/routes/not-a-uuid/plugins"),
        (Method::GET, "/certificates/not-a-uuid/snis"),
    ] {
        let r = if method == Method::GET || method == Method::DELETE {
            gw.request(method, path).await
        } else {
            gw.json(method, path, &json!({"name": "key-auth"})).await
        };
        r.assert_client_error();
    }
    gw.assert_unchanged(&before).await;
});

both!(error_responses_are_json, |gw| async move {
    gw.create_service("svc").await;
    let responses = vec![
        gw.post_json("/services", &json!({})).await,
        gw.post_json("/services", &json!({"name": "svc", "host": "example.com"})).await,
        gw.get("/routes/not-a-uuid").await,
        gw.post_json("/plugins", &json!({"name": "foo"})).await,
        gw.post_json("/upstreams", &json!({})).await,
        gw.delete("/services").await,
        gw.get("/nope").await,
        gw.raw(Method::POST, "/services", Some("application/json"), "{").await,
    ];
    for r in responses {
        assert!(r.status >= 400, "{}: {}", r.what, r.status);
        assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"), "{}", r.what);
        assert!(r.body.is_object(), "{}: body is not a JSON object: {}", r.what, r.text);
    }
});

// Gaps a black-box run and a third-party Kong client found.
both!(compatibility_gaps_found_by_clients, |gw| async move {
    // Consumers leave unset fields out, as the document's examples show.
    let c = gw.post_json("/consumers", &json!({"username": "no-custom"})).await.expect(201);
    assert!(c.get("custom_id").is_none(), "custom_id absent, not null: {c}");
    let shown = gw.get("/consumers/no-custom").await.expect(200);
    assert!(shown.get("custom_id").is_none(), "{shown}");
    let listed = gw.get("/consumers").await.expect(200);
    assert!(listed["data"][0].get("custom_id").is_none(), "{listed}");

    // PUT /certificates/{sni} whose `snis` leaves that SNI out: 400, nothing stored.
    let (cert, key) = self_signed(&["a.example.com"]);
    let before = gw.snapshot().await;
    let r =
        gw.put_json("/certificates/a.example.com", &json!({"cert": cert, "key": key, "snis": ["b.example.com"]})).await;
    let e = r.n_error(400, 2, "schema violation");
    assert!(e["fields"]["snis"].is_string(), "{e}");
    gw.assert_unchanged(&before).await;
    // With the SNI in the list (or no list), it is created.
    gw.put_json(
        "/certificates/a.example.com",
        &json!({"cert": cert, "key": key, "snis": ["a.example.com", "b.example.com"]}),
    )
    .await
    .expect(201);

    // SNIs under a certificate that does not exist: Kong's plain 404.
    let before = gw.snapshot().await;
    let r = gw.post_json(&format!("/certificates/{}/snis", new_id()), &json!({"name": "c.example.com"})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.assert_unchanged(&before).await;

    // An upstream's targets take `size` and `offset` as every list does.
    gw.create_upstream("up.example").await;
    for bad in ["size=-1", "size=abc"] {
        let r = gw.get(&format!("/upstreams/up.example/targets?{bad}")).await;
        r.assert_status(400);
        assert_eq!(r.body, gw.get(&format!("/services?{bad}")).await.body, "{bad}: the same answer as /services");
    }
    gw.get("/upstreams/up.example/targets?offset=!!!").await.n_error(400, 7, "invalid offset");
    gw.get("/upstreams/up.example/targets").await.expect(200);
});

/// Heads hyper refuses before any handler runs (a bad request line, an unreadable
/// Content-Length, too many header fields, an overlong URI) and a chunked body that cannot be
/// decoded: each a 4xx with a JSON body in Kong's shape, and the connection closed.
#[tokio::test]
async fn hyper_refusals_are_json() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(Backend::Sqlite).await;
    let many_fields: String = (0..200).map(|i| format!("X-{i}: a\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "Bad request"),
        (
            b"GET /status HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            400,
            "Bad request",
        ),
        (
            format!("GET /status HTTP/1.1\r\nHost: localhost\r\n{many_fields}\r\n").into_bytes(),
            431,
            "Request header fields too large",
        ),
        (format!("GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n", "a".repeat(100_000)).into_bytes(), 414, "URI too long"),
        (
            b"POST /services HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_vec(),
            400,
            "Invalid request: the body could not be read",
        ),
    ];
    for (raw, status, message) in cases {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        tcp.write_all(&raw).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_to_end(&mut out))
            .await
            .expect("the connection is closed after the answer")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        let what = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("\r\ncontent-type: application/json; charset=utf-8\r\n"),
            "{what}: {text}"
        );
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        assert_eq!(body, json!({"message": message}), "{what}");
    }
    // Nothing was stored by the broken chunked POST.
    assert_eq!(gw.get("/services").await.expect(200)["data"], json!([]));
}
