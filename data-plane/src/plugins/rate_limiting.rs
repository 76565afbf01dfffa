//! rate-limiting (kong-0.14-plugins §5.5): limits per second, minute, hour, day, month and
//! year together, counted per consumer, credential or client address in Kong's fixed UTC
//! windows. The counters and the `X-RateLimit-*` fields are settled in `access` (the fields
//! reach the answer through the response fields), so a route with this plugin stays on the
//! direct path. `local` counts in this data plane's memory without a lock; `redis` in Redis,
//! shared by every data plane.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::limits::{self, identifier, local, redis::Target, Identifier, LimitBy, Period, Scope};
use super::{Access, BuildError, Plugin, Rejected, Reply, RequestCtx, ResponseFields};

/// One configured limit and its response field names, made once.
struct Limit {
    period: Period,
    limit: f64,
    /// The limit as Kong prints it (a whole number without a fraction).
    limit_value: HeaderValue,
    limit_name: HeaderName,
    remaining_name: HeaderName,
    /// What must be left beyond the redis policy's estimate to decide without asking Redis
    /// (a tenth of the limit, at least 5): room for what other data planes counted since
    /// Redis last answered.
    headroom: f64,
}

enum Policy {
    Local,
    Redis(Target),
    /// Shared through the control plane's store.
    Cluster,
}

pub struct RateLimiting {
    limits: Vec<Limit>,
    limit_by: LimitBy,
    policy: Policy,
    fault_tolerant: bool,
    hide_client_headers: bool,
    scope: Scope,
}

/// A number as Lua's `tostring` writes it: `5`, `5.5`.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

impl RateLimiting {
    pub fn new(config: &Value, scope: Scope) -> Result<RateLimiting, BuildError> {
        let mut limits = Vec::new();
        for period in Period::ALL {
            let Some(limit) = config.get(period.name()).and_then(Value::as_f64) else { continue };
            let header = |prefix: &str| {
                HeaderName::from_bytes(format!("x-ratelimit-{prefix}-{}", period.name()).as_bytes())
                    .map_err(|e| BuildError(e.to_string()))
            };
            limits.push(Limit {
                period,
                limit,
                limit_value: HeaderValue::from_str(&lua_number(limit)).map_err(|e| BuildError(e.to_string()))?,
                limit_name: header("limit")?,
                remaining_name: header("remaining")?,
                headroom: (limit / 10.0).max(5.0),
            });
        }
        let text = |k: &str| config.get(k).and_then(Value::as_str);
        let policy = match text("policy").unwrap_or("cluster") {
            "local" => Policy::Local,
            "cluster" => Policy::Cluster,
            "redis" => {
                let number = |k: &str, d: f64| config.get(k).and_then(Value::as_f64).unwrap_or(d);
                Policy::Redis(Target::new(
                    text("redis_host").ok_or_else(|| BuildError("redis_host is required".into()))?,
                    number("redis_port", 6379.0) as u16,
                    text("redis_password"),
                    number("redis_database", 0.0) as i64,
                    Duration::from_millis(number("redis_timeout", 2000.0).max(1.0) as u64),
                ))
            }
            other => return Err(BuildError(format!("policy '{other}' has no runtime on this data plane"))),
        };
        Ok(RateLimiting {
            limits,
            limit_by: LimitBy::parse(text("limit_by")),
            policy,
            fault_tolerant: config.get("fault_tolerant").and_then(Value::as_bool).unwrap_or(true),
            hide_client_headers: config.get("hide_client_headers").and_then(Value::as_bool).unwrap_or(false),
            scope,
        })
    }

    /// Kong's decision on the usage of each limit (in `self.limits` order): the fields, and a
    /// 429 if one is used up. The fields go on whichever answer the request gets.
    fn decide(&self, usage: &[u64], fields: &mut ResponseFields) -> Result<(), Rejected> {
        let remaining: smallvec::SmallVec<[f64; 6]> =
            self.limits.iter().zip(usage).map(|(l, u)| l.limit - *u as f64).collect();
        // The last exceeded period, as Kong's loop keeps overwriting it.
        let stop = remaining.iter().rposition(|r| *r <= 0.0);
        if !self.hide_client_headers {
            for (i, (limit, left)) in self.limits.iter().zip(&remaining).enumerate() {
                // This request is counted against every period, unless it is refused, when only
                // the exceeded one shows it.
                let shown = if stop.is_none() || stop == Some(i) { left - 1.0 } else { *left };
                let shown = shown.max(0.0);
                let shown = if shown.fract() == 0.0 && shown < 1e15 {
                    HeaderValue::from(shown as u64)
                } else {
                    HeaderValue::from_str(&lua_number(shown)).unwrap_or(HeaderValue::from_static("0"))
                };
                fields.set(limit.limit_name.clone(), limit.limit_value.clone());
                fields.set(limit.remaining_name.clone(), shown);
            }
        }
        match stop {
            Some(_) => Err(Reply::message(429, "API rate limit exceeded").build()),
            None => Ok(()),
        }
    }

    fn keys(&self, id: &Identifier<'_>, now: u64) -> Vec<String> {
        self.limits
            .iter()
            .map(|l| self.scope.key("ratelimit", id, l.period.window_start(now), None, l.period))
            .collect()
    }

    /// The redis policy: decided on what this data plane knows when every limit is far from
    /// used up (see [`Limit::headroom`]), without a round trip; else on Redis's answer.
    fn with_redis<'a>(&'a self, target: &'a Target, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        let keys = self.keys(&identifier(ctx, self.limit_by), limits::now_secs());
        let known = target
            .estimate(&keys)
            .filter(|usage| self.limits.iter().zip(usage).all(|(l, u)| (*u as f64) + l.headroom < l.limit));
        match known {
            Some(usage) => {
                let decided = self.decide(&usage, &mut ctx.response);
                self.count(target, keys);
                decided.into()
            }
            None => Access::Wait(Box::pin(self.asking_redis(target, keys, ctx))),
        }
    }

    /// Adds this request to every period's counter in Redis.
    fn count(&self, target: &Target, keys: Vec<String>) {
        let ttls = self.limits.iter().map(|l| l.period.ttl_secs());
        target.increment(keys.into_iter().zip(ttls).collect(), 1);
    }

    async fn asking_redis(&self, target: &Target, keys: Vec<String>, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        match target.usage(&keys).await {
            Ok(usage) => {
                self.decide(&usage, &mut ctx.response)?;
                self.count(target, keys);
                Ok(())
            }
            Err(e) if self.fault_tolerant => {
                tracing::error!(error = %e, "rate-limiting: failed to get usage; letting the request through");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "rate-limiting: failed to get usage");
                Err(Reply::unexpected().build())
            }
        }
    }
}

impl Plugin for RateLimiting {
    fn name(&self) -> &'static str {
        "rate-limiting"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        match &self.policy {
            Policy::Redis(target) => self.with_redis(target, ctx),
            Policy::Cluster => {
                let now = limits::now_secs();
                let keys = self.keys(&identifier(ctx, self.limit_by), now);
                let shared = &ctx.control_plane.shared_counts;
                let usage: smallvec::SmallVec<[u64; 6]> = keys.iter().map(|k| shared.usage(k)).collect();
                let decided = self.decide(&usage, &mut ctx.response);
                if decided.is_ok() {
                    for (key, l) in keys.iter().zip(&self.limits) {
                        let closes = (l.period.window_start(now) + l.period.longest_secs()) * 1000;
                        shared.increment(key, 1, closes as i64);
                    }
                }
                decided.into()
            }
            Policy::Local => {
                let now = limits::now_secs();
                let id = identifier(ctx, self.limit_by);
                let counters: smallvec::SmallVec<[(u64, u64); 6]> = self
                    .limits
                    .iter()
                    .map(|l| (local::key(&self.scope, &id, None, l.period), l.period.window_start(now)))
                    .collect();
                let usage: smallvec::SmallVec<[u64; 6]> =
                    counters.iter().map(|(key, window)| local::usage_of(*key, *window)).collect();
                let decided = self.decide(&usage, &mut ctx.response);
                if decided.is_ok() {
                    for ((key, window), l) in counters.iter().zip(&self.limits) {
                        local::increment_of(*key, l.period, *window, 1);
                    }
                }
                decided.into()
            }
        }
    }
}
