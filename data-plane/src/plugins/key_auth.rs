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

    /// The first key name with a value, header before query before body.
    fn find(&self, ctx: &RequestCtx<'_>, body: Option<&Value>) -> (Found, Option<usize>, u8) {
        for (i, (header, name)) in self.key_names.iter().enumerate() {
            let mut values = ctx.headers.get_all(header).iter();
            if let Some(v) = values.next() {
                if values.next().is_some() {
                    return (Found::Duplicate, Some(i), 0);
                }
                return (Found::One(String::from_utf8_lossy(v.as_bytes()).into_owned()), Some(i), 0);
            }
            match ctx.query_arg(name) {
                (_, 0) => {}
                (Some(v), 1) => return (Found::One(v.into_owned()), Some(i), 1),
                _ => return (Found::Duplicate, Some(i), 1),
            }
            if let Some(v) = body.and_then(|b| b.get(name)) {
                return match v {
                    Value::String(s) => (Found::One(s.clone()), Some(i), 2),
                    Value::Array(_) => (Found::Duplicate, Some(i), 2),
                    other => (Found::One(other.to_string()), Some(i), 2),
                };
            }
        }
        (Found::None, None, 0)
    }

    async fn run(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let body = if self.key_in_body {
            match super::body::parse(ctx).await {
                Some(b) => Some(b),
                None => return Err(Reply::exit(400, "Cannot process request body").build()),
            }
        } else {
            None
        };
        self.check(ctx, body.as_ref())
    }

    fn check(&self, ctx: &mut RequestCtx<'_>, body: Option<&Value>) -> Result<(), Rejected> {
        let (found, index, place) = self.find(ctx, body);
        let key = match found {
            Found::One(k) => k,
            Found::Duplicate => {
                return auth::fail(ctx, self.anonymous.as_ref(), Reply::exit(401, "Duplicate API key found"))
            }
            Found::None => {
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
        let config = ctx.config;
        let Some(credential) = config.creds.keys.get(&key) else {
            return auth::fail(ctx, self.anonymous.as_ref(), Reply::exit(403, "Invalid authentication credentials"));
        };
        let Some(consumer) = config.creds.owner(credential) else {
            tracing::error!(credential = ?credential.get("id"), "key-auth credential without a consumer");
            return Err(Reply::unexpected().build());
        };
        auth::authenticated(ctx, consumer.clone(), Credential::Row(credential.clone()), None);
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

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if !self.run_on_preflight && ctx.method == Method::OPTIONS {
            return Access::Continue;
        }
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        if self.key_in_body {
            return Access::Wait(Box::pin(self.run(ctx)));
        }
        self.check(ctx, None).into()
    }
}
