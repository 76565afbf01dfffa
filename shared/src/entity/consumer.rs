//! The Consumer entity.

use serde_json::{Map, Value};

use super::{Field, Kind, Schema};

fn username_or_custom_id(m: &Map<String, Value>) -> Result<(), String> {
    let set = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    if set("custom_id") || set("username") {
        Ok(())
    } else {
        Err("at least one of these fields must be non-empty: 'custom_id', 'username'".into())
    }
}

pub static CONSUMER: Schema = Schema {
    name: "consumers",
    has_updated_at: false,
    fields: &[Field::new("username", Kind::Str), Field::new("custom_id", Kind::Str)],
    entity_check: Some(username_or_custom_id),
};
