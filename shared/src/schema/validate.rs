//! The validation walk of Kong 0.14's old DAO (`kong/dao/schemas_validation.lua`), applied
//! to a plugin's `config`: nulls dropped, defaults filled, then per field type → enum →
//! regex → nested table → required → custom check, unknown keys, and finally the table's
//! `self_check` when nothing failed. Also the PATCH deep-merge.
//!
//! Descriptors come from `field.rs`, coercions from `coerce.rs`; turning the outcome into a
//! [`ConfigError`](super::ConfigError) is the caller's job.

use serde_json::Value;

use super::coerce::coerce;
use super::field::{Field, Kind, Object, Table};
use super::FieldErrors;

/// Field errors keyed by dotted path. Kong turns a second error on one key into a list; the
/// public error type holds one message per key, so the first one found is kept.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    map: FieldErrors,
    /// Every error ever added, so a table can tell whether its own walk added any.
    added: usize,
}

impl Errors {
    fn add(&mut self, key: String, message: String) {
        self.added += 1;
        self.map.entry(key).or_insert(message);
    }

    fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn into_map(self) -> FieldErrors {
        self.map
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Validates and completes `t` in place. Field errors go to `errors` under `path.<field>`;
/// a failed `self_check` is returned instead, because where it is reported depends on the
/// caller (the plugin's `config` key, or the nested field's key).
pub(crate) fn check_table(table: &Table, t: &mut Object, path: &str, errors: &mut Errors) -> Option<String> {
    let before = errors.added;

    for field in table.fields {
        if t.get(field.name).is_some_and(Value::is_null) {
            t.shift_remove(field.name);
        }
        if !t.contains_key(field.name) {
            if let Some(value) = field.default.value() {
                t.insert(field.name.to_string(), value);
            }
        }
    }

    for field in table.fields {
        check_field(field, t, path, errors);
    }

    let unknown: Vec<String> = t.keys().filter(|k| table.field(k).is_none()).cloned().collect();
    for key in unknown {
        let message = format!("{key} is an unknown field");
        errors.add(join(path, &key), message);
    }

    if errors.added != before {
        return None;
    }
    table.self_check.and_then(|check| check(t).err())
}

fn check_field(field: &Field, t: &mut Object, path: &str, errors: &mut Errors) {
    let name = field.name;
    let key = join(path, name);

    if let (Some(kind), Some(value)) = (field.kind, t.get_mut(name)) {
        if !coerce(kind, value, field.trim) {
            // Kong skips every later rule for a field of the wrong type.
            errors.add(key, kind.type_error(name));
            return;
        }
    }

    if !field.one_of.is_empty() {
        if let Some(bad) = t.get(name).and_then(|v| disallowed(field, v)) {
            let allowed = field.one_of.join("\", \"");
            errors.add(key.clone(), format!("\"{bad}\" is not allowed. Allowed values are: \"{allowed}\""));
        }
    }

    if let (Some(pattern), Some(Value::String(s))) = (field.regex, t.get(name)) {
        // An invalid pattern is a bug in our own schema; treat it as "no match".
        let matches = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(s));
        if !matches {
            errors.add(key.clone(), format!("{name} has an invalid value"));
        }
    }

    if let Some(sub) = field.schema {
        check_nested(field, sub, t, &key, errors);
    }

    let missing = match t.get(name) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if field.required == Some(true) && missing {
        errors.add(key.clone(), format!("{name} is required"));
    }

    if let Some(check) = field.check {
        if !errors.has(&key) {
            if let Err(message) = check(t.get(name), t) {
                errors.add(key, message);
            }
        }
    }
}

/// The first value (or array element) outside the field's enum, rendered as Lua's
/// `tostring` would print it.
fn disallowed(field: &Field, value: &Value) -> Option<String> {
    let allowed = |v: &Value| v.as_str().is_some_and(|s| field.one_of.contains(&s));
    match value {
        Value::Array(items) if field.kind == Some(Kind::Array) => items.iter().find(|v| !allowed(v)).map(display),
        v if allowed(v) => None,
        v => Some(display(v)),
    }
}

/// How a value appears inside a message: strings bare, everything else as JSON.
pub(crate) fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_nested(field: &Field, sub: &Table, t: &mut Object, key: &str, errors: &mut Errors) {
    let name = field.name;
    if !t.contains_key(name) {
        // Kong names sub-fields that are required but have no default, and pre-creates the
        // table when any sub-field has a default, so those defaults get stored.
        for sub_field in sub.fields {
            if sub_field.required == Some(true) && !sub_field.default.is_some() {
                errors.add(key.to_string(), format!("{name}.{} is required", sub_field.name));
            }
        }
        if sub.fields.iter().any(|f| f.default.is_some()) {
            t.insert(name.to_string(), Value::Object(Object::new()));
        }
    }
    let Some(Value::Object(inner)) = t.get_mut(name) else {
        return;
    };
    if sub.flexible {
        check_flexible(sub, inner, key, errors);
    } else if let Some(message) = check_table(sub, inner, key, errors) {
        errors.add(key.to_string(), message);
    }
}

/// A flexible table: every key is a free name whose value must itself be a table valid
/// against `sub`. Kong stops at the first value that is not a table.
fn check_flexible(sub: &Table, inner: &mut Object, key: &str, errors: &mut Errors) {
    for (entry_name, entry) in inner.iter_mut() {
        let entry_key = join(key, entry_name);
        let Value::Object(entry) = entry else {
            errors.add(entry_key, format!("{entry_name} is not a table"));
            return;
        };
        if let Some(message) = check_table(sub, entry, &entry_key, errors) {
            errors.add(key.to_string(), message);
            return;
        }
    }
}

/// PATCH semantics for `config`: objects merge recursively, anything else in the patch
/// replaces the stored value, and a `null` removes the key.
pub(crate) fn merge(stored: &mut Object, patch: &Object) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                stored.shift_remove(key);
            }
            Value::Object(patch_inner) => {
                let slot = stored.entry(key.clone()).or_insert_with(|| Value::Object(Object::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Object::new());
                }
                if let Value::Object(stored_inner) = slot {
                    merge(stored_inner, patch_inner);
                }
            }
            other => {
                stored.insert(key.clone(), other.clone());
            }
        }
    }
}
