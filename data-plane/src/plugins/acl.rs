//! acl (kong-0.14-plugins §4.7): allow or deny by the authenticated consumer's groups.

use serde_json::Value;

use super::{Access, BuildError, Plugin, Reply, RequestCtx};
use gatehouse_shared::snapshot::strings;

pub struct Acl {
    /// `true` for a whitelist, `false` for a blacklist.
    whitelist: bool,
    groups: Vec<String>,
    hide_groups_header: bool,
}

impl Acl {
    pub fn new(config: &Value) -> Result<Acl, BuildError> {
        let (white, black) = (strings(config, "whitelist"), strings(config, "blacklist"));
        let (whitelist, groups) = match (white.is_empty(), black.is_empty()) {
            (false, true) => (true, white),
            (true, false) => (false, black),
            _ => return Err(BuildError("acl needs exactly one of whitelist and blacklist".into())),
        };
        let hide_groups_header = config.get("hide_groups_header").and_then(Value::as_bool).unwrap_or(false);
        Ok(Acl { whitelist, groups, hide_groups_header })
    }
}

impl Plugin for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        let denied = || Access::Respond(Reply::message(403, "You cannot consume this service").build());
        let consumer = match &ctx.consumer {
            Some(c) => Some(c.clone()),
            None => ctx
                .credential
                .as_ref()
                .and_then(|c| c.consumer_id())
                .and_then(|id| ctx.creds.consumers.get(id).cloned()),
        };
        let Some(consumer) = consumer else { return denied() };
        let member = consumer.groups.iter().any(|g| self.groups.contains(g));
        if member != self.whitelist {
            return denied();
        }
        if !self.hide_groups_header {
            match &consumer.groups_header {
                Some(v) => {
                    ctx.headers.insert("x-consumer-groups", v.clone());
                }
                None => {
                    ctx.headers.remove("x-consumer-groups");
                }
            }
        }
        Access::Continue
    }
}
