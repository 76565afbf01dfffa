//! Credential entities through the public API: defaults, Kong's messages, the basic-auth
//! digest, jwt's RSA key rule, oauth2 redirect URIs and tokens.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::*;

/// A 2048-bit RSA public key generated for these tests, as SubjectPublicKeyInfo.
pub(crate) const RSA_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxGvHAmRYj7Lj407+24B2
cRmQJojgsziAD9vjaGWA9t9nyattGqbUgJXWbltjqIPTnAWD4vT5bI84Mxzz3LBq
Rz7A+I7l1ufSWx3TafxeuxwF8nTwPNbOG4DkhKgry99qjZWrpOlcOTfpEESYpvVx
2LPj8jWWfQS7ot4de6ykzsJjfuuGuTyGON/QCsmjM1+kcfyDDycAFJ6JFim1iW8e
9VqwTEqyB1ThKt8eT5MLPEZaaJ/7UhN7zrLWqd88Mf3B8edNf9Vc8HEOz6ZOP9in
9gpFq0MrH37+Sk1+eWHwZ191973SZBTY/TWcRfih94fvz3obh5QCj6HvVNp99hMn
UwIDAQAB
-----END PUBLIC KEY-----";

/// The same key as PKCS#1.
const RSA_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAxGvHAmRYj7Lj407+24B2cRmQJojgsziAD9vjaGWA9t9nyattGqbU
gJXWbltjqIPTnAWD4vT5bI84Mxzz3LBqRz7A+I7l1ufSWx3TafxeuxwF8nTwPNbO
G4DkhKgry99qjZWrpOlcOTfpEESYpvVx2LPj8jWWfQS7ot4de6ykzsJjfuuGuTyG
ON/QCsmjM1+kcfyDDycAFJ6JFim1iW8e9VqwTEqyB1ThKt8eT5MLPEZaaJ/7UhN7
zrLWqd88Mf3B8edNf9Vc8HEOz6ZOP9in9gpFq0MrH37+Sk1+eWHwZ191973SZBTY
/TWcRfih94fvz3obh5QCj6HvVNp99hMnUwIDAQAB
-----END RSA PUBLIC KEY-----";

/// A P-256 public key: valid PEM, but not an RSA key.
const EC_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEIHsdIlw7EQaHYz0IsL2cq9XY/vrF
K/Fr7G2Qy5S7Pk7r6ah8YTrVe3zdpiiOHxeYlW30zOpmg5hNoJwCTMwucg==
-----END PUBLIC KEY-----";

const CONSUMER: &str = "8e2b5a3e-1c0d-4f6a-9b7c-0d1e2f3a4b5c";

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn fields(pairs: &[(&str, &str)]) -> OldError {
    OldError::Fields(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>())
}

fn is_random(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 32 && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[test]
fn registry_names_parents_and_keys() {
    let names: Vec<&str> = ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "keyauth_credentials",
            "basicauth_credentials",
            "hmacauth_credentials",
            "jwt_secrets",
            "acls",
            "oauth2_credentials",
            "oauth2_tokens",
            "oauth2_authorization_codes"
        ]
    );
    assert_eq!(schema("acls").and_then(CredentialSchema::key), Some("group"));
    assert_eq!(OAUTH2_TOKENS.parent(), "credential_id");
    assert_eq!(OAUTH2_TOKENS.unique_fields().collect::<Vec<_>>(), ["access_token", "refresh_token"]);
    assert!(schema("apis").is_none());
}

#[test]
fn random_defaults_and_field_order() {
    let k = KEYAUTH_CREDENTIALS.validate(None, obj(json!({"consumer_id": CONSUMER}))).unwrap();
    assert_eq!(k.keys().collect::<Vec<_>>(), ["consumer_id", "key"]);
    assert!(is_random(&k["key"]), "{k:?}");
    let j = JWT_SECRETS.validate(None, obj(json!({"consumer_id": CONSUMER}))).unwrap();
    assert!(is_random(&j["key"]) && is_random(&j["secret"]) && j["key"] != j["secret"]);
    assert_eq!(j["algorithm"], "HS256");
    let h = HMACAUTH_CREDENTIALS.validate(None, obj(json!({"consumer_id": CONSUMER, "username": " bob "}))).unwrap();
    assert_eq!(h["username"], "bob", "strings are trimmed");
    assert!(is_random(&h["secret"]));
}

#[test]
fn field_errors_use_kongs_messages() {
    let e = |s: &CredentialSchema, v: Value| s.validate(None, obj(v)).unwrap_err();
    assert_eq!(
        e(&BASICAUTH_CREDENTIALS, json!({"consumer_id": CONSUMER})),
        fields(&[("username", "username is required")])
    );
    assert_eq!(
        e(&KEYAUTH_CREDENTIALS, json!({"consumer_id": CONSUMER, "key": 5, "foo": 1})),
        fields(&[("key", "key is not a string"), ("foo", "foo is an unknown field")])
    );
    assert_eq!(
        e(&JWT_SECRETS, json!({"consumer_id": CONSUMER, "algorithm": "none"})),
        fields(&[(
            "algorithm",
            "\"none\" is not allowed. Allowed values are: \"HS256\", \"HS384\", \"HS512\", \"RS256\", \"RS512\", \"ES256\""
        )])
    );
    assert_eq!(
        e(&OAUTH2_TOKENS, json!({"credential_id": "nope", "expires_in": "soon"})),
        fields(&[("credential_id", "nope is not a valid uuid"), ("expires_in", "expires_in is not a number")])
    );
    assert_eq!(e(&ACLS, json!({"consumer_id": CONSUMER, "group": ""})), fields(&[("group", "group is required")]));
}

#[test]
fn basic_auth_passwords_are_salted_sha1_and_not_rehashed() {
    assert_eq!(basic_auth_digest("kong", CONSUMER), "fb7b7ede51818550b37d241e7375237336448ae5");
    let created = BASICAUTH_CREDENTIALS
        .validate(None, obj(json!({"consumer_id": CONSUMER, "username": "bob", "password": "kong"})));
    let created = created.unwrap();
    assert_eq!(created["password"], "fb7b7ede51818550b37d241e7375237336448ae5");
    // No password: the digest of the empty string, as Kong stores it.
    let empty = BASICAUTH_CREDENTIALS.validate(None, obj(json!({"consumer_id": CONSUMER, "username": "x"}))).unwrap();
    assert_eq!(empty["password"], "c4ff4c7aa96a127a9ec0df31c4d6929ea1ffe7ac");
    // A patch that does not touch the password keeps the digest; a new password is hashed.
    let same = BASICAUTH_CREDENTIALS.validate_patch(&created, obj(json!({"username": "bobby"}))).unwrap();
    assert_eq!(same["password"], created["password"]);
    let changed = BASICAUTH_CREDENTIALS.validate_patch(&created, obj(json!({"password": " new "}))).unwrap();
    assert_eq!(changed["password"], json!(basic_auth_digest(" new ", CONSUMER)), "passwords are not trimmed");
}

#[test]
fn jwt_rsa_algorithms_need_a_parseable_key() {
    let v = |alg: &str, key: Option<&str>| {
        let mut m = obj(json!({"consumer_id": CONSUMER, "algorithm": alg}));
        if let Some(k) = key {
            m.insert("rsa_public_key".into(), json!(k));
        }
        JWT_SECRETS.validate(None, m)
    };
    assert_eq!(v("RS256", None).unwrap_err(), OldError::Message("no mandatory 'rsa_public_key'".into()));
    assert_eq!(
        v("RS512", Some("garbage")).unwrap_err(),
        OldError::Message("'rsa_public_key' format is invalid".into())
    );
    assert_eq!(v("RS256", Some(EC_SPKI)).unwrap_err(), OldError::Message("'rsa_public_key' format is invalid".into()));
    assert!(v("RS256", Some(RSA_SPKI)).is_ok());
    assert!(v("RS512", Some(RSA_PKCS1)).is_ok());
    assert!(v("ES256", None).is_ok(), "ES256 keys are not checked at creation");
    assert!(v("HS256", Some("anything")).is_ok());
}

#[test]
fn rsa_keys_yield_pkcs1_der() {
    let from_spki = rsa_public_key_der(RSA_SPKI).unwrap();
    let from_pkcs1 = rsa_public_key_der(RSA_PKCS1).unwrap();
    assert_eq!(from_spki, from_pkcs1);
    assert_eq!(from_spki[0], 0x30);
    assert!(rsa_public_key_der(&format!("\n  {RSA_SPKI}\n")).is_some(), "surrounding whitespace is fine");
    assert!(rsa_public_key_der(&RSA_SPKI.replace("UwIDAQAB", "UwIDAQ")).is_none(), "truncated DER");
    assert!(rsa_public_key_der(&RSA_SPKI.replace("PUBLIC KEY", "CERTIFICATE")).is_none());
    assert!(rsa_public_key_der("").is_none());
}

#[test]
fn oauth2_redirect_uris() {
    let v = |uris: Value| {
        OAUTH2_CREDENTIALS.validate(None, obj(json!({"consumer_id": CONSUMER, "name": "app", "redirect_uri": uris})))
    };
    let ok = v(json!("https://app.example.com/cb, http://localhost:8080")).unwrap();
    assert_eq!(ok["redirect_uri"], json!(["https://app.example.com/cb", "http://localhost:8080"]));
    assert!(is_random(&ok["client_id"]) && is_random(&ok["client_secret"]));
    let err = |field: &str, msg: &str| fields(&[(field, msg)]);
    assert_eq!(v(json!(["not-valid"])).unwrap_err(), err("redirect_uri", "cannot parse 'not-valid'"));
    assert_eq!(
        v(json!(["http://ok.com", "http://test.com/#frag"])).unwrap_err(),
        err("redirect_uri", "fragment not allowed in 'http://test.com/#frag'")
    );
    assert_eq!(v(json!([])).unwrap_err(), err("redirect_uri", "at least one URI is required"));
    assert_eq!(v(json!(5)).unwrap_err(), err("redirect_uri", "redirect_uri is not an array"));
    assert_eq!(
        OAUTH2_CREDENTIALS.validate(None, obj(json!({"consumer_id": CONSUMER}))).unwrap_err(),
        fields(&[("name", "name is required"), ("redirect_uri", "redirect_uri is required")])
    );
}

#[test]
fn oauth2_tokens_defaults() {
    let cred = "0d1e2f3a-4b5c-4f6a-9b7c-8e2b5a3e1c0d";
    let t =
        OAUTH2_TOKENS.validate(None, obj(json!({"credential_id": cred.to_uppercase(), "expires_in": "7200"}))).unwrap();
    assert_eq!(t["credential_id"], cred, "ids are stored lower-case");
    assert_eq!(t["token_type"], "bearer");
    assert_eq!(t["expires_in"], 7200);
    assert!(is_random(&t["access_token"]) && is_random(&t["refresh_token"]));
    let forever = OAUTH2_TOKENS.validate(None, obj(json!({"credential_id": cred, "expires_in": 0}))).unwrap();
    assert!(forever.get("refresh_token").is_none(), "{forever:?}");
    let patched = OAUTH2_TOKENS.validate_patch(&forever, obj(json!({"scope": "email"}))).unwrap();
    assert_eq!(patched["access_token"], forever["access_token"]);
    assert_eq!(patched["scope"], "email");
    let code = OAUTH2_AUTHORIZATION_CODES.validate(None, obj(json!({"credential_id": cred}))).unwrap();
    assert!(is_random(&code["code"]));
}
