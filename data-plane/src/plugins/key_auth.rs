//! key-auth (kong-0.14-plugins §4.1): an API key from a header, the query string or the body.

use std::sync::Arc;

use http::Method;
use serde_json::Value;

use super::auth::{self, anonymous};
use super::{Access, BuildError, Credential, Plugin, Rejected, Reply, RequestCtx};

pub struct KeyAuth {
    /// Header form (lower-case) and the name as configured (query and body are case-sensitive).
    key_names: Vec<(http::HeaderName, String)>,
    hide_credentials: bool,
    anonymous: Option<Arc<str>>,
    key_in_body: bool,
    run_on_preflight: bool,
}

enum Found {
    None,
    One(String),
    Duplicate,
    /// `key_in_body` and no key before the body: the body has to be read to go on.
    NeedBody,
}

impl KeyAuth {
    pub fn new(config: &Value) -> Result<KeyAuth, BuildError> {
        let names = config.get("key_names").and_then(Value::as_array).cloned().unwrap_or_default();
        let key_names = names
            .iter()
            .filter_map(Value::as_str)
            .map(|n| {
                http::HeaderName::from_bytes(n.as_bytes())
                    .map(|h| (h, n.to_string()))
                    .map_err(|_| BuildError(format!("bad key name '{n}'")))
            })
            .collect::<Result<_, _>>()?;
        let flag = |k: &str, d: bool| config.get(k).and_then(Value::as_bool).unwrap_or(d);
        Ok(KeyAuth {
            key_names,
            hide_credentials: flag("hide_credentials", false),
            anonymous: anonymous(config),
            key_in_body: flag("key_in_body", false),
            run_on_preflight: flag("run_on_preflight", true),
        })
    }

    /// The first key name with a string value, header before query before body, as Kong looks:
    /// a name given twice is a duplicate, and a value that is not a string (`?apikey` with no
    /// `=`, a number in a JSON body) is passed over. The body is looked at only when the search
    /// gets that far, so a key in a header needs no readable body.
    fn find(&self, ctx: &RequestCtx<'_>, body: Option<&Value>) -> (Found, Option<usize>, u8) {
        for (i, (header, name)) in self.key_names.iter().enumerate() {
            let mut values = ctx.headers.get_all(header).iter();
            if let Some(v) = values.next() {
                if values.next().is_some() {
                    return (Found::Duplicate, Some(i), 0);
                }
                return (Found::One(String::from_utf8_lossy(v.as_bytes()).into_owned()), Some(i), 0);
            }
            let mut args = ctx.query_values(name);
            match (args.pop(), args.is_empty()) {
                (None, _) | (Some(None), true) => {}
                (Some(Some(v)), true) => return (Found::One(v), Some(i), 1),
                (Some(_), false) => return (Found::Duplicate, Some(i), 1),
            }
            if !self.key_in_body {
                continue;
            }
            let Some(body) = body else { return (Found::NeedBody, None, 2) };
            match body.get(name) {
                Some(Value::String(s)) => return (Found::One(s.clone()), Some(i), 2),
                Some(Value::Array(_) | Value::Object(_)) => return (Found::Duplicate, Some(i), 2),
                _ => {}
            }
        }
        (Found::None, None, 0)
    }

    fn run(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        if !matches!(self.find(ctx, None).0, Found::NeedBody) {
            return self.check(ctx, None);
        }
        match super::body::parse(ctx) {
            Some(body) => self.check(ctx, Some(&body)),
            None => auth::fail(ctx, self.anonymous.as_ref(), Reply::exit(400, "Cannot process request body")),
        }
    }

    fn check(&self, ctx: &mut RequestCtx<'_>, body: Option<&Value>) -> Result<(), Rejected> {
        let (found, index, place) = self.find(ctx, body);
        let key = match found {
            Found::One(k) => k,
            Found::Duplicate => {
                return auth::fail(ctx, self.anonymous.as_ref(), Reply::exit(401, "Duplicate API key found"))
            }
            Found::None | Found::NeedBody => {
                let reject =
                    Reply::exit(401, "No API key found in request").header("www-authenticate", "Key realm=\"kong\"");
                return auth::fail(ctx, self.anonymous.as_ref(), reject);
            }
        };
        if self.hide_credentials {
            if let Some((header, name)) = index.map(|i| &self.key_names[i]) {
                match place {
                    0 => {
                        ctx.headers.remove(header);
                    }
                    1 => ctx.remove_query_arg(name),
                    _ => super::body::remove_field(ctx, name),
                }
            }
        }
        let creds = ctx.creds;
        let Some(credential) = creds.keys.get(key.as_str()) else {
            return auth::fail(ctx, self.anonymous.as_ref(), Reply::exit(403, "Invalid authentication credentials"));
        };
        let Some(consumer) = creds.owner(&**credential) else {
            tracing::error!(credential = %credential.id, "key-auth credential without a consumer");
            return Err(Reply::unexpected().build());
        };
        auth::authenticated(ctx, consumer.clone(), Credential::of(&**credential), None);
        Ok(())
    }
}

impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn reads_body(&self, _chunked: bool) -> bool {
        self.key_in_body
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if !self.run_on_preflight && ctx.method == Method::OPTIONS {
            return Access::Continue;
        }
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        if self.key_in_body {
            return self.run(ctx).into();
        }
        self.check(ctx, None).into()
    }
}
