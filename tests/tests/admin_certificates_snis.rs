#![allow(clippy::unwrap_used)]
//! `/certificates`, `/certificates/{sni or id}`, `/certificates/{c}/snis`, `/snis` (N-layer).
//! Certificates are real (rcgen) and checked when stored.

use gatehouse_tests::*;
use serde_json::Value;

const CERT_KEYS: [&str; 5] = ["id", "created_at", "cert", "key", "snis"];
const SNI_KEYS: [&str; 4] = ["id", "name", "created_at", "certificate"];

both!(creates_certificate_with_snis, |gw| async move {
    let (cert, key) = self_signed(&["a.example.com", "b.example.com"]);
    let c = gw
        .post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["b.example.com", "a.example.com"]}))
        .await
        .expect(201);
    assert_eq!(keys(&c), sorted(&CERT_KEYS), "{c}");
    assert!(is_uuid(&c["id"]));
    assert_secs(&c["created_at"]);
    assert_eq!(c["cert"], json!(cert));
    assert_eq!(c["key"], json!(key));
    assert_eq!(c["snis"], json!(["a.example.com", "b.example.com"]), "sorted");

    assert_eq!(gw.get(&format!("/certificates/{}", id_of(&c))).await.expect(200), c);
    assert_eq!(gw.get("/certificates/a.example.com").await.expect(200), c);
    assert_eq!(gw.get("/certificates/b.example.com").await.expect(200), c);

    let snis = gw.list_all("/snis").await;
    assert_eq!(snis.len(), 2);
    for s in &snis {
        assert_eq!(keys(s), sorted(&SNI_KEYS), "{s}");
        assert_eq!(s["certificate"], json!({"id": c["id"]}));
    }

    let bare = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    assert_eq!(bare["snis"], json!([]));

    let list = gw.get("/certificates").await.expect(200);
    assert!(list.get("total").is_none(), "{list}");
    assert_eq!(list["next"], Value::Null);
    assert_eq!(data(&list).len(), 2);

    let r = gw.get("/certificates/unknown.example.com").await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "SNI not found"}));
    gw.get(&format!("/certificates/{}", new_id())).await.n_error(404, 6, "not found");
});

both!(rejects_bad_pem_and_mismatched_keys, |gw| async move {
    let (cert, key) = self_signed(&["a.example.com"]);
    let (_, other_key) = self_signed(&["b.example.com"]);
    let existing = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    let before = gw.snapshot().await;
    let cases = [
        (json!({"cert": "not a pem", "key": key}), "cert"),
        (json!({"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "key": key}), "cert"),
        (json!({"cert": cert, "key": "not a pem"}), "key"),
        (json!({"cert": cert, "key": other_key}), "key"),
        (json!({"cert": key, "key": key}), "cert"),
        (json!({"key": key}), "cert"),
        (json!({"cert": cert}), "key"),
    ];
    let mut wrong = Vec::new();
    for (body, field) in &cases {
        let r = gw.post_json("/certificates", body).await;
        if r.status != 400 || !r.body["fields"][*field].is_string() {
            wrong.push(format!(
                "POST /certificates {} must be 400 naming `{field}`, got {} {}",
                short(body),
                r.status,
                r.text
            ));
        }
    }
    let e = gw.post_json("/certificates", &json!({"key": key})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({"cert": "required field missing"}));

    // PATCH with a key that does not match the stored cert.
    let path = format!("/certificates/{}", id_of(&existing));
    let e = gw.patch_json(&path, &json!({"key": other_key})).await.expect(400);
    assert!(e["fields"]["key"].is_string(), "{e}");
    let e =
        gw.put_json(&format!("/certificates/{}", new_id()), &json!({"cert": cert, "key": other_key})).await.expect(400);
    assert!(e["fields"]["key"].is_string(), "{e}");
    gw.assert_unchanged(&before).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
});

both!(sni_conflicts_on_certificates_are_schema_violations, |gw| async move {
    let (cert, key) = self_signed(&["a.example.com"]);
    let owner =
        gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["a.example.com"]})).await.expect(201);
    let before = gw.snapshot().await;
    let e = gw
        .post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["x.example.com", "x.example.com"]}))
        .await
        .n_error(400, 2, "schema violation");
    assert_eq!(e["message"], json!("schema violation (snis: x.example.com is duplicated)"));
    assert!(e["fields"]["snis"].is_string(), "{e}");

    let e = gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["a.example.com"]})).await.n_error(
        400,
        2,
        "schema violation",
    );
    assert_eq!(
        e["message"],
        json!(format!(
            "schema violation (snis: a.example.com already associated with existing certificate '{}')",
            id_of(&owner)
        ))
    );
    gw.assert_unchanged(&before).await;

    let other =
        gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["o.example.com"]})).await.expect(201);
    gw.post_json("/snis", &json!({"name": "p.example.com", "certificate": {"id": other["id"]}})).await.expect(201);
    let before = gw.snapshot().await;
    let e = gw
        .patch_json(&format!("/certificates/{}", id_of(&other)), &json!({"snis": ["o.example.com", "a.example.com"]}))
        .await
        .n_error(400, 2, "schema violation");
    assert!(e["fields"]["snis"].is_string(), "{e}");
    let e = gw
        .put_json(
            &format!("/certificates/{}", id_of(&other)),
            &json!({"cert": cert, "key": key, "snis": ["a.example.com"]}),
        )
        .await
        .n_error(400, 2, "schema violation");
    assert!(e["fields"]["snis"].is_string(), "{e}");
    let e = gw.patch_json("/snis/p.example.com", &json!({"name": "o.example.com"})).await.n_error(
        409,
        5,
        "unique constraint violation",
    );
    assert_eq!(e["fields"], json!({"name": "o.example.com"}));
    gw.assert_unchanged(&before).await;
});

both!(patch_certificate_syncs_snis, |gw| async move {
    let (cert, key) = self_signed(&["a.example.com"]);
    let c = gw
        .post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["a.example.com", "b.example.com"]}))
        .await
        .expect(201);
    let path = format!("/certificates/{}", id_of(&c));

    let p = gw
        .patch_json("/certificates/a.example.com", &json!({"snis": ["c.example.com", "b.example.com"]}))
        .await
        .expect(200);
    assert_eq!(p["id"], c["id"]);
    assert_eq!(p["snis"], json!(["b.example.com", "c.example.com"]));
    assert_eq!(p["cert"], json!(cert));
    gw.get("/snis/a.example.com").await.assert_status(404);
    gw.get("/snis/c.example.com").await.assert_status(200);
    let names: Vec<Value> = gw.list_all("/snis").await.iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names.len(), 2);

    // New cert and key together.
    let (cert2, key2) = self_signed(&["z.example.com"]);
    let p = gw.patch_json(&path, &json!({"cert": cert2, "key": key2})).await.expect(200);
    assert_eq!(p["cert"], json!(cert2));
    assert_eq!(p["key"], json!(key2));
    assert_eq!(p["snis"], json!(["b.example.com", "c.example.com"]), "untouched");

    let p = gw.patch_json(&path, &json!({"snis": null})).await.expect(200);
    assert_eq!(p["snis"], json!([]));
    assert_eq!(gw.list_all("/snis").await, Vec::<Value>::new());

    let e = gw.patch_json(&format!("/certificates/{}", new_id()), &json!({"snis": []})).await;
    e.assert_status(404);
});

both!(put_certificate_by_id_and_by_sni, |gw| async move {
    let (cert, key) = self_signed(&["put.example.com"]);
    let id = new_id();
    let created = gw.put_json(&format!("/certificates/{id}"), &json!({"cert": cert, "key": key})).await.expect(201);
    assert_eq!(created["id"], json!(id));
    assert_eq!(created["snis"], json!([]));
    let replaced = gw
        .put_json(&format!("/certificates/{id}"), &json!({"cert": cert, "key": key, "snis": ["r.example.com"]}))
        .await
        .expect(200);
    assert_eq!(replaced["id"], json!(id));
    assert_eq!(replaced["snis"], json!(["r.example.com"]));

    let by_sni = gw.put_json("/certificates/new.example.com", &json!({"cert": cert, "key": key})).await.expect(201);
    assert!(is_uuid(&by_sni["id"]));
    assert_ne!(by_sni["id"], json!(id));
    assert_eq!(by_sni["snis"], json!(["new.example.com"]));
    assert_eq!(gw.get("/certificates/new.example.com").await.expect(200), by_sni);

    let (cert2, key2) = self_signed(&["new.example.com"]);
    let again = gw.put_json("/certificates/new.example.com", &json!({"cert": cert2, "key": key2})).await.expect(200);
    assert_eq!(again["id"], by_sni["id"]);
    assert_eq!(again["cert"], json!(cert2));
    assert_eq!(gw.list_all("/certificates").await.len(), 2);
});

both!(deleting_certificate_deletes_its_snis, |gw| async move {
    let (cert, key) = self_signed(&["a.example.com"]);
    let c = gw
        .post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["a.example.com", "b.example.com"]}))
        .await
        .expect(201);
    let keep =
        gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["k.example.com"]})).await.expect(201);
    let d = gw.delete("/certificates/a.example.com").await;
    d.assert_status(204);
    assert_eq!(d.text, "");
    gw.get(&format!("/certificates/{}", id_of(&c))).await.assert_status(404);
    gw.get("/snis/a.example.com").await.assert_status(404);
    gw.get("/snis/b.example.com").await.assert_status(404);
    let left = gw.list_all("/snis").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["name"], json!("k.example.com"));

    gw.delete(&format!("/certificates/{}", id_of(&keep))).await.assert_status(204);
    assert_eq!(gw.list_all("/snis").await, Vec::<Value>::new());
    gw.delete(&format!("/certificates/{}", new_id())).await.assert_status(204);
});

both!(creates_and_resolves_snis, |gw| async move {
    let (cert, key) = self_signed(&["s.example.com"]);
    let c = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    let s = gw.post_json("/snis", &json!({"name": "s.example.com", "certificate": {"id": c["id"]}})).await.expect(201);
    assert_eq!(keys(&s), sorted(&SNI_KEYS), "{s}");
    assert!(is_uuid(&s["id"]));
    assert_secs(&s["created_at"]);
    assert_eq!(s["name"], json!("s.example.com"));
    assert_eq!(s["certificate"], json!({"id": c["id"]}));
    assert_eq!(gw.get("/snis/s.example.com").await.expect(200), s);
    assert_eq!(gw.get(&format!("/snis/{}", id_of(&s))).await.expect(200), s);
    assert_eq!(gw.get(&format!("/certificates/{}", id_of(&c))).await.expect(200)["snis"], json!(["s.example.com"]));
    let r = gw.get("/snis/missing.example.com").await;
    r.assert_status(404);
    assert_eq!(r.body, json!({"message": "Not found"}));
    gw.get("/snis/s.example.com/certificate").await.assert_status(404);

    let list = gw.get("/snis").await.expect(200);
    assert_eq!(list["data"], json!([s]));
    assert_eq!(list["next"], Value::Null);
    assert!(list.get("total").is_none(), "{list}");

    let before = gw.snapshot().await;
    let e = gw.post_json("/snis", &json!({"name": "s.example.com", "certificate": {"id": c["id"]}})).await.n_error(
        409,
        5,
        "unique constraint violation",
    );
    assert_eq!(e["message"], json!("UNIQUE violation detected on '{name=\"s.example.com\"}'"));
    assert_eq!(e["fields"], json!({"name": "s.example.com"}));

    let missing = new_id();
    let e = gw.post_json("/snis", &json!({"name": "t.example.com", "certificate": {"id": missing}})).await.n_error(
        400,
        4,
        "foreign key violation",
    );
    assert_eq!(
        e["message"],
        json!(format!("the foreign key '{{id=\"{missing}\"}}' does not reference an existing 'certificates' entity."))
    );
    assert_eq!(e["fields"], json!({"certificate": {"id": missing}}));

    let e = gw.post_json("/snis", &json!({"certificate": {"id": c["id"]}})).await.n_error(400, 2, "schema violation");
    assert_eq!(e["fields"], json!({"name": "required field missing"}));
    gw.assert_unchanged(&before).await;
});

both!(patch_put_delete_snis, |gw| async move {
    let (cert, key) = self_signed(&["s.example.com"]);
    let c = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    let c2 = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    let s = gw.post_json("/snis", &json!({"name": "s.example.com", "certificate": {"id": c["id"]}})).await.expect(201);

    let p = gw.patch_json("/snis/s.example.com", &json!({"name": "t.example.com"})).await.expect(200);
    assert_eq!(p["id"], s["id"]);
    assert_eq!(p["name"], json!("t.example.com"));
    let p = gw.patch_json(&format!("/snis/{}", id_of(&s)), &json!({"certificate": {"id": c2["id"]}})).await.expect(200);
    assert_eq!(p["certificate"], json!({"id": c2["id"]}));
    assert_eq!(gw.get(&format!("/certificates/{}", id_of(&c2))).await.expect(200)["snis"], json!(["t.example.com"]));
    gw.patch_json("/snis/ghost.example.com", &json!({"name": "x.example.com"})).await.n_error(404, 6, "not found");

    let created = gw.put_json("/snis/u.example.com", &json!({"certificate": {"id": c["id"]}})).await.expect(201);
    assert_eq!(created["name"], json!("u.example.com"));
    let replaced = gw.put_json("/snis/u.example.com", &json!({"certificate": {"id": c2["id"]}})).await.expect(200);
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["certificate"], json!({"id": c2["id"]}));

    let before = gw.snapshot().await;
    let e = gw
        .put_json("/snis/u.example.com", &json!({"name": "v.example.com", "certificate": {"id": c["id"]}}))
        .await
        .n_error(400, 2, "schema violation");
    assert!(e["fields"]["name"].is_string(), "{e}");
    gw.assert_unchanged(&before).await;

    gw.delete("/snis/u.example.com").await.assert_status(204);
    gw.get("/snis/u.example.com").await.assert_status(404);
    gw.delete(&format!("/snis/{}", id_of(&s))).await.assert_status(204);
    gw.delete("/snis/u.example.com").await.assert_status(204);
    assert_eq!(gw.list_all("/snis").await, Vec::<Value>::new());
    // The certificates stay.
    assert_eq!(gw.list_all("/certificates").await.len(), 2);
});

both!(certificate_snis_endpoint, |gw| async move {
    let (cert, key) = self_signed(&["a.example.com"]);
    let c =
        gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["a.example.com"]})).await.expect(201);
    let other =
        gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["o.example.com"]})).await.expect(201);
    let s = gw
        .post_json(
            "/certificates/a.example.com/snis",
            &json!({"name": "b.example.com", "certificate": {"id": other["id"]}}),
        )
        .await
        .expect(201);
    assert_eq!(s["certificate"], json!({"id": c["id"]}), "the URL's certificate wins");
    let s2 =
        gw.post_json(&format!("/certificates/{}/snis", id_of(&c)), &json!({"name": "c.example.com"})).await.expect(201);
    assert_eq!(s2["certificate"], json!({"id": c["id"]}));

    let list = gw.get(&format!("/certificates/{}/snis", id_of(&c))).await.expect(200);
    let mut names: Vec<String> = data(&list).iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, vec!["a.example.com", "b.example.com", "c.example.com"]);
    assert_eq!(list["next"], Value::Null);
    assert_eq!(
        gw.get("/certificates/a.example.com").await.expect(200)["snis"],
        json!(["a.example.com", "b.example.com", "c.example.com"])
    );
    gw.get(&format!("/certificates/{}/snis", new_id())).await.assert_status(404);
});

/// A body with its PEM strings cut to their first line, for failure messages.
fn short(body: &Value) -> String {
    let mut b = body.clone();
    for k in ["cert", "key"] {
        if let Some(s) = b[k].as_str() {
            let first = s.lines().next().unwrap_or_default().to_owned();
            b[k] = json!(format!("{first}…"));
        }
    }
    b.to_string()
}
