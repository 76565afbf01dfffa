//! The Upstream and Target entities of Kong 0.14's old DAO: validation with its flat error
//! maps and `{"message"}` self-check errors, the exact `healthchecks` defaults, and target
//! normalisation (`host:port`, default port 8000, IPv6 expanded).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

/// An old-DAO validation failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OldError {
    /// 400 with a flat map, key = dotted field path.
    #[error("invalid fields")]
    Fields(BTreeMap<String, String>),
    /// 400 `{"message": …}` from an entity self-check.
    #[error("{0}")]
    Message(String),
}

#[cfg(test)]
fn field_err(key: &str, msg: impl Into<String>) -> OldError {
    let mut m = BTreeMap::new();
    m.insert(key.to_string(), msg.into());
    OldError::Fields(m)
}

/// The `healthchecks` object an upstream gets when none is given.
pub fn healthchecks_default() -> Value {
    json!({
        "active": {
            "timeout": 1, "concurrency": 10, "http_path": "/",
            "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
            "unhealthy": {"interval": 0, "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
                          "tcp_failures": 0, "timeouts": 0, "http_failures": 0}
        },
        "passive": {
            "healthy": {"http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                          300, 301, 302, 303, 304, 305, 306, 307, 308],
                        "successes": 0},
            "unhealthy": {"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0, "http_failures": 0}
        }
    })
}

const HASHES: [&str; 5] = ["none", "consumer", "ip", "header", "cookie"];
const STRING_FIELDS: [&str; 7] = [
    "name",
    "hash_on",
    "hash_fallback",
    "hash_on_header",
    "hash_fallback_header",
    "hash_on_cookie",
    "hash_on_cookie_path",
];

/// Validates an upstream. `stored` is the current entity for a PATCH (nested `healthchecks`
/// are merged into it), `None` for a create or full replacement (defaults fill the rest).
/// Returns the entity's fields (without `id`/`created_at`).
///
/// # Errors
/// Field errors first (types, enums, unknown fields, health-check ranges), then the first
/// failing self-check as a message.
pub fn validate_upstream(
    stored: Option<&Map<String, Value>>,
    input: Map<String, Value>,
) -> Result<Map<String, Value>, OldError> {
    let mut out: Map<String, Value> = match stored {
        Some(s) => {
            s.iter().filter(|(k, _)| *k != "id" && *k != "created_at").map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        None => {
            let mut m = Map::new();
            m.insert("hash_on".into(), json!("none"));
            m.insert("hash_fallback".into(), json!("none"));
            m.insert("hash_on_cookie_path".into(), json!("/"));
            m.insert("slots".into(), json!(1000));
            m.insert("healthchecks".into(), healthchecks_default());
            m
        }
    };
    let mut errors = BTreeMap::new();
    for (key, value) in input {
        match key.as_str() {
            k if STRING_FIELDS.contains(&k) => match value {
                Value::Null => {
                    out.remove(k);
                }
                Value::String(s) => {
                    out.insert(key, Value::String(s.trim().to_string()));
                }
                _ => {
                    errors.insert(key.clone(), format!("{key} is not a string"));
                }
            },
            "slots" => match number(&value) {
                Some(n) => {
                    out.insert(key, n);
                }
                None if value.is_null() => {
                    out.insert(key, json!(1000));
                }
                None => {
                    errors.insert(key, "slots is not a number".into());
                }
            },
            "healthchecks" => {
                let mut merged = out.remove("healthchecks").unwrap_or_else(healthchecks_default);
                if value.is_null() {
                    merged = healthchecks_default();
                } else if !value.is_object() {
                    errors.insert(key.clone(), "healthchecks is not a table".into());
                } else {
                    merge_checks(&mut merged, &value, &healthchecks_default(), "healthchecks", &mut errors);
                }
                out.insert(key, merged);
            }
            _ => {
                errors.insert(key.clone(), format!("{key} is an unknown field"));
            }
        }
    }
    for k in ["hash_on", "hash_fallback"] {
        if let Some(v) = out.get(k).and_then(Value::as_str) {
            if !HASHES.contains(&v) {
                errors.insert(
                    k.to_string(),
                    format!("\"{v}\" is not allowed. Allowed values are: \"none\", \"consumer\", \"ip\", \"header\", \"cookie\""),
                );
            }
        } else if !errors.contains_key(k) {
            out.insert(k.into(), json!("none"));
        }
    }
    if out.get("name").is_none() && !errors.contains_key("name") {
        errors.insert("name".into(), "name is required".into());
    }
    if !errors.is_empty() {
        return Err(OldError::Fields(errors));
    }
    self_check(&out).map_err(OldError::Message)?;
    Ok(out)
}

fn number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)))
        }
        _ => None,
    }
}

/// Merges `input` into `target` following the shape of `shape` (the defaults), coercing form
/// strings and checking every leaf.
fn merge_checks(target: &mut Value, input: &Value, shape: &Value, path: &str, errors: &mut BTreeMap<String, String>) {
    let (Some(input), Some(shape)) = (input.as_object(), shape.as_object()) else { return };
    for (key, value) in input {
        let here = format!("{path}.{key}");
        let Some(expected) = shape.get(key) else {
            errors.insert(here, format!("{key} is an unknown field"));
            continue;
        };
        if expected.is_object() {
            if value.is_null() {
                target[key.as_str()] = expected.clone();
            } else if !value.is_object() {
                errors.insert(here, format!("{key} is not a table"));
            } else {
                let mut child = target.get(key.as_str()).cloned().unwrap_or_else(|| expected.clone());
                merge_checks(&mut child, value, expected, &here, errors);
                target[key.as_str()] = child;
            }
            continue;
        }
        if value.is_null() {
            target[key.as_str()] = expected.clone();
            continue;
        }
        match check_leaf(key, value) {
            Ok(v) => target[key.as_str()] = v,
            Err(msg) => {
                errors.insert(here, msg);
            }
        }
    }
}

fn check_leaf(key: &str, value: &Value) -> Result<Value, String> {
    const COUNTER: &str = "must be 0 (disabled), or an integer between 1 and 2147483647";
    match key {
        "timeout" | "interval" => {
            let n = number(value).ok_or(format!("{key} is not a number"))?;
            let f = n.as_f64().unwrap_or(-1.0);
            if !(0.0..=65535.0).contains(&f) {
                return Err("must be between 0 and 65535".into());
            }
            Ok(n)
        }
        "concurrency" => {
            let n = number(value).ok_or(format!("{key} is not a number"))?;
            match n.as_i64() {
                Some(i) if (1..=2_147_483_647).contains(&i) && n.is_i64() => Ok(n),
                _ => Err("must be an integer between 1 and 2147483647".into()),
            }
        }
        "successes" | "tcp_failures" | "timeouts" | "http_failures" => {
            let n = number(value).ok_or(format!("{key} is not a number"))?;
            match n.as_i64() {
                Some(i) if (0..=2_147_483_647).contains(&i) && n.is_i64() => Ok(n),
                _ => Err(COUNTER.into()),
            }
        }
        "http_path" => {
            let Value::String(s) = value else { return Err(format!("{key} is not a string")) };
            let s = s.trim();
            if s.is_empty() {
                Err("path is empty".into())
            } else if !s.starts_with('/') {
                Err("must be prefixed with slash".into())
            } else {
                Ok(json!(s))
            }
        }
        "http_statuses" => {
            let items: Vec<Value> = match value {
                Value::Array(a) => a.clone(),
                Value::String(s) => {
                    s.split(',').map(|p| Value::String(p.trim().to_string())).filter(|v| v != "").collect()
                }
                _ => return Err("http_statuses is not an array".into()),
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let n = number(&item).ok_or("array element is not a number")?;
                let Some(code) = n.as_i64().filter(|_| n.is_i64()) else {
                    return Err("must be an integer".into());
                };
                if !(100..=999).contains(&code) {
                    return Err(format!("invalid status code '{code}': must be between 100 and 999"));
                }
                out.push(json!(code));
            }
            Ok(Value::Array(out))
        }
        _ => Err(format!("{key} is an unknown field")),
    }
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

fn self_check(u: &Map<String, Value>) -> Result<(), String> {
    let get = |k: &str| u.get(k).and_then(Value::as_str);
    let name = get("name").unwrap_or_default();
    check_upstream_name(name)?;
    for k in ["hash_on_header", "hash_fallback_header"] {
        if let Some(h) = get(k) {
            if !valid_token(h) {
                return Err(format!(
                    "Header: bad header name '{h}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
                ));
            }
        }
    }
    if let Some(c) = get("hash_on_cookie") {
        if !valid_token(c) {
            return Err(format!(
                "Cookie name: bad cookie name '{c}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
            ));
        }
    }
    let path = get("hash_on_cookie_path").unwrap_or("/");
    if path.trim().is_empty() {
        return Err("Cookie path: path is empty".into());
    }
    if !path.starts_with('/') {
        return Err("Cookie path: must be prefixed with slash".into());
    }
    let on = get("hash_on").unwrap_or("none");
    let fallback = get("hash_fallback").unwrap_or("none");
    if (on == "header" && get("hash_on_header").is_none())
        || (fallback == "header" && get("hash_fallback_header").is_none())
    {
        return Err("Hashing on 'header', but no header name provided".into());
    }
    if (on == "cookie" || fallback == "cookie") && get("hash_on_cookie").is_none() {
        return Err("Hashing on 'cookie', but no cookie name provided".into());
    }
    if on == "none" && fallback != "none" {
        return Err("Cannot set fallback if primary 'hash_on' is not set".into());
    }
    if on == "cookie" && fallback != "none" {
        return Err("Cannot set `hash_fallback` if primary `hash_on` is set to cookie".into());
    }
    let same_header = on == "header"
        && fallback == "header"
        && get("hash_on_header").map(str::to_ascii_lowercase)
            == get("hash_fallback_header").map(str::to_ascii_lowercase);
    if on != "none" && ((on == fallback && on != "header") || same_header) {
        return Err("Cannot set fallback and primary hashes to the same value".into());
    }
    let slots = u.get("slots").and_then(Value::as_f64).unwrap_or(0.0);
    if !(10.0..=65536.0).contains(&slots) || slots.fract() != 0.0 {
        return Err("number of slots must be between 10 and 65536".into());
    }
    Ok(())
}

fn check_upstream_name(name: &str) -> Result<(), String> {
    if name.parse::<Ipv4Addr>().is_ok() || name.parse::<Ipv6Addr>().is_ok() {
        return Err("Invalid name; no ip addresses allowed".into());
    }
    if let Some((host, port)) = name.rsplit_once(':') {
        if port.bytes().all(|c| c.is_ascii_digit()) && !port.is_empty() {
            if host.parse::<Ipv4Addr>().is_ok() {
                return Err("Invalid name; no ip addresses allowed".into());
            }
            return Err("Invalid name; no port allowed".into());
        }
    }
    if crate::validate::check_host(name).is_err() || name.is_empty() {
        return Err("Invalid name; must be a valid hostname".into());
    }
    Ok(())
}

/// Normalises a target string: `host:port` with port 8000 when absent, IPv4 without leading
/// zeros, IPv6 fully expanded in lower case and bracketed.
///
/// # Errors
/// Kong's message for an unusable target.
pub fn normalize_target(raw: &str) -> Result<String, String> {
    const INVALID: &str = "Invalid target; not a valid hostname or ip address";
    let raw = raw.trim();
    let (host, port) = split_target(raw).ok_or(INVALID)?;
    let port = port.unwrap_or(8000);
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        let s = v6.segments().iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":");
        return Ok(format!("[{s}]:{port}"));
    }
    if host.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        let parts: Vec<&str> = host.split('.').collect();
        if parts.len() != 4 {
            return Err(INVALID.into());
        }
        let mut octets = Vec::with_capacity(4);
        for p in parts {
            let n: u16 = p.parse().map_err(|_| INVALID)?;
            if n > 255 {
                return Err(INVALID.into());
            }
            octets.push(n.to_string());
        }
        return Ok(format!("{}:{port}", octets.join(".")));
    }
    if crate::validate::check_host(host).is_err() {
        return Err(INVALID.into());
    }
    Ok(format!("{host}:{port}"))
}

fn split_target(raw: &str) -> Option<(&str, Option<u16>)> {
    if let Some(inner) = raw.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        return match rest.strip_prefix(':') {
            Some(p) => Some((addr, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((addr, None)),
            None => None,
        };
    }
    if raw.parse::<Ipv6Addr>().is_ok() {
        return Some((raw, None));
    }
    match raw.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((raw, None)),
    }
}

/// Validates a target body (`target`, `weight`); returns the normalised fields.
///
/// # Errors
/// Field errors, or a self-check message.
pub fn validate_target(input: Map<String, Value>) -> Result<Map<String, Value>, OldError> {
    let mut out = Map::new();
    let mut errors = BTreeMap::new();
    let mut weight = json!(100);
    let mut target = None;
    for (key, value) in input {
        match key.as_str() {
            "target" => match value {
                Value::String(s) => target = Some(s),
                Value::Null => {}
                _ => {
                    errors.insert(key, "target is not a string".into());
                }
            },
            "weight" => match number(&value) {
                Some(n) => weight = n,
                None if value.is_null() => {}
                None => {
                    errors.insert(key, "weight is not a number".into());
                }
            },
            _ => {
                errors.insert(key.clone(), format!("{key} is an unknown field"));
            }
        }
    }
    if target.is_none() && !errors.contains_key("target") {
        errors.insert("target".into(), "target is required".into());
    }
    if !errors.is_empty() {
        return Err(OldError::Fields(errors));
    }
    let w = weight.as_f64().unwrap_or(-1.0);
    if !(0.0..=1000.0).contains(&w) || w.fract() != 0.0 {
        return Err(OldError::Message("weight must be from 0 to 1000".into()));
    }
    let normalized = normalize_target(&target.unwrap_or_default()).map_err(OldError::Message)?;
    out.insert("target".into(), json!(normalized));
    out.insert("weight".into(), weight);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn defaults_are_exact() {
        let u = validate_upstream(None, obj(json!({"name": "svc.v1.xyz"}))).unwrap();
        assert_eq!(u["slots"], 1000);
        assert_eq!(u["hash_on"], "none");
        assert_eq!(u["healthchecks"], healthchecks_default());
    }

    #[test]
    fn name_rules() {
        let e = |n: &str| validate_upstream(None, obj(json!({ "name": n }))).unwrap_err();
        assert_eq!(e("10.0.0.1"), OldError::Message("Invalid name; no ip addresses allowed".into()));
        assert_eq!(e("a.com:80"), OldError::Message("Invalid name; no port allowed".into()));
        assert_eq!(e("a b"), OldError::Message("Invalid name; must be a valid hostname".into()));
    }

    #[test]
    fn hash_rules_in_order() {
        let e = |v: Value| validate_upstream(None, obj(v)).unwrap_err();
        assert_eq!(
            e(json!({"name": "a", "hash_on": "header"})),
            OldError::Message("Hashing on 'header', but no header name provided".into())
        );
        assert_eq!(
            e(json!({"name": "a", "hash_fallback": "ip"})),
            OldError::Message("Cannot set fallback if primary 'hash_on' is not set".into())
        );
        assert_eq!(
            e(json!({"name": "a", "hash_on": "ip", "hash_fallback": "ip"})),
            OldError::Message("Cannot set fallback and primary hashes to the same value".into())
        );
        assert_eq!(
            e(json!({"name": "a", "slots": 5})),
            OldError::Message("number of slots must be between 10 and 65536".into())
        );
        assert_eq!(
            e(json!({"name": "a", "hash_on": "x"})),
            field_err(
                "hash_on",
                "\"x\" is not allowed. Allowed values are: \"none\", \"consumer\", \"ip\", \"header\", \"cookie\""
            )
        );
    }

    #[test]
    fn healthchecks_merge_and_validate() {
        let stored = validate_upstream(None, obj(json!({"name": "a"}))).unwrap();
        let u =
            validate_upstream(Some(&stored), obj(json!({"healthchecks": {"active": {"healthy": {"interval": 5}}}})))
                .unwrap();
        assert_eq!(u["healthchecks"]["active"]["healthy"]["interval"], 5);
        assert_eq!(u["healthchecks"]["active"]["healthy"]["http_statuses"], json!([200, 302]));
        let e = validate_upstream(None, obj(json!({"name": "a", "healthchecks": {"active": {"timeout": -1}}})))
            .unwrap_err();
        assert_eq!(e, field_err("healthchecks.active.timeout", "must be between 0 and 65535"));
    }

    #[test]
    fn targets_normalise() {
        assert_eq!(normalize_target("1.2.3.4").unwrap(), "1.2.3.4:8000");
        assert_eq!(normalize_target("01.002.3.4:80").unwrap(), "1.2.3.4:80");
        assert_eq!(normalize_target("::1").unwrap(), "[0000:0000:0000:0000:0000:0000:0000:0001]:8000");
        assert_eq!(normalize_target("[::1]:81").unwrap(), "[0000:0000:0000:0000:0000:0000:0000:0001]:81");
        assert_eq!(normalize_target("example.com").unwrap(), "example.com:8000");
        assert!(normalize_target("a b").is_err());
        assert_eq!(
            validate_target(obj(json!({"target": "a.com", "weight": 1001}))).unwrap_err(),
            OldError::Message("weight must be from 0 to 1000".into())
        );
    }
}
