//! hmac-auth's config (priority 1000, no consumer): clock skew, required signed headers and
//! the accepted HMAC algorithms.

use serde_json::Value;

use super::checks;
use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

const ALGORITHMS: &[&str] = &["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "hmac-auth",
    1000,
    Table::new(&[
        Field::new("hide_credentials", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("clock_skew", Kind::Number).default(Fill::Int(300)).check(non_negative_skew),
        Field::new("anonymous", Kind::String).default(Fill::Str("")).check(checks::anonymous),
        Field::new("validate_request_body", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("enforce_headers", Kind::Array).default(Fill::List(&[])),
        Field::new("algorithms", Kind::Array).default(Fill::List(ALGORITHMS)).one_of(ALGORITHMS),
    ])
    .no_consumer(),
);

/// A negative skew would reject every request.
fn non_negative_skew(value: Option<&Value>, _: &Object) -> Result<(), String> {
    match value.and_then(Value::as_f64) {
        Some(skew) if skew < 0.0 => Err("Clock Skew should be positive".to_string()),
        _ => Ok(()),
    }
}
