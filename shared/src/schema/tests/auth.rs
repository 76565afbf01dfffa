//! The authentication plugins' defaults and rules, with Kong 0.14.1's messages.

use serde_json::json;

use super::{create, defaults, fields, self_check};

const ANONYMOUS: &str = "the anonymous user must be empty or a valid uuid";

#[test]
fn key_auth_defaults() {
    assert_eq!(
        defaults("key-auth"),
        Ok(json!({
            "key_names": ["apikey"],
            "hide_credentials": false,
            "anonymous": "",
            "key_in_body": false,
            "run_on_preflight": true
        }))
    );
}

#[test]
fn key_auth_key_names_must_be_header_names() {
    assert_eq!(
        create("key-auth", json!({"key_names": ["apikey", "api key"]})),
        Err(fields(&[(
            "config.key_names",
            "'api key' is illegal: bad header name 'api key', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        )])),
    );
    assert_eq!(
        create("key-auth", json!({"key_names": "apikey,"})),
        Err(fields(&[("config.key_names", "'' is illegal: no header name provided")])),
    );
    assert_eq!(create("key-auth", json!({"anonymous": "bob"})), Err(fields(&[("config.anonymous", ANONYMOUS)])),);
    let uuid = "b7f7b8b0-5c1e-4c4b-9d7e-2b2f7f6b1a00";
    assert_eq!(create("key-auth", json!({"anonymous": uuid})).map(|c| c["anonymous"].clone()), Ok(json!(uuid)));
}

#[test]
fn basic_auth_defaults() {
    assert_eq!(defaults("basic-auth"), Ok(json!({"anonymous": "", "hide_credentials": false})));
    assert_eq!(
        create("basic-auth", json!({"anonymous": "not-a-uuid"})),
        Err(fields(&[("config.anonymous", ANONYMOUS)])),
    );
}

#[test]
fn hmac_auth_defaults() {
    assert_eq!(
        defaults("hmac-auth"),
        Ok(json!({
            "hide_credentials": false,
            "clock_skew": 300,
            "anonymous": "",
            "validate_request_body": false,
            "enforce_headers": [],
            "algorithms": ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"]
        }))
    );
}

#[test]
fn hmac_auth_clock_skew_cannot_be_negative() {
    assert_eq!(
        create("hmac-auth", json!({"clock_skew": "-1"})),
        Err(fields(&[("config.clock_skew", "Clock Skew should be positive")])),
    );
    assert!(create("hmac-auth", json!({"clock_skew": 0})).is_ok());
}

#[test]
fn jwt_defaults() {
    assert_eq!(
        defaults("jwt"),
        Ok(json!({
            "uri_param_names": ["jwt"],
            "cookie_names": [],
            "key_claim_name": "iss",
            "secret_is_base64": false,
            "anonymous": "",
            "run_on_preflight": true,
            "maximum_expiration": 0
        }))
    );
}

#[test]
fn jwt_maximum_expiration_needs_exp_verification() {
    assert_eq!(
        create("jwt", json!({"maximum_expiration": -5})),
        Err(fields(&[("config.maximum_expiration", "should be 0 or greater")])),
    );
    assert_eq!(
        create("jwt", json!({"maximum_expiration": 60, "claims_to_verify": ["nbf"]})),
        Err(self_check("claims_to_verify must contain 'exp' when specifying maximum_expiration")),
    );
    assert!(create("jwt", json!({"maximum_expiration": 60, "claims_to_verify": "nbf,exp"})).is_ok());
    assert_eq!(
        create("jwt", json!({"claims_to_verify": ["exp", "iat"]})),
        Err(fields(&[("config.claims_to_verify", "\"iat\" is not allowed. Allowed values are: \"exp\", \"nbf\"")])),
    );
}

#[test]
fn oauth2_defaults_need_a_flow() {
    assert_eq!(defaults("oauth2"), Err(self_check("You need to enable at least one OAuth flow")));
    let out = create("oauth2", json!({"enable_password_grant": "true"})).expect("valid");
    let key = out["provision_key"].as_str().expect("generated provision_key");
    assert_eq!(key.len(), 32);
    assert_eq!(
        out,
        json!({
            "enable_password_grant": true,
            "mandatory_scope": false,
            "provision_key": key,
            "token_expiration": 7200,
            "enable_authorization_code": false,
            "enable_implicit_grant": false,
            "enable_client_credentials": false,
            "hide_credentials": false,
            "accept_http_if_already_terminated": false,
            "anonymous": "",
            "global_credentials": false,
            "auth_header_name": "authorization",
            "refresh_token_ttl": 1_209_600
        })
    );
    let other = create("oauth2", json!({"enable_password_grant": true})).expect("valid");
    assert_ne!(other["provision_key"], out["provision_key"], "random per config");
}

#[test]
fn oauth2_mandatory_scope_needs_scopes() {
    assert_eq!(
        create("oauth2", json!({"enable_implicit_grant": true, "mandatory_scope": true})),
        Err(fields(&[("config.mandatory_scope", "To set a mandatory scope you also need to create available scopes")])),
    );
    let out =
        create("oauth2", json!({"enable_implicit_grant": true, "mandatory_scope": true, "scopes": "email, profile"}))
            .expect("valid");
    assert_eq!(out["scopes"], json!(["email", "profile"]));
}

#[test]
fn oauth2_keeps_a_given_provision_key() {
    let out = create("oauth2", json!({"enable_client_credentials": true, "provision_key": " pk "}));
    assert_eq!(out.map(|c| c["provision_key"].clone()), Ok(json!("pk")));
}

#[test]
fn ldap_auth_requires_server_and_dn_parts() {
    assert_eq!(
        defaults("ldap-auth"),
        Err(fields(&[
            ("config.attribute", "attribute is required"),
            ("config.base_dn", "base_dn is required"),
            ("config.ldap_host", "ldap_host is required"),
            ("config.ldap_port", "ldap_port is required"),
        ])),
    );
    let out = create(
        "ldap-auth",
        json!({"ldap_host": "ldap.example.com", "ldap_port": "389", "base_dn": "dc=example,dc=com", "attribute": "cn"}),
    );
    assert_eq!(
        out,
        Ok(json!({
            "ldap_host": "ldap.example.com",
            "ldap_port": 389,
            "base_dn": "dc=example,dc=com",
            "attribute": "cn",
            "start_tls": false,
            "verify_ldap_host": false,
            "cache_ttl": 60,
            "hide_credentials": false,
            "timeout": 10000,
            "keepalive": 60000,
            "anonymous": "",
            "header_type": "ldap"
        }))
    );
}
