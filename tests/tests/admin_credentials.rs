#![allow(clippy::unwrap_used)]
//! Credentials of the auth plugins (O-layer): `/consumers/{c}/{key-auth,basic-auth,hmac-auth,
//! jwt,acls,oauth2}[/{id or key}]`, the global lists (`/key-auths`, …) with their `/consumer`
//! lookups, `/oauth2_tokens`, uniqueness, per-kind rules, cascades and the change log.

use std::collections::BTreeSet;

use gatehouse_tests::*;
use serde_json::Value;

/// One credential kind as the Admin API exposes it.
struct Case {
    /// Segment under `/consumers/{c}/`.
    nested: &'static str,
    /// Global collection.
    plural: &'static str,
    /// Entity (table) name in the change log.
    entity: &'static str,
    /// The natural key a credential can be addressed by.
    key: &'static str,
    /// `/<plural>/{key}/consumer` works (acls: by id only).
    owner_by_key: bool,
    /// A valid create body whose natural key is `n`.
    body: fn(&str) -> Value,
}

const KEY_AUTH: Case = Case {
    nested: "key-auth",
    plural: "key-auths",
    entity: "keyauth_credentials",
    key: "key",
    owner_by_key: true,
    body: |n| json!({ "key": n }),
};
const BASIC_AUTH: Case = Case {
    nested: "basic-auth",
    plural: "basic-auths",
    entity: "basicauth_credentials",
    key: "username",
    owner_by_key: true,
    body: |n| json!({"username": n, "password": "secret"}),
};
const HMAC_AUTH: Case = Case {
    nested: "hmac-auth",
    plural: "hmac-auths",
    entity: "hmacauth_credentials",
    key: "username",
    owner_by_key: true,
    body: |n| json!({ "username": n }),
};
const JWT: Case = Case {
    nested: "jwt",
    plural: "jwts",
    entity: "jwt_secrets",
    key: "key",
    owner_by_key: true,
    body: |n| json!({ "key": n }),
};
const ACLS: Case = Case {
    nested: "acls",
    plural: "acls",
    entity: "acls",
    key: "group",
    owner_by_key: false,
    body: |n| json!({ "group": n }),
};
const OAUTH2: Case = Case {
    nested: "oauth2",
    plural: "oauth2",
    entity: "oauth2_credentials",
    key: "client_id",
    owner_by_key: true,
    body: |n| json!({"name": format!("app {n}"), "client_id": n, "redirect_uri": ["https://app.example.com/cb"]}),
};

/// A 2048-bit RSA public key generated for these tests.
const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxGvHAmRYj7Lj407+24B2
cRmQJojgsziAD9vjaGWA9t9nyattGqbUgJXWbltjqIPTnAWD4vT5bI84Mxzz3LBq
Rz7A+I7l1ufSWx3TafxeuxwF8nTwPNbOG4DkhKgry99qjZWrpOlcOTfpEESYpvVx
2LPj8jWWfQS7ot4de6ykzsJjfuuGuTyGON/QCsmjM1+kcfyDDycAFJ6JFim1iW8e
9VqwTEqyB1ThKt8eT5MLPEZaaJ/7UhN7zrLWqd88Mf3B8edNf9Vc8HEOz6ZOP9in
9gpFq0MrH37+Sk1+eWHwZ191973SZBTY/TWcRfih94fvz3obh5QCj6HvVNp99hMn
UwIDAQAB
-----END PUBLIC KEY-----";

fn not_found() -> Value {
    json!({"message": "Not found"})
}

/// A 32-character random string as Kong generates them (alphanumeric).
#[track_caller]
fn assert_random(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    assert_eq!(s.len(), 32, "{s}");
    assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
}

fn id_set(items: &[Value]) -> BTreeSet<String> {
    ids(items).into_iter().collect()
}

/// Create / list / get by id and by key / patch / put / delete of one kind, owned by one
/// consumer and invisible through another.
async fn lifecycle(gw: &Gateway, case: &Case) {
    let (p, key) = (case.nested, case.key);
    let bob = gw.create_consumer("bob").await;
    let alice = gw.create_consumer("alice").await;
    let bob_id = id_of(&bob);

    let one = gw.post_json(&format!("/consumers/bob/{p}"), &(case.body)("one")).await.expect(201);
    assert!(is_uuid(&one["id"]), "{one}");
    assert_millis(&one["created_at"]);
    assert_eq!(one["consumer_id"], json!(bob_id));
    assert_eq!(one[key], json!("one"));
    assert_no_nulls(&one);
    // The consumer may be named by id too.
    let two = gw.post_json(&format!("/consumers/{bob_id}/{p}"), &(case.body)("two")).await.expect(201);
    let three = gw.post_json(&format!("/consumers/alice/{p}"), &(case.body)("three")).await.expect(201);
    assert_eq!(three["consumer_id"], alice["id"]);

    let list = gw.get(&format!("/consumers/bob/{p}")).await.expect(200);
    assert_eq!(list["total"], json!(2), "{list}");
    assert_eq!(id_set(&data(&list)), id_set(&[one.clone(), two.clone()]));
    assert_eq!(gw.get(&format!("/consumers/bob/{p}/{}", id_of(&one))).await.expect(200), one);
    assert_eq!(gw.get(&format!("/consumers/bob/{p}/one")).await.expect(200), one);
    for path in [
        format!("/consumers/alice/{p}/{}", id_of(&one)),
        format!("/consumers/alice/{p}/one"),
        format!("/consumers/bob/{p}/three"),
        format!("/consumers/bob/{p}/{}", new_id()),
        format!("/consumers/nobody/{p}"),
        format!("/consumers/{}/{p}/one", new_id()),
    ] {
        let r = gw.get(&path).await;
        r.assert_status(404);
        assert_eq!(r.body, not_found(), "{path}");
    }

    // Global list, filters and owner lookup.
    let all = gw.get(&format!("/{}", case.plural)).await.expect(200);
    assert_eq!(all["total"], json!(3), "{all}");
    let bobs = gw.get(&format!("/{}?consumer_id={bob_id}", case.plural)).await.expect(200);
    assert_eq!(id_set(&data(&bobs)), id_set(&[one.clone(), two.clone()]));
    assert_eq!(bobs["total"], json!(2));
    let by_key = gw.get(&format!("/{}?{key}=three", case.plural)).await.expect(200);
    assert_eq!(ids(&data(&by_key)), vec![id_of(&three)]);
    let r = gw.get(&format!("/{}?consumer_id=nope", case.plural)).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"consumer_id": "nope is not a valid uuid"}));
    gw.get(&format!("/{}?foo=bar", case.plural)).await.assert_status(400);
    let paged = gw.pages(&format!("/{}?size=2", case.plural)).await;
    assert_eq!(paged.len(), 2, "3 rows in pages of 2: {paged:?}");
    assert_eq!(gw.get(&format!("/{}/{}/consumer", case.plural, id_of(&one))).await.expect(200), bob);
    let r = gw.get(&format!("/{}/three/consumer", case.plural)).await;
    if case.owner_by_key {
        assert_eq!(r.expect(200), alice);
    } else {
        r.assert_status(404);
    }
    gw.get(&format!("/{}/{}/consumer", case.plural, new_id())).await.assert_status(404);

    // PATCH: only the credential's owner can reach it.
    gw.patch_json(&format!("/consumers/alice/{p}/{}", id_of(&one)), &json!({ key: "x" })).await.assert_status(404);
    let patched = gw.patch_json(&format!("/consumers/bob/{p}/one"), &json!({ key: "one-patched" })).await.expect(200);
    assert_eq!(patched["id"], one["id"]);
    assert_eq!(patched["created_at"], one["created_at"]);
    assert_eq!(patched[key], json!("one-patched"));
    assert_eq!(gw.get(&format!("/consumers/bob/{p}/one-patched")).await.expect(200), patched);
    gw.get(&format!("/consumers/bob/{p}/one")).await.assert_status(404);
    let r = gw.patch_json(&format!("/consumers/bob/{p}/one-patched"), &json!({})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"message": "empty body"}));

    // PUT on the collection: full replacement with an id, create without.
    let mut replacement = (case.body)("one-put");
    replacement["id"] = one["id"].clone();
    let put = gw.put_json(&format!("/consumers/bob/{p}"), &replacement).await.expect(200);
    assert_eq!(put["id"], one["id"]);
    assert_eq!(put["created_at"], one["created_at"]);
    assert_eq!(put[key], json!("one-put"));
    gw.put_json(&format!("/consumers/alice/{p}"), &replacement).await.assert_status(404);
    let mut unknown = (case.body)("ghost");
    unknown["id"] = json!(new_id());
    gw.put_json(&format!("/consumers/bob/{p}"), &unknown).await.assert_status(404);
    let four = gw.put_json(&format!("/consumers/bob/{p}"), &(case.body)("four")).await.expect(201);
    assert_eq!(four["consumer_id"], json!(bob_id));

    // DELETE.
    gw.delete(&format!("/consumers/alice/{p}/{}", id_of(&one))).await.assert_status(404);
    gw.delete(&format!("/consumers/bob/{p}/{}", id_of(&one))).await.assert_status(204);
    gw.get(&format!("/consumers/bob/{p}/{}", id_of(&one))).await.assert_status(404);
    gw.delete(&format!("/consumers/bob/{p}/{}", id_of(&one))).await.assert_status(404);
    gw.delete(&format!("/consumers/bob/{p}/four")).await.assert_status(204);
    let left = gw.get(&format!("/consumers/bob/{p}")).await.expect(200);
    assert_eq!(ids(&data(&left)), vec![id_of(&two)]);

    // Every write is in the change log under the entity's table name.
    let log = gw.changes().await;
    let rows: Vec<&Change> = log.iter().filter(|c| c.entity_id == id_of(&one)).collect();
    assert!(rows.iter().all(|c| c.entity == case.entity), "{rows:?}");
    let ops: Vec<&str> = rows.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(ops, ["upsert", "upsert", "upsert", "delete"], "create, patch, put, delete");
    let doc = rows[0].doc_json().unwrap();
    assert_eq!(doc["consumer_id"], json!(bob_id));
    assert_eq!(doc[key], json!("one"));
    assert_eq!(doc["created_at"], one["created_at"]);
}

both!(key_auth_lifecycle, |gw| async move { lifecycle(&gw, &KEY_AUTH).await });
both!(basic_auth_lifecycle, |gw| async move { lifecycle(&gw, &BASIC_AUTH).await });
both!(hmac_auth_lifecycle, |gw| async move { lifecycle(&gw, &HMAC_AUTH).await });
both!(jwt_lifecycle, |gw| async move { lifecycle(&gw, &JWT).await });
both!(acls_lifecycle, |gw| async move { lifecycle(&gw, &ACLS).await });
both!(oauth2_lifecycle, |gw| async move { lifecycle(&gw, &OAUTH2).await });

both!(random_defaults, |gw| async move {
    gw.create_consumer("bob").await;
    let k = gw.post_json("/consumers/bob/key-auth", &json!({})).await.expect(201);
    assert_random(&k["key"]);
    assert_eq!(keys(&k), sorted(&["id", "created_at", "consumer_id", "key"]));
    let k2 = gw.post_form("/consumers/bob/key-auth", &[]).await.expect(201);
    assert_ne!(k["key"], k2["key"]);
    let h = gw.post_json("/consumers/bob/hmac-auth", &json!({"username": "h"})).await.expect(201);
    assert_random(&h["secret"]);
    let j = gw.post_json("/consumers/bob/jwt", &json!({})).await.expect(201);
    assert_random(&j["key"]);
    assert_random(&j["secret"]);
    assert_eq!(j["algorithm"], json!("HS256"));
    assert!(j.get("rsa_public_key").is_none(), "absent fields are omitted: {j}");
    let o = gw
        .post_json("/consumers/bob/oauth2", &json!({"name": "app", "redirect_uri": ["http://app.example.com/"]}))
        .await
        .expect(201);
    assert_random(&o["client_id"]);
    assert_random(&o["client_secret"]);
    let t = gw.post_json("/oauth2_tokens", &json!({"credential_id": o["id"], "expires_in": 3600})).await.expect(201);
    assert_random(&t["access_token"]);
    assert_random(&t["refresh_token"]);
    assert_eq!(t["token_type"], json!("bearer"));
    assert_millis(&t["created_at"]);
    let forever = gw.post_json("/oauth2_tokens", &json!({"credential_id": o["id"], "expires_in": 0})).await.expect(201);
    assert!(forever.get("refresh_token").is_none(), "a token that never expires has no refresh token: {forever}");
});

both!(unique_columns_conflict, |gw| async move {
    gw.create_consumer("bob").await;
    gw.create_consumer("alice").await;
    let svc = gw.create_service("svc").await;
    gw.post_json("/consumers/bob/key-auth", &json!({"key": "k1"})).await.expect(201);
    gw.post_json("/consumers/bob/basic-auth", &json!({"username": "u1"})).await.expect(201);
    gw.post_json("/consumers/bob/hmac-auth", &json!({"username": "u1"})).await.expect(201);
    gw.post_json("/consumers/bob/jwt", &json!({"key": "j1"})).await.expect(201);
    let acl = gw.post_json("/consumers/bob/acls", &json!({"group": "admin"})).await.expect(201);
    gw.post_json("/consumers/bob/acls", &json!({"group": "staff"})).await.expect(201);
    let app = gw
        .post_json("/consumers/bob/oauth2", &json!({"name": "a", "client_id": "c1", "redirect_uri": ["http://a.com"]}))
        .await
        .expect(201);
    let token = gw
        .post_json(
            "/oauth2_tokens",
            &json!({"credential_id": app["id"], "expires_in": 10, "access_token": "t1", "refresh_token": "r1",
                    "service_id": svc["id"]}),
        )
        .await
        .expect(201);
    let k2 = gw.post_json("/consumers/alice/key-auth", &json!({"key": "k2"})).await.expect(201);
    let before = gw.snapshot().await;

    let conflicts: Vec<(&str, Value, Value)> = vec![
        ("/consumers/alice/key-auth", json!({"key": "k1"}), json!({"key": "already exists with value 'k1'"})),
        (
            "/consumers/alice/basic-auth",
            json!({"username": "u1"}),
            json!({"username": "already exists with value 'u1'"}),
        ),
        ("/consumers/bob/hmac-auth", json!({"username": "u1"}), json!({"username": "already exists with value 'u1'"})),
        ("/consumers/alice/jwt", json!({"key": "j1"}), json!({"key": "already exists with value 'j1'"})),
        (
            "/consumers/alice/oauth2",
            json!({"name": "b", "client_id": "c1", "redirect_uri": ["http://b.com"]}),
            json!({"client_id": "already exists with value 'c1'"}),
        ),
        (
            "/oauth2_tokens",
            json!({"credential_id": app["id"], "expires_in": 10, "access_token": "t1"}),
            json!({"access_token": "already exists with value 't1'"}),
        ),
        (
            "/oauth2_tokens",
            json!({"credential_id": app["id"], "expires_in": 10, "refresh_token": "r1"}),
            json!({"refresh_token": "already exists with value 'r1'"}),
        ),
        (
            "/consumers/bob/key-auth",
            json!({"id": k2["id"], "key": "k3"}),
            json!({"id": format!("already exists with value '{}'", id_of(&k2))}),
        ),
    ];
    for (path, body, expected) in conflicts {
        let r = gw.post_json(path, &body).await;
        r.assert_status(409);
        assert_eq!(r.body, expected, "POST {path} {body}");
    }
    // Updates into a taken key conflict too.
    let r = gw.patch_json(&format!("/consumers/alice/key-auth/{}", id_of(&k2)), &json!({"key": "k1"})).await;
    r.assert_status(409);
    assert_eq!(r.body, json!({"key": "already exists with value 'k1'"}));

    // A group appears once per consumer: 400, not 409; other consumers may use it.
    let dup = json!({"group": "ACL group already exist for this consumer"});
    let r = gw.post_json("/consumers/bob/acls", &json!({"group": "admin"})).await;
    r.assert_status(400);
    assert_eq!(r.body, dup);
    let r = gw.patch_json("/consumers/bob/acls/staff", &json!({"group": "admin"})).await;
    r.assert_status(400);
    assert_eq!(r.body, dup);
    gw.assert_unchanged(&before).await;
    // Re-saving a unique value or a group as itself is not a duplicate.
    gw.patch_json(&format!("/oauth2_tokens/{}", id_of(&token)), &json!({"access_token": "t1"})).await.expect(200);
    gw.patch_json(&format!("/consumers/bob/acls/{}", id_of(&acl)), &json!({"group": "admin"})).await.expect(200);
    gw.post_json("/consumers/alice/acls", &json!({"group": "admin"})).await.expect(201);
});

/// The fixed consumer id the expected digests below were computed with:
/// hex(sha1(password ‖ consumer_id)).
const FIXED_CONSUMER: &str = "0a6f1d9e-5a0b-4c8e-9d3f-2b7c1e4a5d60";
const DIGEST_KONG: &str = "f1ecde6c9706f74f4c545b3c9e33b25821235cfe";
const DIGEST_NEW: &str = "fa7c89a0daa0c1e662828d4184f28de1c2412959";
const DIGEST_EMPTY: &str = "5747fa3ed089d3636a69b218d621306907fe05d5";

both!(basic_auth_passwords_are_hashed, |gw| async move {
    let r = gw.put_json(&format!("/consumers/{FIXED_CONSUMER}"), &json!({"username": "bob"})).await;
    assert!(r.status == 200 || r.status == 201, "PUT /consumers/{{id}}: {}", r.text);
    let c =
        gw.post_json("/consumers/bob/basic-auth", &json!({"username": "bob", "password": "kong"})).await.expect(201);
    assert_eq!(c["password"], json!(DIGEST_KONG));
    let id = id_of(&c);
    let listed = gw.get("/basic-auths").await;
    assert!(!listed.text.contains("\"kong\""), "plaintext password in {}", listed.text);
    assert_eq!(gw.get("/consumers/bob/basic-auth/bob").await.expect(200)["password"], json!(DIGEST_KONG));
    let log = gw.changes().await;
    assert!(log.iter().all(|c| !c.doc.as_deref().unwrap_or_default().contains("\"kong\"")), "plaintext in the log");

    // Untouched passwords keep their digest; the digest sent back is not hashed again.
    let p = gw.patch_json(&format!("/consumers/bob/basic-auth/{id}"), &json!({"username": "bobby"})).await.expect(200);
    assert_eq!(p["password"], json!(DIGEST_KONG));
    let same = json!({"id": id, "username": "bobby", "password": DIGEST_KONG});
    assert_eq!(gw.put_json("/consumers/bob/basic-auth", &same).await.expect(200)["password"], json!(DIGEST_KONG));
    let p = gw.patch_json("/consumers/bob/basic-auth/bobby", &json!({"password": DIGEST_KONG})).await.expect(200);
    assert_eq!(p["password"], json!(DIGEST_KONG));
    // A new password is hashed, surrounding spaces included (passwords are not trimmed).
    let p = gw.patch_json("/consumers/bob/basic-auth/bobby", &json!({"password": " new pw "})).await.expect(200);
    assert_eq!(p["password"], json!(DIGEST_NEW));
    let f = gw.post_form("/consumers/bob/basic-auth", &[("username", "formed"), ("password", " new pw ")]).await;
    assert_eq!(f.expect(201)["password"], json!(DIGEST_NEW));
    // No password: the digest of the empty string.
    let e = gw.post_json("/consumers/bob/basic-auth", &json!({"username": "nopw"})).await.expect(201);
    assert_eq!(e["password"], json!(DIGEST_EMPTY));
    let r = gw.post_json("/consumers/bob/basic-auth", &json!({"password": "x"})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"username": "username is required"}));
});

both!(jwt_algorithms_and_rsa_keys, |gw| async move {
    gw.create_consumer("bob").await;
    let before = gw.snapshot().await;
    let cases: Vec<(Value, Value)> = vec![
        (json!({"algorithm": "RS256"}), json!({"message": "no mandatory 'rsa_public_key'"})),
        (json!({"algorithm": "RS512"}), json!({"message": "no mandatory 'rsa_public_key'"})),
        (
            json!({"algorithm": "RS256", "rsa_public_key": "not a key"}),
            json!({"message": "'rsa_public_key' format is invalid"}),
        ),
        (
            json!({"algorithm": "HS1024"}),
            json!({"algorithm":
                "\"HS1024\" is not allowed. Allowed values are: \"HS256\", \"HS384\", \"HS512\", \"RS256\", \"RS512\", \"ES256\""}),
        ),
        (json!({"algorithm": 256}), json!({"algorithm": "algorithm is not a string"})),
    ];
    for (body, expected) in cases {
        let r = gw.post_json("/consumers/bob/jwt", &body).await;
        r.assert_status(400);
        assert_eq!(r.body, expected, "{body}");
    }
    gw.assert_unchanged(&before).await;
    let rs = gw
        .post_json("/consumers/bob/jwt", &json!({"key": "rs", "algorithm": "RS256", "rsa_public_key": RSA_PUBLIC_KEY}))
        .await
        .expect(201);
    assert_eq!(rs["rsa_public_key"], json!(RSA_PUBLIC_KEY));
    assert_eq!(rs["algorithm"], json!("RS256"));
    gw.post_json("/consumers/bob/jwt", &json!({"algorithm": "ES256"})).await.expect(201);
    let hs = gw.post_json("/consumers/bob/jwt", &json!({"key": "hs"})).await.expect(201);
    let r = gw.patch_json("/consumers/bob/jwt/hs", &json!({"algorithm": "RS512"})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"message": "no mandatory 'rsa_public_key'"}));
    let p = gw
        .patch_json("/consumers/bob/jwt/hs", &json!({"algorithm": "RS512", "rsa_public_key": RSA_PUBLIC_KEY}))
        .await
        .expect(200);
    assert_eq!(p["secret"], hs["secret"]);
    assert_eq!(gw.get("/jwts/rs/consumer").await.expect(200)["username"], json!("bob"));
});

both!(oauth2_redirect_uris, |gw| async move {
    gw.create_consumer("bob").await;
    let before = gw.snapshot().await;
    let cases: Vec<(Value, Value)> = vec![
        (json!({}), json!({"name": "name is required", "redirect_uri": "redirect_uri is required"})),
        (json!({"name": "a", "redirect_uri": "not-valid"}), json!({"redirect_uri": "cannot parse 'not-valid'"})),
        (
            json!({"name": "a", "redirect_uri": ["http://valid.com", "http://test.com/#with-fragment"]}),
            json!({"redirect_uri": "fragment not allowed in 'http://test.com/#with-fragment'"}),
        ),
        (json!({"name": "a", "redirect_uri": []}), json!({"redirect_uri": "at least one URI is required"})),
        (json!({"name": "a", "redirect_uri": 5}), json!({"redirect_uri": "redirect_uri is not an array"})),
        (
            json!({"name": "a", "redirect_uri": ["http://a.com"], "scopes": ["x"]}),
            json!({"scopes": "scopes is an unknown field"}),
        ),
    ];
    for (body, expected) in cases {
        let r = gw.post_json("/consumers/bob/oauth2", &body).await;
        r.assert_status(400);
        assert_eq!(r.body, expected, "{body}");
    }
    gw.assert_unchanged(&before).await;
    // A comma-separated string (JSON or form) is a list.
    let a = gw
        .post_json("/consumers/bob/oauth2", &json!({"name": "a", "redirect_uri": "http://a.com/cb, https://b.com"}))
        .await
        .expect(201);
    assert_eq!(a["redirect_uri"], json!(["http://a.com/cb", "https://b.com"]));
    let f = gw.post_form("/consumers/bob/oauth2", &[("name", "f"), ("redirect_uri", "http://f.com/cb")]).await;
    assert_eq!(f.expect(201)["redirect_uri"], json!(["http://f.com/cb"]));
    let r = gw.patch_json(&format!("/consumers/bob/oauth2/{}", id_of(&a)), &json!({"redirect_uri": ["x"]})).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"redirect_uri": "cannot parse 'x'"}));
});

both!(oauth2_tokens, |gw| async move {
    gw.create_consumer("bob").await;
    let svc = gw.create_service("svc").await;
    let app = gw
        .post_json("/consumers/bob/oauth2", &json!({"name": "a", "redirect_uri": ["http://a.com"]}))
        .await
        .expect(201);
    let app_id = id_of(&app);
    let before = gw.snapshot().await;
    let revision = gw.revision().await;
    let missing_app = new_id();
    let missing_svc = new_id();
    let cases: Vec<(Value, u16, Value)> = vec![
        (json!({"credential_id": app_id}), 400, json!({"expires_in": "expires_in is required"})),
        (json!({"expires_in": 5}), 400, json!({"credential_id": "credential_id is required"})),
        (json!({"credential_id": "nope", "expires_in": 5}), 400, json!({"credential_id": "nope is not a valid uuid"})),
        (
            json!({"credential_id": app_id, "expires_in": 5, "token_type": "mac"}),
            400,
            json!({"token_type": "\"mac\" is not allowed. Allowed values are: \"bearer\""}),
        ),
        (
            json!({"credential_id": missing_app, "expires_in": 5}),
            404,
            json!({"credential_id": format!("does not exist with value '{missing_app}'")}),
        ),
        (
            json!({"credential_id": app_id, "expires_in": 5, "service_id": missing_svc}),
            404,
            json!({"message": format!("no such Service (id={missing_svc})")}),
        ),
    ];
    for (body, status, expected) in cases {
        let r = gw.post_json("/oauth2_tokens", &body).await;
        r.assert_status(status);
        assert_eq!(r.body, expected, "{body}");
    }
    gw.assert_unchanged(&before).await;
    assert_eq!(gw.revision().await, revision);

    let t = gw
        .post_json(
            "/oauth2_tokens",
            &json!({"credential_id": app_id, "service_id": svc["id"], "expires_in": "7200", "scope": "email profile",
                    "authenticated_userid": "user-1", "access_token": "at-1"}),
        )
        .await
        .expect(201);
    assert_eq!(t["expires_in"], json!(7200));
    assert_eq!(t["service_id"], svc["id"]);
    assert_eq!(gw.get("/oauth2_tokens/at-1").await.expect(200), t);
    assert_eq!(gw.get(&format!("/oauth2_tokens/{}", id_of(&t))).await.expect(200), t);
    gw.get("/oauth2_tokens/nope").await.assert_status(404);
    let p = gw.patch_json("/oauth2_tokens/at-1", &json!({"scope": "email"})).await.expect(200);
    assert_eq!(p["scope"], json!("email"));
    assert_eq!(p["refresh_token"], t["refresh_token"]);
    let replaced = gw
        .put_json(
            "/oauth2_tokens",
            &json!({"id": t["id"], "credential_id": app_id, "expires_in": 60, "access_token": "at-2"}),
        )
        .await
        .expect(200);
    assert_eq!(replaced["created_at"], t["created_at"]);
    assert!(replaced.get("service_id").is_none(), "a full replacement drops what it does not name: {replaced}");
    gw.put_json("/oauth2_tokens", &json!({"id": new_id(), "credential_id": app_id, "expires_in": 60}))
        .await
        .assert_status(404);
    let other = gw.put_json("/oauth2_tokens", &json!({"credential_id": app_id, "expires_in": 60})).await.expect(201);
    let bound = gw
        .post_json("/oauth2_tokens", &json!({"credential_id": app_id, "expires_in": 60, "service_id": svc["id"]}))
        .await
        .expect(201);
    let listed = gw.get(&format!("/oauth2_tokens?credential_id={app_id}")).await.expect(200);
    assert_eq!(listed["total"], json!(3));
    let listed = gw.get(&format!("/oauth2_tokens?service_id={}", id_of(&svc))).await.expect(200);
    assert_eq!(ids(&data(&listed)), vec![id_of(&bound)]);
    gw.delete(&format!("/oauth2_tokens/{}", id_of(&other))).await.assert_status(204);
    gw.delete(&format!("/oauth2_tokens/{}", id_of(&other))).await.assert_status(404);

    // Deleting the service removes the tokens bound to it; deleting the application the rest.
    gw.delete("/services/svc").await.assert_status(204);
    let left = gw.get("/oauth2_tokens").await.expect(200);
    assert_eq!(ids(&data(&left)), vec![id_of(&t)]);
    gw.delete(&format!("/consumers/bob/oauth2/{}", app["client_id"].as_str().unwrap())).await.assert_status(204);
    assert_eq!(gw.get("/oauth2_tokens").await.expect(200)["total"], json!(0));
    let log = gw.changes().await;
    let last = log.iter().map(|c| c.revision).max().unwrap();
    let mut deleted: Vec<(String, String)> =
        log.iter().filter(|c| c.revision == last).map(|c| (c.entity.clone(), c.op.clone())).collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [("oauth2_credentials".to_owned(), "delete".to_owned()), ("oauth2_tokens".to_owned(), "delete".to_owned())]
    );
});

both!(consumer_delete_removes_credentials, |gw| async move {
    let bob = gw.create_consumer("bob").await;
    gw.create_consumer("alice").await;
    for who in ["bob", "alice"] {
        gw.post_json(&format!("/consumers/{who}/key-auth"), &json!({})).await.expect(201);
        gw.post_json(&format!("/consumers/{who}/basic-auth"), &json!({"username": format!("{who}-b")}))
            .await
            .expect(201);
        gw.post_json(&format!("/consumers/{who}/hmac-auth"), &json!({"username": format!("{who}-h")}))
            .await
            .expect(201);
        gw.post_json(&format!("/consumers/{who}/jwt"), &json!({})).await.expect(201);
        gw.post_json(&format!("/consumers/{who}/acls"), &json!({"group": "g"})).await.expect(201);
        let app = gw
            .post_json(&format!("/consumers/{who}/oauth2"), &json!({"name": "a", "redirect_uri": ["http://a.com"]}))
            .await
            .expect(201);
        gw.post_json("/oauth2_tokens", &json!({"credential_id": app["id"], "expires_in": 10})).await.expect(201);
    }
    let plurals = ["key-auths", "basic-auths", "hmac-auths", "jwts", "acls", "oauth2", "oauth2_tokens"];
    let revision = gw.revision().await;
    gw.delete("/consumers/bob").await.assert_status(204);
    assert_eq!(gw.revision().await, revision + 1, "one commit");
    for plural in plurals {
        let left = gw.get(&format!("/{plural}")).await.expect(200);
        assert_eq!(left["total"], json!(1), "{plural}: only alice's remains: {left}");
        assert!(data(&left).iter().all(|c| c.get("consumer_id") != Some(&bob["id"])), "{left}");
    }
    gw.get("/consumers/bob/key-auth").await.assert_status(404);
    let log = gw.changes().await;
    let mut entities: Vec<&str> =
        log.iter().filter(|c| c.revision == revision + 1).map(|c| c.entity.as_str()).collect();
    assert!(log.iter().filter(|c| c.revision == revision + 1).all(|c| c.op == "delete"));
    entities.sort();
    assert_eq!(
        entities,
        [
            "acls",
            "basicauth_credentials",
            "consumers",
            "hmacauth_credentials",
            "jwt_secrets",
            "keyauth_credentials",
            "oauth2_credentials",
            "oauth2_tokens"
        ]
    );
});

both!(bad_input_is_a_client_error, |gw| async move {
    gw.create_consumer("bob").await;
    gw.post_json("/consumers/bob/key-auth", &json!({"key": "k"})).await.expect(201);
    let before = gw.snapshot().await;
    let revision = gw.revision().await;
    let r = gw.raw(reqwest::Method::POST, "/consumers/bob/key-auth", Some("application/json"), "{bad").await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"message": "Cannot parse JSON body"}));
    gw.raw(reqwest::Method::POST, "/consumers/bob/acls", Some("application/json"), "[1]").await.assert_status(400);
    gw.raw(reqwest::Method::PATCH, "/consumers/bob/key-auth/k", Some("application/json"), "{").await.assert_status(400);
    gw.raw(reqwest::Method::POST, "/consumers/bob/jwt", Some("text/plain"), "key=x").await.assert_status(415);

    let cases: Vec<(&str, Value, Value)> = vec![
        ("/consumers/bob/key-auth", json!({"key": 1}), json!({"key": "key is not a string"})),
        ("/consumers/bob/key-auth", json!({"key": {"a": 1}}), json!({"key": "key is not a string"})),
        ("/consumers/bob/key-auth", json!({"foo": "bar"}), json!({"foo": "foo is an unknown field"})),
        ("/consumers/bob/key-auth", json!({"id": "nope"}), json!({"id": "nope is not a valid uuid"})),
        ("/consumers/bob/basic-auth", json!({"username": ["a"]}), json!({"username": "username is not a string"})),
        (
            "/consumers/bob/basic-auth",
            json!({"username": "u", "password": 5}),
            json!({"password": "password is not a string"}),
        ),
        ("/consumers/bob/hmac-auth", json!({"username": null}), json!({"username": "username is required"})),
        (
            "/consumers/bob/hmac-auth",
            json!({"username": "u", "secret": true}),
            json!({"secret": "secret is not a string"}),
        ),
        (
            "/consumers/bob/jwt",
            json!({"rsa_public_key": []}),
            json!({"rsa_public_key": "rsa_public_key is not a string"}),
        ),
        ("/consumers/bob/acls", json!({}), json!({"group": "group is required"})),
        ("/consumers/bob/acls", json!({"group": 7}), json!({"group": "group is not a string"})),
        (
            "/consumers/bob/oauth2",
            json!({"name": 1, "redirect_uri": ["http://a.com"]}),
            json!({"name": "name is not a string"}),
        ),
        (
            "/oauth2_tokens",
            json!({"credential_id": 5, "expires_in": 1}),
            json!({"credential_id": "credential_id is not a string"}),
        ),
    ];
    for (path, body, expected) in cases {
        let r = gw.post_json(path, &body).await;
        r.assert_status(400);
        assert_eq!(r.body, expected, "POST {path} {body}");
    }
    for (path, body) in [
        ("/consumers/bob/key-auth/k", json!({"key": 5})),
        ("/consumers/bob/key-auth/k", json!({"bogus": 1})),
        ("/consumers/bob/key-auth/k", json!({})),
    ] {
        gw.patch_json(path, &body).await.assert_status(400);
    }
    // Form bodies: `true` is coerced to a boolean, which is not a string.
    let r = gw.post_form("/consumers/bob/key-auth", &[("key", "true")]).await;
    r.assert_status(400);
    assert_eq!(r.body, json!({"key": "key is not a string"}));
    gw.post_form("/consumers/bob/acls", &[("group", "g"), ("x", "y")]).await.assert_status(400);
    gw.post_json("/consumers/nobody/key-auth", &json!({})).await.assert_status(404);
    gw.get("/key-auths?size=0").await.assert_client_error();
    gw.get("/key-auths?offset=%%%").await.assert_client_error();
    gw.assert_unchanged(&before).await;
    assert_eq!(gw.revision().await, revision);
});

both!(change_log_names_the_credential_entities, |gw| async move {
    let bob = gw.create_consumer("bob").await;
    let svc = gw.create_service("svc").await;
    let start = gw.revision().await;
    let made = [
        gw.post_json("/consumers/bob/key-auth", &json!({"key": "k"})).await.expect(201),
        gw.post_json("/consumers/bob/basic-auth", &json!({"username": "b", "password": "p"})).await.expect(201),
        gw.post_json("/consumers/bob/hmac-auth", &json!({"username": "h", "secret": "s"})).await.expect(201),
        gw.post_json("/consumers/bob/jwt", &json!({"key": "j", "secret": "s"})).await.expect(201),
        gw.post_json("/consumers/bob/acls", &json!({"group": "g"})).await.expect(201),
        gw.post_json("/consumers/bob/oauth2", &json!({"name": "a", "redirect_uri": ["http://a.com"]}))
            .await
            .expect(201),
    ];
    let token = gw
        .post_json(
            "/oauth2_tokens",
            &json!({"credential_id": made[5]["id"], "expires_in": 10, "service_id": svc["id"]}),
        )
        .await
        .expect(201);
    let log = gw.changes().await;
    let rows: Vec<&Change> = log.iter().filter(|c| c.revision > start).collect();
    let entities: Vec<&str> = rows.iter().map(|c| c.entity.as_str()).collect();
    assert_eq!(
        entities,
        [
            "keyauth_credentials",
            "basicauth_credentials",
            "hmacauth_credentials",
            "jwt_secrets",
            "acls",
            "oauth2_credentials",
            "oauth2_tokens"
        ]
    );
    let expected_fields: [&[&str]; 7] = [
        &["id", "created_at", "consumer_id", "key"],
        &["id", "created_at", "consumer_id", "username", "password"],
        &["id", "created_at", "consumer_id", "username", "secret"],
        &["id", "created_at", "consumer_id", "key", "secret", "algorithm"],
        &["id", "created_at", "consumer_id", "group"],
        &["id", "created_at", "consumer_id", "name", "client_id", "client_secret", "redirect_uri"],
        &[
            "id",
            "created_at",
            "credential_id",
            "service_id",
            "token_type",
            "expires_in",
            "access_token",
            "refresh_token",
        ],
    ];
    let all: Vec<&Value> = made.iter().chain(std::iter::once(&token)).collect();
    for ((row, fields), api) in rows.iter().zip(expected_fields).zip(all) {
        let doc = row.doc_json().unwrap();
        assert_eq!(row.op, "upsert");
        assert_eq!(row.entity_id, id_of(api));
        assert_eq!(keys(&doc), sorted(fields), "{}: {doc}", row.entity);
        assert_eq!(&doc, api, "the log carries what the Admin API shows");
        assert_millis(&doc["created_at"]);
    }
    assert_eq!(rows[0].doc_json().unwrap()["consumer_id"], bob["id"]);
});
