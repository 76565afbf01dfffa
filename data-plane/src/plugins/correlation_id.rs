//! correlation-id (kong-0.14-plugins §6.3): gives a request that lacks one an id in
//! `header_name` for the upstream, and with `echo_downstream` the same id on the answer. It
//! runs last in `access` (priority 1), so a request an earlier plugin refused has none, as in
//! Kong. The echo is set during `access`, so the route needs no response phase.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;

use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{Access, BuildError, Plugin, RequestCtx};

#[derive(Clone, Copy)]
enum Generator {
    Uuid,
    UuidCounter,
    Tracker,
}

pub struct CorrelationId {
    header: HeaderName,
    generator: Generator,
    echo: bool,
}

thread_local! {
    /// Kong's per-worker prefix and counter for `uuid#counter`: each proxy worker thread is
    /// a worker here.
    static WORKER: RefCell<Option<String>> = const { RefCell::new(None) };
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

impl CorrelationId {
    pub fn new(config: &Value) -> Result<CorrelationId, BuildError> {
        let name = config.get("header_name").and_then(Value::as_str).unwrap_or("Kong-Request-ID");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError(format!("header_name '{name}' is not a header name")))?;
        let generator = match config.get("generator").and_then(Value::as_str).unwrap_or("uuid#counter") {
            "uuid" => Generator::Uuid,
            "tracker" => Generator::Tracker,
            _ => Generator::UuidCounter,
        };
        Ok(CorrelationId {
            header,
            generator,
            echo: config.get("echo_downstream").and_then(Value::as_bool) == Some(true),
        })
    }

    fn generate(&self, ctx: &RequestCtx<'_>) -> String {
        match self.generator {
            Generator::Uuid => uuid::Uuid::new_v4().to_string(),
            Generator::UuidCounter => {
                let n = COUNTER.with(|c| {
                    c.set(c.get() + 1);
                    c.get()
                });
                WORKER.with(|w| {
                    let mut w = w.borrow_mut();
                    let prefix = w.get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
                    format!("{prefix}#{n}")
                })
            }
            Generator::Tracker => {
                let conn = ctx.conn;
                let (addr, port) =
                    conn.local.map_or((String::new(), conn.listener_port), |a| (a.ip().to_string(), a.port()));
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                format!(
                    "{addr}-{port}-{}-{}-{}-{}.{:03}",
                    std::process::id(),
                    conn.serial,
                    conn.requests.fetch_add(1, Ordering::Relaxed) + 1,
                    now.as_secs(),
                    now.subsec_millis()
                )
            }
        }
    }
}

impl Plugin for CorrelationId {
    fn name(&self) -> &'static str {
        "correlation-id"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        let value = match ctx.headers.get(&self.header) {
            Some(v) => v.clone(),
            None => {
                let Ok(v) = HeaderValue::from_str(&self.generate(ctx)) else { return Access::Continue };
                ctx.headers.insert(self.header.clone(), v.clone());
                v
            }
        };
        if self.echo {
            ctx.response.set(self.header.clone(), value);
        }
        Access::Continue
    }
}
