//! Request bodies: JSON, `application/x-www-form-urlencoded` and `multipart/form-data`, all
//! decoded into one JSON object so that handlers see a single shape. Form keys nest on dots
//! (`config.minute=20`) and build arrays from `a[]=`, `a[1]=` or repeated keys; values stay
//! strings here and are coerced by the entity's schema, which knows the types.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Bodies above this are refused with 413 before they are parsed.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// The deepest nesting a body may have, in form keys (`a.b[c]` is three levels) and in JSON.
/// Kong's own values are a few levels deep; the bound exists because decoding, coercion and
/// even dropping a nested value recurse, and a key nested thousands of levels deep would
/// otherwise overflow the stack and abort the process.
pub const MAX_DEPTH: usize = 32;

/// A decoded request body.
#[derive(Debug, Default, Clone)]
pub struct Input {
    pub map: Map<String, Value>,
    /// True when the values came from a form (strings to be coerced).
    pub form: bool,
}

impl Input {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let declared_len =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if declared_len.is_some_and(|n| n > MAX_BODY) {
            return Err(too_large());
        }
        match content_type.as_deref() {
            Some(ct) if ct.starts_with("multipart/form-data") => {
                let mut multipart = Multipart::from_request(req, state)
                    .await
                    .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
                let mut pairs = Vec::new();
                loop {
                    let field = multipart
                        .next_field()
                        .await
                        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
                    let Some(field) = field else { break };
                    let name = field.name().unwrap_or_default().to_string();
                    let text = field
                        .text()
                        .await
                        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
                    pairs.push((name, text));
                }
                Ok(Input { map: decode_pairs(pairs)?, form: true })
            }
            Some(ct) if ct.starts_with("application/json") => {
                let bytes = read(req.into_body()).await?;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(map)) if too_deep(&map) => Err(nested_too_deep()),
                    Ok(Value::Object(map)) if holds_nul(&map) => Err(nul_in_body()),
                    Ok(Value::Object(map)) => Ok(Input { map, form: false }),
                    Ok(_) => Err(ApiError::bad_request("Cannot parse JSON body: expected an object")),
                    Err(_) => Err(ApiError::bad_request("Cannot parse JSON body")),
                }
            }
            Some(ct) if ct.starts_with("application/x-www-form-urlencoded") => {
                let bytes = read(req.into_body()).await?;
                let pairs = url::form_urlencoded::parse(&bytes).into_owned().collect();
                Ok(Input { map: decode_pairs(pairs)?, form: true })
            }
            Some(_) => Err(ApiError::UnsupportedMediaType),
            None => {
                let bytes = read(req.into_body()).await?;
                if bytes.is_empty() {
                    Ok(Input::default())
                } else {
                    Err(ApiError::UnsupportedMediaType)
                }
            }
        }
    }
}

/// Postgres cannot store a NUL in text, and SQLite would store one Postgres refuses: the
/// character is refused in any key or string of a body, the same on both stores.
fn holds_nul(map: &Map<String, Value>) -> bool {
    let mut objects = vec![map];
    let mut values: Vec<&Value> = Vec::new();
    loop {
        if let Some(m) = objects.pop() {
            if m.keys().any(|k| k.contains('\0')) {
                return true;
            }
            values.extend(m.values());
            continue;
        }
        let Some(v) = values.pop() else { return false };
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(a) => values.extend(a),
            Value::Object(m) => objects.push(m),
            _ => {}
        }
    }
}

fn nul_in_body() -> ApiError {
    ApiError::bad_request("Invalid request body: NUL characters are not allowed")
}

fn nested_too_deep() -> ApiError {
    ApiError::bad_request(format!("Cannot parse request body: nested deeper than {MAX_DEPTH} levels"))
}

/// Whether a JSON object nests deeper than [`MAX_DEPTH`]; walked with an explicit stack so
/// that the check itself cannot recurse. (serde_json stops at 128 levels while parsing.)
fn too_deep(map: &Map<String, Value>) -> bool {
    let mut stack: Vec<(&Value, usize)> = map.values().map(|v| (v, 1)).collect();
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        for child in children {
            if depth + 1 > MAX_DEPTH {
                return true;
            }
            stack.push((child, depth + 1));
        }
    }
    false
}

fn too_large() -> ApiError {
    ApiError::message(http::StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
}

/// A body over the limit is a 413; one that cannot be read (a broken chunked encoding, a
/// connection cut short) is the client's fault too, a 400, never "too large".
async fn read(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            cause = c.source();
        }
        ApiError::bad_request("Invalid request: the body could not be read")
    })
}

/// One step of a form key: `a`, `a[]`, `a[3]`.
enum Step<'a> {
    Key(&'a str),
    Push,
    Index(u64),
}

/// The steps of a form key, or `None` when it nests deeper than [`MAX_DEPTH`].
fn parse_key(key: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        steps.push(Step::Key(name));
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            let idx = &inner[..end];
            steps.push(if idx.is_empty() {
                Step::Push
            } else {
                idx.parse().map(Step::Index).unwrap_or(Step::Key(idx))
            });
            rest = &inner[end + 1..];
            if steps.len() > MAX_DEPTH {
                return None;
            }
        }
        if steps.len() > MAX_DEPTH {
            return None;
        }
    }
    Some(steps)
}

/// Builds the nested object from form pairs; a key nested too deep is a 400.
pub fn decode_pairs(pairs: Vec<(String, String)>) -> Result<Map<String, Value>, ApiError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        if key.contains('\0') || value.contains('\0') {
            return Err(nul_in_body());
        }
        let steps = parse_key(&key).ok_or_else(nested_too_deep)?;
        insert(&mut root, &steps, Value::String(value));
    }
    let Value::Object(mut map) = root else { return Ok(Map::new()) };
    for v in map.values_mut() {
        indexed_to_arrays(v);
    }
    Ok(map)
}

fn insert(node: &mut Value, steps: &[Step<'_>], value: Value) {
    let Some((step, rest)) = steps.split_first() else { return };
    match step {
        Step::Key(_) | Step::Index(_) if !node.is_object() => {
            *node = Value::Object(Map::new());
            insert(node, steps, value);
        }
        Step::Key(k) => {
            let Value::Object(m) = node else { return };
            if rest.is_empty() {
                match m.get_mut(*k) {
                    // A repeated plain key collects into an array.
                    Some(Value::Array(a)) => a.push(value),
                    Some(existing @ Value::String(_)) => {
                        let first = existing.take();
                        *existing = Value::Array(vec![first, value]);
                    }
                    _ => {
                        m.insert((*k).to_string(), value);
                    }
                }
            } else {
                let child = m.entry((*k).to_string()).or_insert(Value::Null);
                insert(child, rest, value);
            }
        }
        Step::Index(i) => {
            let Value::Object(m) = node else { return };
            let child = m.entry(i.to_string()).or_insert(Value::Null);
            if rest.is_empty() {
                *child = value;
            } else {
                insert(child, rest, value);
            }
        }
        Step::Push => {
            if !node.is_array() {
                let prior = node.take();
                *node = Value::Array(match prior {
                    Value::Null => vec![],
                    other => vec![other],
                });
            }
            if let Value::Array(a) = node {
                if rest.is_empty() {
                    a.push(value);
                } else {
                    let mut child = Value::Null;
                    insert(&mut child, rest, value);
                    a.push(child);
                }
            }
        }
    }
}

/// Objects whose keys are all numbers came from `a[1]=x&a[2]=y`: turn them into arrays.
fn indexed_to_arrays(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                indexed_to_arrays(child);
            }
            if !m.is_empty() && m.keys().all(|k| k.parse::<u64>().is_ok()) {
                let mut items: Vec<(u64, Value)> =
                    m.iter_mut().filter_map(|(k, v)| k.parse().ok().map(|i| (i, v.take()))).collect();
                items.sort_by_key(|(i, _)| *i);
                *v = Value::Array(items.into_iter().map(|(_, v)| v).collect());
            }
        }
        Value::Array(a) => a.iter_mut().for_each(indexed_to_arrays),
        _ => {}
    }
}

/// Old-DAO form coercion of top-level values: `""` is null, `"true"`/`"false"` are booleans.
/// Deeper values are left to the schema (plugin configs coerce by field type).
pub fn coerce_old_layer(input: &mut Input) {
    if !input.form {
        return;
    }
    for v in input.map.values_mut() {
        if let Value::String(s) = v {
            match s.as_str() {
                "" => *v = Value::Null,
                "true" => *v = Value::Bool(true),
                "false" => *v = Value::Bool(false),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Value {
        Value::Object(decode_pairs(p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap())
    }

    #[test]
    fn nesting_is_bounded() {
        let at_limit = format!("a{}", ".a".repeat(MAX_DEPTH - 1));
        assert!(decode_pairs(vec![(at_limit, "1".into())]).is_ok());
        for key in [
            format!("a{}", ".a".repeat(MAX_DEPTH)),
            format!("a{}", "[a]".repeat(MAX_DEPTH)),
            format!("a{}", "[]".repeat(7000)),
            format!("config{}", ".a".repeat(7000)),
        ] {
            assert!(decode_pairs(vec![(key.clone(), "1".into())]).is_err(), "{}", &key[..40]);
        }
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        assert!(too_deep(json!({ "a": deep }).as_object().unwrap()));
        assert!(!too_deep(json!({"a": {"b": [1, {"c": 2}]}}).as_object().unwrap()));
    }

    #[test]
    fn dotted_keys_nest() {
        assert_eq!(
            pairs(&[("service.id", "x"), ("config.a.b", "1")]),
            json!({"service": {"id": "x"}, "config": {"a": {"b": "1"}}})
        );
    }

    #[test]
    fn array_notations() {
        assert_eq!(pairs(&[("hosts[]", "a"), ("hosts[]", "b")]), json!({"hosts": ["a", "b"]}));
        assert_eq!(pairs(&[("hosts[2]", "b"), ("hosts[1]", "a")]), json!({"hosts": ["a", "b"]}));
        assert_eq!(pairs(&[("hosts", "a"), ("hosts", "b")]), json!({"hosts": ["a", "b"]}));
        assert_eq!(pairs(&[("hosts", "a")]), json!({"hosts": "a"}));
        assert_eq!(
            pairs(&[("config.whitelist[]", "a"), ("config.whitelist[]", "b")]),
            json!({"config": {"whitelist": ["a", "b"]}})
        );
    }
}
