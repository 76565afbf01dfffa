//! request-transformer (kong-0.14-plugins §6.1): rewrites the request before it goes upstream,
//! in Kong's order — the method, then the body, headers and query string, each by remove,
//! rename, replace, add and append. Rules are parsed once per configuration.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde_json::{Map, Value};

use super::{Access, BuildError, Plugin, RequestCtx};

/// One `name:value` rule as Kong reads it (`^([^:]+):*(.-)$`): the name up to the first
/// colon, the value after the colons that follow it (none when empty).
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    value: Option<String>,
}

fn rule(entry: &str) -> Rule {
    match entry.split_once(':') {
        Some((name, rest)) => {
            let value = rest.trim_start_matches(':');
            Rule { name: name.to_owned(), value: (!value.is_empty()).then(|| value.to_owned()) }
        }
        None => Rule { name: entry.to_owned(), value: None },
    }
}

/// The rules of one group for one target.
#[derive(Default)]
struct Group {
    body: Vec<Rule>,
    headers: Vec<(Option<HeaderName>, Rule)>,
    query: Vec<Rule>,
}

impl Group {
    fn parse(config: &Value, group: &str) -> Group {
        let list = |k: &str| -> Vec<Rule> {
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
            body: list("body"),
            headers: list("headers").into_iter().map(|r| (HeaderName::from_bytes(r.name.as_bytes()).ok(), r)).collect(),
            query: list("querystring"),
        }
    }
}

pub struct RequestTransformer {
    method: Option<Method>,
    remove: Group,
    rename: Group,
    replace: Group,
    add: Group,
    append: Group,
}

#[derive(Clone, Copy, PartialEq)]
enum BodyKind {
    Json,
    Form,
    Multipart,
}

fn body_kind(ctx: &RequestCtx<'_>) -> Option<BodyKind> {
    let ct = ctx.header("content-type")?.to_ascii_lowercase();
    if ct.contains("application/json") {
        Some(BodyKind::Json)
    } else if ct.contains("multipart/form-data") {
        Some(BodyKind::Multipart)
    } else if ct.contains("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// Arguments in order; a value of `None` is an argument with no `=` (nginx's `true`).
type Args = Vec<(String, Option<String>)>;

fn decode(s: &str) -> String {
    super::ctx::query_decoded(s).into_owned()
}

fn parse_args(text: &str) -> Args {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(p), None),
        })
        .collect()
}

/// nginx's `ngx.encode_args`: every byte but unreserved ones escaped, a space as `%20`.
fn encode_args(args: &Args) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, SET).to_string();
    let pairs: Vec<String> = args
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{}={}", enc(k), enc(v)),
            None => enc(k),
        })
        .collect();
    pairs.join("&")
}

/// Kong's five steps over a list of arguments (query string or form body).
fn transform_args(t: &RequestTransformer, args: &mut Args, pick: fn(&Group) -> &Vec<Rule>, non_empty: bool) -> bool {
    let mut changed = false;
    let has = |args: &Args, name: &str| args.iter().any(|(k, _)| k == name);
    if non_empty {
        for r in pick(&t.remove) {
            args.retain(|(k, _)| *k != r.name);
            changed = true;
        }
        for r in pick(&t.rename) {
            // Kong sets the new name to the old one's values, even to none; the values keep
            // their places.
            let new = r.value.clone().unwrap_or_default();
            args.retain(|(k, _)| *k != new || new == r.name);
            for (k, _) in args.iter_mut().filter(|(k, _)| *k == r.name) {
                k.clone_from(&new);
            }
            changed = true;
        }
        for r in pick(&t.replace) {
            if let Some(first) = args.iter().position(|(k, _)| *k == r.name) {
                args[first].1.clone_from(&r.value);
                let mut seen = 0;
                args.retain(|(k, _)| {
                    seen += usize::from(*k == r.name);
                    *k != r.name || seen == 1
                });
                changed = true;
            }
        }
    }
    for r in pick(&t.add) {
        if !has(args, &r.name) {
            args.push((r.name.clone(), r.value.clone()));
            changed = true;
        }
    }
    for r in pick(&t.append) {
        args.push((r.name.clone(), r.value.clone()));
        changed = true;
    }
    changed
}

fn json_value(v: &Option<String>) -> Value {
    Value::String(v.clone().unwrap_or_default())
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null | Value::Bool(false)))
}

/// Appends to a value as Kong's `append_value`: a string becomes a list, a list grows.
fn appended(current: Option<Value>, value: Value) -> Value {
    match current {
        Some(Value::Array(mut a)) => {
            a.push(value);
            Value::Array(a)
        }
        Some(s @ Value::String(_)) => Value::Array(vec![s, value]),
        _ => Value::Array(vec![value]),
    }
}

impl RequestTransformer {
    pub fn new(config: &Value) -> Result<RequestTransformer, BuildError> {
        let method = match config.get("http_method").and_then(Value::as_str) {
            Some(m) => Some(
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| BuildError(format!("{m} is not supported")))?,
            ),
            None => None,
        };
        Ok(RequestTransformer {
            method,
            remove: Group::parse(config, "remove"),
            rename: Group::parse(config, "rename"),
            replace: Group::parse(config, "replace"),
            add: Group::parse(config, "add"),
            append: Group::parse(config, "append"),
        })
    }

    fn has_body_rules(&self) -> bool {
        [&self.remove, &self.rename, &self.replace, &self.add, &self.append].iter().any(|g| !g.body.is_empty())
    }

    fn has_query_rules(&self) -> bool {
        [&self.remove, &self.rename, &self.replace, &self.add, &self.append].iter().any(|g| !g.query.is_empty())
    }

    fn transform_json(&self, body: &[u8]) -> Option<Bytes> {
        let non_empty = !body.is_empty();
        let mut map: Map<String, Value> = if non_empty {
            // A body that is not a JSON object is left as it is.
            match serde_json::from_slice(body) {
                Ok(Value::Object(m)) => m,
                _ => return None,
            }
        } else {
            Map::new()
        };
        let mut changed = false;
        if non_empty {
            for r in &self.remove.body {
                map.remove(&r.name);
                changed = true;
            }
            for r in &self.rename.body {
                let moved = map.remove(&r.name);
                let new = r.value.clone().unwrap_or_default();
                match moved {
                    Some(v) => map.insert(new, v),
                    None => map.remove(&new),
                };
                changed = true;
            }
            for r in &self.replace.body {
                if truthy(map.get(&r.name)) {
                    map.insert(r.name.clone(), json_value(&r.value));
                    changed = true;
                }
            }
        }
        for r in &self.add.body {
            if !truthy(map.get(&r.name)) {
                map.insert(r.name.clone(), json_value(&r.value));
                changed = true;
            }
        }
        for r in &self.append.body {
            let v = appended(map.remove(&r.name), json_value(&r.value));
            map.insert(r.name.clone(), v);
            changed = true;
        }
        changed.then(|| Bytes::from(serde_json::to_vec(&map).unwrap_or_default()))
    }

    fn transform_form(&self, body: &[u8]) -> Option<Bytes> {
        let mut args = parse_args(&String::from_utf8_lossy(body));
        transform_args(self, &mut args, |g| &g.body, !body.is_empty()).then(|| Bytes::from(encode_args(&args)))
    }

    fn transform_multipart(&self, body: &[u8], content_type: &str) -> Option<Bytes> {
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_owned())?;
        let mut parts = multipart::parse(body, &boundary)?;
        let non_empty = !body.is_empty();
        let mut changed = false;
        if non_empty {
            for r in &self.rename.body {
                if let Some(i) = parts.iter().position(|p| p.name == r.name) {
                    let value = parts.remove(i).value;
                    parts.retain(|p| p.name != r.name);
                    parts.push(multipart::Part::simple(r.value.clone().unwrap_or_default(), value));
                    changed = true;
                }
            }
            for r in &self.remove.body {
                parts.retain(|p| p.name != r.name);
                changed = true;
            }
            for r in &self.replace.body {
                if parts.iter().any(|p| p.name == r.name) {
                    parts.retain(|p| p.name != r.name);
                    parts.push(multipart::Part::simple(r.name.clone(), r.value.clone().unwrap_or_default().into()));
                    changed = true;
                }
            }
        }
        for r in &self.add.body {
            if !parts.iter().any(|p| p.name == r.name) {
                parts.push(multipart::Part::simple(r.name.clone(), r.value.clone().unwrap_or_default().into()));
                changed = true;
            }
        }
        changed.then(|| multipart::render(&parts, &boundary))
    }

    fn transform_headers(&self, ctx: &mut RequestCtx<'_>) {
        for (name, _) in &self.remove.headers {
            if let Some(n) = name {
                ctx.headers.remove(n);
            }
        }
        for (old, r) in &self.rename.headers {
            let (Some(old), Some(new)) =
                (old, r.value.as_deref().and_then(|v| HeaderName::from_bytes(v.as_bytes()).ok()))
            else {
                continue;
            };
            let values: Vec<HeaderValue> = ctx.headers.get_all(old).iter().cloned().collect();
            if values.is_empty() {
                continue;
            }
            ctx.headers.remove(old);
            ctx.headers.remove(&new);
            for v in values {
                ctx.headers.append(new.clone(), v);
            }
        }
        let value = |r: &Rule| HeaderValue::from_str(r.value.as_deref().unwrap_or_default()).ok();
        for (name, r) in &self.replace.headers {
            let (Some(name), Some(v)) = (name, value(r)) else { continue };
            if ctx.headers.contains_key(name) {
                self.set_header(ctx, name, v, false);
            }
        }
        for (name, r) in &self.add.headers {
            let (Some(name), Some(v)) = (name, value(r)) else { continue };
            if !ctx.headers.contains_key(name) {
                self.set_header(ctx, name, v, false);
            }
        }
        for (name, r) in &self.append.headers {
            let (Some(name), Some(v)) = (name, value(r)) else { continue };
            self.set_header(ctx, name, v, true);
        }
    }

    /// Sets a header; `host` also becomes the upstream request's Host, as in Kong.
    fn set_header(&self, ctx: &mut RequestCtx<'_>, name: &HeaderName, value: HeaderValue, append: bool) {
        if name == http::header::HOST {
            ctx.upstream_host = Some(value.clone());
        }
        if append {
            ctx.headers.append(name.clone(), value);
        } else {
            ctx.headers.insert(name.clone(), value);
        }
    }

    fn transform_query(&self, ctx: &mut RequestCtx<'_>) {
        if !self.has_query_rules() {
            return;
        }
        let mut args = parse_args(ctx.query.as_deref().unwrap_or_default());
        if transform_args(self, &mut args, |g| &g.query, true) {
            let encoded = encode_args(&args);
            ctx.query = (!encoded.is_empty()).then(|| encoded.into());
        }
    }

    fn run(&self, ctx: &mut RequestCtx<'_>) {
        if let Some(method) = &self.method {
            ctx.method_override = Some(method.clone());
            // A form body also goes into the query string of a GET, HEAD or TRACE.
            if self.body_into_query() && body_kind(ctx) == Some(BodyKind::Form) {
                if let Some(body) = ctx.read_body() {
                    let mut query = parse_args(ctx.query.as_deref().unwrap_or_default());
                    for (k, v) in parse_args(&String::from_utf8_lossy(&body)) {
                        query.retain(|(q, _)| *q != k);
                        query.push((k, v));
                    }
                    ctx.query = Some(encode_args(&query).into());
                }
            }
        }
        if self.has_body_rules() {
            if let Some(kind) = body_kind(ctx) {
                // A body too large to hold is sent on untouched.
                if let Some(body) = ctx.read_body() {
                    let content_type = ctx.header("content-type").unwrap_or_default().to_owned();
                    let changed = match kind {
                        BodyKind::Json => self.transform_json(&body),
                        BodyKind::Form => self.transform_form(&body),
                        BodyKind::Multipart => self.transform_multipart(&body, &content_type),
                    };
                    if let Some(new) = changed {
                        ctx.set_body(new);
                    }
                }
            }
        }
        self.transform_headers(ctx);
        self.transform_query(ctx);
    }

    /// The method it sends requests on with is one whose form body goes into the query.
    fn body_into_query(&self) -> bool {
        self.method.as_ref().is_some_and(|m| matches!(*m, Method::GET | Method::HEAD | Method::TRACE))
    }
}

impl Plugin for RequestTransformer {
    fn name(&self) -> &'static str {
        "request-transformer"
    }

    /// A method it changes frames the upstream's answer (a HEAD's has no body), and a HEAD
    /// sent on as another method gets its answer's head alone: the engine sees to both.
    fn access_only(&self) -> bool {
        true
    }

    fn reads_body(&self, _chunked: bool) -> bool {
        self.has_body_rules() || self.body_into_query()
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        self.run(ctx);
        Access::Continue
    }
}

/// Enough of multipart/form-data to edit its fields: parts in order, rendered again with the
/// same boundary.
mod multipart {
    use bytes::{Bytes, BytesMut};

    pub struct Part {
        pub name: String,
        /// The part's head lines as received (a file part keeps its filename and type).
        head: Vec<u8>,
        pub value: Bytes,
    }

    impl Part {
        pub fn simple(name: String, value: Bytes) -> Part {
            let head = format!("Content-Disposition: form-data; name=\"{name}\"").into_bytes();
            Part { name, head, value }
        }
    }

    /// The parts, or `None` when the body is not multipart with this boundary.
    pub fn parse(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut rest = body;
        let start = memchr::memmem::find(rest, delimiter.as_bytes())?;
        rest = &rest[start + delimiter.len()..];
        loop {
            if rest.starts_with(b"--") {
                return Some(parts);
            }
            rest = rest.strip_prefix(b"\r\n")?;
            let end = memchr::memmem::find(rest, format!("\r\n{delimiter}").as_bytes())?;
            let part = &rest[..end];
            rest = &rest[end + 2 + delimiter.len()..];
            let split = memchr::memmem::find(part, b"\r\n\r\n")?;
            let (head, value) = (&part[..split], &part[split + 4..]);
            let head_text = String::from_utf8_lossy(head);
            let name = head_text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?
                .split(';')
                .find_map(|p| p.trim().strip_prefix("name="))?
                .trim_matches('"')
                .to_owned();
            parts.push(Part { name, head: head.to_vec(), value: Bytes::copy_from_slice(value) });
        }
    }

    pub fn render(parts: &[Part], boundary: &str) -> Bytes {
        let mut out = BytesMut::new();
        for p in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(&p.head);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&p.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_read_like_kong() {
        let r = rule("a:b:c");
        assert_eq!((r.name.as_str(), r.value.as_deref()), ("a", Some("b:c")));
        let r = rule("a::b");
        assert_eq!((r.name.as_str(), r.value.as_deref()), ("a", Some("b")));
        let r = rule("bare");
        assert_eq!((r.name.as_str(), r.value), ("bare", None));
    }

    #[test]
    fn json_body_steps_in_order() {
        let t = RequestTransformer::new(&json!({
            "remove": {"body": ["secret"]}, "rename": {"body": ["old:new"]}, "replace": {"body": ["r:R"]},
            "add": {"body": ["a:1", "r:ignored"]}, "append": {"body": ["list:x", "s:y"]}
        }))
        .unwrap();
        let out = t.transform_json(br#"{"secret":1,"old":2,"r":"v","list":["w"],"s":"t"}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"new": 2, "r": "R", "a": "1", "list": ["w", "x"], "s": ["t", "y"]}));
        assert!(t.transform_json(b"not json").is_none(), "left untouched");
    }

    #[test]
    fn form_and_multipart_bodies() {
        let t = RequestTransformer::new(&json!({"remove": {"body": ["b"]}, "add": {"body": ["c:3"]}})).unwrap();
        assert_eq!(&t.transform_form(b"a=1&b=2").unwrap()[..], b"a=1&c=3");
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--XX--\r\n";
        let out = t.transform_multipart(body, "multipart/form-data; boundary=XX").unwrap();
        let parts = multipart::parse(&out, "XX").unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(&parts[1].value[..], b"3");
    }
}
