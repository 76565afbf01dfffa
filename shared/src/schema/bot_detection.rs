//! bot-detection's config (priority 2500, no consumer): extra User-Agent regexes to allow or
//! block on top of the built-in bot list.

use serde_json::Value;

use super::checks::first_invalid_regex;
use super::field::{Field, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "bot-detection",
    2500,
    Table::new(&[
        Field::new("whitelist", Kind::Array).check(regex_list),
        Field::new("blacklist", Kind::Array).check(regex_list),
    ])
    .no_consumer(),
);

/// Rules are compiled on the request path, so a bad one is refused up front.
fn regex_list(value: Option<&Value>, _: &Object) -> Result<(), String> {
    let items = value.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    match first_invalid_regex(items) {
        Some(rule) => Err(format!("value '{rule}' is not a valid regex")),
        None => Ok(()),
    }
}
