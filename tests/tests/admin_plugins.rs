#![allow(clippy::unwrap_used)]
//! `/plugins` and the nested plugin endpoints (O-layer), `/plugins/enabled`,
//! `/plugins/schema/{name}`, cascades from services, routes and consumers.

use std::collections::BTreeSet;

use gatehouse_tests::*;
use serde_json::Value;

fn key_auth_defaults() -> Value {
    json!({"key_names": ["apikey"], "hide_credentials": false, "anonymous": "",
           "key_in_body": false, "run_on_preflight": true})
}

both!(creates_global_plugin_with_config_defaults, |gw| async move {
    let p = gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    assert!(is_uuid(&p["id"]), "{p}");
    assert_millis(&p["created_at"]);
    assert_eq!(p["name"], json!("key-auth"));
    assert_eq!(p["enabled"], json!(true));
    assert_eq!(p["config"], key_auth_defaults());
    assert_no_nulls(&p);
    for absent in ["service_id", "route_id", "consumer_id", "api_id"] {
        assert!(p.get(absent).is_none(), "{absent} must be omitted: {p}");
    }
    assert_eq!(gw.get(&format!("/plugins/{}", id_of(&p))).await.expect(200), p);
    let missing = gw.get(&format!("/plugins/{}", new_id())).await;
    missing.assert_status(404);
    assert_eq!(missing.body, json!({"message": "Not found"}));
});

both!(form_plugin_on_service_stores_defaults, |gw| async move {
    let s = gw.create_service("orders").await;
    let p = gw
        .post_form("/services/orders/plugins", &[("name", "hmac-auth"), ("config.clock_skew", "20")])
        .await
        .expect(201);
    assert_eq!(p["service_id"], s["id"]);
    assert_eq!(p["name"], json!("hmac-auth"));
    assert_eq!(
        p["config"],
        json!({"clock_skew": 20, "hide_credentials": false, "anonymous": "", "validate_request_body": false,
               "enforce_headers": [], "algorithms": ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"]})
    );
    assert_no_nulls(&p);

    // Same name on the same service: duplicate.
    let before = gw.snapshot().await;
    let r = gw
        .post_json("/plugins", &json!({"name": "hmac-auth", "service_id": s["id"], "config": {"clock_skew": 5}}))
        .await;
    r.assert_status(409);
    assert_eq!(r.body, json!({"name": "already exists with value 'hmac-auth'"}));
    gw.assert_unchanged(&before).await;
});

both!(uniqueness_is_per_name_and_scope, |gw| async move {
    let s = gw.create_service("svc").await;
    let c = gw.create_consumer("bob").await;
    let rl = json!({"allowed_payload_size": 10});
    gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    gw.post_json("/plugins", &json!({"name": "key-auth", "service_id": s["id"]})).await.expect(201);
    gw.post_json("/plugins", &json!({"name": "request-size-limiting", "config": rl})).await.expect(201);
    gw.post_json("/plugins", &json!({"name": "request-size-limiting", "consumer_id": c["id"], "config": rl}))
        .await
        .expect(201);
    gw.post_json(
        "/plugins",
        &json!({"name": "request-size-limiting", "consumer_id": c["id"], "service_id": s["id"], "config": rl}),
    )
    .await
    .expect(201);
    let before = gw.snapshot().await;
    for body in [
        json!({"name": "key-auth"}),
        json!({"name": "key-auth", "service_id": s["id"]}),
        json!({"name": "request-size-limiting", "consumer_id": c["id"], "config": rl}),
    ] {
        let name = body["name"].as_str().unwrap().to_owned();
        let r = gw.post_json("/plugins", &body).await;
        r.assert_status(409);
        assert_eq!(r.body, json!({ "name": format!("already exists with value '{name}'") }));
    }
    gw.assert_unchanged(&before).await;
});

both!(client_supplied_id_is_honoured_and_unique, |gw| async move {
    let id = new_id();
    let p = gw.post_json("/plugins", &json!({"id": id, "name": "key-auth"})).await.expect(201);
    assert_eq!(p["id"], json!(id));
    let before = gw.snapshot().await;
    let r = gw.post_json("/plugins", &json!({"id": id, "name": "basic-auth"})).await;
    r.assert_status(409);
    assert_eq!(r.body, json!({ "id": format!("already exists with value '{id}'") }));
    gw.assert_unchanged(&before).await;
});

both!(rejects_invalid_plugins_with_flat_errors, |gw| async move {
    let c = gw.create_consumer("bob").await;
    let before = gw.snapshot().await;
    let cases: Vec<(Value, Value)> = vec![
        (json!({}), json!({"name": "name is required"})),
        (
            json!({"name": "foo"}),
            json!({"config": "plugin 'foo' not enabled; add it to the 'plugins' configuration property"}),
        ),
        (json!({"name": "galileo"}), json!({"config.service_token": "service_token is required"})),
        (
            json!({"name": "request-size-limiting", "config": {"allowed_payload_size": "abc"}}),
            json!({"config.allowed_payload_size": "allowed_payload_size is not a number"}),
        ),
        (
            json!({"name": "jwt", "config": {"claims_to_verify": ["iat"]}}),
            json!({"config.claims_to_verify": "\"iat\" is not allowed. Allowed values are: \"exp\", \"nbf\""}),
        ),
        (
            json!({"name": "acl", "config": {"whitelist": ["a"], "blacklist": ["b"]}}),
            json!({"config": "You cannot set both a whitelist and a blacklist"}),
        ),
        (
            json!({"name": "key-auth", "consumer_id": c["id"]}),
            json!({"message": "No consumer can be configured for that plugin"}),
        ),
        (json!({"name": "key-auth", "config": {"foo": 1}}), json!({"config.foo": "foo is an unknown field"})),
        (json!({"name": "key-auth", "foo": 1}), json!({"foo": "foo is an unknown field"})),
        (
            json!({"name": "key-auth", "config": {"hide_credentials": "sometimes"}}),
            json!({"config.hide_credentials": "hide_credentials is not a boolean"}),
        ),
        (json!({"name": "acl", "config": {}}), json!({"config": "You must set at least a whitelist or blacklist"})),
    ];
    for (body, expected) in cases {
        let r = gw.post_json("/plugins", &body).await;
        r.assert_status(400);
        assert_eq!(r.body, expected, "POST /plugins {body}");
    }
    gw.assert_unchanged(&before).await;
});

both!(missing_references_are_404_does_not_exist, |gw| async move {
    let before = gw.snapshot().await;
    for column in ["service_id", "route_id", "consumer_id"] {
        let id = new_id();
        let mut body = json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 1}});
        body[column] = json!(id);
        let r = gw.post_json("/plugins", &body).await;
        r.assert_status(404);
        assert_eq!(r.body, json!({ column: format!("does not exist with value '{id}'") }), "POST /plugins {body}");
    }
    gw.assert_unchanged(&before).await;
});

both!(accepts_kong_1x_reference_form, |gw| async move {
    let s = gw.create_service("svc").await;
    let r = gw.create_route(&id_of(&s), &["/x"]).await;
    let p = gw.post_json("/plugins", &json!({"name": "key-auth", "service": {"id": s["id"]}})).await.expect(201);
    assert_eq!(p["service_id"], s["id"]);
    let p = gw.post_json("/plugins", &json!({"name": "key-auth", "route": {"id": r["id"]}})).await.expect(201);
    assert_eq!(p["route_id"], r["id"]);
});

both!(lists_and_filters_plugins, |gw| async move {
    let s = gw.create_service("svc").await;
    let global = gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    let on_svc = gw.post_json("/plugins", &json!({"name": "key-auth", "service_id": s["id"]})).await.expect(201);
    let basic = gw.post_json("/plugins", &json!({"name": "basic-auth", "service_id": s["id"]})).await.expect(201);

    let all = gw.get("/plugins").await.expect(200);
    assert_eq!(all["total"], json!(3), "{all}");
    assert_eq!(all["next"], Value::Null);
    assert!(all.get("offset").is_none(), "{all}");
    let got: BTreeSet<String> = ids(&data(&all)).into_iter().collect();
    let want: BTreeSet<String> = [&global, &on_svc, &basic].iter().map(|p| id_of(p)).collect();
    assert_eq!(got, want);
    for p in data(&all) {
        assert_no_nulls(&p);
    }

    let by_name = gw.get("/plugins?name=key-auth").await.expect(200);
    assert_eq!(by_name["total"], json!(2));
    let got: BTreeSet<String> = ids(&data(&by_name)).into_iter().collect();
    let want: BTreeSet<String> = [&global, &on_svc].iter().map(|p| id_of(p)).collect();
    assert_eq!(got, want);

    let by_svc = gw.get(&format!("/plugins?service_id={}", id_of(&s))).await.expect(200);
    assert_eq!(by_svc["total"], json!(2));
    let both_filters = gw.get(&format!("/plugins?service_id={}&name=basic-auth", id_of(&s))).await.expect(200);
    assert_eq!(ids(&data(&both_filters)), vec![id_of(&basic)]);
    assert_eq!(both_filters["total"], json!(1));

    let r = gw.get("/plugins?foo=bar").await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"foo": "unknown field"}));
    let r = gw.get("/plugins?service_id=abc").await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"service_id": "abc is not a valid uuid"}));
});

both!(patches_plugin_merging_config, |gw| async move {
    let p = gw
        .post_json("/plugins", &json!({"name": "acl", "config": {"whitelist": ["admins"], "hide_groups_header": true}}))
        .await
        .expect(201);
    let path = format!("/plugins/{}", id_of(&p));
    let patched = gw.patch_json(&path, &json!({"config": {"whitelist": ["admins", "ops"]}})).await.expect(200);
    assert_eq!(patched["id"], p["id"]);
    assert_eq!(patched["created_at"], p["created_at"]);
    assert_eq!(patched["config"]["hide_groups_header"], json!(true), "config is merged: {patched}");
    assert_eq!(patched["config"]["whitelist"], json!(["admins", "ops"]));

    let disabled = gw.patch_form(&path, &[("enabled", "false")]).await.expect(200);
    assert_eq!(disabled["enabled"], json!(false));
    assert_eq!(disabled["config"]["whitelist"], json!(["admins", "ops"]));
    assert_eq!(gw.get(&path).await.expect(200), disabled);

    let before = gw.snapshot().await;
    let r = gw.patch_json(&path, &json!({})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"message": "empty body"}));
    let missing = new_id();
    let r = gw.patch_json(&path, &json!({"service_id": missing})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({ "service_id": format!("does not exist with value '{missing}'") }));
    let r = gw.patch_json(&path, &json!({"name": "foo"})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"config": "plugin 'foo' not enabled; add it to the 'plugins' configuration property"}));
    let r = gw.patch_json(&path, &json!({"config": {"hide_groups_header": "many"}})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"config.hide_groups_header": "hide_groups_header is not a boolean"}));
    let r = gw.patch_json(&path, &json!({"config": {"blacklist": ["guests"]}})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"config": "You cannot set both a whitelist and a blacklist"}));
    let r = gw.patch_json(&format!("/plugins/{}", new_id()), &json!({"enabled": true})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.assert_unchanged(&before).await;
});

both!(put_plugin_creates_201_replaces_200_missing_404, |gw| async move {
    let s = gw.create_service("svc").await;
    let created = gw
        .put_json("/plugins", &json!({"name": "key-auth", "service_id": s["id"], "config": {"hide_credentials": true}}))
        .await
        .expect(201);
    assert!(is_uuid(&created["id"]));
    assert_eq!(created["config"]["hide_credentials"], json!(true));

    let replaced = gw
        .put_json(
            "/plugins",
            &json!({"id": created["id"], "name": "key-auth", "created_at": created["created_at"],
                    "service_id": s["id"], "config": {"key_names": ["token"]}}),
        )
        .await
        .expect(200);
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["service_id"], s["id"]);
    assert_eq!(
        replaced["config"],
        json!({"key_names": ["token"], "hide_credentials": false, "anonymous": "",
               "key_in_body": false, "run_on_preflight": true}),
        "PUT replaces the whole config"
    );
    assert_eq!(gw.get(&format!("/plugins/{}", id_of(&created))).await.expect(200), replaced);
    assert_eq!(gw.get("/plugins").await.expect(200)["total"], json!(1));

    let before = gw.snapshot().await;
    let r = gw.put_json("/plugins", &json!({"id": new_id(), "name": "key-auth", "created_at": now_ms()})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.assert_unchanged(&before).await;
});

both!(deletes_plugin_and_missing_is_404, |gw| async move {
    let p = gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    let path = format!("/plugins/{}", id_of(&p));
    let d = gw.delete(&path).await;
    d.assert_status(204);
    assert_eq!(d.text, "");
    gw.get(&path).await.assert_status(404);
    let again = gw.delete(&path).await;
    again.assert_status(404);
    assert_eq!(again.body, json!({"message": "Not found"}));
});

both!(service_plugins_endpoint, |gw| async move {
    let a = gw.create_service("a").await;
    let b = gw.create_service("b").await;
    let pa = gw.post_json("/services/a/plugins", &json!({"name": "key-auth", "service_id": b["id"]})).await.expect(201);
    assert_eq!(pa["service_id"], a["id"], "the URL's service wins");
    let pb =
        gw.post_json(&format!("/services/{}/plugins", id_of(&b)), &json!({"name": "basic-auth"})).await.expect(201);
    assert_eq!(pb["service_id"], b["id"]);
    gw.post_json("/plugins", &json!({"name": "basic-auth"})).await.expect(201);

    let list = gw.get("/services/a/plugins").await.expect(200);
    assert_eq!(list["total"], json!(1));
    assert_eq!(ids(&data(&list)), vec![id_of(&pa)]);

    // PUT on the nested collection: create, then replace.
    let put = gw
        .put_json(
            "/services/a/plugins",
            &json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 3}}),
        )
        .await
        .expect(201);
    assert_eq!(put["service_id"], a["id"]);
    let put2 = gw
        .put_json(
            "/services/a/plugins",
            &json!({"id": put["id"], "name": "request-size-limiting", "created_at": put["created_at"],
                    "config": {"allowed_payload_size": 4}}),
        )
        .await
        .expect(200);
    assert_eq!(put2["id"], put["id"]);
    assert_eq!(put2["service_id"], a["id"]);
    assert_eq!(put2["config"]["allowed_payload_size"], json!(4));
    assert_eq!(gw.get("/services/a/plugins").await.expect(200)["total"], json!(2));

    let before = gw.snapshot().await;
    for path in ["/services/ghost/plugins".to_owned(), format!("/services/{}/plugins", new_id())] {
        let r = gw.get(&path).await;
        r.assert_status(404);
        assert_eq!(r.body, json!({"message": "Not found"}));
        gw.post_json(&path, &json!({"name": "key-auth"})).await.assert_status(404);
    }
    gw.assert_unchanged(&before).await;
});

both!(route_plugins_endpoint, |gw| async move {
    let s = gw.create_service("svc").await;
    let r1 = gw.create_route(&id_of(&s), &["/one"]).await;
    let r2 = gw.create_route(&id_of(&s), &["/two"]).await;
    let p = gw.post_json(&format!("/routes/{}/plugins", id_of(&r1)), &json!({"name": "key-auth"})).await.expect(201);
    assert_eq!(p["route_id"], r1["id"]);
    assert!(p.get("service_id").is_none());
    gw.post_form(&format!("/routes/{}/plugins", id_of(&r2)), &[("name", "basic-auth")]).await.expect(201);

    let list = gw.get(&format!("/routes/{}/plugins", id_of(&r1))).await.expect(200);
    assert_eq!(list["total"], json!(1));
    assert_eq!(ids(&data(&list)), vec![id_of(&p)]);

    let put = gw.put_json(&format!("/routes/{}/plugins", id_of(&r1)), &json!({"name": "basic-auth"})).await.expect(201);
    assert_eq!(put["route_id"], r1["id"]);

    let missing = format!("/routes/{}/plugins", new_id());
    gw.get(&missing).await.assert_status(404);
    let before = gw.snapshot().await;
    gw.post_json(&missing, &json!({"name": "key-auth"})).await.assert_status(404);
    gw.assert_unchanged(&before).await;
});

both!(consumer_plugins_endpoint, |gw| async move {
    let bob = gw.create_consumer("bob").await;
    let alice = gw.create_consumer("alice").await;
    let p = gw
        .post_json(
            "/consumers/bob/plugins",
            &json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 5}}),
        )
        .await
        .expect(201);
    assert_eq!(p["consumer_id"], bob["id"]);
    let pa = gw
        .post_json(
            &format!("/consumers/{}/plugins", id_of(&alice)),
            &json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 7}}),
        )
        .await
        .expect(201);
    assert_eq!(pa["consumer_id"], alice["id"]);

    let list = gw.get("/consumers/bob/plugins").await.expect(200);
    assert_eq!(list["total"], json!(1));
    assert_eq!(ids(&data(&list)), vec![id_of(&p)]);

    let item = format!("/consumers/bob/plugins/{}", id_of(&p));
    assert_eq!(gw.get(&item).await.expect(200), p);
    let patched = gw.patch_json(&item, &json!({"config": {"allowed_payload_size": 100}})).await.expect(200);
    assert_eq!(patched["config"]["allowed_payload_size"], json!(100));
    assert_eq!(patched["consumer_id"], bob["id"]);

    // A plugin of another consumer is not reachable through bob.
    let before = gw.snapshot().await;
    let foreign = format!("/consumers/bob/plugins/{}", id_of(&pa));
    gw.get(&foreign).await.assert_status(404);
    gw.patch_json(&foreign, &json!({"enabled": false})).await.assert_status(404);
    gw.delete(&foreign).await.assert_status(404);
    gw.get("/consumers/ghost/plugins").await.assert_status(404);
    gw.post_json("/consumers/ghost/plugins", &json!({"name": "request-size-limiting"})).await.assert_status(404);
    // key-auth cannot be configured on a consumer, nested or not.
    let r = gw.post_json("/consumers/bob/plugins", &json!({"name": "key-auth"})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"message": "No consumer can be configured for that plugin"}));
    gw.assert_unchanged(&before).await;

    gw.delete(&item).await.assert_status(204);
    gw.get(&item).await.assert_status(404);
    gw.get(&format!("/plugins/{}", id_of(&pa))).await.assert_status(200);
});

both!(enabled_plugins_lists_those_with_a_runtime, |gw| async move {
    let b = gw.get("/plugins/enabled").await.expect(200);
    let names: BTreeSet<&str> = b["enabled_plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("enabled_plugins must be an array: {b}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = ENABLED_PLUGINS.iter().copied().collect();
    assert_eq!(names, want);
    assert!(names.iter().all(|n| BUNDLED_PLUGINS.contains(n)), "{names:?}");
    // Every enabled plugin can be created; every other bundled one is refused.
    for name in BUNDLED_PLUGINS {
        let r = gw.post_json("/plugins", &json!({"name": name})).await;
        if names.contains(name) {
            assert_ne!(
                r.body["config"],
                json!(format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property")),
                "{name}"
            );
        } else {
            r.assert_status(400);
            assert_eq!(
                r.body,
                json!({"config": format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property")})
            );
        }
    }
});

both!(plugin_schema_endpoint, |gw| async move {
    let ka = gw.get("/plugins/schema/key-auth").await.expect(200);
    assert_eq!(ka["fields"]["key_names"]["type"], json!("array"), "{ka}");
    assert_eq!(ka["fields"]["key_names"]["required"], json!(true), "{ka}");
    assert_eq!(ka["fields"]["hide_credentials"]["type"], json!("boolean"), "{ka}");
    assert_eq!(ka["fields"]["hide_credentials"]["default"], json!(false), "{ka}");
    let rl = gw.get("/plugins/schema/rate-limiting").await.expect(200);
    assert_eq!(rl["fields"]["minute"]["type"], json!("number"), "{rl}");
    assert_eq!(rl["fields"]["policy"]["default"], json!("cluster"), "{rl}");

    let r = gw.get("/plugins/schema/foo").await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "No plugin named 'foo'"}));
});

both!(deleting_parents_deletes_their_plugins, |gw| async move {
    let s = gw.create_service("svc").await;
    let other = gw.create_service("other").await;
    let route_svc = gw.create_service("route-svc").await;
    let r = gw.create_route(&id_of(&route_svc), &["/x"]).await;
    let c = gw.create_consumer("bob").await;
    let global = gw.post_json("/plugins", &json!({"name": "basic-auth"})).await.expect(201);
    let on_svc = gw.post_json("/services/svc/plugins", &json!({"name": "key-auth"})).await.expect(201);
    let on_svc_consumer = gw
        .post_json(
            "/plugins",
            &json!({"name": "request-size-limiting", "service_id": s["id"], "consumer_id": c["id"],
                    "config": {"allowed_payload_size": 1}}),
        )
        .await
        .expect(201);
    let on_other = gw.post_json("/services/other/plugins", &json!({"name": "key-auth"})).await.expect(201);
    let on_route =
        gw.post_json(&format!("/routes/{}/plugins", id_of(&r)), &json!({"name": "key-auth"})).await.expect(201);
    let on_consumer =
        gw.post_json("/consumers/bob/plugins", &json!({"name": "request-size-limiting"})).await.expect(201);

    gw.delete("/services/svc").await.assert_status(204);
    gw.get(&format!("/plugins/{}", id_of(&on_svc))).await.assert_status(404);
    gw.get(&format!("/plugins/{}", id_of(&on_svc_consumer))).await.assert_status(404);

    gw.delete(&format!("/routes/{}", id_of(&r))).await.assert_status(204);
    gw.get(&format!("/plugins/{}", id_of(&on_route))).await.assert_status(404);

    gw.delete("/consumers/bob").await.assert_status(204);
    gw.get(&format!("/plugins/{}", id_of(&on_consumer))).await.assert_status(404);

    let left: BTreeSet<String> = ids(&gw.list_all("/plugins").await).into_iter().collect();
    let want: BTreeSet<String> = [id_of(&global), id_of(&on_other)].into_iter().collect();
    assert_eq!(left, want);
    assert_eq!(gw.get("/plugins").await.expect(200)["total"], json!(2));
    let _ = other;
});

both!(consumer_plugins_resolve_uuid_shaped_usernames, |gw| async move {
    // N-layer `/consumers/{uuid}` is by id only; the O-layer nested plugin endpoints
    // try the id, then the username.
    let username = new_id();
    let c = gw.create_consumer(&username).await;
    gw.get(&format!("/consumers/{username}")).await.assert_status(404);
    let p = gw
        .post_json(
            &format!("/consumers/{username}/plugins"),
            &json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 5}}),
        )
        .await
        .expect(201);
    assert_eq!(p["consumer_id"], c["id"]);
    let list = gw.get(&format!("/consumers/{username}/plugins")).await.expect(200);
    assert_eq!(ids(&data(&list)), vec![id_of(&p)]);
});
