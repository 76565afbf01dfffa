//! The Route entity.

use serde_json::{Map, Value};

use super::{Field, Kind, Schema};
use crate::validate;

fn both_protocols() -> Value {
    serde_json::json!(["http", "https"])
}
fn zero() -> Value {
    Value::from(0)
}
fn yes() -> Value {
    Value::Bool(true)
}
fn no() -> Value {
    Value::Bool(false)
}

fn check_protocol(s: &str) -> Result<(), String> {
    match s {
        "http" | "https" => Ok(()),
        _ => Err("expected one of: http, https".to_string()),
    }
}

fn check_method(s: &str) -> Result<(), String> {
    if s.bytes().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("invalid value: {s}"))
    }
}

fn at_least_one_matcher(m: &Map<String, Value>) -> Result<(), String> {
    let non_empty = |k: &str| m.get(k).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if non_empty("methods") || non_empty("hosts") || non_empty("paths") {
        Ok(())
    } else {
        Err("at least one of these fields must be non-empty: 'methods', 'hosts', 'paths'".into())
    }
}

pub static ROUTE: Schema = Schema {
    name: "routes",
    has_updated_at: true,
    fields: &[
        Field::new("protocols", Kind::Set).required().default(both_protocols).min_len(1).check(check_protocol),
        Field::new("methods", Kind::Set).check(check_method),
        Field::new("hosts", Kind::Array).check(validate::check_route_host),
        Field::new("paths", Kind::Array).check(validate::check_route_path),
        Field::new("regex_priority", Kind::Int { min: None, max: None }).default(zero),
        Field::new("strip_path", Kind::Bool).default(yes),
        Field::new("preserve_host", Kind::Bool).default(no),
        Field::new("service", Kind::Foreign).required(),
    ],
    entity_check: Some(at_least_one_matcher),
};
