#![allow(clippy::unwrap_used)]
//! `/services`, `/services/{name or id}` (N-layer).

use gatehouse_tests::*;
use serde_json::Value;

const SERVICE_KEYS: [&str; 12] = [
    "id",
    "created_at",
    "updated_at",
    "name",
    "protocol",
    "host",
    "port",
    "path",
    "retries",
    "connect_timeout",
    "write_timeout",
    "read_timeout",
];

both!(creates_service_with_defaults, |gw| async move {
    let r = gw.post_json("/services", &json!({"name": "example-service", "host": "example.org"})).await;
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    let s = r.expect(201);
    assert_eq!(keys(&s), sorted(&SERVICE_KEYS), "{s}");
    assert!(is_uuid(&s["id"]), "{s}");
    assert_secs(&s["created_at"]);
    assert_secs(&s["updated_at"]);
    assert_eq!(s["name"], json!("example-service"));
    assert_eq!(s["protocol"], json!("http"));
    assert_eq!(s["host"], json!("example.org"));
    assert_eq!(s["port"], json!(80));
    assert_eq!(s["path"], Value::Null);
    assert_eq!(s["retries"], json!(5));
    assert_eq!(s["connect_timeout"], json!(60000));
    assert_eq!(s["write_timeout"], json!(60000));
    assert_eq!(s["read_timeout"], json!(60000));

    let by_id = gw.get(&format!("/services/{}", id_of(&s))).await.expect(200);
    assert_eq!(by_id, s);
    let by_name = gw.get("/services/example-service").await.expect(200);
    assert_eq!(by_name, s);

    // A service without a name has name null, present in the output.
    let anon = gw
        .post_json(
            "/services",
            &json!({"host": "10.0.0.1", "port": 8080, "path": "/api/", "retries": 0,
                    "protocol": "https", "connect_timeout": 1, "read_timeout": 2, "write_timeout": 3}),
        )
        .await
        .expect(201);
    assert_eq!(keys(&anon), sorted(&SERVICE_KEYS));
    assert_eq!(anon["name"], Value::Null);
    assert_eq!(anon["host"], json!("10.0.0.1"));
    assert_eq!(anon["port"], json!(8080));
    assert_eq!(anon["path"], json!("/api/"));
    assert_eq!(anon["retries"], json!(0));
    assert_eq!(anon["protocol"], json!("https"));
    assert_eq!(anon["connect_timeout"], json!(1));
    assert_eq!(anon["read_timeout"], json!(2));
    assert_eq!(anon["write_timeout"], json!(3));

    for host in ["::1", "2001:db8::1", "192.168.0.1", "a-b.c_d.example"] {
        let s = gw.post_json("/services", &json!({ "host": host })).await.expect(201);
        assert_eq!(s["host"], json!(host));
    }
});

both!(client_supplied_id_is_not_used_on_post, |gw| async move {
    let mine = new_id();
    let s = gw.post_json("/services", &json!({"id": mine, "host": "example.org"})).await;
    // Kong's N-layer ignores a client id on POST; accept a refusal too, but never a
    // service stored under the client's id.
    if s.status == 201 {
        assert_ne!(s.body["id"], json!(mine));
    } else {
        s.assert_client_error();
    }
});

both!(url_shorthand_sets_protocol_host_port_path, |gw| async move {
    let s =
        gw.post_json("/services", &json!({"name": "svc", "url": "https://api.example.com:8443/v1"})).await.expect(201);
    assert_eq!(keys(&s), sorted(&SERVICE_KEYS), "url must not be returned: {s}");
    assert_eq!(s["protocol"], json!("https"));
    assert_eq!(s["host"], json!("api.example.com"));
    assert_eq!(s["port"], json!(8443));
    assert_eq!(s["path"], json!("/v1"));

    let plain = gw.post_json("/services", &json!({"url": "http://plain.example.com"})).await.expect(201);
    assert_eq!(plain["protocol"], json!("http"));
    assert_eq!(plain["host"], json!("plain.example.com"));
    assert_eq!(plain["port"], json!(80));
    assert_eq!(plain["path"], Value::Null);

    let slash = gw.post_json("/services", &json!({"url": "https://slash.example.com/"})).await.expect(201);
    assert_eq!(slash["protocol"], json!("https"));
    assert_eq!(slash["port"], json!(443));
    assert_eq!(slash["path"], json!("/"));

    // PATCH with url replaces all four fields.
    let patched = gw.patch_json("/services/svc", &json!({"url": "http://other.example.com:81"})).await.expect(200);
    assert_eq!(patched["id"], s["id"]);
    assert_eq!(patched["protocol"], json!("http"));
    assert_eq!(patched["host"], json!("other.example.com"));
    assert_eq!(patched["port"], json!(81));
    assert_eq!(patched["path"], Value::Null);
    assert!(patched.get("url").is_none());
});

/// Bodies that fail validation with exactly one field error.
fn single_field_errors() -> Vec<(Value, &'static str, Value)> {
    vec![
        (json!({}), "host", json!("required field missing")),
        (json!({"host": "a.com:80"}), "host", json!("must not have a port")),
        (json!({"host": "exa mple.com"}), "host", json!("invalid value: exa mple.com")),
        (json!({"host": "example.com", "port": "80"}), "port", json!("expected an integer")),
        (json!({"host": "example.com", "port": 70000}), "port", json!("value should be between 0 and 65535")),
        (json!({"host": "example.com", "protocol": "ftp"}), "protocol", json!("expected one of: http, https")),
        (json!({"host": "example.com", "retries": 40000}), "retries", json!("value should be between 0 and 32767")),
        (
            json!({"host": "example.com", "name": "bad name"}),
            "name",
            json!("invalid value 'bad name': it must only contain alphanumeric and '., -, _, ~' characters"),
        ),
        (json!({"host": "example.com", "name": ""}), "name", json!("length must be at least 1")),
        (json!({"host": "example.com", "foo": "bar"}), "foo", json!("unknown field")),
        (json!({"host": "example.com", "path": "api"}), "path", json!("should start with: /")),
        (json!({"host": "example.com", "path": "/a//b"}), "path", json!("must not have empty segments")),
        (
            json!({"host": "example.com", "path": "/a b"}),
            "path",
            json!("invalid path: '/a b' (characters outside of the reserved list of RFC 3986 found)"),
        ),
        (json!({"host": "example.com", "path": "/a%zz"}), "path", json!("invalid url-encoded value: '%zz'")),
        (json!({"host": "[::1]:80"}), "host", json!("must not have a port")),
        (json!({"host": "example.com", "connect_timeout": "x"}), "connect_timeout", json!("expected an integer")),
    ]
}

both!(rejects_invalid_services_with_schema_violations, |gw| async move {
    gw.create_service("existing").await;
    let before = gw.snapshot().await;
    for (body, field, msg) in single_field_errors() {
        let e = gw.post_json("/services", &body).await.n_error(400, 2, "schema violation");
        assert_eq!(e["fields"], json!({ field: msg }), "POST /services {body}");
        assert_eq!(
            e["message"],
            json!(format!("schema violation ({field}: {})", msg.as_str().unwrap())),
            "POST /services {body}"
        );
    }
    // Several errors: counted, sorted by field name.
    let e = gw.post_json("/services", &json!({"path": "foo"})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["message"], json!("2 schema violations (host: required field missing; path: should start with: /)"));
    assert_eq!(e["fields"], json!({"host": "required field missing", "path": "should start with: /"}));
    // An unparsable url is a schema violation too.
    gw.post_json("/services", &json!({"url": "invalid url"})).await.n_error(400, 2, "schema violation");
    gw.post_json("/services", &json!({"url": ""})).await.n_error(400, 2, "schema violation");
    // The same checks apply to PATCH.
    let e = gw.patch_json("/services/existing", &json!({"port": "80"})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({"port": "expected an integer"}));
    gw.assert_unchanged(&before).await;
});

both!(retrieves_by_id_or_name_and_404s, |gw| async move {
    let s = gw.create_service("svc").await;
    assert_eq!(gw.get(&format!("/services/{}", id_of(&s))).await.expect(200), s);
    assert_eq!(gw.get("/services/svc").await.expect(200), s);

    for path in [format!("/services/{}", new_id()), "/services/missing".to_owned()] {
        let r = gw.get(&path).await;
        r.assert_status(404);
        assert_eq!(r.body, json!({"message": "Not found"}));
    }

    // A name shaped like a UUID is only ever looked up as an id.
    let uuid_name = new_id();
    gw.post_json("/services", &json!({"name": uuid_name, "host": "example.com"})).await.expect(201);
    gw.get(&format!("/services/{uuid_name}")).await.assert_status(404);
});

both!(patches_service_partially, |gw| async move {
    let s = gw
        .post_json("/services", &json!({"name": "svc", "host": "example.com", "path": "/v1", "retries": 2}))
        .await
        .expect(201);
    let p = gw.patch_json("/services/svc", &json!({"retries": 3, "port": 8080})).await.expect(200);
    assert_eq!(p["id"], s["id"]);
    assert_eq!(p["retries"], json!(3));
    assert_eq!(p["port"], json!(8080));
    assert_eq!(p["path"], json!("/v1"));
    assert_eq!(p["host"], json!("example.com"));
    assert_eq!(p["name"], json!("svc"));
    assert_eq!(p["created_at"], s["created_at"]);
    assert!(p["updated_at"].as_i64() >= s["updated_at"].as_i64());
    assert_eq!(gw.get("/services/svc").await.expect(200), p);

    // By id, and JSON null unsets a nullable field.
    let p =
        gw.patch_json(&format!("/services/{}", id_of(&s)), &json!({"path": null, "name": "renamed"})).await.expect(200);
    assert_eq!(p["path"], Value::Null);
    assert_eq!(p["name"], json!("renamed"));
    gw.get("/services/svc").await.assert_status(404);
    gw.get("/services/renamed").await.assert_status(200);
});

both!(patch_of_missing_service_is_404_not_found_error, |gw| async move {
    let before = gw.snapshot().await;
    let id = new_id();
    let e = gw.patch_json(&format!("/services/{id}"), &json!({"retries": 1})).await.n_error(404, 6, "not found");
    assert_eq!(e["message"], json!(format!("could not find the entity with primary key '{{id=\"{id}\"}}'")));
    assert_eq!(e["fields"], json!({ "id": id }));

    let e = gw.patch_json("/services/ghost", &json!({"retries": 1})).await.n_error(404, 6, "not found");
    assert_eq!(e["message"], json!("could not find the entity with '{name=\"ghost\"}'"));
    assert_eq!(e["fields"], json!({"name": "ghost"}));
    gw.assert_unchanged(&before).await;
});

both!(duplicate_name_is_409_unique_violation, |gw| async move {
    gw.create_service("svc").await;
    gw.create_service("other").await;
    let before = gw.snapshot().await;
    let e = gw.post_json("/services", &json!({"name": "svc", "host": "example.com"})).await.n_error(
        409,
        5,
        "unique constraint violation",
    );
    assert_eq!(e["message"], json!("UNIQUE violation detected on '{name=\"svc\"}'"));
    assert_eq!(e["fields"], json!({"name": "svc"}));

    let e =
        gw.patch_json("/services/other", &json!({"name": "svc"})).await.n_error(409, 5, "unique constraint violation");
    assert_eq!(e["fields"], json!({"name": "svc"}));
    gw.assert_unchanged(&before).await;
});

both!(put_creates_201_then_replaces_200, |gw| async move {
    let created = gw.put_json("/services/put-svc", &json!({"host": "a.example.com", "retries": 2})).await.expect(201);
    assert_eq!(keys(&created), sorted(&SERVICE_KEYS));
    assert!(is_uuid(&created["id"]));
    assert_eq!(created["name"], json!("put-svc"));
    assert_eq!(created["host"], json!("a.example.com"));
    assert_eq!(created["retries"], json!(2));
    assert_eq!(gw.get("/services/put-svc").await.expect(200), created);

    // Full replacement: omitted fields go back to their defaults.
    let replaced = gw.put_json("/services/put-svc", &json!({"host": "b.example.com"})).await.expect(200);
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["name"], json!("put-svc"));
    assert_eq!(replaced["host"], json!("b.example.com"));
    assert_eq!(replaced["retries"], json!(5));
    assert_eq!(gw.list_all("/services").await.len(), 1);

    // By id.
    let id = new_id();
    let by_id =
        gw.put_json(&format!("/services/{id}"), &json!({"name": "by-id", "host": "c.example.com"})).await.expect(201);
    assert_eq!(by_id["id"], json!(id));
    assert_eq!(by_id["name"], json!("by-id"));
    let again = gw
        .put_json(&format!("/services/{id}"), &json!({"name": "by-id", "host": "d.example.com", "port": 81}))
        .await
        .expect(200);
    assert_eq!(again["id"], json!(id));
    assert_eq!(again["host"], json!("d.example.com"));
    assert_eq!(again["port"], json!(81));
    assert_eq!(gw.list_all("/services").await.len(), 2);
});

both!(put_with_conflicting_names_is_400, |gw| async move {
    gw.create_service("one").await;
    let before = gw.snapshot().await;
    // Creating.
    let e = gw.put_json("/services/name-a", &json!({"name": "name-b", "host": "example.com"})).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert!(e["fields"]["name"].is_string(), "{e}");
    // Replacing.
    let e = gw.put_json("/services/one", &json!({"name": "two", "host": "example.com"})).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert!(e["fields"]["name"].is_string(), "{e}");
    // A body that fails validation stores nothing either.
    gw.put_json("/services/three", &json!({"host": "example.com", "port": "x"})).await.n_error(
        400,
        2,
        "schema violation",
    );
    gw.assert_unchanged(&before).await;
    gw.get("/services/name-a").await.assert_status(404);
    gw.get("/services/name-b").await.assert_status(404);
});

both!(deletes_service_and_missing_delete_is_204, |gw| async move {
    let a = gw.create_service("a").await;
    gw.create_service("b").await;
    let r = gw.delete("/services/b").await;
    r.assert_status(204);
    assert_eq!(r.text, "");
    gw.get("/services/b").await.assert_status(404);
    gw.delete(&format!("/services/{}", id_of(&a))).await.assert_status(204);
    gw.get("/services/a").await.assert_status(404);
    assert_eq!(gw.list_all("/services").await, Vec::<Value>::new());

    let rev = gw.revision().await;
    gw.delete("/services/b").await.assert_status(204);
    gw.delete(&format!("/services/{}", new_id())).await.assert_status(204);
    assert_eq!(gw.revision().await, rev, "deleting nothing is not a change");
});

both!(lists_services_without_total, |gw| async move {
    let empty = gw.get("/services").await.expect(200);
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["next"], Value::Null);
    assert!(empty.get("total").is_none(), "{empty}");

    let a = gw.create_service("a").await;
    let b = gw.create_service("b").await;
    let list = gw.get("/services").await.expect(200);
    assert!(list.get("total").is_none(), "N-layer lists have no total: {list}");
    assert!(list.get("offset").is_none(), "no offset on the last page: {list}");
    assert_eq!(list["next"], Value::Null);
    let mut expected = vec![a, b];
    expected.sort_by(|x, y| x["id"].as_str().cmp(&y["id"].as_str()));
    assert_eq!(list["data"], json!(expected), "ordered by id");
});

both!(patch_with_an_invalid_id_in_the_body_is_400, |gw| async move {
    gw.create_service("svc").await;
    let before = gw.snapshot().await;
    let e = gw.patch_json("/services/svc", &json!({"id": "not-a-uuid"})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({"id": "expected a valid UUID"}));
    gw.assert_unchanged(&before).await;
});
