//! request-size-limiting (kong-0.14-plugins §5.4): refuses bodies over `allowed_payload_size`
//! megabytes. It runs after the auth plugins, so per-consumer limits apply.

use serde_json::Value;

use super::{Access, Plugin, Rejected, Reply, RequestCtx};

pub struct RequestSizeLimiting {
    allowed: u64,
}

impl RequestSizeLimiting {
    pub fn new(config: &Value) -> RequestSizeLimiting {
        let mb = config.get("allowed_payload_size").and_then(Value::as_f64).unwrap_or(128.0).max(0.0);
        RequestSizeLimiting { allowed: (mb * 1_048_576.0) as u64 }
    }

    fn too_large(ctx: &RequestCtx<'_>) -> Rejected {
        let expects = ctx.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
        Reply::message(if expects { 417 } else { 413 }, "Request size limit exceeded").build()
    }
}

impl Plugin for RequestSizeLimiting {
    fn name(&self) -> &'static str {
        "request-size-limiting"
    }

    fn access_only(&self) -> bool {
        true
    }

    /// Only a body without a length, under a limit below what plugins read, is measured.
    fn reads_body(&self, chunked: bool) -> bool {
        chunked && self.allowed < super::ctx::BODY_LIMIT as u64
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if let Some(len) = ctx.header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            return if len > self.allowed { Access::Respond(Self::too_large(ctx)) } else { Access::Continue };
        }
        // A body without Content-Length is measured in memory when the limit is below what
        // plugins buffer (1 MiB: the engine read it whole, or found it longer than that);
        // larger limits are enforced on declared lengths only.
        let over = match &*ctx.body {
            crate::message::ReqBody::Full(body) => body.len() as u64 > self.allowed,
            crate::message::ReqBody::Unread => self.allowed < super::ctx::BODY_LIMIT as u64,
            crate::message::ReqBody::Empty => false,
        };
        if over {
            Access::Respond(Self::too_large(ctx))
        } else {
            Access::Continue
        }
    }
}
