//! Behaviour of the schema engine through the public API: registry, coercion, error messages
//! and keys, defaults, PATCH merging and rendering. Each plugin's defaults and own rules are
//! tested in `tests/{auth,traffic,logging}.rs`.

mod auth;
mod logging;
mod traffic;

use serde_json::{json, Value};

use super::field::{Field, Fill, Kind, Object, Table};
use super::validate::{check_table, Errors};
use super::*;

/// Validates `config` for the bundled plugin `name`.
pub(super) fn create(name: &str, config: Value) -> Result<Value, ConfigError> {
    plugin(name).expect("bundled plugin").validate_create(Some(&config))
}

/// `validate_create(None)`: the stored config of a plugin added without any config.
pub(super) fn defaults(name: &str) -> Result<Value, ConfigError> {
    plugin(name).expect("bundled plugin").validate_create(None)
}

pub(super) fn fields(pairs: &[(&str, &str)]) -> ConfigError {
    ConfigError::Fields(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

pub(super) fn self_check(message: &str) -> ConfigError {
    ConfigError::SelfCheck(message.to_string())
}

#[test]
fn lists_the_27_bundled_plugins_in_the_documented_order() {
    let names = plugin_names();
    assert_eq!(names.len(), 27);
    assert_eq!(&names[..4], &["jwt", "acl", "cors", "oauth2"]);
    assert_eq!(&names[22..], &["ldap-auth", "loggly", "statsd", "syslog", "request-termination"]);
    for name in names {
        assert_eq!(plugin(name).map(PluginSchema::name), Some(*name));
    }
    assert!(plugin("").is_none());
}

#[test]
fn only_plugins_with_a_runtime_are_enabled() {
    let enabled = enabled_names();
    assert!(enabled.iter().all(|n| plugin_names().contains(n)), "{enabled:?}");
    assert!(enabled.contains(&"key-auth"));
    assert!(enabled_plugin("key-auth").is_some());
    // Every bundled plugin runs now; an unknown name is neither known nor enabled.
    assert_eq!(enabled.len(), plugin_names().len());
    assert!(enabled_plugin("foo").is_none() && plugin("foo").is_none());
}

#[test]
fn priorities_follow_the_summary_table() {
    let expected = [
        ("bot-detection", 2500),
        ("cors", 2000),
        ("jwt", 1005),
        ("oauth2", 1004),
        ("key-auth", 1003),
        ("ldap-auth", 1002),
        ("basic-auth", 1001),
        ("hmac-auth", 1000),
        ("ip-restriction", 990),
        ("request-size-limiting", 951),
        ("acl", 950),
        ("rate-limiting", 901),
        ("response-ratelimiting", 900),
        ("request-transformer", 801),
        ("response-transformer", 800),
        ("aws-lambda", 750),
        ("http-log", 12),
        ("statsd", 11),
        ("datadog", 10),
        ("file-log", 9),
        ("udp-log", 8),
        ("tcp-log", 7),
        ("loggly", 6),
        ("syslog", 4),
        ("galileo", 3),
        ("correlation-id", 1),
        ("request-termination", 2),
    ];
    assert_eq!(expected.len(), 27);
    for (name, priority) in expected {
        assert_eq!(plugin(name).map(PluginSchema::priority), Some(priority), "{name}");
    }
}

#[test]
fn exactly_nine_plugins_refuse_consumers() {
    let mut refusing: Vec<&str> =
        plugin_names().iter().copied().filter(|n| plugin(n).is_some_and(|p| p.no_consumer())).collect();
    refusing.sort_unstable();
    assert_eq!(
        refusing,
        ["acl", "basic-auth", "bot-detection", "cors", "hmac-auth", "jwt", "key-auth", "ldap-auth", "oauth2"]
    );
}

#[test]
fn absent_and_null_config_mean_empty() {
    let cors = plugin("cors").expect("bundled");
    let expected = json!({"credentials": false, "preflight_continue": false});
    assert_eq!(cors.validate_create(None), Ok(expected.clone()));
    assert_eq!(cors.validate_create(Some(&Value::Null)), Ok(expected.clone()));
    assert_eq!(cors.validate_create(Some(&json!({}))), Ok(expected));
}

#[test]
fn non_object_config_is_not_a_table() {
    let err = || fields(&[("config", "config is not a table")]);
    for bad in [json!("minute=1"), json!([1, 2]), json!(5), json!(true)] {
        assert_eq!(create("rate-limiting", bad.clone()), Err(err()), "{bad}");
    }
    let stored = json!({"minute": 1});
    let rl = plugin("rate-limiting").expect("bundled");
    assert_eq!(rl.validate_update(&stored, Some(&json!("x"))), Err(err()));
}

#[test]
fn form_strings_are_coerced_and_defaults_stored_after_input() {
    let out = create("rate-limiting", json!({"minute": "20", "hour": " 500 ", "policy": "local"})).expect("valid");
    // The Admin API doc's example body, key order included (with a policy that runs).
    assert_eq!(
        serde_json::to_string(&out).expect("serialisable"),
        r#"{"minute":20,"hour":500,"policy":"local","limit_by":"consumer","fault_tolerant":true,"redis_port":6379,"redis_timeout":2000,"redis_database":0,"hide_client_headers":false}"#
    );
}

#[test]
fn booleans_accept_true_and_false_in_any_case() {
    let out = create("key-auth", json!({"hide_credentials": "TRUE", "key_in_body": "False"})).expect("valid");
    assert_eq!(out["hide_credentials"], json!(true));
    assert_eq!(out["key_in_body"], json!(false));
    for bad in [json!("yes"), json!("1"), json!(1), json!("")] {
        assert_eq!(
            create("key-auth", json!({"hide_credentials": bad})),
            Err(fields(&[("config.hide_credentials", "hide_credentials is not a boolean")])),
        );
    }
}

#[test]
fn comma_strings_become_arrays() {
    let out = create("key-auth", json!({"key_names": " apikey , x-key,x_key "})).expect("valid");
    assert_eq!(out["key_names"], json!(["apikey", "x-key", "x_key"]));

    let out = create("acl", json!({"whitelist": "a\\,b, c"})).expect("valid");
    assert_eq!(out["whitelist"], json!(["a,b", "c"]));

    let out = create("hmac-auth", json!({"enforce_headers": "  "})).expect("valid");
    assert_eq!(out["enforce_headers"], json!([]));
}

#[test]
fn numbers_parse_from_strings_or_fail_with_a_type_error() {
    let out = create("request-size-limiting", json!({"allowed_payload_size": "1.5"}));
    assert_eq!(out, Ok(json!({"allowed_payload_size": 1.5})));
    let out = create("request-size-limiting", json!({"allowed_payload_size": 10.0}));
    assert_eq!(out, Ok(json!({"allowed_payload_size": 10})));
    assert_eq!(
        create("request-size-limiting", json!({"allowed_payload_size": "big"})),
        Err(fields(&[("config.allowed_payload_size", "allowed_payload_size is not a number")])),
    );
    assert_eq!(
        create("request-size-limiting", json!({"allowed_payload_size": [1]})),
        Err(fields(&[("config.allowed_payload_size", "allowed_payload_size is not a number")])),
    );
}

#[test]
fn type_errors_name_the_expected_type() {
    assert_eq!(
        create("key-auth", json!({"key_names": 5, "anonymous": 7})),
        Err(fields(&[
            ("config.anonymous", "anonymous is not a string"),
            ("config.key_names", "key_names is not an array"),
        ])),
    );
    assert_eq!(
        create("request-transformer", json!({"add": "x"})),
        Err(fields(&[("config.add", "add is not a table")])),
    );
    assert_eq!(
        create("http-log", json!({"http_endpoint": "example.com/logs"})),
        Err(fields(&[("config.http_endpoint", "http_endpoint is not a url")])),
    );
}

#[test]
fn enum_errors_quote_the_value_and_list_the_choices() {
    // The Admin API doc's example.
    assert_eq!(
        create("rate-limiting", json!({"minute": "abc", "policy": "foo"})),
        Err(fields(&[
            ("config.minute", "minute is not a number"),
            ("config.policy", "\"foo\" is not allowed. Allowed values are: \"local\", \"cluster\", \"redis\""),
        ])),
    );
    // For arrays, the first element outside the enum is named.
    assert_eq!(
        create("hmac-auth", json!({"algorithms": "hmac-sha1,md5,sha0"})),
        Err(fields(&[(
            "config.algorithms",
            "\"md5\" is not allowed. Allowed values are: \"hmac-sha1\", \"hmac-sha256\", \"hmac-sha384\", \"hmac-sha512\""
        )])),
    );
}

#[test]
fn unknown_fields_are_reported_at_their_path() {
    assert_eq!(
        create("rate-limiting", json!({"minute": 1, "minutes": 2})),
        Err(fields(&[("config.minutes", "minutes is an unknown field")])),
    );
    assert_eq!(
        create("request-transformer", json!({"remove": {"cookies": ["a"]}})),
        Err(fields(&[("config.remove.cookies", "cookies is an unknown field")])),
    );
    // A null on an unknown key is still an unknown key.
    assert_eq!(create("cors", json!({"foo": null})), Err(fields(&[("config.foo", "foo is an unknown field")])),);
}

#[test]
fn nulls_are_dropped_then_defaults_refill() {
    let out = create("key-auth", json!({"key_names": null, "hide_credentials": null}));
    assert_eq!(
        out,
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
fn self_check_waits_for_clean_fields() {
    // Without the field error this config would fail rate-limiting's self_check.
    assert_eq!(
        create("rate-limiting", json!({"minute": "abc", "hour": 1})),
        Err(fields(&[("config.minute", "minute is not a number")])),
    );
}

// === engine details no bundled plugin exercises ===

fn reject_absent(value: Option<&Value>, _: &Object) -> Result<(), String> {
    value.map(|_| ()).ok_or_else(|| "must be given".to_string())
}

static INNER: Table =
    Table::new(&[Field::new("a", Kind::Number).required(), Field::new("b", Kind::Number).default(Fill::Int(1))]);

static ENGINE: Table = Table::new(&[
    Field::new("code", Kind::String).regex("^[a-z]+$"),
    Field::new("secret", Kind::String).keep_whitespace().required(),
    Field::new("when", Kind::Timestamp),
    Field::new("checked", Kind::String).check(reject_absent),
    Field::new("inner", Kind::Table).schema(&INNER),
]);

fn run(input: Value) -> (Object, FieldErrors) {
    let mut t = input.as_object().cloned().unwrap_or_default();
    let mut errors = Errors::default();
    let self_error = check_table(&ENGINE, &mut t, "config", &mut errors);
    assert_eq!(self_error, None);
    (t, errors.into_map())
}

#[test]
fn engine_runs_checks_on_absent_values_and_names_missing_nested_fields() {
    let (t, errors) = run(json!({"secret": "  s  "}));
    assert_eq!(t["secret"], json!("  s  "), "keep_whitespace");
    assert_eq!(t["inner"], json!({"b": 1}), "pre-created for its default");
    let expected: FieldErrors = [
        ("config.checked", "must be given"),
        ("config.inner", "inner.a is required"),
        ("config.inner.a", "a is required"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(errors, expected);
}

#[test]
fn engine_applies_regex_timestamp_and_required_rules() {
    let (_, errors) = run(json!({
        "code": "ABC", "secret": "", "when": "-5", "checked": "x", "inner": {"a": 2}
    }));
    assert_eq!(errors.get("config.code").map(String::as_str), Some("code has an invalid value"));
    assert_eq!(errors.get("config.secret").map(String::as_str), Some("secret is required"));
    assert_eq!(errors.get("config.when").map(String::as_str), Some("when is not a timestamp"));
    assert_eq!(errors.len(), 3);

    let (t, errors) = run(json!({"secret": "s", "when": "1534880000", "checked": "x", "inner": {"a": 2}}));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(t["when"], json!(1_534_880_000));
}

// === PATCH ===

#[test]
fn update_merges_objects_and_replaces_arrays_and_scalars() {
    let rt = plugin("request-transformer").expect("bundled");
    let stored = create("request-transformer", json!({"add": {"headers": ["a:1"], "body": ["b:2"]}})).expect("valid");
    let out = rt
        .validate_update(&stored, Some(&json!({"add": {"headers": "c:3,d:4"}, "http_method": "post"})))
        .expect("valid");
    assert_eq!(out["add"], json!({"headers": ["c:3", "d:4"], "body": ["b:2"], "querystring": []}));
    assert_eq!(out["http_method"], json!("post"));
    assert_eq!(out["remove"], stored["remove"]);
}

#[test]
fn update_null_removes_and_defaults_refill() {
    let rl = plugin("rate-limiting").expect("bundled");
    let stored = create("rate-limiting", json!({"minute": 5, "hour": 100, "policy": "local"})).expect("valid");
    let out = rl.validate_update(&stored, Some(&json!({"hour": null}))).expect("valid");
    assert_eq!(out.get("hour"), None);
    assert_eq!(out["minute"], json!(5));
    // A null policy refills Kong's default.
    let out = rl.validate_update(&stored, Some(&json!({"policy": null}))).expect("valid");
    assert_eq!(out["policy"], json!("cluster"));

    assert_eq!(
        rl.validate_update(&stored, Some(&json!({"minute": null, "hour": null}))),
        Err(self_check("You need to set at least one limit: second, minute, hour, day, month, year")),
    );
}

#[test]
fn update_validates_the_merged_result() {
    let rl = plugin("rate-limiting").expect("bundled");
    let stored = create("rate-limiting", json!({"minute": 5, "policy": "local"})).expect("valid");
    assert_eq!(
        rl.validate_update(&stored, Some(&json!({"second": 10}))),
        Err(self_check("The limit for minute cannot be lower than the limit for second")),
    );
    assert_eq!(
        rl.validate_update(&stored, Some(&json!({"minute": "five"}))),
        Err(fields(&[("config.minute", "minute is not a number")])),
    );
    assert_eq!(rl.validate_update(&stored, None), Ok(stored.clone()));
    assert_eq!(rl.validate_update(&stored, Some(&Value::Null)), Ok(stored));
}

#[test]
fn update_merges_flexible_tables_per_limit() {
    let rr = plugin("response-ratelimiting").expect("bundled");
    let stored = create("response-ratelimiting", json!({"limits": {"video": {"minute": 10}}, "policy": "local"}))
        .expect("valid");
    let out = rr
        .validate_update(&stored, Some(&json!({"limits": {"video": {"hour": "100"}, "image": {"second": 1}}})))
        .expect("valid");
    assert_eq!(out["limits"], json!({"video": {"minute": 10, "hour": 100}, "image": {"second": 1}}));

    let out = rr.validate_update(&out, Some(&json!({"limits": {"image": null}}))).expect("valid");
    assert_eq!(out["limits"], json!({"video": {"minute": 10, "hour": 100}}));
}

// === rendering ===

#[test]
fn renders_key_auth_like_kong() {
    let rendered = plugin("key-auth").expect("bundled").render();
    assert_eq!(
        rendered,
        json!({
            "no_consumer": true,
            "fields": {
                "key_names": {"type": "array", "required": true, "default": "function", "func": "function"},
                "hide_credentials": {"type": "boolean", "default": false},
                "anonymous": {"type": "string", "default": "", "func": "function"},
                "key_in_body": {"type": "boolean", "default": false},
                "run_on_preflight": {"type": "boolean", "default": true}
            }
        })
    );
    assert_eq!(
        serde_json::to_string(&rendered["fields"]["key_names"]).expect("serialisable"),
        r#"{"type":"array","required":true,"default":"function","func":"function"}"#
    );
}

#[test]
fn renders_self_checks_nested_and_flexible_schemas() {
    let rl = plugin("rate-limiting").expect("bundled").render();
    assert_eq!(rl["self_check"], json!("function"));
    assert_eq!(rl.get("no_consumer"), None);
    assert_eq!(
        rl["fields"]["policy"],
        json!({"type": "string", "default": "cluster", "enum": ["local", "cluster", "redis"]})
    );

    let rt = plugin("request-transformer").expect("bundled").render();
    assert_eq!(rt.get("self_check"), None);
    assert_eq!(
        rt["fields"]["add"]["schema"]["fields"]["headers"],
        json!({"type": "array", "default": [], "func": "function"})
    );
    assert_eq!(rt["fields"]["remove"]["schema"]["fields"]["body"], json!({"type": "array", "default": []}));

    let rr = plugin("response-ratelimiting").expect("bundled").render();
    assert_eq!(rr["fields"]["limits"]["type"], json!("table"));
    assert_eq!(rr["fields"]["limits"]["schema"]["flexible"], json!(true));
    assert_eq!(rr["fields"]["limits"]["schema"]["fields"]["minute"], json!({"type": "number"}));

    let oauth2 = plugin("oauth2").expect("bundled").render();
    assert_eq!(
        oauth2["fields"]["provision_key"],
        json!({"type": "string", "required": false, "unique": true, "default": "function"})
    );

    let http_log = plugin("http-log").expect("bundled").render();
    assert_eq!(http_log["fields"]["method"], json!({"default": "POST", "enum": ["POST", "PUT", "PATCH"]}));

    let statsd = plugin("statsd").expect("bundled").render();
    assert_eq!(statsd["fields"]["metrics"]["default"].as_array().map(Vec::len), Some(10));
}

#[test]
fn every_plugin_renders_every_field() {
    for name in plugin_names() {
        let schema = plugin(name).expect("bundled");
        let rendered = schema.render();
        let rendered_fields = rendered["fields"].as_object().expect("fields object");
        assert_eq!(rendered_fields.len(), schema.config.fields.len(), "{name}");
        assert_eq!(rendered.get("no_consumer").is_some(), schema.no_consumer(), "{name}");
    }
}
