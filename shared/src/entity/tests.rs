use serde_json::{json, Map, Value};

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn candidate(schema: &Schema, input: Value) -> Map<String, Value> {
    let mut c = schema.defaults();
    c.extend(obj(input));
    c
}

#[test]
fn service_defaults_and_required_host() {
    let ok = SERVICE.build(candidate(&SERVICE, json!({"host": "example.org"}))).unwrap();
    assert_eq!(ok["port"], 80);
    assert_eq!(ok["protocol"], "http");
    assert_eq!(ok["retries"], 5);
    assert_eq!(ok["path"], Value::Null);
    let err = SERVICE.build(candidate(&SERVICE, json!({"path": "x"}))).unwrap_err();
    assert_eq!(err.message(), "2 schema violations (host: required field missing; path: should start with: /)");
}

#[test]
fn json_input_is_not_coerced_but_form_input_is() {
    let err = SERVICE.build(candidate(&SERVICE, json!({"host": "a.com", "port": "80"}))).unwrap_err();
    assert_eq!(err.fields["port"], "expected an integer");
    let mut form = obj(json!({"host": "a.com", "port": "8080", "path": ""}));
    SERVICE.coerce_form(&mut form);
    let ok = SERVICE.build(candidate(&SERVICE, Value::Object(form))).unwrap();
    assert_eq!(ok["port"], 8080);
    assert_eq!(ok["path"], Value::Null);
}

#[test]
fn url_shorthand() {
    let m = parse_url("https://api.example.com:8443/v1").unwrap();
    assert_eq!(Value::Object(m), json!({"protocol":"https","host":"api.example.com","port":8443,"path":"/v1"}));
    let m = parse_url("http://a.com").unwrap();
    assert_eq!(m["path"], Value::Null);
    assert_eq!(m["port"], 80);
    assert_eq!(parse_url("http://a.com/").unwrap()["path"], "/");
    assert!(parse_url("invalid url").is_err());
}

#[test]
fn route_needs_a_matcher_and_dedups_sets() {
    let svc = json!({"id": "4e13f54a-bbf1-47a8-8777-255fed7116f2"});
    let err = ROUTE.build(candidate(&ROUTE, json!({"service": svc}))).unwrap_err();
    assert_eq!(
        err.message(),
        "schema violation (at least one of these fields must be non-empty: 'methods', 'hosts', 'paths')"
    );
    let ok = ROUTE.build(candidate(&ROUTE, json!({"service": svc, "methods": ["GET", "GET", "POST"]}))).unwrap();
    assert_eq!(ok["methods"], json!(["GET", "POST"]));
}

#[test]
fn route_foreign_key_errors_nest() {
    let err = ROUTE.build(candidate(&ROUTE, json!({"service": {}, "hosts": ["a.com"]}))).unwrap_err();
    assert_eq!(err.fields["service"], json!({"id": "missing primary key"}));
    assert_eq!(err.message(), "schema violation (service.id: missing primary key)");
}

#[test]
fn form_arrays_from_indexed_keys() {
    let mut form = obj(json!({"hosts": {"2": "b.com", "1": "a.com"}, "methods": "GET", "strip_path": "false"}));
    ROUTE.coerce_form(&mut form);
    assert_eq!(form["hosts"], json!(["a.com", "b.com"]));
    assert_eq!(form["methods"], json!(["GET"]));
    assert_eq!(form["strip_path"], json!(false));
}

#[test]
fn unknown_fields_are_reported() {
    let err = CONSUMER.build(candidate(&CONSUMER, json!({"username": "bob", "foo": 1}))).unwrap_err();
    assert_eq!(err.fields["foo"], "unknown field");
}

#[test]
fn broken_pem_is_refused() {
    let err = CERTIFICATE.build(candidate(&CERTIFICATE, json!({"cert": "nope", "key": "nope"}))).unwrap_err();
    assert!(err.fields.contains_key("cert"));
    assert!(err.fields.contains_key("key"));
}
