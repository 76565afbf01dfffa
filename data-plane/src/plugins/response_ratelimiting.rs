//! response-ratelimiting (kong-0.14-plugins §5.6): limits named by the upstream, which says
//! in a response header (`x-kong-limit: video=1, image=2`) how much of each a request used.
//! `access` reads the usage and tells the upstream what is left (`X-RateLimit-Remaining-<name>`)
//! or, with `block_on_first_violation`, refuses at once; the response head carries the counts
//! and is turned into a bodiless 429 when a used-up limit was consumed again; what was used
//! is counted once the head is settled.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::response::Parts;
use http::StatusCode;
use serde_json::Value;

use super::limits::{self, identifier, local, redis::Target, LimitBy, Period, Scope};
use super::{Access, BuildError, Plugin, Rejected, Reply, RequestCtx, ResponseHook};

/// One named limit's quotas, with the field names made once.
struct Named {
    name: String,
    remaining_request_header: HeaderName,
    periods: Vec<(Period, f64, HeaderName, HeaderName)>,
}

enum Policy {
    Local,
    Redis(Target),
    /// Shared through the control plane's store.
    Cluster,
}

struct Rules {
    header: HeaderName,
    limits: Vec<Named>,
    limit_by: LimitBy,
    policy: Policy,
    fault_tolerant: bool,
    block_on_first_violation: bool,
    hide_client_headers: bool,
    scope: Scope,
}

pub struct ResponseRateLimiting {
    rules: Arc<Rules>,
}

fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn header(name: String) -> Result<HeaderName, BuildError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|e| BuildError(format!("{name}: {e}")))
}

impl ResponseRateLimiting {
    pub fn new(config: &Value, scope: Scope) -> Result<ResponseRateLimiting, BuildError> {
        let text = |k: &str| config.get(k).and_then(Value::as_str);
        let mut limits = Vec::new();
        for (name, quotas) in config.get("limits").and_then(Value::as_object).into_iter().flatten() {
            let mut periods = Vec::new();
            for period in Period::ALL {
                if let Some(limit) = quotas.get(period.name()).and_then(Value::as_f64) {
                    periods.push((
                        period,
                        limit,
                        header(format!("x-ratelimit-limit-{name}-{}", period.name()))?,
                        header(format!("x-ratelimit-remaining-{name}-{}", period.name()))?,
                    ));
                }
            }
            limits.push(Named {
                name: name.clone(),
                remaining_request_header: header(format!("x-ratelimit-remaining-{name}"))?,
                periods,
            });
        }
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
        let flag = |k: &str, d: bool| config.get(k).and_then(Value::as_bool).unwrap_or(d);
        Ok(ResponseRateLimiting {
            rules: Arc::new(Rules {
                header: header(text("header_name").unwrap_or("x-kong-limit").to_owned())?,
                limits,
                limit_by: LimitBy::parse(text("limit_by")),
                policy,
                fault_tolerant: flag("fault_tolerant", true),
                block_on_first_violation: flag("block_on_first_violation", false),
                hide_client_headers: flag("hide_client_headers", false),
                scope,
            }),
        })
    }
}

impl Rules {
    /// Every (limit, period) key, in `limits` order.
    fn keys(&self, id: &limits::Identifier<'_>, now: u64) -> Vec<(usize, usize, String, u64)> {
        let mut keys = Vec::new();
        for (i, l) in self.limits.iter().enumerate() {
            for (j, (period, ..)) in l.periods.iter().enumerate() {
                let window = period.window_start(now);
                let key = self.scope.key("response-ratelimit", id, window, Some(&l.name), *period);
                keys.push((i, j, key, window));
            }
        }
        keys
    }

    async fn run(self: Arc<Self>, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let now = limits::now_secs();
        let id = identifier(ctx, self.limit_by);
        // Kept as it was counted: an address stays an address (the local counters key on it).
        let owned = match &id {
            limits::Identifier::Id(s) => Ok((*s).to_owned()),
            limits::Identifier::Ip(ip) => Err(*ip),
        };
        let keys = self.keys(&id, now);
        let usage: Vec<u64> = match &self.policy {
            Policy::Cluster => keys.iter().map(|(_, _, key, _)| ctx.control_plane.shared_counts.usage(key)).collect(),
            Policy::Local => keys
                .iter()
                .map(|(i, j, _, window)| {
                    local::usage(&self.scope, &id, Some(&self.limits[*i].name), self.limits[*i].periods[*j].0, *window)
                })
                .collect(),
            Policy::Redis(target) => {
                let names: Vec<String> = keys.iter().map(|k| k.2.clone()).collect();
                match target.usage(&names).await {
                    Ok(u) => u,
                    Err(e) if self.fault_tolerant => {
                        tracing::error!(error = %e, "response-ratelimiting: failed to get usage");
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "response-ratelimiting: failed to get usage");
                        return Err(Reply::unexpected().build());
                    }
                }
            }
        };
        // remaining[limit][period]
        let mut remaining: Vec<Vec<f64>> = self.limits.iter().map(|l| vec![0.0; l.periods.len()]).collect();
        for ((i, j, ..), used) in keys.iter().zip(&usage) {
            remaining[*i][*j] = self.limits[*i].periods[*j].1 - *used as f64;
        }
        for (l, left) in self.limits.iter().zip(&remaining) {
            if self.block_on_first_violation && left.contains(&0.0) {
                return Err(Reply::message(429, &format!("API rate limit exceeded for '{}'", l.name)).build());
            }
            if let Some(least) = left.iter().copied().reduce(f64::min) {
                if let Ok(v) = HeaderValue::from_str(&lua_number(least)) {
                    ctx.headers.insert(l.remaining_request_header.clone(), v);
                }
            }
        }
        let control_plane = ctx.control_plane.clone();
        ctx.hooks.push(Box::new(Counted { rules: self.clone(), id: owned, remaining, keys, control_plane }));
        Ok(())
    }
}

/// What access learned, for the response head.
struct Counted {
    rules: Arc<Rules>,
    /// Where `cluster` counts go.
    control_plane: Arc<super::control_plane::ControlPlane>,
    /// The identifier: an id, or the client's address.
    id: Result<String, std::net::IpAddr>,
    remaining: Vec<Vec<f64>>,
    keys: Vec<(usize, usize, String, u64)>,
}

impl ResponseHook for Counted {
    fn header_filter(&mut self, response: &mut Parts) -> bool {
        let rules = &self.rules;
        // `name=n` pairs, from every field of that name; unknown names are ignored.
        let mut used = vec![0.0f64; rules.limits.len()];
        for value in response.headers.get_all(&rules.header).iter() {
            for part in String::from_utf8_lossy(value.as_bytes()).split(',') {
                let Some((name, n)) = part.split_once('=') else { continue };
                let (name, n) = (name.trim(), n.trim().parse::<f64>());
                if let (Some(i), Ok(n)) = (rules.limits.iter().position(|l| l.name == name), n) {
                    used[i] = n;
                }
            }
        }
        let mut stop = false;
        for (i, l) in rules.limits.iter().enumerate() {
            for (j, (_, limit, limit_name, remaining_name)) in l.periods.iter().enumerate() {
                let left = self.remaining[i][j];
                if !rules.hide_client_headers {
                    let shown = lua_number((left - used[i]).max(0.0));
                    response.headers.insert(
                        limit_name.clone(),
                        HeaderValue::from_str(&lua_number(*limit)).unwrap_or(HeaderValue::from_static("0")),
                    );
                    response.headers.insert(
                        remaining_name.clone(),
                        HeaderValue::from_str(&shown).unwrap_or(HeaderValue::from_static("0")),
                    );
                }
                stop |= used[i] > 0.0 && left <= 0.0;
            }
        }
        response.headers.remove(&rules.header);
        if stop {
            // Refused: Kong's bodiless 429, and nothing counted.
            response.status = StatusCode::TOO_MANY_REQUESTS;
            return true;
        }
        let id = match &self.id {
            Ok(s) => limits::Identifier::Id(s),
            Err(ip) => limits::Identifier::Ip(*ip),
        };
        match &rules.policy {
            Policy::Cluster => {
                for (i, j, key, window) in &self.keys {
                    if used[*i] > 0.0 {
                        let period = rules.limits[*i].periods[*j].0;
                        let closes = (window + period.longest_secs()) * 1000;
                        self.control_plane.shared_counts.increment(key, used[*i] as u64, closes as i64);
                    }
                }
            }
            Policy::Local => {
                for (i, j, _, window) in &self.keys {
                    if used[*i] > 0.0 {
                        let period = rules.limits[*i].periods[*j].0;
                        local::increment(
                            &rules.scope,
                            &id,
                            Some(&rules.limits[*i].name),
                            period,
                            *window,
                            used[*i] as u64,
                        );
                    }
                }
            }
            Policy::Redis(target) => {
                for (i, limit) in rules.limits.iter().enumerate() {
                    if used[i] <= 0.0 {
                        continue;
                    }
                    let keys: Vec<(String, u64)> = self
                        .keys
                        .iter()
                        .filter(|(li, ..)| *li == i)
                        .map(|(_, j, key, _)| (key.clone(), limit.periods[*j].0.ttl_secs()))
                        .collect();
                    target.increment(keys, used[i] as u64);
                }
            }
        }
        false
    }
}

impl Plugin for ResponseRateLimiting {
    fn name(&self) -> &'static str {
        "response-ratelimiting"
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if self.rules.limits.is_empty() {
            return Access::Continue;
        }
        Access::Wait(Box::pin(self.rules.clone().run(ctx)))
    }
}
