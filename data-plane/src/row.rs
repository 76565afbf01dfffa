//! Reading the control plane's stored rows into typed structs, straight from their text: no
//! `serde_json::Value` tree is built (one allocation per key and per value, nine times the
//! text), and only the fields the data plane uses are kept.
//!
//! The control plane checks every field's type before it stores a row, so a field of the
//! wrong type is a row from elsewhere (an older cache, a hand-written declarative file): such a
//! field reads as absent, as it always has, rather than failing the whole configuration.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use gatehouse_shared::snapshot::Doc;

/// A row decoded from its document.
///
/// # Errors
/// A document without a field the row cannot do without (its `id`), or not an object.
pub fn decode<T: DeserializeOwned>(doc: &Doc) -> Result<T, serde_json::Error> {
    serde_json::from_str(&doc.text())
}

/// A scalar field: absent, `null` or of another type reads as `None`.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(|v| !v.is_null()))
}

/// A string field.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<str>>, D::Error> {
    Ok(match scalar(d)? {
        Some(Value::String(s)) => Some(s.into()),
        _ => None,
    })
}

/// A string field read as empty when absent.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Box<str>, D::Error> {
    Ok(string(d)?.unwrap_or_default())
}

/// A whole number that is not negative.
pub fn unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(scalar(d)?.as_ref().and_then(Value::as_u64))
}

/// A whole number.
pub fn signed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(scalar(d)?.as_ref().and_then(Value::as_i64))
}

/// Any number, as a whole number (oauth2's millisecond times), `0` when absent.
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(scalar(d)?.as_ref().and_then(Value::as_f64).map_or(0, |n| n as i64))
}

/// Any number.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(scalar(d)?.as_ref().and_then(Value::as_f64))
}

/// A boolean field.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(scalar(d)?.as_ref().and_then(Value::as_bool))
}

/// A list of strings (its other members skipped); absent or not a list reads as empty.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Box<str>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Array(list)) => {
            list.into_iter().filter_map(|v| if let Value::String(s) = v { Some(s.into()) } else { None }).collect()
        }
        _ => Vec::new(),
    })
}

/// A foreign key field: `None` when absent, `null` or not a reference.
pub fn foreign<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<str>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Object(mut o)) => match o.remove("id") {
            Some(Value::String(s)) => Some(s.into()),
            _ => None,
        },
        _ => None,
    })
}
