//! request-termination (Kong 0.14.1's handler): answers every request itself with a fixed
//! status and either Kong's `{"message": …}` or a configured body and type. It never reaches
//! the upstream.

use bytes::Bytes;
use serde_json::Value;

use super::{Access, Plugin, Reply, RequestCtx};

pub struct RequestTermination {
    status: u16,
    answer: Answer,
}

enum Answer {
    /// The responses helper: the message, else the status's default text (or nothing).
    Message(Option<String>),
    /// A body as configured, with its Content-Type (JSON when none is given).
    Body { body: Bytes, content_type: String },
}

impl RequestTermination {
    pub fn new(config: &Value) -> RequestTermination {
        let text = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_owned);
        let status = config.get("status_code").and_then(Value::as_f64).map_or(503, |s| s as u16);
        let answer = match text("body") {
            Some(body) => Answer::Body {
                body: Bytes::from(body),
                content_type: text("content_type").unwrap_or_else(|| "application/json; charset=utf-8".to_owned()),
            },
            None => Answer::Message(text("message")),
        };
        RequestTermination { status, answer }
    }
}

impl Plugin for RequestTermination {
    fn name(&self) -> &'static str {
        "request-termination"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, _ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        let reply = match &self.answer {
            Answer::Message(text) => Reply::helper(self.status, text.as_deref()),
            Answer::Body { body, content_type } => Reply::raw(self.status, body.clone(), content_type),
        };
        Access::Respond(reply.build())
    }
}
