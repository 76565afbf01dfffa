//! cors (kong-0.14-plugins §5.2): answers preflight requests itself (unless
//! `preflight_continue`) and puts the CORS fields on every other answer. Origins are matched
//! as regexes compiled when the configuration compiles; the fields are set during `access`, so
//! they reach the answer whichever it is (proxied, or a later plugin's refusal), and the route
//! needs no response phase.

use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde_json::Value;

use super::{Access, BuildError, Plugin, Reply, RequestCtx, ResponseFields};

const ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ALLOW_CREDENTIALS: HeaderName = HeaderName::from_static("access-control-allow-credentials");
const ALLOW_HEADERS: HeaderName = HeaderName::from_static("access-control-allow-headers");
const ALLOW_METHODS: HeaderName = HeaderName::from_static("access-control-allow-methods");
const EXPOSE_HEADERS: HeaderName = HeaderName::from_static("access-control-expose-headers");
const MAX_AGE: HeaderName = HeaderName::from_static("access-control-max-age");

/// How the allowed origin is decided, worked out once per configuration.
enum Origins {
    /// No list, or exactly `*`.
    Any,
    /// One entry that can only be a literal origin: sent as it is.
    Literal(HeaderValue),
    /// Entries searched (unanchored) in the request's Origin; the first match echoes it.
    Patterns(Vec<fancy_regex::Regex>),
}

pub struct Cors {
    origins: Origins,
    credentials: bool,
    /// `Access-Control-Allow-Headers` for preflights; None: echo the request's.
    allow_headers: Option<HeaderValue>,
    allow_methods: HeaderValue,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    preflight_continue: bool,
}

fn joined(config: &Value, key: &str) -> Result<Option<HeaderValue>, BuildError> {
    let Some(items) = config.get(key).and_then(Value::as_array) else { return Ok(None) };
    let text: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
    HeaderValue::from_str(&text.join(",")).map(Some).map_err(|_| BuildError(format!("{key}: not a header value")))
}

impl Cors {
    pub fn new(config: &Value) -> Result<Cors, BuildError> {
        let list: Vec<&str> =
            config.get("origins").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let literal = |o: &str| !o.is_empty() && o.bytes().all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b));
        let origins = match list.as_slice() {
            [] | ["*"] => Origins::Any,
            [one] if literal(one) => Origins::Literal(
                HeaderValue::from_str(one).map_err(|_| BuildError(format!("origin '{one}': not a header value")))?,
            ),
            many => Origins::Patterns(
                many.iter()
                    .map(|o| fancy_regex::Regex::new(o).map_err(|e| BuildError(format!("origin '{o}': {e}"))))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let max_age = match config.get("max_age") {
            Some(Value::Number(n)) => HeaderValue::from_str(&n.to_string()).ok(),
            _ => None,
        };
        Ok(Cors {
            origins,
            credentials: config.get("credentials").and_then(Value::as_bool).unwrap_or(false),
            allow_headers: joined(config, "headers")?,
            allow_methods: joined(config, "methods")?
                .unwrap_or(HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE")),
            expose_headers: joined(config, "exposed_headers")?,
            max_age,
            preflight_continue: config.get("preflight_continue").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// Kong's `configure_origin` and `configure_credentials`.
    fn origin(&self, request_origin: Option<&HeaderValue>, out: &mut ResponseFields) {
        let vary = || HeaderValue::from_static("Origin");
        let allow_all = match &self.origins {
            Origins::Any => {
                out.set(ALLOW_ORIGIN, HeaderValue::from_static("*"));
                true
            }
            Origins::Literal(origin) => {
                out.set(http::header::VARY, vary());
                out.set(ALLOW_ORIGIN, origin.clone());
                false
            }
            Origins::Patterns(patterns) => {
                if patterns.len() == 1 {
                    out.set(http::header::VARY, vary());
                }
                let text = request_origin.and_then(|o| o.to_str().ok());
                if let (Some(origin), Some(text)) = (request_origin, text) {
                    if patterns.iter().any(|p| p.is_match(text).unwrap_or(false)) {
                        out.set(ALLOW_ORIGIN, origin.clone());
                        out.set(http::header::VARY, vary());
                    }
                }
                false
            }
        };
        if self.credentials {
            let yes = || HeaderValue::from_static("true");
            match (allow_all, request_origin) {
                (false, _) => out.set(ALLOW_CREDENTIALS, yes()),
                // `*` cannot go with credentials: the request's origin is echoed instead.
                (true, Some(origin)) => {
                    out.set(ALLOW_ORIGIN, origin.clone());
                    out.set(ALLOW_CREDENTIALS, yes());
                }
                (true, None) => {}
            }
        }
    }
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        let origin = ctx.headers.get(http::header::ORIGIN).cloned();
        if ctx.method != Method::OPTIONS {
            self.origin(origin.as_ref(), &mut ctx.response);
            if let Some(v) = &self.expose_headers {
                ctx.response.set(EXPOSE_HEADERS, v.clone());
            }
            return Access::Continue;
        }
        // A preflight delegated to the upstream gets nothing from the plugin.
        if self.preflight_continue {
            return Access::Continue;
        }
        let mut fields = ResponseFields::default();
        self.origin(origin.as_ref(), &mut fields);
        let requested =
            || ctx.headers.get("access-control-request-headers").cloned().unwrap_or(HeaderValue::from_static(""));
        fields.set(ALLOW_HEADERS, self.allow_headers.clone().unwrap_or_else(requested));
        fields.set(ALLOW_METHODS, self.allow_methods.clone());
        if let Some(v) = &self.max_age {
            fields.set(MAX_AGE, v.clone());
        }
        let mut reply = Reply::empty(204).build();
        fields.apply(reply.headers_mut());
        Access::Respond(reply)
    }
}
