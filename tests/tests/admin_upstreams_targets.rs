#![allow(clippy::unwrap_used)]
//! `/upstreams`, `/upstreams/{name or id}`, targets and their history (O-layer).

use gatehouse_tests::*;
use serde_json::Value;

fn default_healthchecks() -> Value {
    json!({
        "active": {
            "timeout": 1, "concurrency": 10, "http_path": "/",
            "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
            "unhealthy": {"interval": 0, "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
                          "tcp_failures": 0, "timeouts": 0, "http_failures": 0}
        },
        "passive": {
            "healthy": {"http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                          300, 301, 302, 303, 304, 305, 306, 307, 308],
                        "successes": 0},
            "unhealthy": {"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0,
                          "http_failures": 0}
        }
    })
}

both!(creates_upstream_with_defaults, |gw| async move {
    let u = gw.post_json("/upstreams", &json!({"name": "service.v1.xyz"})).await.expect(201);
    assert!(is_uuid(&u["id"]), "{u}");
    assert_millis(&u["created_at"]);
    assert_eq!(u["name"], json!("service.v1.xyz"));
    assert_eq!(u["hash_on"], json!("none"));
    assert_eq!(u["hash_fallback"], json!("none"));
    assert_eq!(u["hash_on_cookie_path"], json!("/"));
    assert_eq!(u["slots"], json!(1000));
    assert_eq!(u["healthchecks"], default_healthchecks());
    assert_no_nulls(&u);
    for absent in ["hash_on_header", "hash_fallback_header", "hash_on_cookie"] {
        assert!(u.get(absent).is_none(), "{absent} must be omitted: {u}");
    }
    assert_eq!(gw.get("/upstreams/service.v1.xyz").await.expect(200), u);
    assert_eq!(gw.get(&format!("/upstreams/{}", id_of(&u))).await.expect(200), u);
    for path in ["/upstreams/missing.xyz".to_owned(), format!("/upstreams/{}", new_id())] {
        let r = gw.get(&path).await;
        r.assert_status(404);
        assert_eq!(r.body, json!({"message": "Not found"}));
    }

    let custom = gw
        .post_json(
            "/upstreams",
            &json!({"name": "hashed.xyz", "slots": 10, "hash_on": "header", "hash_on_header": "X-User",
                    "hash_fallback": "cookie", "hash_on_cookie": "sess", "hash_on_cookie_path": "/app",
                    "healthchecks": {"active": {"healthy": {"interval": 5}}}}),
        )
        .await
        .expect(201);
    assert_eq!(custom["slots"], json!(10));
    assert_eq!(custom["hash_on"], json!("header"));
    assert_eq!(custom["hash_on_header"], json!("X-User"));
    assert_eq!(custom["hash_fallback"], json!("cookie"));
    assert_eq!(custom["hash_on_cookie"], json!("sess"));
    assert_eq!(custom["hash_on_cookie_path"], json!("/app"));
    let mut hc = default_healthchecks();
    hc["active"]["healthy"]["interval"] = json!(5);
    assert_eq!(custom["healthchecks"], hc, "missing nested fields take defaults");

    let list = gw.get("/upstreams").await.expect(200);
    assert_eq!(list["total"], json!(2));
    assert_eq!(list["next"], Value::Null);
    assert_eq!(data(&list).len(), 2);
});

both!(rejects_invalid_upstreams, |gw| async move {
    gw.create_upstream("taken.xyz").await;
    let before = gw.snapshot().await;
    let hash_values =
        "\"x\" is not allowed. Allowed values are: \"none\", \"consumer\", \"ip\", \"header\", \"cookie\"";
    let cases: Vec<(Value, Value)> = vec![
        (json!({}), json!({"name": "name is required"})),
        (json!({"name": "1.2.3.4"}), json!({"message": "Invalid name; no ip addresses allowed"})),
        (json!({"name": "a.xyz:80"}), json!({"message": "Invalid name; no port allowed"})),
        (json!({"name": "bad name"}), json!({"message": "Invalid name; must be a valid hostname"})),
        (json!({"name": "a.xyz", "slots": 5}), json!({"message": "number of slots must be between 10 and 65536"})),
        (json!({"name": "a.xyz", "slots": 70000}), json!({"message": "number of slots must be between 10 and 65536"})),
        (json!({"name": "a.xyz", "slots": "abc"}), json!({"slots": "slots is not a number"})),
        (json!({"name": "a.xyz", "hash_on": "x"}), json!({ "hash_on": hash_values })),
        (
            json!({"name": "a.xyz", "hash_on": "header"}),
            json!({"message": "Hashing on 'header', but no header name provided"}),
        ),
        (
            json!({"name": "a.xyz", "hash_on": "cookie"}),
            json!({"message": "Hashing on 'cookie', but no cookie name provided"}),
        ),
        (
            json!({"name": "a.xyz", "hash_fallback": "ip"}),
            json!({"message": "Cannot set fallback if primary 'hash_on' is not set"}),
        ),
        (
            json!({"name": "a.xyz", "hash_on": "cookie", "hash_on_cookie": "c", "hash_fallback": "ip"}),
            json!({"message": "Cannot set `hash_fallback` if primary `hash_on` is set to cookie"}),
        ),
        (
            json!({"name": "a.xyz", "hash_on": "ip", "hash_fallback": "ip"}),
            json!({"message": "Cannot set fallback and primary hashes to the same value"}),
        ),
        (
            json!({"name": "a.xyz", "hash_on": "header", "hash_on_header": "bad header"}),
            json!({"message": "Header: bad header name 'bad header', allowed characters are A-Z, a-z, 0-9, '_', and '-'"}),
        ),
        (
            json!({"name": "a.xyz", "healthchecks": {"active": {"timeout": -1}}}),
            json!({"healthchecks.active.timeout": "must be between 0 and 65535"}),
        ),
        (
            json!({"name": "a.xyz", "healthchecks": {"active": {"concurrency": 0}}}),
            json!({"healthchecks.active.concurrency": "must be an integer between 1 and 2147483647"}),
        ),
        (
            json!({"name": "a.xyz", "healthchecks": {"passive": {"unhealthy": {"tcp_failures": 1.5}}}}),
            json!({"healthchecks.passive.unhealthy.tcp_failures":
                   "must be 0 (disabled), or an integer between 1 and 2147483647"}),
        ),
        (
            json!({"name": "a.xyz", "healthchecks": {"active": {"healthy": {"http_statuses": [99]}}}}),
            json!({"healthchecks.active.healthy.http_statuses": "invalid status code '99': must be between 100 and 999"}),
        ),
        (
            json!({"name": "a.xyz", "healthchecks": {"active": {"http_path": "health"}}}),
            json!({"healthchecks.active.http_path": "must be prefixed with slash"}),
        ),
        (json!({"name": "a.xyz", "foo": 1}), json!({"foo": "foo is an unknown field"})),
    ];
    for (body, expected) in cases {
        let r = gw.post_json("/upstreams", &body).await;
        r.assert_status(400);
        assert_eq!(r.body, expected, "POST /upstreams {body}");
    }
    let r = gw.post_json("/upstreams", &json!({"name": "taken.xyz"})).await;
    r.assert_status(409);
    assert_eq!(r.body, json!({"name": "already exists with value 'taken.xyz'"}));
    gw.assert_unchanged(&before).await;
});

both!(patch_upstream_merges_healthchecks, |gw| async move {
    let u = gw.create_upstream("up.xyz").await;
    gw.create_upstream("other.xyz").await;
    let p = gw
        .patch_json("/upstreams/up.xyz", &json!({"healthchecks": {"active": {"healthy": {"interval": 5}}}}))
        .await
        .expect(200);
    let mut hc = default_healthchecks();
    hc["active"]["healthy"]["interval"] = json!(5);
    assert_eq!(p["healthchecks"], hc);
    assert_eq!(p["id"], u["id"]);
    assert_eq!(p["created_at"], u["created_at"]);

    let p = gw
        .patch_json(
            &format!("/upstreams/{}", id_of(&u)),
            &json!({"slots": 20, "healthchecks": {"passive": {"unhealthy": {"http_statuses": [500]}}}}),
        )
        .await
        .expect(200);
    hc["passive"]["unhealthy"]["http_statuses"] = json!([500]);
    assert_eq!(p["healthchecks"], hc, "arrays are replaced, the rest merged");
    assert_eq!(p["slots"], json!(20));
    assert_eq!(gw.get("/upstreams/up.xyz").await.expect(200), p);

    let before = gw.snapshot().await;
    let r = gw.patch_json("/upstreams/up.xyz", &json!({})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"message": "empty body"}));
    let r = gw.patch_json("/upstreams/up.xyz", &json!({"healthchecks": {"active": {"timeout": 70000}}})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"healthchecks.active.timeout": "must be between 0 and 65535"}));
    let r = gw.patch_json("/upstreams/up.xyz", &json!({"name": "other.xyz"})).await;
    r.assert_status(409);
    assert_eq!(r.body, json!({"name": "already exists with value 'other.xyz'"}));
    let r = gw.patch_json("/upstreams/ghost.xyz", &json!({"slots": 20})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.assert_unchanged(&before).await;

    let renamed = gw.patch_form("/upstreams/up.xyz", &[("name", "renamed.xyz")]).await.expect(200);
    assert_eq!(renamed["name"], json!("renamed.xyz"));
    gw.get("/upstreams/up.xyz").await.assert_status(404);
});

both!(put_upstream_collection_creates_replaces_404s, |gw| async move {
    let created = gw.put_json("/upstreams", &json!({"name": "put.xyz", "slots": 50})).await.expect(201);
    assert_eq!(created["slots"], json!(50));
    let replaced = gw
        .put_json(
            "/upstreams",
            &json!({"id": created["id"], "name": "put.xyz", "created_at": created["created_at"],
                    "hash_on": "ip"}),
        )
        .await
        .expect(200);
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["hash_on"], json!("ip"));
    assert_eq!(replaced["slots"], json!(1000), "PUT replaces the whole upstream");
    assert_eq!(replaced["healthchecks"], default_healthchecks());
    assert_eq!(gw.get("/upstreams/put.xyz").await.expect(200), replaced);

    let before = gw.snapshot().await;
    let r = gw.put_json("/upstreams", &json!({"id": new_id(), "name": "ghost.xyz", "created_at": now_ms()})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    let r = gw.put_json("/upstreams/put.xyz", &json!({"name": "put.xyz"})).await;
    r.assert_status(405);
    assert_eq!(r.body, json!({"message": "Method not allowed"}));
    gw.assert_unchanged(&before).await;
});

both!(deletes_upstream_and_its_targets, |gw| async move {
    let u = gw.create_upstream("up.xyz").await;
    gw.create_target("up.xyz", "10.0.0.1:80", 10).await;
    gw.create_target("up.xyz", "10.0.0.2:80", 20).await;
    let d = gw.delete("/upstreams/up.xyz").await;
    d.assert_status(204);
    assert_eq!(d.text, "");
    gw.get("/upstreams/up.xyz").await.assert_status(404);
    gw.get(&format!("/upstreams/{}/targets", id_of(&u))).await.assert_status(404);
    let again = gw.delete("/upstreams/up.xyz").await;
    again.assert_status(404);
    assert_eq!(again.body, json!({"message": "Not found"}));
    gw.delete(&format!("/upstreams/{}", new_id())).await.assert_status(404);

    // Re-create the upstream under the same id: its old targets must be gone.
    let back = gw.post_json("/upstreams", &json!({"id": u["id"], "name": "up.xyz"})).await.expect(201);
    assert_eq!(back["id"], u["id"], "O-layer POST honours a client id");
    let all = gw.get("/upstreams/up.xyz/targets/all").await.expect(200);
    assert_eq!(all["total"], json!(0));
    assert_eq!(all["data"], json!([]));
});

both!(creates_and_normalises_targets, |gw| async move {
    let u = gw.create_upstream("up.xyz").await;
    let t = gw.post_json("/upstreams/up.xyz/targets", &json!({"target": "1.2.3.4:80", "weight": 15})).await.expect(201);
    assert_eq!(keys(&t), sorted(&["id", "created_at", "target", "weight", "upstream_id"]), "{t}");
    assert!(is_uuid(&t["id"]));
    assert_millis(&t["created_at"]);
    assert_eq!(t["target"], json!("1.2.3.4:80"));
    assert_eq!(t["weight"], json!(15));
    assert_eq!(t["upstream_id"], u["id"]);

    for (input, stored) in [
        ("1.2.3.5", "1.2.3.5:8000"),
        ("example.com", "example.com:8000"),
        ("example.com:8080", "example.com:8080"),
        ("::1", "[0000:0000:0000:0000:0000:0000:0000:0001]:8000"),
        ("[::1]:80", "[0000:0000:0000:0000:0000:0000:0000:0001]:80"),
    ] {
        let t =
            gw.post_json(&format!("/upstreams/{}/targets", id_of(&u)), &json!({ "target": input })).await.expect(201);
        assert_eq!(t["target"], json!(stored), "target {input}");
        assert_eq!(t["weight"], json!(100), "default weight");
    }

    let before = gw.snapshot().await;
    for (body, expected) in [
        (json!({"target": "1.2.3.4:80", "weight": 1001}), json!({"message": "weight must be from 0 to 1000"})),
        (json!({"target": "bad target!"}), json!({"message": "Invalid target; not a valid hostname or ip address"})),
        (json!({"weight": 10}), json!({"target": "target is required"})),
    ] {
        let r = gw.post_json("/upstreams/up.xyz/targets", &body).await;
        r.assert_status(400);
        assert_eq!(r.body, expected, "POST targets {body}");
    }
    let r = gw.post_json("/upstreams/ghost.xyz/targets", &json!({"target": "1.2.3.4:80"})).await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.get("/upstreams/ghost.xyz/targets").await.assert_status(404);
    gw.get("/upstreams/ghost.xyz/targets/all").await.assert_status(404);
    gw.assert_unchanged(&before).await;
});

both!(target_history_and_active_list, |gw| async move {
    gw.create_upstream("up.xyz").await;
    // Kept active throughout, so history clean-up never applies.
    let c = gw.create_target("up.xyz", "3.3.3.3:80", 10).await;
    gw.create_target("up.xyz", "1.1.1.1:80", 100).await;
    gw.create_target("up.xyz", "2.2.2.2:80", 50).await;
    gw.create_target("up.xyz", "1.1.1.1:80", 0).await;
    let b2 = gw.create_target("up.xyz", "2.2.2.2:80", 60).await;

    let active = gw.get("/upstreams/up.xyz/targets").await.expect(200);
    assert_eq!(active["total"], json!(2), "{active}");
    let rows = data(&active);
    let mut rows = rows;
    rows.sort_by(|a, b| a["target"].as_str().cmp(&b["target"].as_str()));
    assert_eq!(
        rows.iter().map(|t| t["target"].clone()).collect::<Vec<_>>(),
        vec![json!("2.2.2.2:80"), json!("3.3.3.3:80")],
        "latest entry per target, weight > 0"
    );
    assert_eq!(rows[0]["id"], b2["id"]);
    assert_eq!(rows[0]["weight"], json!(60));
    assert_eq!(rows[1]["id"], c["id"]);
    assert!(active.get("next").is_none_or(Value::is_null), "{active}");

    let all = gw.get("/upstreams/up.xyz/targets/all").await.expect(200);
    assert_eq!(all["total"], json!(5));
    assert_eq!(data(&all).len(), 5);
    assert_eq!(all["next"], Value::Null);

    // DELETE by target string adds a weight-0 entry.
    let d = gw.delete("/upstreams/up.xyz/targets/2.2.2.2:80").await;
    d.assert_status(204);
    assert_eq!(d.text, "");
    let active = gw.get("/upstreams/up.xyz/targets").await.expect(200);
    assert_eq!(ids(&data(&active)), vec![id_of(&c)]);
    let all = gw.get("/upstreams/up.xyz/targets/all").await.expect(200);
    assert_eq!(all["total"], json!(6));
    let zeroes = data(&all).iter().filter(|t| t["target"] == json!("2.2.2.2:80") && t["weight"] == json!(0)).count();
    assert_eq!(zeroes, 1, "{all}");

    // DELETE by id (of the entry) works the same, through the upstream's id too.
    gw.create_target("up.xyz", "4.4.4.4:80", 40).await;
    let d4 = gw.get("/upstreams/up.xyz/targets").await.expect(200);
    let four = data(&d4).into_iter().find(|t| t["target"] == json!("4.4.4.4:80")).unwrap();
    let up = gw.get("/upstreams/up.xyz").await.expect(200);
    gw.delete(&format!("/upstreams/{}/targets/{}", id_of(&up), id_of(&four))).await.assert_status(204);
    let active = gw.get("/upstreams/up.xyz/targets").await.expect(200);
    assert_eq!(ids(&data(&active)), vec![id_of(&c)]);
    assert_eq!(gw.get("/upstreams/up.xyz/targets/all").await.expect(200)["total"], json!(8));

    let before = gw.snapshot().await;
    let r = gw.delete("/upstreams/up.xyz/targets/9.9.9.9:80").await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.delete(&format!("/upstreams/up.xyz/targets/{}", new_id())).await.assert_status(404);
    gw.delete("/upstreams/ghost.xyz/targets/3.3.3.3:80").await.assert_status(404);
    gw.assert_unchanged(&before).await;
});

both!(targets_all_is_paginated, |gw| async move {
    gw.create_upstream("up.xyz").await;
    for i in 1..=7 {
        gw.create_target("up.xyz", &format!("10.0.0.{i}:80"), 10).await;
    }
    let first = gw.get("/upstreams/up.xyz/targets/all?size=3").await.expect(200);
    assert_eq!(first["total"], json!(7));
    assert_eq!(data(&first).len(), 3);
    let next = first["next"].as_str().unwrap_or_else(|| panic!("no next: {first}"));
    assert!(next.starts_with(&format!("{}/upstreams/", gw.base)), "next must be absolute: {next}");
    assert!(first["offset"].is_string(), "{first}");

    let pages = gw.pages("/upstreams/up.xyz/targets/all?size=3").await;
    assert_eq!(pages.len(), 3);
    let last = pages.last().unwrap();
    assert_eq!(last["next"], Value::Null);
    assert!(last.get("offset").is_none(), "{last}");
    let mut seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    assert_eq!(seen.len(), 7);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7, "every entry exactly once");
});

both!(upstream_uuid_shaped_name_falls_back_to_name, |gw| async move {
    // A UUID is also a valid hostname; O-layer lookups try the id, then the name.
    let name = new_id();
    let u = gw.create_upstream(&name).await;
    assert_ne!(u["id"], json!(name));
    assert_eq!(gw.get(&format!("/upstreams/{name}")).await.expect(200), u);
    gw.create_target(&name, "1.2.3.4:80", 10).await;
    let t = gw.get(&format!("/upstreams/{name}/targets")).await.expect(200);
    assert_eq!(t["total"], json!(1));
    let p = gw.patch_json(&format!("/upstreams/{name}"), &json!({"slots": 30})).await.expect(200);
    assert_eq!(p["slots"], json!(30));
    gw.delete(&format!("/upstreams/{name}")).await.assert_status(204);
    gw.get(&format!("/upstreams/{}", id_of(&u))).await.assert_status(404);
});

both!(active_targets_list_is_complete_beyond_100, |gw| async move {
    gw.create_upstream("up.xyz").await;
    let n = 120;
    futures::future::join_all((0..n).map(|i| {
        let gw = &gw;
        async move { gw.create_target("up.xyz", &format!("10.0.{}.{}:80", i / 100, i % 100), 5).await }
    }))
    .await;
    let first = gw.get("/upstreams/up.xyz/targets").await.expect(200);
    assert_eq!(first["total"], json!(n));
    let active = gw.list_all("/upstreams/up.xyz/targets").await;
    assert_eq!(active.len(), n);
    let unique: std::collections::BTreeSet<String> =
        active.iter().map(|t| t["target"].as_str().unwrap().to_owned()).collect();
    assert_eq!(unique.len(), n, "each active target once");
    let all = gw.list_all("/upstreams/up.xyz/targets/all").await;
    assert_eq!(all.len(), n);
});

both!(active_targets_are_ordered_by_target_descending, |gw| async move {
    gw.create_upstream("up.xyz").await;
    // Created in an order that is neither ascending nor descending.
    for t in ["b.example.com:80", "a.example.com:80", "c.example.com:80", "a.example.com:81"] {
        gw.create_target("up.xyz", t, 10).await;
    }
    let active = gw.get("/upstreams/up.xyz/targets").await.expect(200);
    let order: Vec<Value> = data(&active).iter().map(|t| t["target"].clone()).collect();
    assert_eq!(
        order,
        vec![
            json!("c.example.com:80"),
            json!("b.example.com:80"),
            json!("a.example.com:81"),
            json!("a.example.com:80")
        ],
        "reference §5.2: active targets sorted by target string, descending"
    );
});
