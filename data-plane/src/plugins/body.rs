//! Request bodies as plugins read them (key-auth `key_in_body`, oauth2 parameters): by
//! Content-Type, form-urlencoded, JSON or multipart/form-data, into a flat JSON object.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::RequestCtx;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Form,
    Json,
    Multipart,
}

fn kind(ctx: &RequestCtx<'_>) -> Option<(Kind, String)> {
    let ct = ctx.header("content-type")?.to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        Some((Kind::Form, String::new()))
    } else if ct.starts_with("application/json") {
        Some((Kind::Json, String::new()))
    } else if ct.starts_with("multipart/form-data") {
        let boundary = ct.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"').to_string();
        // Use the header's original case for the boundary.
        let raw = ctx.header("content-type")?;
        let start = raw.to_ascii_lowercase().find(&boundary)?;
        Some((Kind::Multipart, raw[start..start + boundary.len()].to_string()))
    } else {
        None
    }
}

fn form(bytes: &[u8]) -> Value {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        match map.get_mut(k.as_ref()) {
            Some(Value::Array(a)) => a.push(Value::String(v.into_owned())),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(v.into_owned())]);
            }
            None => {
                map.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
    }
    Value::Object(map)
}

fn multipart(bytes: &[u8], boundary: &str) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    let delimiter = format!("--{boundary}");
    let mut map = Map::new();
    for part in text.split(&delimiter).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (head, value) = part.split_once("\r\n\r\n")?;
        let name = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))?
            .trim_matches('"')
            .to_string();
        map.insert(name, Value::String(value.strip_suffix("\r\n").unwrap_or(value).to_string()));
    }
    Some(Value::Object(map))
}

/// The body's fields, or `None` when it cannot be parsed (no or unknown Content-Type,
/// malformed, too large).
pub fn parse(ctx: &RequestCtx<'_>) -> Option<Value> {
    let (kind, boundary) = kind(ctx)?;
    // Too large to read (left to stream upstream): not parsed.
    let bytes = ctx.read_body()?;
    match kind {
        Kind::Form => Some(form(&bytes)),
        Kind::Json if bytes.is_empty() => Some(Value::Object(Map::new())),
        Kind::Json => serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object),
        Kind::Multipart => multipart(&bytes, &boundary),
    }
}

/// Removes a field from a form or JSON body already read by [`parse`].
pub fn remove_field(ctx: &mut RequestCtx<'_>, name: &str) {
    let Some((kind, _)) = kind(ctx) else { return };
    let crate::message::ReqBody::Full(bytes) = &*ctx.body else { return };
    let rewritten = match kind {
        Kind::Form => {
            let kept: Vec<(String, String)> = url::form_urlencoded::parse(bytes)
                .filter(|(k, _)| k != name)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url::form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish().into_bytes()
        }
        Kind::Json => {
            let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else { return };
            if let Some(o) = v.as_object_mut() {
                o.remove(name);
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Kind::Multipart => return,
    };
    ctx.set_body(Bytes::from(rewritten));
}

#[cfg(test)]
mod tests {
    #[test]
    fn multipart_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nsecret\r\n--XyZ--\r\n";
        let v = super::multipart(body, "XyZ").unwrap();
        assert_eq!(v["apikey"], "secret");
    }

    #[test]
    fn repeated_form_fields_become_arrays() {
        let v = super::form(b"a=1&a=2&b=3");
        assert_eq!(v["a"], serde_json::json!(["1", "2"]));
        assert_eq!(v["b"], "3");
    }
}
