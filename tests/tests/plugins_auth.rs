//! The authentication plugins and acl through the proxy (kong-0.14-plugins.md §1.3–1.5, §3,
//! §4.1 key-auth, §4.2 basic-auth, §4.3 hmac-auth, §4.4 jwt, §4.7 acl): what the client gets
//! when a credential is missing, wrong or ambiguous (status, exact body, `WWW-Authenticate`),
//! what the upstream sees when it is right (`X-Consumer-*`, `X-Credential-Username`,
//! `X-Anonymous-Consumer`, `X-Consumer-Groups`), which plugin row applies (route over service
//! over global, disabled rows fall through) and how several auth plugins combine (OR with
//! `anonymous`, AND without).
//!
//! Consumers and credentials are created through the Admin API (`POST /consumers`,
//! `POST /consumers/{c}/key-auth|basic-auth|hmac-auth|jwt|acls`); signatures (HMAC, JWT HS256
//! and ES256) are computed here with `ring`. Every test runs its own gateway and echo upstream,
//! on Routes with `strip_path: false` so the upstream sees the path as the client sent it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use gatehouse_tests::proxy::{Echo, Reply, Standalone, Upstream};
use gatehouse_tests::{id_of, json, now_secs};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::Value;

const NO_KEY: &str = "No API key found in request";
const INVALID_CREDENTIALS: &str = "Invalid authentication credentials";
const HMAC_NO_DATE: &str =
    "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";
const HMAC_CANNOT_VERIFY: &str = "HMAC signature cannot be verified";
const HMAC_MISMATCH: &str = "HMAC signature does not match";
const ACL_DENIED: &str = "You cannot consume this service";

// === helpers: configuration ===

/// A gateway, an echo upstream, a Service for it and a Route with `paths: [path]` that keeps
/// the path (`strip_path: false`).
async fn gateway(path: &str) -> (Standalone, Upstream, Value, Value) {
    let gw = Standalone::start().await;
    let up = Upstream::echo("auth-echo").await;
    let (service, route) = gw.expose(&up, json!({}), json!({"paths": [path], "strip_path": false})).await;
    (gw, up, service, route)
}

/// Another Route (`paths: [path]`, not stripped) to `service`.
async fn route_to(gw: &Standalone, service: &Value, path: &str) -> Value {
    gw.route(service, json!({"paths": [path], "strip_path": false})).await
}

/// `POST /plugins` bound to a Route.
async fn on_route(gw: &Standalone, route: &Value, name: &str, config: Value) -> Value {
    gw.post("/plugins", json!({"name": name, "route_id": id_of(route), "config": config})).await
}

/// `POST /plugins` bound to a Service.
async fn on_service(gw: &Standalone, service: &Value, name: &str, config: Value) -> Value {
    gw.post("/plugins", json!({"name": name, "service_id": id_of(service), "config": config})).await
}

/// `POST /plugins` with no route, service or consumer: a global plugin.
async fn global(gw: &Standalone, name: &str, config: Value) -> Value {
    gw.post("/plugins", json!({"name": name, "config": config})).await
}

/// `POST /consumers` with a username and, optionally, a custom_id.
async fn consumer(gw: &Standalone, username: &str, custom_id: Option<&str>) -> Value {
    let mut body = json!({"username": username});
    if let Some(c) = custom_id {
        body["custom_id"] = json!(c);
    }
    gw.post("/consumers", body).await
}

/// `POST /consumers/{username}/{kind}` (asserts 201) and checks the row names its consumer.
async fn credential(gw: &Standalone, owner: &Value, kind: &str, body: Value) -> Value {
    let username = owner["username"].as_str().expect("the consumer has a username");
    let row = gw.post(&format!("/consumers/{username}/{kind}"), body).await;
    assert_eq!(row["consumer_id"], owner["id"], "POST /consumers/{username}/{kind}: consumer_id of {row}");
    row
}

/// The consumer `alice` (with `custom_id`, if given) and her hmac-auth credential
/// `alice-hmac` / `alice-secret`.
async fn hmac_alice(gw: &Standalone, custom_id: Option<&str>) -> Value {
    let alice = consumer(gw, "alice", custom_id).await;
    credential(gw, &alice, "hmac-auth", json!({"username": "alice-hmac", "secret": "alice-secret"})).await;
    alice
}

// === helpers: requests ===

/// A hand-written request with a body (`Content-Length` set) over a fresh connection.
async fn send_body(gw: &Standalone, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", gw.proxy_port);
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    gw.send_raw(&raw).await.unwrap_or_else(|e| panic!("{method} {target} {headers:?}: {e}\nstderr:\n{}", gw.logs()))
}

/// `Basic <base64(user:password)>`
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

// === helpers: assertions ===

/// A rejection in key-auth's "PDK exit" flavour (§1.5): `{"message":"…"}` with no newline.
#[track_caller]
fn assert_exit(reply: &Reply, status: u16, message: &str) {
    assert_rejection(reply, status, &json!({"message": message}).to_string());
}

/// A rejection in the "legacy responses helper" flavour (§1.5): `{"message":"…"}` + `\n`.
#[track_caller]
fn assert_message(reply: &Reply, status: u16, message: &str) {
    assert_rejection(reply, status, &format!("{}\n", json!({"message": message})));
}

#[track_caller]
fn assert_rejection(reply: &Reply, status: u16, body: &str) {
    reply.assert_status(status);
    reply.assert_generated();
    assert_eq!(reply.text(), body, "{}: exact body", reply.what);
    let ct = reply.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{}: Content-Type {ct:?}", reply.what);
    assert!(reply.header("x-upstream").is_none(), "{}: a plugin's answer, not the upstream's", reply.what);
}

/// The upstream saw `who` as the authenticated consumer: `X-Consumer-ID`, and
/// `X-Consumer-Username` / `X-Consumer-Custom-ID` exactly when the consumer has them.
#[track_caller]
fn assert_consumer(echo: &Echo, who: &Value) {
    assert_eq!(echo.header("x-consumer-id"), who["id"].as_str(), "X-Consumer-ID: {:?}", echo.0);
    assert_eq!(echo.header("x-consumer-username"), who["username"].as_str(), "X-Consumer-Username: {:?}", echo.0);
    assert_eq!(echo.header("x-consumer-custom-id"), who["custom_id"].as_str(), "X-Consumer-Custom-ID: {:?}", echo.0);
}

/// [`assert_consumer`], and the request was not let through as anonymous.
#[track_caller]
fn assert_authenticated(echo: &Echo, who: &Value) {
    assert_consumer(echo, who);
    assert_eq!(echo.header("x-anonymous-consumer"), None, "a real consumer is not anonymous: {:?}", echo.0);
}

/// [`assert_consumer`] for the anonymous consumer, with `X-Anonymous-Consumer: true`.
#[track_caller]
fn assert_anonymous(echo: &Echo, anonymous: &Value) {
    assert_consumer(echo, anonymous);
    assert_eq!(echo.header("x-anonymous-consumer"), Some("true"), "{:?}", echo.0);
    assert_eq!(echo.header("x-credential-username"), None, "anonymous has no credential: {:?}", echo.0);
}

// === helpers: signatures ===

/// An RFC 1123 HTTP date (`Thu, 22 Jun 2017 17:15:21 GMT`) for seconds since the epoch.
fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from a day count (proleptic Gregorian, eras of 400 years from 0000-03-01).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// base64 of HMAC-SHA256(secret, data).
fn hmac_sha256_b64(secret: &str, data: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    STANDARD.encode(ring::hmac::sign(&key, data.as_bytes()).as_ref())
}

/// `hmac username="…", algorithm="hmac-sha256", headers="…", signature="…"`
fn hmac_authorization(username: &str, headers: &str, signature: &str) -> String {
    format!(r#"hmac username="{username}", algorithm="hmac-sha256", headers="{headers}", signature="{signature}""#)
}

/// `SHA-256=<base64(sha256(body))>`, the `Digest` header hmac-auth checks.
fn digest(body: &[u8]) -> String {
    format!("SHA-256={}", STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, body).as_ref()))
}

/// `base64url(header).base64url(claims)`, the part of a JWT that is signed.
fn jwt_signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// A JWT signed with HMAC (`alg` HS256 or HS512) and `secret`.
fn jwt_hs(alg: &str, secret: &str, claims: &Value) -> String {
    let hash = match alg {
        "HS256" => ring::hmac::HMAC_SHA256,
        "HS512" => ring::hmac::HMAC_SHA512,
        other => panic!("no HMAC for {other}"),
    };
    let input = jwt_signing_input(&json!({"alg": alg, "typ": "JWT"}), claims);
    let sig = ring::hmac::sign(&ring::hmac::Key::new(hash, secret.as_bytes()), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// A fresh P-256 key pair: the signer, and its public key as an SPKI PEM (`PUBLIC KEY`).
fn es256_key() -> (EcdsaKeyPair, String) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate a P-256 key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("P-256 key");
    // SubjectPublicKeyInfo { AlgorithmIdentifier { id-ecPublicKey, prime256v1 }, BIT STRING point }.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    spki.extend_from_slice(point);
    let b64 = STANDARD.encode(&spki);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
    (pair, pem)
}

/// A JWT with `alg: ES256` signed by `pair` (signature = the 64-byte r‖s).
fn jwt_es256(pair: &EcdsaKeyPair, claims: &Value) -> String {
    let input = jwt_signing_input(&json!({"alg": "ES256", "typ": "JWT"}), claims);
    let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).expect("ES256 signature");
    assert_eq!(sig.as_ref().len(), 64, "a fixed-size ES256 signature");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[test]
fn http_date_formats_rfc_1123() {
    assert_eq!(http_date(1_498_151_721), "Thu, 22 Jun 2017 17:15:21 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(http_date(1_767_225_599), "Wed, 31 Dec 2025 23:59:59 GMT");
}

// === key-auth ===

#[tokio::test]
async fn key_auth_key_in_header_or_query_sets_consumer_headers() {
    let (gw, up, _, route) = gateway("/ka").await;
    on_route(&gw, &route, "key-auth", json!({})).await;
    let alice = consumer(&gw, "alice", Some("alice-custom")).await;
    let bob = consumer(&gw, "bob", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    let row = credential(&gw, &bob, "key-auth", json!({"key": "bob-key"})).await;
    assert_eq!(row["key"], "bob-key", "the credential row: {row}");
    gw.sync().await;

    // In a header (the name is case-insensitive); the header itself reaches the upstream.
    let echo = gw.get_with("/ka", &[("ApiKey", "alice-key")]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-consumer-custom-id"), Some("alice-custom"), "{:?}", echo.0);
    assert_eq!(echo.header("apikey"), Some("alice-key"), "hide_credentials is off: {:?}", echo.0);
    assert_eq!(echo.header("x-credential-username"), None, "key credentials have no username: {:?}", echo.0);

    // In the query string; the query reaches the upstream untouched.
    let echo = gw.get("/ka?apikey=alice-key&x=1").await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.path(), "/ka?apikey=alice-key&x=1", "{:?}", echo.0);

    // A consumer without custom_id: no X-Consumer-Custom-ID at all.
    let echo = gw.get("/ka?apikey=bob-key").await.echo();
    assert_authenticated(&echo, &bob);
    assert_eq!(echo.header("x-consumer-custom-id"), None, "{:?}", echo.0);

    // Client-sent consumer headers are replaced, not trusted.
    let echo = gw
        .get_with(
            "/ka",
            &[
                ("apikey", "bob-key"),
                ("X-Consumer-ID", "spoofed"),
                ("X-Consumer-Custom-ID", "spoofed"),
                ("X-Anonymous-Consumer", "true"),
            ],
        )
        .await
        .echo();
    assert_authenticated(&echo, &bob);
    assert_eq!(up.requests(), 4);
}

#[tokio::test]
async fn key_auth_rejections() {
    let (gw, up, _, route) = gateway("/ka").await;
    on_route(&gw, &route, "key-auth", json!({})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    let reply = gw.get("/ka").await;
    assert_exit(&reply, 401, NO_KEY);
    assert_eq!(reply.header("www-authenticate"), Some(r#"Key realm="kong""#), "{:?}", reply.headers);

    // The query argument name is case-sensitive: `APIKEY` is not `apikey`.
    assert_exit(&gw.get("/ka?APIKEY=alice-key").await, 401, NO_KEY);
    // A key no credential has, in a header or in the query.
    let reply = gw.get_with("/ka", &[("apikey", "nope")]).await;
    assert_exit(&reply, 403, INVALID_CREDENTIALS);
    assert_eq!(reply.header("www-authenticate"), None, "only the 401 challenges: {:?}", reply.headers);
    assert_exit(&gw.get("/ka?apikey=nope").await, 403, INVALID_CREDENTIALS);

    // The key twice, in the query or as two headers.
    assert_exit(&gw.get("/ka?apikey=alice-key&apikey=alice-key").await, 401, "Duplicate API key found");
    let reply = gw.get_with("/ka", &[("apikey", "alice-key"), ("apikey", "alice-key")]).await;
    assert_exit(&reply, 401, "Duplicate API key found");

    assert_eq!(up.requests(), 0, "no rejected request reaches the upstream");
    gw.get("/ka?apikey=alice-key").await.echo();
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn key_auth_hide_credentials_strips_header_and_query_arg() {
    let (gw, _up, service, route) = gateway("/hide").await;
    on_route(&gw, &route, "key-auth", json!({"hide_credentials": true})).await;
    let shown = route_to(&gw, &service, "/shown").await;
    on_route(&gw, &shown, "key-auth", json!({"hide_credentials": false})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    let echo = gw.get_with("/hide", &[("apikey", "alice-key"), ("X-Other", "kept")]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("apikey"), None, "the key header is removed: {:?}", echo.0);
    assert_eq!(echo.header("x-other"), Some("kept"), "{:?}", echo.0);

    let echo = gw.get("/hide?a=1&apikey=alice-key&b=2").await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.path(), "/hide?a=1&b=2", "only the key argument is removed: {:?}", echo.0);

    let echo = gw.get("/hide?apikey=alice-key").await.echo();
    assert_eq!(echo.path(), "/hide", "no query left: {:?}", echo.0);

    let echo = gw.get("/shown?apikey=alice-key").await.echo();
    assert_eq!(echo.path(), "/shown?apikey=alice-key", "{:?}", echo.0);
}

#[tokio::test]
async fn key_auth_custom_key_names() {
    let (gw, _up, _, route) = gateway("/names").await;
    on_route(&gw, &route, "key-auth", json!({"key_names": ["x-api-key", "token"]})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    assert_authenticated(&gw.get_with("/names", &[("X-API-Key", "alice-key")]).await.echo(), &alice);
    assert_authenticated(&gw.get("/names?token=alice-key").await.echo(), &alice);
    assert_authenticated(&gw.get("/names?x-api-key=alice-key").await.echo(), &alice);
    // The default name is no longer looked at.
    assert_exit(&gw.get("/names?apikey=alice-key").await, 401, NO_KEY);
    assert_exit(&gw.get_with("/names", &[("apikey", "alice-key")]).await, 401, NO_KEY);
    // The first name with a value wins: a wrong `x-api-key` header hides a right `token`.
    assert_exit(&gw.get_with("/names?token=alice-key", &[("x-api-key", "wrong")]).await, 403, INVALID_CREDENTIALS);
}

#[tokio::test]
async fn key_auth_anonymous_consumer() {
    let (gw, _up, _, route) = gateway("/anon").await;
    let anonymous = consumer(&gw, "guest", Some("guest-custom")).await;
    on_route(&gw, &route, "key-auth", json!({"anonymous": id_of(&anonymous)})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    // No key, a wrong key, a duplicated key: all let through as the anonymous consumer.
    assert_anonymous(&gw.get("/anon").await.echo(), &anonymous);
    assert_anonymous(&gw.get("/anon?apikey=wrong").await.echo(), &anonymous);
    assert_anonymous(&gw.get("/anon?apikey=a&apikey=b").await.echo(), &anonymous);

    // A right key: the real consumer, and a client's X-Anonymous-Consumer is removed.
    let echo = gw.get_with("/anon?apikey=alice-key", &[("X-Anonymous-Consumer", "true")]).await.echo();
    assert_authenticated(&echo, &alice);
}

#[tokio::test]
async fn key_auth_key_in_body() {
    let (gw, _up, service, route) = gateway("/body").await;
    on_route(&gw, &route, "key-auth", json!({"key_in_body": true})).await;
    let hidden = route_to(&gw, &service, "/hidden-body").await;
    on_route(&gw, &hidden, "key-auth", json!({"key_in_body": true, "hide_credentials": true})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = b"x=1&apikey=alice-key";
    let echo = send_body(&gw, "POST", "/body", &form, body).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.body_len(), body.len() as u64, "the body is forwarded whole: {:?}", echo.0);

    // hide_credentials removes the field from the body the upstream gets.
    let echo = send_body(&gw, "POST", "/hidden-body", &form, body).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.body_len(), "x=1".len() as u64, "only `x=1` is left: {:?}", echo.0);

    // JSON bodies too; a wrong key in the body is a 403, none at all a 401.
    let json_ct = [("Content-Type", "application/json")];
    let echo = send_body(&gw, "POST", "/body", &json_ct, br#"{"apikey":"alice-key"}"#).await.echo();
    assert_authenticated(&echo, &alice);
    assert_exit(&send_body(&gw, "POST", "/body", &form, b"apikey=wrong").await, 403, INVALID_CREDENTIALS);
    assert_exit(&send_body(&gw, "POST", "/body", &form, b"x=1").await, 401, NO_KEY);

    // Headers and query are still searched first.
    let echo = send_body(&gw, "POST", "/body?apikey=alice-key", &form, b"x=1").await.echo();
    assert_authenticated(&echo, &alice);

    // A key in a header needs no body: a GET without one, or a body that cannot be read, is
    // authenticated from the header (the issue's choice over Kong's quirk 2).
    let echo = gw.get_with("/body", &[("apikey", "alice-key")]).await.echo();
    assert_authenticated(&echo, &alice);
    let echo = send_body(&gw, "POST", "/body", &[("apikey", "alice-key")], b"apikey=alice-key").await.echo();
    assert_authenticated(&echo, &alice);
    // With no key before the body, a body that cannot be read is Kong's 400.
    let reply = send_body(&gw, "POST", "/body", &[], b"apikey=alice-key").await;
    assert_exit(&reply, 400, "Cannot process request body");

    // A value that is not a string is passed over (a number), or is a duplicate (an object),
    // as in Kong; a query argument without `=` is no key at all.
    credential(&gw, &alice, "key-auth", json!({"key": "123"})).await;
    gw.sync().await;
    assert_exit(&send_body(&gw, "POST", "/body", &json_ct, br#"{"apikey":123}"#).await, 401, NO_KEY);
    let reply = send_body(&gw, "POST", "/body", &json_ct, br#"{"apikey":{"a":1}}"#).await;
    assert_exit(&reply, 401, "Duplicate API key found");
    assert_exit(&send_body(&gw, "POST", "/body?apikey", &form, b"x=1").await, 401, NO_KEY);
}

#[tokio::test]
async fn key_auth_unreadable_body_falls_back_to_the_anonymous_consumer() {
    let (gw, _up, _, route) = gateway("/anon-body").await;
    let anonymous = consumer(&gw, "guest", None).await;
    on_route(&gw, &route, "key-auth", json!({"key_in_body": true, "anonymous": id_of(&anonymous)})).await;
    gw.sync().await;
    let echo = send_body(&gw, "POST", "/anon-body", &[("Content-Type", "application/json")], b"{not json").await.echo();
    assert_anonymous(&echo, &anonymous);
}

#[tokio::test]
async fn key_auth_run_on_preflight() {
    let (gw, _up, service, route) = gateway("/preflight-off").await;
    on_route(&gw, &route, "key-auth", json!({"run_on_preflight": false})).await;
    let checked = route_to(&gw, &service, "/preflight-on").await;
    on_route(&gw, &checked, "key-auth", json!({})).await;
    gw.sync().await;

    let echo = gw.request("OPTIONS", "/preflight-off", &[("Origin", "http://example.test")]).await.echo();
    assert_eq!(echo.method(), "OPTIONS");
    assert_eq!(echo.header("x-consumer-id"), None, "nobody was authenticated: {:?}", echo.0);
    // Other methods are still checked.
    assert_exit(&gw.get("/preflight-off").await, 401, NO_KEY);
    // By default OPTIONS needs a key like everything else.
    assert_exit(&gw.request("OPTIONS", "/preflight-on", &[]).await, 401, NO_KEY);
}

// === basic-auth ===

#[tokio::test]
async fn basic_auth_good_missing_and_wrong_credentials() {
    let (gw, up, _, route) = gateway("/basic").await;
    on_route(&gw, &route, "basic-auth", json!({})).await;
    let alice = consumer(&gw, "alice", Some("alice-custom")).await;
    let bob = consumer(&gw, "bob", None).await;
    credential(&gw, &alice, "basic-auth", json!({"username": "alice-login", "password": "wonderland"})).await;
    credential(&gw, &bob, "basic-auth", json!({"username": "bob-login", "password": "se:cret"})).await;
    gw.sync().await;

    let auth = basic("alice-login", "wonderland");
    let echo = gw.get_with("/basic", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-credential-username"), Some("alice-login"), "{:?}", echo.0);
    assert_eq!(echo.header("authorization"), Some(auth.as_str()), "hide_credentials is off: {:?}", echo.0);

    // The user name ends at the first colon; the password may hold more; the scheme is
    // `Basic` or `basic` (Kong's `[Bb]asic`), not `BASIC`.
    let auth = basic("bob-login", "se:cret").replacen("Basic", "basic", 1);
    let echo = gw.get_with("/basic", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &bob);
    assert_eq!(echo.header("x-credential-username"), Some("bob-login"), "{:?}", echo.0);
    let shouted = basic("bob-login", "se:cret").replacen("Basic", "BASIC", 1);
    assert_message(&gw.get_with("/basic", &[("Authorization", &shouted)]).await, 403, INVALID_CREDENTIALS);

    let reply = gw.get("/basic").await;
    assert_message(&reply, 401, "Unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some(r#"Basic realm="kong""#), "{:?}", reply.headers);

    let wrong = basic("alice-login", "wrong");
    assert_message(&gw.get_with("/basic", &[("Authorization", &wrong)]).await, 403, INVALID_CREDENTIALS);
    let unknown = basic("nobody", "wonderland");
    assert_message(&gw.get_with("/basic", &[("Authorization", &unknown)]).await, 403, INVALID_CREDENTIALS);
    let garbage = [("Authorization", "Basic !!!not-base64!!!")];
    assert_message(&gw.get_with("/basic", &garbage).await, 403, INVALID_CREDENTIALS);
    assert_eq!(up.requests(), 2, "only the authenticated requests were proxied");
}

#[tokio::test]
async fn basic_auth_proxy_authorization_and_hide_credentials() {
    let (gw, _up, service, route) = gateway("/basic").await;
    on_route(&gw, &route, "basic-auth", json!({})).await;
    let hidden = route_to(&gw, &service, "/hidden-basic").await;
    on_route(&gw, &hidden, "basic-auth", json!({"hide_credentials": true})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "basic-auth", json!({"username": "alice-login", "password": "wonderland"})).await;
    gw.sync().await;

    let auth = basic("alice-login", "wonderland");
    let echo = gw.get_with("/basic", &[("Proxy-Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-credential-username"), Some("alice-login"), "{:?}", echo.0);

    // Proxy-Authorization is examined first: a real user with a wrong password there is a 403
    // even when Authorization is right.
    let wrong = basic("alice-login", "wrong");
    let reply = gw.get_with("/basic", &[("Proxy-Authorization", &wrong), ("Authorization", &auth)]).await;
    assert_message(&reply, 403, INVALID_CREDENTIALS);

    let echo = gw.get_with("/hidden-basic", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("authorization"), None, "Authorization is stripped: {:?}", echo.0);
    let echo = gw.get_with("/hidden-basic", &[("Proxy-Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("proxy-authorization"), None, "Proxy-Authorization is stripped: {:?}", echo.0);
}

// === hmac-auth ===

/// Date, signing string and Authorization for `GET <target>` signed over `date request-line`.
fn hmac_get(username: &str, secret: &str, target: &str, date: &str) -> String {
    let signing = format!("date: {date}\nGET {target} HTTP/1.1");
    hmac_authorization(username, "date request-line", &hmac_sha256_b64(secret, &signing))
}

#[tokio::test]
async fn hmac_auth_valid_missing_stale_and_wrong() {
    let (gw, up, service, route) = gateway("/hmac").await;
    on_route(&gw, &route, "hmac-auth", json!({})).await;
    let hidden = route_to(&gw, &service, "/hidden-hmac").await;
    on_route(&gw, &hidden, "hmac-auth", json!({"hide_credentials": true})).await;
    let alice = hmac_alice(&gw, Some("alice-custom")).await;
    gw.sync().await;

    let date = http_date(now_secs());
    let auth = hmac_get("alice-hmac", "alice-secret", "/hmac?a=1", &date);
    let echo = gw.get_with("/hmac?a=1", &[("Date", &date), ("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-credential-username"), Some("alice-hmac"), "{:?}", echo.0);
    assert_eq!(echo.header("authorization"), Some(auth.as_str()), "hide_credentials is off: {:?}", echo.0);

    // X-Date instead of Date, and the signature in Proxy-Authorization.
    let signing = format!("x-date: {date}\nGET /hmac HTTP/1.1");
    let auth = hmac_authorization("alice-hmac", "x-date request-line", &hmac_sha256_b64("alice-secret", &signing));
    let echo = gw.get_with("/hmac", &[("X-Date", &date), ("Proxy-Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);

    // hide_credentials removes the header that carried the signature.
    let auth = hmac_get("alice-hmac", "alice-secret", "/hidden-hmac", &date);
    let echo = gw.get_with("/hidden-hmac", &[("Date", &date), ("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("authorization"), None, "{:?}", echo.0);
    let proxied = up.requests();

    // Neither Authorization nor Proxy-Authorization.
    let reply = gw.get_with("/hmac", &[("Date", &date)]).await;
    assert_message(&reply, 401, "Unauthorized");

    // A date further than clock_skew (300 s) from now, or none at all.
    let stale = http_date(now_secs() - 600);
    let auth = hmac_get("alice-hmac", "alice-secret", "/hmac", &stale);
    assert_message(&gw.get_with("/hmac", &[("Date", &stale), ("Authorization", &auth)]).await, 403, HMAC_NO_DATE);
    let future = http_date(now_secs() + 600);
    let auth = hmac_get("alice-hmac", "alice-secret", "/hmac", &future);
    assert_message(&gw.get_with("/hmac", &[("Date", &future), ("Authorization", &auth)]).await, 403, HMAC_NO_DATE);
    let auth = hmac_get("alice-hmac", "alice-secret", "/hmac", &date);
    assert_message(&gw.get_with("/hmac", &[("Authorization", &auth)]).await, 403, HMAC_NO_DATE);

    // Signed with another secret, or over another request line.
    let auth = hmac_get("alice-hmac", "not-the-secret", "/hmac", &date);
    assert_message(&gw.get_with("/hmac", &[("Date", &date), ("Authorization", &auth)]).await, 403, HMAC_MISMATCH);
    let auth = hmac_get("alice-hmac", "alice-secret", "/hmac?signed=other", &date);
    let reply = gw.get_with("/hmac?sent=this", &[("Date", &date), ("Authorization", &auth)]).await;
    assert_message(&reply, 403, HMAC_MISMATCH);

    // An unknown user.
    let auth = hmac_get("nobody", "alice-secret", "/hmac", &date);
    let reply = gw.get_with("/hmac", &[("Date", &date), ("Authorization", &auth)]).await;
    assert_message(&reply, 403, HMAC_CANNOT_VERIFY);
    assert_eq!(up.requests(), proxied, "no rejected request reaches the upstream");
}

/// Over HTTP/2 the request line hmac-auth signs names version 2.0, as Kong's does.
#[tokio::test]
async fn hmac_auth_signs_the_http2_request_line() {
    let (gw, _up, _service, route) = gateway("/hmac2").await;
    on_route(&gw, &route, "hmac-auth", json!({})).await;
    let alice = hmac_alice(&gw, None).await;
    gw.sync().await;

    let date = http_date(now_secs());
    let sign = |version: &str| {
        let signing = format!("date: {date}\nGET /hmac2 {version}");
        hmac_authorization("alice-hmac", "date request-line", &hmac_sha256_b64("alice-secret", &signing))
    };
    let send = |auth: String| {
        let req = gw.client().get(gw.proxy_tls_url("/hmac2")).header("date", &date).header("authorization", auth);
        gw.send("GET h2 hmac", req)
    };
    let reply = send(sign("HTTP/2.0")).await;
    assert_eq!(reply.version, "HTTP/2.0");
    assert_authenticated(&reply.echo(), &alice);
    assert_message(&send(sign("HTTP/1.1")).await, 403, HMAC_MISMATCH);
}

/// Kong reads the Authorization value with one fixed grammar (`username`, `algorithm`,
/// `headers`, `signature`, in that order); anything else cannot be verified.
#[tokio::test]
async fn hmac_auth_parameters_follow_kongs_grammar() {
    let (gw, up, _, route) = gateway("/grammar").await;
    on_route(&gw, &route, "hmac-auth", json!({})).await;
    let alice = hmac_alice(&gw, None).await;
    gw.sync().await;
    let date = http_date(now_secs());
    let signature = hmac_sha256_b64("alice-secret", &format!("date: {date}\nGET /grammar HTTP/1.1"));
    let send = |auth: String| {
        let date = date.clone();
        let gw = &gw;
        async move { gw.get_with("/grammar", &[("Date", date.as_str()), ("Authorization", auth.as_str())]).await }
    };

    let good = format!(
        r#"hmac username="alice-hmac", algorithm="hmac-sha256", headers="date request-line", signature="{signature}""#
    );
    assert_authenticated(&send(good).await.echo(), &alice);
    let reordered = format!(
        r#"hmac algorithm="hmac-sha256", username="alice-hmac", headers="date request-line", signature="{signature}""#
    );
    assert_message(&send(reordered).await, 403, HMAC_CANNOT_VERIFY);
    for misspelt in [
        format!(
            r#"hmac username="alice-hmac", algorithm="hmac-sha256", headers="date request-line", wrong_signature="{signature}""#
        ),
        format!(
            r#"hmac username="alice-hmac", algorithm="hmac-sha256", wrong_header="date request-line", signature="{signature}""#
        ),
        format!(
            r#"HMAC username="alice-hmac", algorithm="hmac-sha256", headers="date request-line", signature="{signature}""#
        ),
    ] {
        assert_message(&send(misspelt).await, 403, HMAC_CANNOT_VERIFY);
    }
    assert_eq!(up.requests(), 1, "only the well-formed value was proxied");
}

#[tokio::test]
async fn hmac_auth_enforce_headers_and_algorithms() {
    let (gw, _up, service, route) = gateway("/enforced").await;
    on_route(&gw, &route, "hmac-auth", json!({"enforce_headers": ["date", "x-custom"]})).await;
    let sha512_only = route_to(&gw, &service, "/sha512-only").await;
    on_route(&gw, &sha512_only, "hmac-auth", json!({"algorithms": ["hmac-sha512"]})).await;
    let alice = hmac_alice(&gw, None).await;
    gw.sync().await;
    let date = http_date(now_secs());

    // x-custom is enforced but not among the signed headers.
    let auth = hmac_get("alice-hmac", "alice-secret", "/enforced", &date);
    let headers = [("Date", date.as_str()), ("X-Custom", "v"), ("Authorization", auth.as_str())];
    assert_message(&gw.get_with("/enforced", &headers).await, 403, HMAC_CANNOT_VERIFY);

    // Signed over date, x-custom and the request line: accepted.
    let signing = format!("date: {date}\nx-custom: v\nGET /enforced HTTP/1.1");
    let auth =
        hmac_authorization("alice-hmac", "date x-custom request-line", &hmac_sha256_b64("alice-secret", &signing));
    let headers = [("Date", date.as_str()), ("X-Custom", "v"), ("Authorization", auth.as_str())];
    let echo = gw.get_with("/enforced", &headers).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-credential-username"), Some("alice-hmac"), "{:?}", echo.0);

    // hmac-sha256 when only hmac-sha512 is allowed.
    let auth = hmac_get("alice-hmac", "alice-secret", "/sha512-only", &date);
    let reply = gw.get_with("/sha512-only", &[("Date", &date), ("Authorization", &auth)]).await;
    assert_message(&reply, 403, HMAC_CANNOT_VERIFY);
}

#[tokio::test]
async fn hmac_auth_validate_request_body() {
    let (gw, _up, _, route) = gateway("/digest").await;
    on_route(&gw, &route, "hmac-auth", json!({"validate_request_body": true})).await;
    let alice = hmac_alice(&gw, None).await;
    gw.sync().await;
    let date = http_date(now_secs());
    let body = br#"{"amount":100}"#;

    // Signs date, digest and the request line of `POST /digest` with the given Digest value.
    let signed = |digest_value: &str| {
        let signing = format!("date: {date}\ndigest: {digest_value}\nPOST /digest HTTP/1.1");
        hmac_authorization("alice-hmac", "date digest request-line", &hmac_sha256_b64("alice-secret", &signing))
    };

    let good = digest(body);
    let auth = signed(&good);
    let headers = [("Date", date.as_str()), ("Digest", good.as_str()), ("Authorization", auth.as_str())];
    let echo = send_body(&gw, "POST", "/digest", &headers, body).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.body_len(), body.len() as u64, "the body is forwarded: {:?}", echo.0);

    // A correctly signed Digest that is not the body's.
    let bad = digest(b"something else");
    let auth = signed(&bad);
    let headers = [("Date", date.as_str()), ("Digest", bad.as_str()), ("Authorization", auth.as_str())];
    assert_message(&send_body(&gw, "POST", "/digest", &headers, body).await, 403, HMAC_MISMATCH);

    // A body with no Digest at all.
    let signing = format!("date: {date}\nPOST /digest HTTP/1.1");
    let auth = hmac_authorization("alice-hmac", "date request-line", &hmac_sha256_b64("alice-secret", &signing));
    let headers = [("Date", date.as_str()), ("Authorization", auth.as_str())];
    assert_message(&send_body(&gw, "POST", "/digest", &headers, body).await, 403, HMAC_MISMATCH);
    // ... which is fine when there is no body.
    let echo = send_body(&gw, "POST", "/digest", &headers, b"").await.echo();
    assert_authenticated(&echo, &alice);
}

// === jwt ===

#[tokio::test]
async fn jwt_hs256_in_query_and_bearer() {
    let (gw, up, _, route) = gateway("/jwt").await;
    on_route(&gw, &route, "jwt", json!({})).await;
    let alice = consumer(&gw, "alice", Some("alice-custom")).await;
    let row = credential(&gw, &alice, "jwt", json!({"key": "alice-iss", "secret": "alice-secret"})).await;
    assert_eq!(row["algorithm"], "HS256", "the default algorithm: {row}");
    gw.sync().await;

    let token = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "sub": "x"}));
    let echo = gw.get(&format!("/jwt?jwt={token}")).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-credential-username"), None, "jwt sets no X-Credential-Username: {:?}", echo.0);

    let bearer = format!("Bearer {token}");
    let echo = gw.get_with("/jwt", &[("Authorization", &bearer)]).await.echo();
    assert_authenticated(&echo, &alice);
    let bearer = format!("bearer   {token}");
    assert_authenticated(&gw.get_with("/jwt", &[("Authorization", &bearer)]).await.echo(), &alice);

    // No token anywhere; the token twice in the query.
    assert_message(&gw.get("/jwt").await, 401, "Unauthorized");
    assert_message(&gw.get(&format!("/jwt?jwt={token}&jwt={token}")).await, 401, "Multiple tokens provided");

    // An iss no credential has.
    let stranger = jwt_hs("HS256", "alice-secret", &json!({"iss": "someone-else"}));
    assert_message(&gw.get(&format!("/jwt?jwt={stranger}")).await, 403, "No credentials found for given 'iss'");
    // No iss at all.
    let anonymous = jwt_hs("HS256", "alice-secret", &json!({"sub": "x"}));
    assert_message(&gw.get(&format!("/jwt?jwt={anonymous}")).await, 401, "No mandatory 'iss' in claims");

    // Signed with another secret; a claims segment altered after signing.
    let forged = jwt_hs("HS256", "not-the-secret", &json!({"iss": "alice-iss"}));
    assert_message(&gw.get(&format!("/jwt?jwt={forged}")).await, 403, "Invalid signature");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(json!({"iss": "alice-iss", "sub": "admin"}).to_string());
    assert_message(&gw.get(&format!("/jwt?jwt={}", parts.join("."))).await, 403, "Invalid signature");

    // Not a JWT.
    assert_message(&gw.get("/jwt?jwt=not.a-token").await, 401, "Bad token; invalid JSON");
    assert_eq!(up.requests(), 3, "only the valid tokens were proxied");
}

#[tokio::test]
async fn jwt_algorithm_mismatch_and_expiry() {
    let (gw, _up, service, route) = gateway("/jwt").await;
    on_route(&gw, &route, "jwt", json!({})).await;
    let exp_checked = route_to(&gw, &service, "/exp-jwt").await;
    on_route(&gw, &exp_checked, "jwt", json!({"claims_to_verify": ["exp"]})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "jwt", json!({"key": "alice-iss", "secret": "alice-secret", "algorithm": "HS256"})).await;
    gw.sync().await;

    // The credential is HS256: an HS512 token (correctly signed) has the wrong algorithm.
    let hs512 = jwt_hs("HS512", "alice-secret", &json!({"iss": "alice-iss"}));
    assert_message(&gw.get(&format!("/jwt?jwt={hs512}")).await, 403, "Invalid algorithm");

    // Expired: rejected where exp is verified, accepted where it is not.
    let expired = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "exp": now_secs() - 60}));
    let reply = gw.get(&format!("/exp-jwt?jwt={expired}")).await;
    reply.assert_status(401);
    reply.assert_generated();
    assert_eq!(reply.json(), json!({"exp": "token expired"}), "{}: {}", reply.what, reply.text());
    assert_authenticated(&gw.get(&format!("/jwt?jwt={expired}")).await.echo(), &alice);

    // Not expired.
    let fresh = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "exp": now_secs() + 3600}));
    assert_authenticated(&gw.get(&format!("/exp-jwt?jwt={fresh}")).await.echo(), &alice);

    // exp that is not a number.
    let text = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "exp": "tomorrow"}));
    let reply = gw.get(&format!("/exp-jwt?jwt={text}")).await;
    reply.assert_status(401);
    assert_eq!(reply.json(), json!({"exp": "must be a number"}), "{}: {}", reply.what, reply.text());
}

/// A claim listed in `claims_to_verify` that the token lacks fails verification, as in Kong:
/// a correctly signed token without `exp` must not pass an expiry policy.
#[tokio::test]
async fn jwt_claims_to_verify_refuses_a_token_without_the_claims() {
    let (gw, up, service, route) = gateway("/both").await;
    on_route(&gw, &route, "jwt", json!({"claims_to_verify": ["exp", "nbf"]})).await;
    let exp_only = route_to(&gw, &service, "/exp-only").await;
    on_route(&gw, &exp_only, "jwt", json!({"claims_to_verify": ["exp"]})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "jwt", json!({"key": "alice-iss", "secret": "alice-secret"})).await;
    gw.sync().await;

    let bare = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss"}));
    let reply = gw.get(&format!("/both?jwt={bare}")).await;
    reply.assert_status(401);
    reply.assert_generated();
    assert_eq!(reply.json(), json!({"nbf": "must be a number", "exp": "must be a number"}), "{}", reply.text());
    let reply = gw.get(&format!("/exp-only?jwt={bare}")).await;
    reply.assert_status(401);
    assert_eq!(reply.json(), json!({"exp": "must be a number"}), "{}", reply.text());

    let later = now_secs() + 3600;
    let no_nbf = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "exp": later}));
    let reply = gw.get(&format!("/both?jwt={no_nbf}")).await;
    reply.assert_status(401);
    assert_eq!(reply.json(), json!({"nbf": "must be a number"}), "{}", reply.text());
    assert_eq!(up.requests(), 0, "no token without the listed claims reached the upstream");

    // Both claims present and valid: proxied; nbf in the future is refused.
    let full = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "exp": later, "nbf": now_secs() - 10}));
    assert_authenticated(&gw.get(&format!("/both?jwt={full}")).await.echo(), &alice);
    let early = jwt_hs("HS256", "alice-secret", &json!({"iss": "alice-iss", "exp": later, "nbf": later}));
    let reply = gw.get(&format!("/both?jwt={early}")).await;
    reply.assert_status(401);
    assert_eq!(reply.json(), json!({"nbf": "token not valid yet"}), "{}", reply.text());

    // A valueless query argument is not a token; an empty one is a token that does not parse.
    assert_message(&gw.get("/exp-only?jwt").await, 401, "Unrecognizable token");
    assert_message(&gw.get("/exp-only?a=1&jwt&b=2").await, 401, "Unrecognizable token");
    assert_message(&gw.get("/exp-only?jwt=").await, 401, "Bad token; invalid JSON");
    assert_message(&gw.get(&format!("/exp-only?jwt&jwt={full}")).await, 401, "Multiple tokens provided");
    assert_eq!(up.requests(), 1);
}

/// ES256 rather than RS256: neither `ring` nor `rcgen` can generate RSA keys, and the
/// tests must not ship a fixed private key. ES256 takes the same path (a PEM public key
/// in the credential's `rsa_public_key`).
#[tokio::test]
async fn jwt_es256_with_public_key() {
    let (gw, _up, _, route) = gateway("/jwt-es").await;
    on_route(&gw, &route, "jwt", json!({})).await;
    let alice = consumer(&gw, "alice", None).await;
    let (pair, pem) = es256_key();
    let (other, _) = es256_key();
    let body = json!({"key": "alice-es", "algorithm": "ES256", "rsa_public_key": pem});
    credential(&gw, &alice, "jwt", body).await;
    gw.sync().await;

    let token = jwt_es256(&pair, &json!({"iss": "alice-es"}));
    let bearer = format!("Bearer {token}");
    assert_authenticated(&gw.get_with("/jwt-es", &[("Authorization", &bearer)]).await.echo(), &alice);

    // Signed by another key.
    let forged = jwt_es256(&other, &json!({"iss": "alice-es"}));
    assert_message(&gw.get(&format!("/jwt-es?jwt={forged}")).await, 403, "Invalid signature");
    // An HS256 token for the ES256 credential.
    let hs = jwt_hs("HS256", "whatever", &json!({"iss": "alice-es"}));
    assert_message(&gw.get(&format!("/jwt-es?jwt={hs}")).await, 403, "Invalid algorithm");
}

// === acl ===

#[tokio::test]
async fn acl_whitelist_sets_groups_header() {
    let (gw, up, service, route) = gateway("/acl").await;
    on_route(&gw, &route, "key-auth", json!({})).await;
    on_route(&gw, &route, "acl", json!({"whitelist": ["g2", "admins"]})).await;
    let hidden = route_to(&gw, &service, "/hidden-acl").await;
    on_route(&gw, &hidden, "key-auth", json!({})).await;
    on_route(&gw, &hidden, "acl", json!({"whitelist": ["g1"], "hide_groups_header": true})).await;
    let member = consumer(&gw, "member", None).await;
    let outsider = consumer(&gw, "outsider", None).await;
    credential(&gw, &member, "key-auth", json!({"key": "member-key"})).await;
    credential(&gw, &outsider, "key-auth", json!({"key": "outsider-key"})).await;
    credential(&gw, &member, "acls", json!({"group": "g1"})).await;
    credential(&gw, &member, "acls", json!({"group": "g2"})).await;
    credential(&gw, &outsider, "acls", json!({"group": "G2"})).await;
    gw.sync().await;

    let echo = gw.get("/acl?apikey=member-key").await.echo();
    assert_authenticated(&echo, &member);
    assert_eq!(echo.header("x-consumer-groups"), Some("g1, g2"), "all the consumer's groups: {:?}", echo.0);

    // `G2` is not `g2`: groups compare exactly.
    assert_message(&gw.get("/acl?apikey=outsider-key").await, 403, ACL_DENIED);
    // The auth plugin runs first: no key is key-auth's 401, not acl's 403.
    assert_exit(&gw.get("/acl").await, 401, NO_KEY);

    let echo = gw.get("/hidden-acl?apikey=member-key").await.echo();
    assert_authenticated(&echo, &member);
    assert_eq!(echo.header("x-consumer-groups"), None, "hide_groups_header: {:?}", echo.0);
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn acl_blacklist() {
    let (gw, _up, _, route) = gateway("/acl").await;
    on_route(&gw, &route, "key-auth", json!({})).await;
    on_route(&gw, &route, "acl", json!({"blacklist": ["banned"]})).await;
    let bad = consumer(&gw, "bad", None).await;
    let good = consumer(&gw, "good", None).await;
    let loner = consumer(&gw, "loner", None).await;
    credential(&gw, &bad, "key-auth", json!({"key": "bad-key"})).await;
    credential(&gw, &good, "key-auth", json!({"key": "good-key"})).await;
    credential(&gw, &loner, "key-auth", json!({"key": "loner-key"})).await;
    credential(&gw, &bad, "acls", json!({"group": "users"})).await;
    credential(&gw, &bad, "acls", json!({"group": "banned"})).await;
    credential(&gw, &good, "acls", json!({"group": "users"})).await;
    gw.sync().await;

    assert_message(&gw.get("/acl?apikey=bad-key").await, 403, ACL_DENIED);
    let echo = gw.get("/acl?apikey=good-key").await.echo();
    assert_authenticated(&echo, &good);
    assert_eq!(echo.header("x-consumer-groups"), Some("users"), "{:?}", echo.0);
    // No group at all is not blacklisted; there is no groups header to send.
    let echo = gw.get_with("/acl?apikey=loner-key", &[("X-Consumer-Groups", "spoofed")]).await.echo();
    assert_authenticated(&echo, &loner);
    assert_eq!(echo.header("x-consumer-groups"), None, "a client's X-Consumer-Groups is removed: {:?}", echo.0);
}

#[tokio::test]
async fn acl_without_authentication_is_forbidden() {
    let (gw, up, service, route) = gateway("/acl-alone").await;
    on_route(&gw, &route, "acl", json!({"whitelist": ["g1"]})).await;
    let black = route_to(&gw, &service, "/acl-black").await;
    on_route(&gw, &black, "acl", json!({"blacklist": ["g1"]})).await;
    gw.sync().await;

    // No consumer: denied whether the list is a whitelist or a blacklist.
    assert_message(&gw.get("/acl-alone").await, 403, ACL_DENIED);
    assert_message(&gw.get_with("/acl-alone", &[("X-Consumer-ID", "spoofed")]).await, 403, ACL_DENIED);
    assert_message(&gw.get("/acl-black").await, 403, ACL_DENIED);
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn acl_applies_to_the_anonymous_consumer() {
    let (gw, _up, _, route) = gateway("/acl-anon").await;
    let guest = consumer(&gw, "guest", None).await;
    on_route(&gw, &route, "key-auth", json!({"anonymous": id_of(&guest)})).await;
    on_route(&gw, &route, "acl", json!({"whitelist": ["members"]})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    credential(&gw, &alice, "acls", json!({"group": "members"})).await;
    gw.sync().await;

    assert_authenticated(&gw.get("/acl-anon?apikey=alice-key").await.echo(), &alice);
    // The anonymous consumer is a consumer for acl, and not a member.
    assert_message(&gw.get("/acl-anon").await, 403, ACL_DENIED);
}

// === precedence ===

#[tokio::test]
async fn route_plugin_beats_service_plugin() {
    let (gw, _up, service, route) = gateway("/own").await;
    route_to(&gw, &service, "/inherits").await;
    on_service(&gw, &service, "key-auth", json!({"key_names": ["svc-key"]})).await;
    on_route(&gw, &route, "key-auth", json!({"key_names": ["route-key"]})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    // The route's own row: only its key name counts.
    assert_authenticated(&gw.get("/own?route-key=alice-key").await.echo(), &alice);
    assert_exit(&gw.get("/own?svc-key=alice-key").await, 401, NO_KEY);
    // The other route of the service gets the service's row.
    assert_authenticated(&gw.get("/inherits?svc-key=alice-key").await.echo(), &alice);
    assert_exit(&gw.get("/inherits?route-key=alice-key").await, 401, NO_KEY);
}

#[tokio::test]
async fn global_plugin_applies_where_nothing_more_specific_exists() {
    let (gw, _up, service, _) = gateway("/global").await;
    let own = route_to(&gw, &service, "/own").await;
    let other_up = Upstream::echo("other-echo").await;
    gw.expose(&other_up, json!({}), json!({"paths": ["/elsewhere"], "strip_path": false})).await;
    global(&gw, "key-auth", json!({"key_names": ["global-key"]})).await;
    on_route(&gw, &own, "key-auth", json!({"key_names": ["route-key"]})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    // The route without a row of its own, and a route of another service.
    for path in ["/global", "/elsewhere"] {
        assert_exit(&gw.get(path).await, 401, NO_KEY);
        assert_authenticated(&gw.get(&format!("{path}?global-key=alice-key")).await.echo(), &alice);
    }
    // A route with its own row does not also run the global one.
    assert_authenticated(&gw.get("/own?route-key=alice-key").await.echo(), &alice);
    assert_exit(&gw.get("/own?global-key=alice-key").await, 401, NO_KEY);
}

#[tokio::test]
async fn disabled_route_plugin_falls_back_to_service_plugin() {
    let (gw, _up, service, route) = gateway("/fallback").await;
    let svc_row = on_service(&gw, &service, "key-auth", json!({"key_names": ["svc-key"]})).await;
    let config = json!({"key_names": ["route-key"]});
    let body = json!({"name": "key-auth", "route_id": id_of(&route), "enabled": false, "config": config});
    let route_row = gw.post("/plugins", body).await;
    assert_eq!(route_row["enabled"], false, "{route_row}");
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;

    // The disabled route row counts as absent: the service's row applies.
    assert_authenticated(&gw.get("/fallback?svc-key=alice-key").await.echo(), &alice);
    assert_exit(&gw.get("/fallback?route-key=alice-key").await, 401, NO_KEY);

    // Enabled again, it wins.
    gw.patch(&format!("/plugins/{}", id_of(&route_row)), json!({"enabled": true})).await;
    gw.sync().await;
    assert_authenticated(&gw.get("/fallback?route-key=alice-key").await.echo(), &alice);
    assert_exit(&gw.get("/fallback?svc-key=alice-key").await, 401, NO_KEY);

    // Both disabled: no key-auth at all.
    gw.patch(&format!("/plugins/{}", id_of(&route_row)), json!({"enabled": false})).await;
    gw.patch(&format!("/plugins/{}", id_of(&svc_row)), json!({"enabled": false})).await;
    gw.sync().await;
    let echo = gw.get("/fallback").await.echo();
    assert_eq!(echo.header("x-consumer-id"), None, "{:?}", echo.0);
}

// === chaining ===

#[tokio::test]
async fn auth_plugins_with_anonymous_are_alternatives() {
    let (gw, _up, _, route) = gateway("/either").await;
    let guest = consumer(&gw, "guest", None).await;
    on_route(&gw, &route, "key-auth", json!({"anonymous": id_of(&guest)})).await;
    on_route(&gw, &route, "basic-auth", json!({"anonymous": id_of(&guest)})).await;
    let keyed = consumer(&gw, "keyed", None).await;
    let based = consumer(&gw, "based", Some("based-custom")).await;
    credential(&gw, &keyed, "key-auth", json!({"key": "keyed-key"})).await;
    credential(&gw, &based, "basic-auth", json!({"username": "based-login", "password": "pw"})).await;
    gw.sync().await;
    let auth = basic("based-login", "pw");

    // A key alone.
    let echo = gw.get("/either?apikey=keyed-key").await.echo();
    assert_authenticated(&echo, &keyed);
    // Basic credentials alone (key-auth fell back to anonymous, basic-auth then succeeded).
    let echo = gw.get_with("/either", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &based);
    assert_eq!(echo.header("x-credential-username"), Some("based-login"), "{:?}", echo.0);
    // A wrong key and right basic credentials.
    let echo = gw.get_with("/either?apikey=wrong", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &based);
    // Both: key-auth runs first (priority 1003 > 1001) and basic-auth leaves it alone.
    let echo = gw.get_with("/either?apikey=keyed-key", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &keyed);
    assert_eq!(echo.header("x-credential-username"), None, "{:?}", echo.0);
    // Neither, or only wrong ones: the anonymous consumer.
    assert_anonymous(&gw.get("/either").await.echo(), &guest);
    let wrong = basic("based-login", "wrong");
    assert_anonymous(&gw.get_with("/either?apikey=nope", &[("Authorization", &wrong)]).await.echo(), &guest);
}

#[tokio::test]
async fn auth_plugins_without_anonymous_are_all_required() {
    let (gw, up, _, route) = gateway("/both").await;
    on_route(&gw, &route, "key-auth", json!({})).await;
    on_route(&gw, &route, "basic-auth", json!({})).await;
    let alice = consumer(&gw, "alice", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    credential(&gw, &alice, "basic-auth", json!({"username": "alice-login", "password": "pw"})).await;
    gw.sync().await;
    let auth = basic("alice-login", "pw");

    // A key alone: key-auth passes, basic-auth asks for credentials.
    let reply = gw.get("/both?apikey=alice-key").await;
    assert_message(&reply, 401, "Unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some(r#"Basic realm="kong""#), "{:?}", reply.headers);
    // Basic alone: key-auth (first by priority) rejects.
    assert_exit(&gw.get_with("/both", &[("Authorization", &auth)]).await, 401, NO_KEY);
    // A wrong password with a right key.
    let wrong = basic("alice-login", "wrong");
    assert_message(
        &gw.get_with("/both?apikey=alice-key", &[("Authorization", &wrong)]).await,
        403,
        INVALID_CREDENTIALS,
    );
    assert_eq!(up.requests(), 0);

    // Both.
    let echo = gw.get_with("/both?apikey=alice-key", &[("Authorization", &auth)]).await.echo();
    assert_authenticated(&echo, &alice);
    assert_eq!(echo.header("x-credential-username"), Some("alice-login"), "{:?}", echo.0);
}

/// Consumer-specific rows (kong-0.14-plugins §1.4) with a plugin that accepts `consumer_id`
/// and runs after authentication (request-size-limiting, priority 951): (–,–,C) beats the
/// service's row, (R,S,–) beats (–,–,C), (R,–,C) beats (R,S,–), and a disabled row falls back.
#[tokio::test]
async fn consumer_specific_plugin_rows_follow_kong_precedence() {
    let (gw, _up, service, route) = gateway("/size").await;
    on_route(&gw, &route, "key-auth", json!({})).await;
    let alice = consumer(&gw, "alice", None).await;
    let bob = consumer(&gw, "bob", None).await;
    credential(&gw, &alice, "key-auth", json!({"key": "alice-key"})).await;
    credential(&gw, &bob, "key-auth", json!({"key": "bob-key"})).await;
    let limit = |mb: u32| json!({"allowed_payload_size": mb});
    on_service(&gw, &service, "request-size-limiting", limit(1)).await;
    gw.post("/plugins", json!({"name": "request-size-limiting", "consumer_id": id_of(&alice), "config": limit(2)}))
        .await;
    gw.sync().await;
    let body = vec![b'x'; 1_572_864]; // 1.5 MB
    let send = |key: &'static str| {
        let gw = &gw;
        let body = &body;
        async move { send_body(gw, "POST", "/size", &[("apikey", key)], body).await }
    };
    let too_large = |r: &Reply| assert_message(r, 413, "Request size limit exceeded");

    send("alice-key").await.assert_status(200);
    too_large(&send("bob-key").await);

    // (R,S,–) comes before (–,–,C).
    gw.post(
        "/plugins",
        json!({"name": "request-size-limiting", "route_id": id_of(&route), "service_id": id_of(&service),
               "config": limit(1)}),
    )
    .await;
    gw.sync().await;
    too_large(&send("alice-key").await);

    // (R,–,C) comes before (R,S,–).
    let own = gw
        .post(
            "/plugins",
            json!({"name": "request-size-limiting", "route_id": id_of(&route), "consumer_id": id_of(&alice),
                   "config": limit(2)}),
        )
        .await;
    gw.sync().await;
    send("alice-key").await.assert_status(200);
    too_large(&send("bob-key").await);

    // Disabled, it is as if absent.
    gw.patch(&format!("/plugins/{}", id_of(&own)), json!({"enabled": false})).await;
    gw.sync().await;
    too_large(&send("alice-key").await);
}
