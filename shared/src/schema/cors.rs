//! cors's config (priority 2000, no consumer): allowed origins (literal or regex), headers,
//! methods and preflight behaviour.

use serde_json::Value;

use super::checks::first_invalid_regex;
use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "cors",
    2000,
    Table::new(&[
        Field::new("origins", Kind::Array).check(origin_regexes),
        Field::new("headers", Kind::Array),
        Field::new("exposed_headers", Kind::Array),
        Field::new("methods", Kind::Array).one_of(&["HEAD", "GET", "POST", "PUT", "PATCH", "DELETE"]),
        Field::new("max_age", Kind::Number),
        Field::new("credentials", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("preflight_continue", Kind::Boolean).default(Fill::Bool(false)),
    ])
    .no_consumer(),
);

/// Origins are matched as regexes unless the list is exactly `["*"]`, so every entry of any
/// other list must compile (a `*` among others does not).
fn origin_regexes(value: Option<&Value>, _: &Object) -> Result<(), String> {
    let items = value.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if items.len() == 1 && items[0] == "*" {
        return Ok(());
    }
    match first_invalid_regex(items) {
        Some(origin) => Err(format!("origin '{origin}' is not a valid regex")),
        None => Ok(()),
    }
}
