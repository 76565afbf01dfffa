#![allow(clippy::unwrap_used)]
//! `/routes`, `/routes/{id}`, `/routes/{id}/service`, `/services/{s}/routes` (N-layer).

use gatehouse_tests::*;
use serde_json::Value;

const ROUTE_KEYS: [&str; 11] = [
    "id",
    "created_at",
    "updated_at",
    "protocols",
    "methods",
    "hosts",
    "paths",
    "regex_priority",
    "strip_path",
    "preserve_host",
    "service",
];

const AT_LEAST_ONE: &str = "at least one of these fields must be non-empty: 'methods', 'hosts', 'paths'";

both!(creates_route_with_defaults, |gw| async move {
    let s = gw.create_service("svc").await;
    let sid = id_of(&s);
    let r = gw.post_json("/routes", &json!({"hosts": ["example.com"], "service": {"id": sid}})).await.expect(201);
    assert_eq!(keys(&r), sorted(&ROUTE_KEYS), "{r}");
    assert!(is_uuid(&r["id"]));
    assert_secs(&r["created_at"]);
    assert_secs(&r["updated_at"]);
    assert_eq!(r["protocols"], json!(["http", "https"]));
    assert_eq!(r["methods"], Value::Null);
    assert_eq!(r["hosts"], json!(["example.com"]));
    assert_eq!(r["paths"], Value::Null);
    assert_eq!(r["regex_priority"], json!(0));
    assert_eq!(r["strip_path"], json!(true));
    assert_eq!(r["preserve_host"], json!(false));
    assert_eq!(r["service"], json!({ "id": sid }));
    assert_eq!(gw.get(&format!("/routes/{}", id_of(&r))).await.expect(200), r);

    let full = gw
        .post_json(
            "/routes",
            &json!({"protocols": ["https"], "methods": ["GET", "POST"], "paths": ["/private", "/users/\\d+"],
                    "regex_priority": -3, "strip_path": false, "preserve_host": true, "service": {"id": sid}}),
        )
        .await
        .expect(201);
    assert_eq!(full["protocols"], json!(["https"]));
    assert_eq!(full["methods"], json!(["GET", "POST"]));
    assert_eq!(full["hosts"], Value::Null);
    assert_eq!(full["paths"], json!(["/private", "/users/\\d+"]));
    assert_eq!(full["regex_priority"], json!(-3));
    assert_eq!(full["strip_path"], json!(false));
    assert_eq!(full["preserve_host"], json!(true));

    // Wildcard hosts at either end are valid.
    gw.post_json("/routes", &json!({"hosts": ["*.example.com", "example.*"], "service": {"id": sid}}))
        .await
        .expect(201);
});

both!(sets_drop_duplicates, |gw| async move {
    let s = gw.create_service("svc").await;
    let r = gw
        .post_json(
            "/routes",
            &json!({"methods": ["GET", "POST", "GET"], "protocols": ["https", "http", "https"],
                    "service": {"id": s["id"]}}),
        )
        .await
        .expect(201);
    assert_eq!(r["methods"], json!(["GET", "POST"]));
    assert_eq!(r["protocols"], json!(["https", "http"]));
});

both!(rejects_invalid_routes_with_schema_violations, |gw| async move {
    let s = gw.create_service("svc").await;
    let sid = id_of(&s);
    let before = gw.snapshot().await;
    let base = |extra: Value| {
        let mut b = json!({"paths": ["/ok"], "service": {"id": sid}});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str, Value)> = vec![
        (json!({"paths": ["/x"]}), "service", json!("required field missing")),
        (base(json!({"paths": ["x"]})), "paths", json!("should start with: /")),
        (base(json!({"paths": ["/x/"]})), "paths", json!("must not have a trailing slash")),
        (base(json!({"paths": ["/a//b"]})), "paths", json!("must not have empty segments")),
        (base(json!({"paths": ["/a%zz"]})), "paths", json!("invalid url-encoded value: '%zz'")),
        (base(json!({"hosts": ["*.example.*"]})), "hosts", json!("invalid wildcard: must have at most one wildcard")),
        (
            base(json!({"hosts": ["foo.*.com"]})),
            "hosts",
            json!("invalid wildcard: must be placed at leftmost or rightmost label"),
        ),
        (base(json!({"hosts": ["example.com:80"]})), "hosts", json!("must not have a port")),
        (base(json!({"hosts": ["exa mple.com"]})), "hosts", json!("invalid value: exa mple.com")),
        (base(json!({"methods": ["get"]})), "methods", json!("invalid value: get")),
        (base(json!({"protocols": []})), "protocols", json!("length must be at least 1")),
        (base(json!({"protocols": ["ftp"]})), "protocols", json!("expected one of: http, https")),
        (base(json!({"strip_path": "yes"})), "strip_path", json!("expected a boolean")),
        (base(json!({"regex_priority": "high"})), "regex_priority", json!("expected an integer")),
        (base(json!({"paths": "/x"})), "paths", json!("expected an array")),
        (base(json!({"foo": 1})), "foo", json!("unknown field")),
    ];
    for (body, field, msg) in cases {
        let e = gw.post_json("/routes", &body).await.n_error(400, 2, "schema violation");
        assert_eq!(e["fields"], json!({ field: msg }), "POST /routes {body}");
        assert_eq!(
            e["message"],
            json!(format!("schema violation ({field}: {})", msg.as_str().unwrap())),
            "POST /routes {body}"
        );
    }

    // Entity check.
    let e = gw.post_json("/routes", &json!({"service": {"id": sid}})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["message"], json!(format!("schema violation ({AT_LEAST_ONE})")));
    assert_eq!(e["fields"], json!({ "@entity": [AT_LEAST_ONE] }));
    let e = gw
        .post_json("/routes", &json!({"hosts": [], "paths": [], "methods": [], "service": {"id": sid}}))
        .await
        .n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({ "@entity": [AT_LEAST_ONE] }));

    // Nested (foreign) field errors.
    let e = gw.post_json("/routes", &json!({"paths": ["/x"], "service": {"id": "nope"}})).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert_eq!(e["fields"], json!({"service": {"id": "expected a valid UUID"}}));
    assert_eq!(e["message"], json!("schema violation (service.id: expected a valid UUID)"));

    // Regex paths must compile.
    let e =
        gw.post_json("/routes", &base(json!({"paths": ["/users/(\\d+"]}))).await.n_error(400, 2, "schema violation");
    let msg = e["fields"]["paths"].as_str().unwrap_or_default();
    assert!(msg.starts_with("invalid regex: '/users/(\\d+'"), "{e}");

    // PATCH is validated the same way.
    let r = gw.create_route(&sid, &["/p"]).await;
    let e = gw.patch_json(&format!("/routes/{}", id_of(&r)), &json!({"regex_priority": "high"})).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert_eq!(e["message"], json!("schema violation (regex_priority: expected an integer)"));
    assert_eq!(e["fields"], json!({"regex_priority": "expected an integer"}));
    gw.delete(&format!("/routes/{}", id_of(&r))).await.assert_status(204);
    let mut before = before;
    before.revision = gw.revision().await;
    gw.assert_unchanged(&before).await;
});

both!(unknown_service_is_400_foreign_key_violation, |gw| async move {
    let before = gw.snapshot().await;
    let missing = new_id();
    let e = gw.post_json("/routes", &json!({"paths": ["/x"], "service": {"id": missing}})).await.n_error(
        400,
        4,
        "foreign key violation",
    );
    assert_eq!(
        e["message"],
        json!(format!("the foreign key '{{id=\"{missing}\"}}' does not reference an existing 'services' entity."))
    );
    assert_eq!(e["fields"], json!({"service": {"id": missing}}));
    gw.assert_unchanged(&before).await;

    // PATCH onto a missing service, too.
    let s = gw.create_service("svc").await;
    let r = gw.create_route(&id_of(&s), &["/x"]).await;
    let before = gw.snapshot().await;
    gw.patch_json(&format!("/routes/{}", id_of(&r)), &json!({"service": {"id": missing}})).await.n_error(
        400,
        4,
        "foreign key violation",
    );
    gw.assert_unchanged(&before).await;
});

both!(non_uuid_route_id_is_400_invalid_primary_key, |gw| async move {
    let s = gw.create_service("svc").await;
    gw.create_route(&id_of(&s), &["/x"]).await;
    let before = gw.snapshot().await;
    let check = |e: Value| {
        assert_eq!(e["message"], json!("invalid primary key: '{id=\"expected a valid UUID\"}'"));
        assert_eq!(e["fields"], json!({"id": "expected a valid UUID"}));
    };
    check(gw.get("/routes/not-a-uuid").await.n_error(400, 1, "invalid primary key"));
    check(gw.patch_json("/routes/not-a-uuid", &json!({"strip_path": false})).await.n_error(
        400,
        1,
        "invalid primary key",
    ));
    check(gw.put_json("/routes/not-a-uuid", &json!({"paths": ["/y"], "service": {"id": s["id"]}})).await.n_error(
        400,
        1,
        "invalid primary key",
    ));
    check(gw.delete("/routes/not-a-uuid").await.n_error(400, 1, "invalid primary key"));
    gw.assert_unchanged(&before).await;
});

both!(get_patch_delete_route, |gw| async move {
    let s = gw.create_service("svc").await;
    let r = gw.create_route(&id_of(&s), &["/foo"]).await;
    let path = format!("/routes/{}", id_of(&r));

    let missing = gw.get(&format!("/routes/{}", new_id())).await;
    missing.assert_status(404);
    assert_eq!(missing.body, json!({"message": "Not found"}));

    let p = gw.patch_json(&path, &json!({"strip_path": false, "hosts": ["h.example.com"]})).await.expect(200);
    assert_eq!(p["id"], r["id"]);
    assert_eq!(p["strip_path"], json!(false));
    assert_eq!(p["hosts"], json!(["h.example.com"]));
    assert_eq!(p["paths"], json!(["/foo"]));
    assert_eq!(p["service"], r["service"]);
    assert_eq!(p["created_at"], r["created_at"]);
    assert_eq!(gw.get(&path).await.expect(200), p);

    let id = new_id();
    let e = gw.patch_json(&format!("/routes/{id}"), &json!({"strip_path": false})).await.n_error(404, 6, "not found");
    assert_eq!(e["message"], json!(format!("could not find the entity with primary key '{{id=\"{id}\"}}'")));
    assert_eq!(e["fields"], json!({ "id": id }));

    let d = gw.delete(&path).await;
    d.assert_status(204);
    assert_eq!(d.text, "");
    gw.get(&path).await.assert_status(404);
    gw.delete(&path).await.assert_status(204);
    assert_eq!(gw.list_all("/routes").await, Vec::<Value>::new());
});

both!(put_route_creates_201_then_replaces_200, |gw| async move {
    let s = gw.create_service("svc").await;
    let sid = id_of(&s);
    let id = new_id();
    let path = format!("/routes/{id}");
    let created =
        gw.put_json(&path, &json!({"paths": ["/p"], "strip_path": false, "service": {"id": sid}})).await.expect(201);
    assert_eq!(keys(&created), sorted(&ROUTE_KEYS));
    assert_eq!(created["id"], json!(id));
    assert_eq!(created["paths"], json!(["/p"]));
    assert_eq!(created["strip_path"], json!(false));

    let replaced = gw.put_json(&path, &json!({"hosts": ["h.example.com"], "service": {"id": sid}})).await.expect(200);
    assert_eq!(replaced["id"], json!(id));
    assert_eq!(replaced["hosts"], json!(["h.example.com"]));
    assert_eq!(replaced["paths"], Value::Null, "PUT replaces the whole route");
    assert_eq!(replaced["strip_path"], json!(true));
    assert_eq!(gw.list_all("/routes").await.len(), 1);

    let before = gw.snapshot().await;
    gw.put_json(&format!("/routes/{}", new_id()), &json!({"service": {"id": sid}})).await.n_error(
        400,
        2,
        "schema violation",
    );
    gw.assert_unchanged(&before).await;
});

both!(route_service_endpoint, |gw| async move {
    let s = gw.post_json("/services", &json!({"name": "svc", "host": "example.com", "path": "/v1"})).await.expect(201);
    let r = gw.create_route(&id_of(&s), &["/x"]).await;
    let path = format!("/routes/{}/service", id_of(&r));

    assert_eq!(gw.get(&path).await.expect(200), s);

    let p =
        gw.patch_json(&path, &json!({"url": "https://patched.example.com:8443/v2", "retries": 1})).await.expect(200);
    assert_eq!(p["id"], s["id"]);
    assert_eq!(p["protocol"], json!("https"));
    assert_eq!(p["host"], json!("patched.example.com"));
    assert_eq!(p["port"], json!(8443));
    assert_eq!(p["path"], json!("/v2"));
    assert_eq!(p["retries"], json!(1));
    assert!(p.get("url").is_none());
    assert_eq!(gw.get("/services/svc").await.expect(200), p);

    let replaced = gw.put_json(&path, &json!({"name": "svc", "host": "put.example.com"})).await.expect(200);
    assert_eq!(replaced["id"], s["id"]);
    assert_eq!(replaced["host"], json!("put.example.com"));
    assert_eq!(replaced["port"], json!(80));
    assert_eq!(replaced["protocol"], json!("http"));
    assert_eq!(replaced["path"], Value::Null);

    let before = gw.snapshot().await;
    let d = gw.delete(&path).await;
    d.assert_status(405);
    assert_eq!(d.body, json!({"message": "Method not allowed"}));

    let missing = format!("/routes/{}/service", new_id());
    let r = gw.get(&missing).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.delete(&missing).await.assert_status(404);
    gw.patch_json(&missing, &json!({"retries": 2})).await.assert_status(404);
    gw.assert_unchanged(&before).await;
});

both!(service_routes_list_and_post_forces_service, |gw| async move {
    let a = gw.create_service("a").await;
    let b = gw.create_service("b").await;
    let ra =
        gw.post_json("/services/a/routes", &json!({"paths": ["/a"], "service": {"id": b["id"]}})).await.expect(201);
    assert_eq!(ra["service"], json!({"id": a["id"]}), "the URL's service wins");
    let ra2 = gw.post_json(&format!("/services/{}/routes", id_of(&a)), &json!({"paths": ["/a2"]})).await.expect(201);
    assert_eq!(ra2["service"], json!({"id": a["id"]}));
    let rb = gw.create_route(&id_of(&b), &["/b"]).await;

    let list_a = gw.get("/services/a/routes").await.expect(200);
    let mut got = ids(&data(&list_a));
    got.sort();
    let mut want = vec![id_of(&ra), id_of(&ra2)];
    want.sort();
    assert_eq!(got, want, "ordered by id, only service a's routes");
    assert_eq!(list_a["next"], Value::Null);
    let list_b = gw.get(&format!("/services/{}/routes", id_of(&b))).await.expect(200);
    assert_eq!(ids(&data(&list_b)), vec![id_of(&rb)]);

    let before = gw.snapshot().await;
    for path in ["/services/ghost/routes".to_owned(), format!("/services/{}/routes", new_id())] {
        let r = gw.get(&path).await;
        r.assert_status(404);
        assert_eq!(r.body, json!({"message": "Not found"}));
        gw.post_json(&path, &json!({"paths": ["/z"]})).await.assert_status(404);
    }
    gw.assert_unchanged(&before).await;
});

both!(deleting_service_with_routes_is_400_foreign_key, |gw| async move {
    let s = gw.create_service("svc").await;
    let r = gw.create_route(&id_of(&s), &["/x"]).await;
    let before = gw.snapshot().await;
    for path in ["/services/svc".to_owned(), format!("/services/{}", id_of(&s))] {
        let e = gw.delete(&path).await.n_error(400, 4, "foreign key violation");
        assert_eq!(e["message"], json!("an existing 'routes' entity references this 'services' entity"));
        assert_eq!(e["fields"], json!({"@referenced_by": "routes"}));
    }
    gw.assert_unchanged(&before).await;
    gw.get("/services/svc").await.assert_status(200);

    gw.delete(&format!("/routes/{}", id_of(&r))).await.assert_status(204);
    gw.delete("/services/svc").await.assert_status(204);
    gw.get("/services/svc").await.assert_status(404);
});
