//! The Service entity and its `url` shorthand.

use serde_json::{Map, Value};

use super::{Field, Kind, Schema, Violation};
use crate::validate;

fn http() -> Value {
    Value::from("http")
}
fn port80() -> Value {
    Value::from(80)
}
fn five() -> Value {
    Value::from(5)
}
fn minute_ms() -> Value {
    Value::from(60_000)
}

fn check_name(s: &str) -> Result<(), String> {
    if s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'-')) {
        Ok(())
    } else {
        Err(format!("invalid value '{s}': it must only contain alphanumeric and '., -, _, ~' characters"))
    }
}

fn check_protocol(s: &str) -> Result<(), String> {
    match s {
        "http" | "https" => Ok(()),
        _ => Err("expected one of: http, https".to_string()),
    }
}

const TIMEOUT: Kind = Kind::Int { min: Some(0), max: Some(2_147_483_646) };

pub static SERVICE: Schema = Schema {
    name: "services",
    has_updated_at: true,
    fields: &[
        Field::new("name", Kind::Str).check(check_name),
        Field::new("retries", Kind::Int { min: Some(0), max: Some(32767) }).default(five),
        Field::new("protocol", Kind::Str).required().default(http).check(check_protocol),
        Field::new("host", Kind::Str).required().check(validate::check_host),
        Field::new("port", Kind::Int { min: Some(0), max: Some(65535) }).required().default(port80),
        Field::new("path", Kind::Str).check(validate::check_plain_path),
        Field::new("connect_timeout", TIMEOUT).default(minute_ms),
        Field::new("write_timeout", TIMEOUT).default(minute_ms),
        Field::new("read_timeout", TIMEOUT).default(minute_ms),
    ],
    entity_check: None,
};

/// Splits the write-only `url` attribute into `protocol`, `host`, `port` and `path`, which it
/// replaces entirely (`path` is null when the URL has none; the port defaults by scheme).
///
/// # Errors
/// A violation shaped as Kong reports an unusable URL.
pub fn parse_url(url: &str) -> Result<Map<String, Value>, Violation> {
    let unusable = || {
        let mut v = Violation::default();
        v.fields.insert("host".into(), Value::from("required field missing"));
        v.fields.insert("path".into(), Value::from("should start with: /"));
        v
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(unusable)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority).ok_or_else(unusable)?;
    if host.is_empty() {
        return Err(unusable());
    }
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = &tail[..path_end];
    let scheme = scheme.to_ascii_lowercase();
    let port = match port {
        Some(p) => Value::from(p),
        None if scheme == "https" => Value::from(443),
        None => Value::from(80),
    };
    let mut m = Map::new();
    m.insert("protocol".into(), Value::from(scheme));
    m.insert("host".into(), Value::from(host));
    m.insert("port".into(), port);
    m.insert("path".into(), if path.is_empty() { Value::Null } else { Value::from(path) });
    Ok(m)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; None when the port is not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<i64>)> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        return match rest.strip_prefix(':') {
            Some(p) => Some((addr, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((addr, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((authority, None)),
    }
}
