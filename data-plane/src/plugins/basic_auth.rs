//! basic-auth (kong-0.14-plugins §4.2): `user:password` in Proxy-Authorization or
//! Authorization, checked against the stored SHA-1 of password ‖ consumer id.

use std::sync::Arc;

use gatehouse_shared::credential::basic_auth_digest;
use serde_json::Value;

use super::auth::{self, anonymous, decode_user_pass};
use super::{Access, BuildError, Credential, Plugin, Rejected, Reply, RequestCtx};

pub struct BasicAuth {
    hide_credentials: bool,
    anonymous: Option<Arc<str>>,
}

impl BasicAuth {
    pub fn new(config: &Value) -> Result<BasicAuth, BuildError> {
        Ok(BasicAuth {
            hide_credentials: config.get("hide_credentials").and_then(Value::as_bool).unwrap_or(false),
            anonymous: anonymous(config),
        })
    }

    fn check(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let proxy = ctx.header("proxy-authorization").map(str::to_owned);
        let plain = ctx.header("authorization").map(str::to_owned);
        if !ctx.headers.contains_key("proxy-authorization") && !ctx.headers.contains_key("authorization") {
            let reject = Reply::message(401, "Unauthorized").header("www-authenticate", "Basic realm=\"kong\"");
            return auth::fail(ctx, self.anonymous.as_ref(), reject);
        }
        let creds = ctx.creds;
        let mut found = None;
        for (header, value) in [("proxy-authorization", proxy), ("authorization", plain)] {
            let Some(value) = value else { continue };
            if self.hide_credentials {
                ctx.headers.remove(header);
            }
            if let Some((user, pass)) = decode_user_pass(&value, auth::Scheme::Capitalised("basic"), false) {
                if let Some(cred) = creds.basic.get(user.as_str()) {
                    found = Some((cred, user, pass));
                    break;
                }
            }
        }
        let Some((cred, user, pass)) = found else {
            return auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, "Invalid authentication credentials"));
        };
        let consumer_id = cred.consumer_id.as_deref().unwrap_or_default();
        if !auth::same_secret(basic_auth_digest(&pass, consumer_id).as_bytes(), cred.password.as_bytes()) {
            return auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, "Invalid authentication credentials"));
        }
        let Some(consumer) = creds.owner(&**cred) else { return Err(Reply::unexpected().build()) };
        auth::authenticated(ctx, consumer.clone(), Credential::of(&**cred), Some(&user));
        Ok(())
    }
}

impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        self.check(ctx).into()
    }
}
