//! response-transformer (kong-0.14-plugins §6.2): edits the answer's header fields (remove,
//! replace, add, append) and, for a JSON answer, its top-level keys. The body is held only
//! when a JSON rule exists and the answer says `application/json`; any other body streams
//! through untouched.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::response::Parts;
use serde_json::{Map, Value};

use super::{BodyFilter, BuildError, Plugin};

/// `name:value` as Kong reads it: the name up to the first colon, the value after the colons
/// that follow (none when empty).
fn rule(entry: &str) -> (String, Option<String>) {
    match entry.split_once(':') {
        Some((name, rest)) => {
            let value = rest.trim_start_matches(':');
            (name.to_owned(), (!value.is_empty()).then(|| value.to_owned()))
        }
        None => (entry.to_owned(), None),
    }
}

#[derive(Default)]
struct Group {
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    json: Vec<(String, Option<String>)>,
}

impl Group {
    fn parse(config: &Value, group: &str) -> Group {
        let list = |k: &str| -> Vec<(String, Option<String>)> {
            config
                .get(group)
                .and_then(|g| g.get(k))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(rule)
                .collect()
        };
        Group {
            headers: list("headers")
                .into_iter()
                .filter_map(|(n, v)| {
                    let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                    Some((name, v.and_then(|v| HeaderValue::from_str(&v).ok())))
                })
                .collect(),
            json: list("json"),
        }
    }
}

/// The rules, shared by the plugin and the body filters of the answers it is rewriting.
struct Rules {
    remove: Group,
    replace: Group,
    add: Group,
    append: Group,
}

pub struct ResponseTransformer {
    rules: Arc<Rules>,
}

fn is_json(response: &Parts) -> bool {
    response
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("application/json"))
}

/// A value as Kong writes it into the body: always a string (a rule without a value writes
/// `"null"`, as `cjson.encode(nil)` does).
fn string_value(v: &Option<String>) -> Value {
    Value::String(v.clone().unwrap_or_else(|| "null".to_owned()))
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null | Value::Bool(false)))
}

impl ResponseTransformer {
    pub fn new(config: &Value) -> Result<ResponseTransformer, BuildError> {
        Ok(ResponseTransformer {
            rules: Arc::new(Rules {
                remove: Group::parse(config, "remove"),
                replace: Group::parse(config, "replace"),
                add: Group::parse(config, "add"),
                append: Group::parse(config, "append"),
            }),
        })
    }
}

impl Rules {
    fn has_json_rules(&self) -> bool {
        [&self.remove, &self.replace, &self.add, &self.append].iter().any(|g| !g.json.is_empty())
    }

    /// The JSON rules applied to a body; `None` when it is not a JSON object (then sent as it
    /// came, where Kong 0.14 would send nothing at all).
    fn transform(&self, body: &[u8]) -> Option<Bytes> {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else { return None };
        let map: &mut Map<String, Value> = &mut map;
        for (name, _) in &self.remove.json {
            map.remove(name);
        }
        for (name, value) in &self.replace.json {
            if truthy(map.get(name)) {
                map.insert(name.clone(), string_value(value));
            }
        }
        for (name, value) in &self.add.json {
            if !truthy(map.get(name)) {
                map.insert(name.clone(), string_value(value));
            }
        }
        for (name, value) in &self.append.json {
            let next = match map.remove(name) {
                Some(Value::Array(mut a)) => {
                    a.push(string_value(value));
                    Value::Array(a)
                }
                Some(s @ Value::String(_)) => Value::Array(vec![s, string_value(value)]),
                _ => Value::Array(vec![string_value(value)]),
            };
            map.insert(name.clone(), next);
        }
        serde_json::to_vec(map).ok().map(Bytes::from)
    }
}

impl Plugin for ResponseTransformer {
    fn name(&self) -> &'static str {
        "response-transformer"
    }

    fn header_filter(&self, response: &mut Parts) {
        let rules = &self.rules;
        let h = &mut response.headers;
        for (name, _) in &rules.remove.headers {
            h.remove(name);
        }
        for (name, value) in &rules.replace.headers {
            if let (true, Some(v)) = (h.contains_key(name), value) {
                h.insert(name.clone(), v.clone());
            }
        }
        for (name, value) in &rules.add.headers {
            if let (false, Some(v)) = (h.contains_key(name), value) {
                h.insert(name.clone(), v.clone());
            }
        }
        for (name, value) in &rules.append.headers {
            if let Some(v) = value {
                h.append(name.clone(), v.clone());
            }
        }
        // The body is about to change length.
        if rules.has_json_rules() && is_json(response) {
            response.headers.remove(CONTENT_LENGTH);
        }
    }

    fn filters_body(&self) -> bool {
        self.rules.has_json_rules()
    }

    fn body_filter(&self, response: &Parts) -> Option<Box<dyn BodyFilter>> {
        (self.rules.has_json_rules() && is_json(response))
            .then(|| Box::new(JsonRewrite { rules: self.rules.clone(), held: BytesMut::new() }) as Box<dyn BodyFilter>)
    }
}

/// Holds a JSON answer whole, then rewrites it.
struct JsonRewrite {
    rules: Arc<Rules>,
    held: BytesMut,
}

impl BodyFilter for JsonRewrite {
    fn chunk(&mut self, chunk: Bytes) -> Bytes {
        self.held.extend_from_slice(&chunk);
        Bytes::new()
    }

    fn end(&mut self) -> Option<Bytes> {
        let held = std::mem::take(&mut self.held).freeze();
        Some(self.rules.transform(&held).unwrap_or(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_rules_in_kongs_order() {
        let t = ResponseTransformer::new(&json!({
            "remove": {"json": ["secret"]}, "replace": {"json": ["r:R", "absent:x"]},
            "add": {"json": ["a:1", "r:no"]}, "append": {"json": ["list:x", "s:y", "new:z"]}
        }))
        .unwrap();
        let out = t.rules.transform(br#"{"secret":1,"r":"v","list":["w"],"s":"t"}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"r": "R", "a": "1", "list": ["w", "x"], "s": ["t", "y"], "new": ["z"]}));
        assert!(t.rules.transform(b"[1,2]").is_none(), "not an object: left as it came");
    }
}
