//! The plugin runtime (kong-0.14-plugins §1).
//!
//! A plugin is one value implementing [`Plugin`], built from one plugin row's `config` when the
//! configuration compiles; each phase is a trait method whose default does nothing, so a
//! plugin implements only the phases it acts in (the shape of Pingora's `ProxyHttp`). Which
//! row applies to a request follows Kong's eight-level precedence; [`chain`] resolves it per
//! route ahead of time, leaving the request one table lookup per plugin, and only when a
//! consumer-specific row exists.
//!
//! A rejection in `access` stops the remaining access handlers; `header_filter` still runs for
//! every plugin that had a configuration, and `log` runs after the response on its own task.

mod acl;
mod auth;
mod aws_lambda;
mod basic_auth;
mod body;
mod bot_detection;
pub mod chain;
pub mod control_plane;
mod correlation_id;
mod cors;
pub(crate) mod ctx;
pub(crate) mod filtered;
mod hmac_auth;
mod ip_restriction;
pub(crate) mod jwt;
mod key_auth;
mod ldap_auth;
pub(crate) mod limits;
pub mod log;
mod oauth2;
mod rate_limiting;
mod reply;
mod request_size_limiting;
mod request_termination;
mod request_transformer;
mod response_ratelimiting;
mod response_transformer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::response::Parts;
use http::Response;
use serde_json::Value;

pub use chain::{Chain, Resolved};
pub use ctx::{Consumer, Credential, RequestCtx, ResponseFields, ResponseHook};
pub use log::LogEntry;
pub use reply::{Rejected, Reply};

pub use filtered::Filtered;

/// What `access` decided.
pub enum Access<'a> {
    Continue,
    /// Answer with this instead of proxying.
    Respond(Rejected),
    /// The decision needs I/O (a directory server, the control plane): wait for it.
    Wait(Pin<Box<dyn Future<Output = Result<(), Rejected>> + Send + 'a>>),
}

impl From<Result<(), Rejected>> for Access<'_> {
    fn from(r: Result<(), Rejected>) -> Self {
        match r {
            Ok(()) => Access::Continue,
            Err(response) => Access::Respond(response),
        }
    }
}

/// One response's body passing through a plugin: each chunk as it comes, then the end.
pub trait BodyFilter: Send {
    /// What goes on in place of `chunk` (empty to hold it back).
    fn chunk(&mut self, chunk: bytes::Bytes) -> bytes::Bytes;

    /// What goes on after the last chunk, if anything.
    fn end(&mut self) -> Option<bytes::Bytes> {
        None
    }
}

/// One configured plugin. Every phase defaults to doing nothing.
pub trait Plugin: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    fn access<'a>(&'a self, _ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        Access::Continue
    }

    /// On the response head, proxied or produced by a plugin.
    fn header_filter(&self, _response: &mut Parts) {}

    /// Whether [`Plugin::body_filter`] can do anything: routes none of whose plugins filter
    /// bodies never wrap one.
    fn filters_body(&self) -> bool {
        false
    }

    /// A filter for this response's body, decided on its head (after every header filter):
    /// `None` leaves the body alone. The filter holds what it needs across chunks.
    fn body_filter(&self, _response: &Parts) -> Option<Box<dyn BodyFilter>> {
        None
    }

    /// Whether [`Plugin::log`] does anything: a chain with no logger spawns no task.
    fn logs(&self) -> bool {
        false
    }

    fn log(&self, _entry: &LogEntry) {}

    /// Whether the log entry keeps the response body as sent (a logger that records bodies).
    fn captures_bodies(&self) -> bool {
        false
    }

    /// Whether `access` is the only phase this plugin acts in.
    fn access_only(&self) -> bool {
        false
    }

    /// Whether `access` may read the request body, a chunked one or one with a length: the
    /// engine reads a body (up to 1 MiB) before the access phase only when a plugin may, and
    /// otherwise streams it after, so a client awaiting `100 Continue` hears it only once the
    /// plugins let the request through, as in Kong. A plugin that says no sees every body
    /// unread ([`RequestCtx::read_body`] is `None`). By default: does not.
    fn reads_body(&self, _chunked: bool) -> bool {
        false
    }

    /// Whether a route with this plugin needs no response phases: it acts in `access` and
    /// `log` only, so the engine relays the upstream's answer as bytes and logs it with its
    /// fields and sizes but not its body.
    ///
    /// By default: a plugin that acts only in `access`, or a logger (whose `log` reads the
    /// entry the engine builds). A logger with a header or body phase must say no.
    fn direct(&self) -> bool {
        self.access_only() || self.logs()
    }
}

/// Why a plugin row cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Builds the plugin for a row's `config`. A plugin without a runtime here is an error, never
/// a row quietly skipped: the configuration that holds it is refused.
///
/// # Errors
/// A plugin this data plane cannot run, or a configuration the plugin cannot use (the control
/// plane validated it, so this means the two disagree).
pub fn build(name: &str, config: &Value, row: &Value) -> Result<Arc<dyn Plugin>, BuildError> {
    Ok(match name {
        "key-auth" => Arc::new(key_auth::KeyAuth::new(config)?),
        "basic-auth" => Arc::new(basic_auth::BasicAuth::new(config)?),
        "hmac-auth" => Arc::new(hmac_auth::HmacAuth::new(config)?),
        "jwt" => Arc::new(jwt::Jwt::new(config)?),
        "acl" => Arc::new(acl::Acl::new(config)?),
        "oauth2" => Arc::new(oauth2::OAuth2::new(config)?),
        "ldap-auth" => Arc::new(ldap_auth::LdapAuth::new(config)?),
        "request-size-limiting" => Arc::new(request_size_limiting::RequestSizeLimiting::new(config)),
        "request-termination" => Arc::new(request_termination::RequestTermination::new(config)),
        "ip-restriction" => Arc::new(ip_restriction::IpRestriction::new(config)?),
        "bot-detection" => Arc::new(bot_detection::BotDetection::new(config)?),
        "cors" => Arc::new(cors::Cors::new(config)?),
        "correlation-id" => Arc::new(correlation_id::CorrelationId::new(config)?),
        "rate-limiting" => Arc::new(rate_limiting::RateLimiting::new(config, limits::Scope::of(row))?),
        "request-transformer" => Arc::new(request_transformer::RequestTransformer::new(config)?),
        "response-transformer" => Arc::new(response_transformer::ResponseTransformer::new(config)?),
        "response-ratelimiting" => {
            Arc::new(response_ratelimiting::ResponseRateLimiting::new(config, limits::Scope::of(row))?)
        }
        "aws-lambda" => Arc::new(aws_lambda::AwsLambda::new(config)?),
        "file-log" => Arc::new(log::file_log::FileLog::new(config)?),
        "http-log" => Arc::new(log::http_log::HttpLog::new(config)?),
        "tcp-log" => Arc::new(log::tcp_log::TcpLog::new(config)?),
        "udp-log" => Arc::new(log::udp_log::UdpLog::new(config)?),
        "syslog" => Arc::new(log::syslog::Syslog::new(config)),
        "loggly" => Arc::new(log::syslog::Loggly::new(config)?),
        "statsd" => Arc::new(log::statsd::Statsd::new(config, false)?),
        "datadog" => Arc::new(log::statsd::Statsd::new(config, true)?),
        "galileo" => Arc::new(log::galileo::Galileo::new(config)?),
        _ => return Err(BuildError(format!("plugin '{name}' has no runtime on this data plane"))),
    })
}

/// The log entry of a request a plugin answered: not proxied, so no upstream, no tries and
/// no proxy latency.
fn rejected_entry(ctx: &RequestCtx<'_>, answer: &Parts) -> LogEntry {
    let mut e = entry_for(ctx);
    e.finish_answer(answer);
    e
}

/// A log entry with what the access phase knows of the request: its head as plugins left it
/// (the body's size is the caller's to add), the consumer and credential.
pub(crate) fn entry_for(ctx: &RequestCtx<'_>) -> LogEntry {
    let mut e = LogEntry::new(
        ctx.set.clone(),
        ctx.route_id.clone(),
        ctx.service_id.clone(),
        ctx.logged.get_or_init(|| Arc::new(log::Entities::of(ctx.set, ctx.route_id, ctx.service_id))).clone(),
        ctx.started,
        ctx.remote_addr(),
    );
    e.consumer = ctx.consumer.clone();
    e.credential = ctx.credential.clone();
    e.method = ctx.method.to_string();
    e.uri = ctx.target.to_owned();
    e.https = ctx.https;
    e.host = ctx.header("host").map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_owned()).unwrap_or_default();
    e.server_port = ctx.conn.listener_port;
    e.server_addr = ctx.conn.local.map(|a| a.ip());
    e.http_version = ctx.version;
    e.request_body = ctx.log_body.clone();
    e.request_has_body = ctx.body.has_body();
    e.request_headers = ctx.headers.clone();
    e.request_size = log::head_size(ctx.method.as_str().len() + ctx.target.len() + 10, ctx.headers);
    e.kong_latency_ms = ctx.started.elapsed().as_millis() as u64;
    e
}

/// Runs `access` of every resolved plugin in order until one answers; a sampled request's
/// `trace` gets a span per plugin.
pub async fn access(
    chain: &Chain,
    ctx: &mut RequestCtx<'_>,
    mut trace: Option<&mut crate::trace::Trace>,
) -> Result<Resolved, Rejected> {
    let mut resolved = Resolved::default();
    for (i, entry) in chain.entries.iter().enumerate() {
        let Some(plugin) = entry.resolve(ctx.consumer.as_ref().map(|c| &c.id)) else { continue };
        resolved.push(plugin.clone());
        let began = trace.is_some().then(std::time::Instant::now);
        let outcome = match plugin.access(ctx) {
            Access::Continue => Ok(()),
            Access::Respond(r) => Err(r),
            Access::Wait(f) => f.await,
        };
        if let (Some(t), Some(start)) = (trace.as_deref_mut(), began) {
            let name = format!("kong.access.plugin.{}", plugin.name());
            let mut attributes = vec![opentelemetry::KeyValue::new("kong.plugin.name", plugin.name())];
            if outcome.is_err() {
                attributes.push(opentelemetry::KeyValue::new("kong.plugin.answered", true));
            }
            t.child(name, start, std::time::Instant::now(), attributes);
        }
        if let Err(mut response) = outcome {
            // Remaining plugins do not run `access`, but their header filters still apply.
            for rest in &chain.entries[i + 1..] {
                if let Some(p) = rest.resolve(ctx.consumer.as_ref().map(|c| &c.id)) {
                    resolved.push(p.clone());
                }
            }
            let (mut parts, body) = (*response).into_parts();
            ctx.response.apply(&mut parts.headers);
            resolved.header_filter(&mut parts);
            let entry = resolved.logs().then(|| rejected_entry(ctx, &parts));
            let body = Filtered::wrap(body, resolved, &parts, entry);
            *response = Response::from_parts(parts, body);
            return Err(response);
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    /// The plugins the Admin API accepts are exactly those with a runtime here.
    #[test]
    fn enabled_plugins_are_exactly_those_that_build() {
        for name in gatehouse_shared::schema::plugin_names() {
            let schema = gatehouse_shared::schema::plugin(name).expect("bundled");
            // The smallest configuration the schema accepts, with its defaults filled in.
            let minimal = [
                json!({}),
                json!({"whitelist": ["a"]}),
                json!({"ldap_host": "h", "base_dn": "d", "attribute": "a"}),
                json!({"minute": 5, "policy": "local"}),
                json!({"http_endpoint": "http://logs.test/x"}),
                json!({"host": "logs.test", "port": 9}),
                json!({"path": "/tmp/gatehouse-test.log"}),
                json!({"key": "k"}),
                json!({"limits": {"video": {"minute": 5}}, "policy": "local"}),
                json!({"service_token": "t"}),
                json!({"aws_key": "k", "aws_secret": "s", "aws_region": "us-east-1", "function_name": "f"}),
            ]
            .into_iter()
            .find_map(|c| schema.validate_create(Some(&c)).ok());
            let enabled = gatehouse_shared::schema::enabled_names().contains(name);
            match (enabled, build(name, minimal.as_ref().unwrap_or(&Value::Null), &json!({}))) {
                (true, Err(e)) => panic!("{name} is enabled but does not build: {e}"),
                (false, Ok(_)) => panic!("{name} builds but is not enabled"),
                _ => {}
            }
        }
    }

    use bytes::Bytes;

    use super::*;
    use crate::message::ResBody;

    /// Upper-cases bodies, adds a trailer line at the end, and counts its log calls.
    struct Shout(Arc<AtomicUsize>);

    struct Upper;

    impl BodyFilter for Upper {
        fn chunk(&mut self, chunk: Bytes) -> Bytes {
            Bytes::from(chunk.to_ascii_uppercase())
        }
        fn end(&mut self) -> Option<Bytes> {
            Some(Bytes::from_static(b"!"))
        }
    }

    impl Plugin for Shout {
        fn name(&self) -> &'static str {
            "shout"
        }
        fn filters_body(&self) -> bool {
            true
        }
        fn body_filter(&self, _: &Parts) -> Option<Box<dyn BodyFilter>> {
            Some(Box::new(Upper))
        }
        fn logs(&self) -> bool {
            true
        }
        fn log(&self, _entry: &LogEntry) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn body_filters_run_per_chunk_and_log_runs_once_after_the_body() {
        let logged = Arc::new(AtomicUsize::new(0));
        let mut resolved = Resolved::default();
        resolved.push(Arc::new(Shout(logged.clone())));
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let entry =
            LogEntry::new(Arc::default(), "r".into(), "s".into(), Arc::default(), std::time::Instant::now(), ip);
        let parts = http::Response::new(()).into_parts().0;
        let mut body = Filtered::wrap(ResBody::full("hello"), resolved, &parts, Some(entry));
        assert_eq!(body.take(), "HELLO!");
        assert_eq!(body.take(), "", "taken once");
        assert_eq!(logged.load(Ordering::SeqCst), 0, "not logged while the answer is being sent");
        drop(body);
        for _ in 0..100 {
            if logged.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(logged.load(Ordering::SeqCst), 1, "logged exactly once, after the body");
    }
}
