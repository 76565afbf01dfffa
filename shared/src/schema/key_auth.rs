//! key-auth's config (priority 1003, no consumer): which header/query/body names carry the
//! API key and how the plugin treats it once found.

use serde_json::Value;

use super::checks;
use super::field::{Field, Fill, Kind, Object, Table};
use super::validate::display;
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "key-auth",
    1003,
    Table::new(&[
        Field::new("key_names", Kind::Array).required().default(Fill::Computed(default_key_names)).check(header_names),
        Field::new("hide_credentials", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("anonymous", Kind::String).default(Fill::Str("")).check(checks::anonymous),
        Field::new("key_in_body", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("run_on_preflight", Kind::Boolean).default(Fill::Bool(true)),
    ])
    .no_consumer(),
);

/// Kong computes this default with a function, which is why the schema endpoint shows
/// `"default": "function"` for it.
fn default_key_names() -> Value {
    Value::from(vec!["apikey"])
}

/// Key names are looked up as header names too, so they must be valid header names.
fn header_names(value: Option<&Value>, _: &Object) -> Result<(), String> {
    for name in value.and_then(Value::as_array).into_iter().flatten() {
        let name = display(name);
        if name.is_empty() {
            return Err("'' is illegal: no header name provided".to_string());
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!(
                "'{name}' is illegal: bad header name '{name}', allowed characters are \
                 A-Z, a-z, 0-9, '_', and '-'"
            ));
        }
    }
    Ok(())
}
