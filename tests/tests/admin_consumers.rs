#![allow(clippy::unwrap_used)]
//! `/consumers`, `/consumers/{username or id}` (N-layer).

use gatehouse_tests::*;
use serde_json::Value;

const AT_LEAST_ONE: &str = "at least one of these fields must be non-empty: 'custom_id', 'username'";

both!(creates_consumer, |gw| async move {
    let c = gw.post_json("/consumers", &json!({"username": "bob"})).await.expect(201);
    assert_eq!(keys(&c), sorted(&["id", "created_at", "username"]), "unset fields are left out: {c}");
    assert!(is_uuid(&c["id"]));
    assert_secs(&c["created_at"]);
    assert_eq!(c["username"], json!("bob"));
    assert_eq!(c["custom_id"], Value::Null);

    let d = gw.post_json("/consumers", &json!({"custom_id": "abc123"})).await.expect(201);
    assert_eq!(d["username"], Value::Null);
    assert_eq!(d["custom_id"], json!("abc123"));

    assert_eq!(gw.get("/consumers/bob").await.expect(200), c);
    assert_eq!(gw.get(&format!("/consumers/{}", id_of(&c))).await.expect(200), c);
    assert_eq!(gw.get(&format!("/consumers/{}", id_of(&d))).await.expect(200), d);
    let missing = gw.get("/consumers/alice").await;
    missing.assert_status(404);
    assert_eq!(missing.body, json!({"message": "Not found"}));
    gw.get(&format!("/consumers/{}", new_id())).await.assert_status(404);
});

both!(rejects_invalid_consumers, |gw| async move {
    gw.create_consumer("bob").await;
    let before = gw.snapshot().await;
    for body in [json!({}), json!({"username": null, "custom_id": null})] {
        let e = gw.post_json("/consumers", &body).await.n_error(400, 2, "schema violation");
        assert_eq!(e["message"], json!(format!("schema violation ({AT_LEAST_ONE})")));
        assert_eq!(e["fields"], json!({ "@entity": [AT_LEAST_ONE] }));
    }
    let e = gw.post_json("/consumers", &json!({"username": "x", "foo": 1})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({"foo": "unknown field"}));
    let e = gw.post_json("/consumers", &json!({"username": 5})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({"username": "expected a string"}));
    gw.assert_unchanged(&before).await;
});

both!(duplicates_are_409_unique_violation, |gw| async move {
    gw.post_json("/consumers", &json!({"username": "bob", "custom_id": "abc"})).await.expect(201);
    gw.create_consumer("alice").await;
    let before = gw.snapshot().await;
    let e =
        gw.post_json("/consumers", &json!({"username": "bob"})).await.n_error(409, 5, "unique constraint violation");
    assert_eq!(e["message"], json!("UNIQUE violation detected on '{username=\"bob\"}'"));
    assert_eq!(e["fields"], json!({"username": "bob"}));
    let e =
        gw.post_json("/consumers", &json!({"custom_id": "abc"})).await.n_error(409, 5, "unique constraint violation");
    assert_eq!(e["message"], json!("UNIQUE violation detected on '{custom_id=\"abc\"}'"));
    assert_eq!(e["fields"], json!({"custom_id": "abc"}));
    let e = gw.patch_json("/consumers/alice", &json!({"username": "bob"})).await.n_error(
        409,
        5,
        "unique constraint violation",
    );
    assert_eq!(e["fields"], json!({"username": "bob"}));
    gw.assert_unchanged(&before).await;
});

both!(filters_by_custom_id, |gw| async move {
    let a = gw.post_json("/consumers", &json!({"username": "a", "custom_id": "abc123"})).await.expect(201);
    gw.post_json("/consumers", &json!({"username": "b", "custom_id": "def345"})).await.expect(201);
    gw.create_consumer("c").await;

    let found = gw.get("/consumers?custom_id=abc123").await.expect(200);
    assert_eq!(found["data"], json!([a]));
    assert!(found.get("next").is_none_or(Value::is_null), "a filtered list has no next page: {found}");
    let none = gw.get("/consumers?custom_id=nobody").await.expect(200);
    assert_eq!(none["data"], json!([]), "no match is an empty array");

    // Other query parameters are not filters.
    let all = gw.get("/consumers?username=a").await.expect(200);
    assert_eq!(data(&all).len(), 3);
});

both!(patches_consumer, |gw| async move {
    let c = gw.create_consumer("bob").await;
    let p = gw.patch_json("/consumers/bob", &json!({"custom_id": "updated_abc123"})).await.expect(200);
    assert_eq!(p["id"], c["id"]);
    assert_eq!(p["username"], json!("bob"));
    assert_eq!(p["custom_id"], json!("updated_abc123"));
    assert_eq!(p["created_at"], c["created_at"]);
    assert_eq!(gw.get("/consumers/bob").await.expect(200), p);

    let p = gw.patch_json(&format!("/consumers/{}", id_of(&c)), &json!({"username": "robert"})).await.expect(200);
    assert_eq!(p["username"], json!("robert"));
    gw.get("/consumers/bob").await.assert_status(404);

    let before = gw.snapshot().await;
    let e = gw.patch_json("/consumers/ghost", &json!({"custom_id": "x"})).await.n_error(404, 6, "not found");
    assert_eq!(e["message"], json!("could not find the entity with '{username=\"ghost\"}'"));
    assert_eq!(e["fields"], json!({"username": "ghost"}));
    gw.assert_unchanged(&before).await;
});

both!(put_consumer_creates_201_then_replaces_200, |gw| async move {
    let created = gw.put_json("/consumers/alice", &json!({"custom_id": "first"})).await.expect(201);
    assert_eq!(created["username"], json!("alice"));
    assert_eq!(created["custom_id"], json!("first"));
    assert!(is_uuid(&created["id"]));

    let replaced = gw.put_json("/consumers/alice", &json!({})).await.expect(200);
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["username"], json!("alice"));
    assert_eq!(replaced["custom_id"], Value::Null, "PUT replaces the whole consumer");

    let id = new_id();
    let by_id = gw.put_json(&format!("/consumers/{id}"), &json!({"username": "carol"})).await.expect(201);
    assert_eq!(by_id["id"], json!(id));
    gw.put_json(&format!("/consumers/{id}"), &json!({"username": "carol", "custom_id": "c"})).await.expect(200);
    assert_eq!(gw.list_all("/consumers").await.len(), 2);

    let before = gw.snapshot().await;
    let e = gw.put_json("/consumers/alice", &json!({"username": "other"})).await.n_error(400, 2, "schema violation");
    assert!(e["fields"]["username"].is_string(), "{e}");
    let e = gw.put_json("/consumers/dave", &json!({"username": "other"})).await.n_error(400, 2, "schema violation");
    assert!(e["fields"]["username"].is_string(), "{e}");
    gw.assert_unchanged(&before).await;
});

both!(deletes_consumer, |gw| async move {
    let c = gw.create_consumer("bob").await;
    gw.create_consumer("alice").await;
    let d = gw.delete("/consumers/bob").await;
    d.assert_status(204);
    assert_eq!(d.text, "");
    gw.get("/consumers/bob").await.assert_status(404);
    gw.get(&format!("/consumers/{}", id_of(&c))).await.assert_status(404);
    gw.delete("/consumers/bob").await.assert_status(204);
    let rest = gw.list_all("/consumers").await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["username"], json!("alice"));
});

both!(usernames_are_url_unescaped_in_paths, |gw| async move {
    let a = gw.create_consumer("josé").await;
    let b = gw.create_consumer("john doe").await;
    assert_eq!(gw.get("/consumers/jos%C3%A9").await.expect(200), a);
    assert_eq!(gw.get("/consumers/john%20doe").await.expect(200), b);
    let p = gw.patch_json("/consumers/john%20doe", &json!({"custom_id": "jd"})).await.expect(200);
    assert_eq!(p["id"], b["id"]);
    gw.delete("/consumers/jos%C3%A9").await.assert_status(204);
    gw.get(&format!("/consumers/{}", id_of(&a))).await.assert_status(404);
});
