#![allow(clippy::unwrap_used)]
//! Request bodies: `application/x-www-form-urlencoded` (dotted keys, array notations,
//! coercion, `""` = null), `multipart/form-data`, JSON without coercion.

use gatehouse_tests::reqwest::Method;
use gatehouse_tests::*;
use serde_json::Value;

both!(form_service_is_coerced_to_schema_types, |gw| async move {
    let s = gw
        .post_form(
            "/services",
            &[
                ("name", "svc"),
                ("host", "example.com"),
                ("port", "8080"),
                ("retries", "3"),
                ("path", "/v1"),
                ("connect_timeout", "1000"),
            ],
        )
        .await
        .expect(201);
    assert_eq!(s["port"], json!(8080));
    assert_eq!(s["retries"], json!(3));
    assert_eq!(s["connect_timeout"], json!(1000));
    assert_eq!(s["path"], json!("/v1"));
    assert_eq!(s["name"], json!("svc"));

    // "" means null.
    let p = gw.patch_form("/services/svc", &[("path", "")]).await.expect(200);
    assert_eq!(p["path"], Value::Null);

    let u =
        gw.post_form("/services", &[("name", "by-url"), ("url", "https://api.example.com:8443/v1")]).await.expect(201);
    assert_eq!(u["protocol"], json!("https"));
    assert_eq!(u["host"], json!("api.example.com"));
    assert_eq!(u["port"], json!(8443));
    assert_eq!(u["path"], json!("/v1"));

    let before = gw.snapshot().await;
    for (pairs, field, msg) in [
        (vec![("host", "example.com"), ("port", "abc")], "port", "expected an integer"),
        (vec![("host", "example.com"), ("foo", "bar")], "foo", "unknown field"),
    ] {
        let e = gw.post_form("/services", &pairs).await.n_error(400, 2, "schema violation");
        assert_eq!(e["fields"], json!({ field: msg }), "{pairs:?}");
    }
    gw.assert_unchanged(&before).await;
});

both!(form_route_arrays_booleans_and_nesting, |gw| async move {
    let s = gw.create_service("example-service").await;
    let sid = id_of(&s);

    // The reference example, verbatim.
    let r = gw
        .post_form_raw("/services/example-service/routes", "hosts[]=a.com&hosts[]=b.com&methods=GET&strip_path=false")
        .await
        .expect(201);
    assert_eq!(r["hosts"], json!(["a.com", "b.com"]));
    assert_eq!(r["methods"], json!(["GET"]));
    assert_eq!(r["strip_path"], json!(false));
    assert_eq!(r["paths"], Value::Null);
    assert_eq!(r["protocols"], json!(["http", "https"]));
    assert_eq!(r["preserve_host"], json!(false));
    assert_eq!(r["regex_priority"], json!(0));
    assert_eq!(r["service"], json!({ "id": sid }));

    // Dotted key for the foreign key, indexed arrays.
    let r = gw
        .post_form_raw(
            "/routes",
            &format!("service.id={sid}&hosts[1]=c.com&hosts[2]=d.com&regex_priority=5&preserve_host=true"),
        )
        .await
        .expect(201);
    assert_eq!(r["hosts"], json!(["c.com", "d.com"]));
    assert_eq!(r["regex_priority"], json!(5));
    assert_eq!(r["preserve_host"], json!(true));
    assert_eq!(r["service"], json!({ "id": sid }));

    // Repeated plain keys; a single value is wrapped.
    let r =
        gw.post_form_raw("/routes", &format!("service.id={sid}&paths=/x&paths=/y&protocols=https")).await.expect(201);
    assert_eq!(r["paths"], json!(["/x", "/y"]));
    assert_eq!(r["protocols"], json!(["https"]));
    let r = gw.post_form("/routes", &[("service.id", sid.as_str()), ("paths", "/single")]).await.expect(201);
    assert_eq!(r["paths"], json!(["/single"]));

    // The same notations through url-encoded keys.
    let r = gw
        .post_form("/routes", &[("service.id", sid.as_str()), ("methods[]", "GET"), ("methods[]", "POST")])
        .await
        .expect(201);
    assert_eq!(r["methods"], json!(["GET", "POST"]));

    let before = gw.snapshot().await;
    let e = gw.post_form_raw("/routes", &format!("service.id={sid}&paths=/z&strip_path=maybe")).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert_eq!(e["fields"], json!({"strip_path": "expected a boolean"}));
    gw.assert_unchanged(&before).await;
});

both!(json_is_not_coerced_on_n_layer, |gw| async move {
    let before = gw.snapshot().await;
    let e = gw.post_json("/services", &json!({"host": "example.com", "port": "8080"})).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert_eq!(e["fields"], json!({"port": "expected an integer"}));
    gw.assert_unchanged(&before).await;
});

both!(form_consumer_and_sni, |gw| async move {
    let c = gw.post_form("/consumers", &[("username", "bob"), ("custom_id", "")]).await.expect(201);
    assert_eq!(c["username"], json!("bob"));
    assert_eq!(c["custom_id"], Value::Null);

    let (cert, key) = self_signed(&["a.example.com"]);
    let crt = gw
        .post_form_raw(
            "/certificates",
            &format!("cert={}&key={}&snis[]=b.example.com&snis[]=a.example.com", urlencode(&cert), urlencode(&key)),
        )
        .await
        .expect(201);
    assert_eq!(crt["cert"], json!(cert), "PEM survives form encoding");
    assert_eq!(crt["key"], json!(key));
    assert_eq!(crt["snis"], json!(["a.example.com", "b.example.com"]));

    let s =
        gw.post_form("/snis", &[("name", "c.example.com"), ("certificate.id", id_of(&crt).as_str())]).await.expect(201);
    assert_eq!(s["certificate"], json!({"id": crt["id"]}));
});

both!(form_plugins_o_layer_coercion, |gw| async move {
    let s = gw.create_service("svc").await;
    let sid = id_of(&s);
    let p = gw
        .post_form_raw("/plugins", &format!("name=key-auth&config.key_names=apikey,key&service_id={sid}"))
        .await
        .expect(201);
    assert_eq!(p["name"], json!("key-auth"));
    assert_eq!(p["service_id"], json!(sid));
    assert_eq!(p["enabled"], json!(true));
    assert_eq!(
        p["config"],
        json!({"key_names": ["apikey", "key"], "hide_credentials": false, "anonymous": "",
               "key_in_body": false, "run_on_preflight": true})
    );
    assert_no_nulls(&p);

    let p = gw
        .post_form(
            "/plugins",
            &[
                ("name", "hmac-auth"),
                ("config.clock_skew", "20"),
                ("config.algorithms", "hmac-sha256"),
                ("config.hide_credentials", "true"),
                ("enabled", "false"),
            ],
        )
        .await
        .expect(201);
    assert_eq!(p["config"]["clock_skew"], json!(20));
    assert_eq!(p["config"]["algorithms"], json!(["hmac-sha256"]));
    assert_eq!(p["config"]["hide_credentials"], json!(true));
    assert_eq!(p["enabled"], json!(false));

    // JSON strings are coerced on the O-layer too.
    let p = gw
        .post_json("/plugins", &json!({"name": "jwt", "config": {"cookie_names": "a, b", "maximum_expiration": "60", "claims_to_verify": "exp"}}))
        .await
        .expect(201);
    assert_eq!(p["config"]["cookie_names"], json!(["a", "b"]));
    assert_eq!(p["config"]["maximum_expiration"], json!(60));

    let before = gw.snapshot().await;
    let r = gw
        .post_form(
            "/plugins",
            &[("name", "request-size-limiting"), ("config.allowed_payload_size", "abc"), ("service_id", sid.as_str())],
        )
        .await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"config.allowed_payload_size": "allowed_payload_size is not a number"}));
    gw.assert_unchanged(&before).await;
});

both!(form_upstreams_and_targets, |gw| async move {
    let u = gw
        .post_form(
            "/upstreams",
            &[
                ("name", "up.xyz"),
                ("slots", "20"),
                ("healthchecks.active.timeout", "5"),
                ("healthchecks.active.http_path", "/health"),
                ("hash_on", "ip"),
            ],
        )
        .await
        .expect(201);
    assert_eq!(u["slots"], json!(20));
    assert_eq!(u["hash_on"], json!("ip"));
    assert_eq!(u["healthchecks"]["active"]["timeout"], json!(5));
    assert_eq!(u["healthchecks"]["active"]["http_path"], json!("/health"));
    assert_eq!(u["healthchecks"]["active"]["concurrency"], json!(10));

    let t = gw.post_form("/upstreams/up.xyz/targets", &[("target", "1.2.3.4:80"), ("weight", "20")]).await.expect(201);
    assert_eq!(t["target"], json!("1.2.3.4:80"));
    assert_eq!(t["weight"], json!(20));

    let before = gw.snapshot().await;
    let r = gw.post_form("/upstreams", &[("name", "x.xyz"), ("slots", "many")]).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"slots": "slots is not a number"}));
    gw.assert_unchanged(&before).await;
});

both!(multipart_creates_service_and_plugin, |gw| async move {
    let s = gw
        .multipart(
            Method::POST,
            "/services",
            &[("name", "mp"), ("host", "example.com"), ("port", "8081"), ("path", "/mp")],
        )
        .await
        .expect(201);
    assert_eq!(s["name"], json!("mp"));
    assert_eq!(s["host"], json!("example.com"));
    assert_eq!(s["port"], json!(8081));
    assert_eq!(s["path"], json!("/mp"));
    assert_eq!(gw.get("/services/mp").await.expect(200), s);

    let p = gw
        .multipart(
            Method::POST,
            "/plugins",
            &[
                ("name", "hmac-auth"),
                ("service_id", id_of(&s).as_str()),
                ("config.clock_skew", "20"),
                ("config.enforce_headers", "date"),
            ],
        )
        .await
        .expect(201);
    assert_eq!(p["service_id"], s["id"]);
    assert_eq!(p["config"]["clock_skew"], json!(20));
    assert_eq!(p["config"]["enforce_headers"], json!(["date"]));

    let r = gw
        .multipart(
            Method::POST,
            "/routes",
            &[("service.id", id_of(&s).as_str()), ("paths[]", "/a"), ("paths[]", "/b"), ("strip_path", "false")],
        )
        .await
        .expect(201);
    assert_eq!(r["paths"], json!(["/a", "/b"]));
    assert_eq!(r["strip_path"], json!(false));

    let p2 = gw.multipart(Method::PATCH, "/services/mp", &[("retries", "1")]).await.expect(200);
    assert_eq!(p2["retries"], json!(1));
});

/// Percent-encodes everything but unreserved characters.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

both!(deeply_nested_keys_are_refused_and_the_process_lives, |gw| async move {
    let before = gw.snapshot().await;
    let deep_dots = ".a".repeat(7000);
    let deep_brackets = "[a]".repeat(7000);
    let deep_pushes = "[]".repeat(7000);
    for body in [
        format!("name=key-auth&config{deep_dots}=1"),
        format!("name=key-auth&config{deep_brackets}=1"),
        format!("name=key-auth&config{deep_pushes}=1"),
        // One past the bound is refused too, not only the absurd cases.
        format!("name=key-auth&config{}=1", ".a".repeat(32)),
    ] {
        let r = gw.post_form_raw("/plugins", &body).await;
        r.assert_status(400);
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains("nested")), "{}", r.text);
    }
    let r = gw.post_form_raw("/services", &format!("name=x&host{deep_dots}=1")).await;
    r.assert_status(400);
    let key = format!("config{deep_brackets}");
    let r = gw.multipart(Method::POST, "/plugins", &[("name", "key-auth"), (key.as_str(), "1")]).await;
    r.assert_status(400);
    assert!(r.body["message"].is_string(), "{}", r.text);

    // JSON deeper than the bound, and deeper than serde_json's own limit.
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    gw.post_json("/plugins", &json!({"name": "key-auth", "config": deep})).await.assert_status(400);
    let raw = format!("{{\"name\":\"x\",\"host\":{}1{}}}", "[".repeat(7000), "]".repeat(7000));
    gw.raw(Method::POST, "/services", Some("application/json"), raw).await.assert_status(400);

    // The process is still there, and nothing was stored.
    gw.get("/status").await.expect(200);
    gw.assert_unchanged(&before).await;
});
