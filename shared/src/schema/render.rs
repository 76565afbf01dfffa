//! The body of `GET /plugins/schema/{name}`: Kong serialises the plugin's schema table with
//! every function replaced by the string `"function"`, so clients see field types, defaults,
//! enums and which fields carry custom checks.

use serde_json::{Map, Value};

use super::field::{Field, Fill, Table};

const FUNCTION: &str = "function";

pub(crate) fn render_table(table: &Table) -> Value {
    let mut out = Map::new();
    if table.no_consumer {
        out.insert("no_consumer".into(), Value::Bool(true));
    }
    if table.flexible {
        out.insert("flexible".into(), Value::Bool(true));
    }
    let fields: Map<String, Value> = table.fields.iter().map(|f| (f.name.to_string(), render_field(f))).collect();
    out.insert("fields".into(), Value::Object(fields));
    if table.self_check.is_some() {
        out.insert("self_check".into(), Value::from(FUNCTION));
    }
    Value::Object(out)
}

fn render_field(field: &Field) -> Value {
    let mut out = Map::new();
    if let Some(kind) = field.kind {
        out.insert("type".into(), Value::from(kind.name()));
    }
    if let Some(required) = field.required {
        out.insert("required".into(), Value::Bool(required));
    }
    if field.unique {
        out.insert("unique".into(), Value::Bool(true));
    }
    let default = match field.default {
        Fill::Computed(_) => Some(Value::from(FUNCTION)),
        fill => fill.value(),
    };
    if let Some(default) = default {
        out.insert("default".into(), default);
    }
    if !field.one_of.is_empty() {
        out.insert("enum".into(), Value::from(field.one_of.to_vec()));
    }
    if let Some(pattern) = field.regex {
        out.insert("regex".into(), Value::from(pattern));
    }
    if field.check.is_some() {
        out.insert("func".into(), Value::from(FUNCTION));
    }
    if let Some(sub) = field.schema {
        out.insert("schema".into(), render_table(sub));
    }
    if !field.trim {
        out.insert("trim_whitespace".into(), Value::Bool(false));
    }
    Value::Object(out)
}
