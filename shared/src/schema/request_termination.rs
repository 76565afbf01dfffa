//! request-termination's config (priority 2; bundled in Kong 0.14.1 though not in the
//! reference's table): answer every request with a fixed status and a message or a body.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "request-termination",
    2,
    Table::new(&[
        Field::new("status_code", Kind::Number).default(Fill::Int(503)),
        Field::new("message", Kind::String),
        Field::new("content_type", Kind::String),
        Field::new("body", Kind::String),
    ])
    .self_check(consistent),
);

/// Kong's checks: a status HTTP can carry, and a message or a body (with its type), not both.
fn consistent(conf: &Object) -> Result<(), String> {
    let status = conf.get("status_code").and_then(Value::as_f64);
    if status.is_some_and(|s| !(100.0..=599.0).contains(&s)) {
        return Err("status_code must be between 100 .. 599".to_string());
    }
    let set = |k: &str| conf.get(k).is_some_and(|v| !v.is_null());
    if set("message") && (set("content_type") || set("body")) {
        return Err("message cannot be used with content_type or body".to_string());
    }
    if !set("message") && set("content_type") && !set("body") {
        return Err("content_type requires a body".to_string());
    }
    Ok(())
}
