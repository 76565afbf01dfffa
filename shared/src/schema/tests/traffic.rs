//! Defaults and rules of the security, traffic-control and transformation plugins.

use serde_json::json;

use super::{create, defaults, fields, self_check};
use crate::schema::ConfigError;

#[test]
fn acl_defaults_need_one_list() {
    assert_eq!(defaults("acl"), Err(self_check("You must set at least a whitelist or blacklist")));
    assert_eq!(
        create("acl", json!({"whitelist": "admins", "blacklist": ["banned"]})),
        Err(self_check("You cannot set both a whitelist and a blacklist")),
    );
    assert_eq!(
        create("acl", json!({"whitelist": "admins, ops", "blacklist": []})),
        Ok(json!({"whitelist": ["admins", "ops"], "blacklist": [], "hide_groups_header": false})),
    );
}

#[test]
fn bot_detection_defaults() {
    assert_eq!(defaults("bot-detection"), Ok(json!({})));
    assert_eq!(
        create("bot-detection", json!({"blacklist": ["^curl/", "[unclosed"]})),
        Err(fields(&[("config.blacklist", "value '[unclosed' is not a valid regex")])),
    );
    assert!(create("bot-detection", json!({"whitelist": "(?i)goodbot"})).is_ok());
}

#[test]
fn cors_defaults() {
    assert_eq!(defaults("cors"), Ok(json!({"credentials": false, "preflight_continue": false})));
}

#[test]
fn cors_origins_are_regexes_unless_a_lone_star() {
    assert!(create("cors", json!({"origins": "*"})).is_ok());
    assert!(create("cors", json!({"origins": ["http://a.com", "https://.*\\.b\\.com"]})).is_ok());
    assert_eq!(
        create("cors", json!({"origins": "http://a.com,*"})),
        Err(fields(&[("config.origins", "origin '*' is not a valid regex")])),
    );
    assert_eq!(
        create("cors", json!({"methods": "GET,OPTIONS"})),
        Err(fields(&[(
            "config.methods",
            "\"OPTIONS\" is not allowed. Allowed values are: \"HEAD\", \"GET\", \"POST\", \"PUT\", \"PATCH\", \"DELETE\""
        )])),
    );
    let out = create("cors", json!({"max_age": "3600", "credentials": "true"})).expect("valid");
    assert_eq!(out["max_age"], json!(3600));
}

#[test]
fn ip_restriction_defaults_need_one_list() {
    assert_eq!(defaults("ip-restriction"), Err(self_check("you must set at least a whitelist or blacklist")));
    assert_eq!(
        create("ip-restriction", json!({"whitelist": "10.0.0.0/8", "blacklist": "1.2.3.4"})),
        Err(self_check("you cannot set both a whitelist and a blacklist")),
    );
    assert_eq!(
        create("ip-restriction", json!({"whitelist": "127.0.0.1, 10.0.0.0/8"})),
        Ok(json!({"whitelist": ["127.0.0.1", "10.0.0.0/8"]})),
    );
}

#[test]
fn ip_restriction_entries_must_parse() {
    assert_eq!(
        create("ip-restriction", json!({"whitelist": "hello"})),
        Err(fields(&[("config.whitelist", "cannot parse 'hello': Invalid IP")])),
    );
    assert_eq!(
        create("ip-restriction", json!({"blacklist": ["127.0.0.1", "10.0.0.0/40"]})),
        Err(fields(&[("config.blacklist", "cannot parse '10.0.0.0/40': Invalid prefix: /40")])),
    );
    assert_eq!(
        create("ip-restriction", json!({"whitelist": 12})),
        Err(fields(&[("config.whitelist", "whitelist is not an array")])),
    );
}

#[test]
fn request_size_limiting_defaults() {
    assert_eq!(defaults("request-size-limiting"), Ok(json!({"allowed_payload_size": 128})));
}

#[test]
fn rate_limiting_needs_a_limit() {
    assert_eq!(
        defaults("rate-limiting"),
        Err(self_check("You need to set at least one limit: second, minute, hour, day, month, year")),
    );
}

#[test]
fn rate_limiting_defaults() {
    assert_eq!(
        create("rate-limiting", json!({"second": 1})).map(|c| c["policy"].clone()),
        Ok(json!("cluster")),
        "Kong's default policy"
    );
    assert_eq!(
        create("rate-limiting", json!({"second": 1, "policy": "local"})),
        Ok(json!({
            "second": 1,
            "limit_by": "consumer",
            "policy": "local",
            "fault_tolerant": true,
            "redis_port": 6379,
            "redis_timeout": 2000,
            "redis_database": 0,
            "hide_client_headers": false
        }))
    );
}

#[test]
fn rate_limiting_periods_must_grow() {
    assert_eq!(
        create("rate-limiting", json!({"minute": 10, "second": 20})),
        Err(self_check("The limit for minute cannot be lower than the limit for second")),
    );
    assert_eq!(
        create("rate-limiting", json!({"minute": "0"})),
        Err(self_check("Value for minute must be greater than zero")),
    );
    // Kong reports the last ordering problem it finds.
    assert_eq!(
        create("rate-limiting", json!({"second": 5, "minute": 3, "hour": 1})),
        Err(self_check("The limit for hour cannot be lower than the limit for minute")),
    );
    // A bad value outranks a bad order.
    assert_eq!(
        create("rate-limiting", json!({"second": 5, "minute": 3, "day": -1})),
        Err(self_check("Value for day must be greater than zero")),
    );
    assert!(create("rate-limiting", json!({"second": 1, "minute": 1, "year": 1000, "policy": "local"})).is_ok());
}

#[test]
fn rate_limiting_redis_policy_needs_a_host() {
    assert_eq!(
        create("rate-limiting", json!({"minute": 1, "policy": "redis"})),
        Err(self_check("You need to specify a Redis host")),
    );
    assert!(create("rate-limiting", json!({"minute": 1, "policy": "redis", "redis_host": "r"})).is_ok());
    assert_eq!(
        create("rate-limiting", json!({"minute": 1, "limit_by": "header", "policy": "local"})),
        Err(fields(&[(
            "config.limit_by",
            "\"header\" is not allowed. Allowed values are: \"consumer\", \"credential\", \"ip\""
        )])),
    );
}

#[test]
fn response_ratelimiting_needs_a_limit_name() {
    assert_eq!(defaults("response-ratelimiting"), Err(self_check("You need to set at least one limit name")));
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {}})),
        Err(self_check("You need to set at least one limit name")),
    );
}

#[test]
fn response_ratelimiting_defaults() {
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"video": {"minute": "10"}}})).map(|c| c["policy"].clone()),
        Ok(json!("cluster")),
    );
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"video": {"minute": "10"}}, "policy": "local"})),
        Ok(json!({
            "limits": {"video": {"minute": 10}},
            "policy": "local",
            "header_name": "x-kong-limit",
            "limit_by": "consumer",
            "fault_tolerant": true,
            "redis_port": 6379,
            "redis_timeout": 2000,
            "redis_database": 0,
            "block_on_first_violation": false,
            "hide_client_headers": false
        }))
    );
}

#[test]
fn response_ratelimiting_validates_each_limit() {
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"video": {"minute": "lots"}}})),
        Err(fields(&[("config.limits.video.minute", "minute is not a number")])),
    );
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"video": {"seco": 1}}})),
        Err(fields(&[("config.limits.video.seco", "seco is an unknown field")])),
    );
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"second": 10}})),
        Err(fields(&[("config.limits.second", "second is not a table")])),
    );
    assert_eq!(
        create("response-ratelimiting", json!({"limits": "video"})),
        Err(fields(&[("config.limits", "limits is not a table")])),
    );
    assert_eq!(
        create(
            "response-ratelimiting",
            json!({"limits": {"video": {"second": 1}, "image": {"second": 2, "minute": 1}}})
        ),
        Err(self_check("The limit for minute cannot be lower than the limit for second")),
    );
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"video": {}}})),
        Err(self_check("You need to set at least one limit: second, minute, hour, day, month, year")),
    );
    assert_eq!(
        create("response-ratelimiting", json!({"limits": {"video": {"second": 1}}, "policy": "redis"})),
        Err(self_check("You need to specify a Redis host")),
    );
}

#[test]
fn request_transformer_defaults() {
    let empty = json!({"body": [], "headers": [], "querystring": []});
    assert_eq!(
        defaults("request-transformer"),
        Ok(json!({
            "remove": empty, "rename": empty, "replace": empty, "add": empty, "append": empty
        }))
    );
}

#[test]
fn request_transformer_rules() {
    assert_eq!(
        create("request-transformer", json!({"http_method": "hello"})),
        Err(fields(&[("config.http_method", "HELLO is not supported")])),
    );
    assert!(create("request-transformer", json!({"http_method": "propfind"})).is_ok());
    assert_eq!(
        create("request-transformer", json!({"add": {"headers": "x-a:1, x-b"}})),
        Err(fields(&[("config.add.headers", "key 'x-b' has no value")])),
    );
    // remove and rename take bare names.
    let out =
        create("request-transformer", json!({"remove": {"headers": "x-a"}, "rename": {"body": "a"}})).expect("valid");
    assert_eq!(out["remove"], json!({"headers": ["x-a"], "body": [], "querystring": []}));
}

#[test]
fn response_transformer_defaults() {
    let empty = json!({"json": [], "headers": []});
    assert_eq!(
        defaults("response-transformer"),
        Ok(json!({"remove": empty, "replace": empty, "add": empty, "append": empty}))
    );
    assert_eq!(
        create("response-transformer", json!({"append": {"json": ["k:v", "bare"]}})),
        Err(fields(&[("config.append.json", "key 'bare' has no value")])),
    );
    assert_eq!(
        create("response-transformer", json!({"add": {"body": ["k:v"]}})),
        Err(fields(&[("config.add.body", "body is an unknown field")])),
    );
}

#[test]
fn correlation_id_defaults() {
    assert_eq!(
        defaults("correlation-id"),
        Ok(json!({"header_name": "Kong-Request-ID", "generator": "uuid#counter", "echo_downstream": false}))
    );
    assert_eq!(
        create("correlation-id", json!({"generator": "ulid"})),
        Err(fields(&[(
            "config.generator",
            "\"ulid\" is not allowed. Allowed values are: \"uuid\", \"uuid#counter\", \"tracker\""
        )])),
    );
}

#[test]
fn aws_lambda_requires_credentials_and_function() {
    assert_eq!(
        defaults("aws-lambda"),
        Err(fields(&[
            ("config.aws_key", "aws_key is required"),
            ("config.aws_region", "aws_region is required"),
            ("config.aws_secret", "aws_secret is required"),
            ("config.function_name", "function_name is required"),
        ])),
    );
    let base = json!({"aws_key": "k", "aws_secret": "s", "aws_region": "eu-west-1", "function_name": "f"});
    let out = create("aws-lambda", base.clone()).expect("valid");
    assert_eq!(
        out,
        json!({
            "aws_key": "k", "aws_secret": "s", "aws_region": "eu-west-1", "function_name": "f",
            "timeout": 60000,
            "keepalive": 60000,
            "invocation_type": "RequestResponse",
            "log_type": "Tail",
            "port": 443,
            "forward_request_method": false,
            "forward_request_uri": false,
            "forward_request_headers": false,
            "forward_request_body": false
        })
    );
    let mut bad = base;
    bad["aws_region"] = json!("mars-1");
    bad["unhandled_status"] = json!("1000");
    let Err(ConfigError::Fields(errors)) = create("aws-lambda", bad) else {
        panic!("expected field errors");
    };
    assert_eq!(errors["config.unhandled_status"], "unhandled_status must be within 100 - 999.");
    assert!(errors["config.aws_region"].starts_with("\"mars-1\" is not allowed. Allowed values are: \"us-east-1\", "));
}
