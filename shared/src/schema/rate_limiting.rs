//! rate-limiting's config (priority 901): request limits per calendar period, who is counted,
//! and where counters live. The period-ordering and Redis rules are shared with
//! response-ratelimiting.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

/// Shortest to longest; a longer period's limit may not be below a shorter one's.
pub(super) const PERIODS: [&str; 6] = ["second", "minute", "hour", "day", "month", "year"];
pub(super) const LIMIT_BY: &[&str] = &["consumer", "credential", "ip"];
pub(super) const POLICIES: &[&str] = &["local", "cluster", "redis"];

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "rate-limiting",
    901,
    Table::new(&[
        Field::new("second", Kind::Number),
        Field::new("minute", Kind::Number),
        Field::new("hour", Kind::Number),
        Field::new("day", Kind::Number),
        Field::new("month", Kind::Number),
        Field::new("year", Kind::Number),
        Field::new("limit_by", Kind::String).one_of(LIMIT_BY).default(Fill::Str("consumer")),
        Field::new("policy", Kind::String).one_of(POLICIES).default(Fill::Str("cluster")),
        Field::new("fault_tolerant", Kind::Boolean).default(Fill::Bool(true)),
        Field::new("redis_host", Kind::String),
        Field::new("redis_port", Kind::Number).default(Fill::Int(6379)),
        Field::new("redis_password", Kind::String),
        Field::new("redis_timeout", Kind::Number).default(Fill::Int(2000)),
        Field::new("redis_database", Kind::Number).default(Fill::Int(0)),
        Field::new("hide_client_headers", Kind::Boolean).default(Fill::Bool(false)),
    ])
    .self_check(check_config),
);

fn check_config(conf: &Object) -> Result<(), String> {
    check_periods(conf)?;
    check_redis(conf)
}

/// At least one period, each positive, and never lower for a longer period. As in Kong,
/// when several rules break, the one found last in the scan is reported.
pub(super) fn check_periods(limits: &Object) -> Result<(), String> {
    let values: Vec<Option<f64>> = PERIODS.iter().map(|p| limits.get(*p).and_then(Value::as_f64)).collect();
    let mut has_value = false;
    let mut invalid_value = None;
    let mut invalid_order = None;
    for (i, period) in PERIODS.iter().enumerate() {
        let Some(limit) = values[i] else { continue };
        has_value = true;
        if limit <= 0.0 {
            invalid_value = Some(format!("Value for {period} must be greater than zero"));
            continue;
        }
        for (longer, other) in PERIODS.iter().zip(&values).skip(i + 1) {
            if other.is_some_and(|o| o < limit) {
                invalid_order = Some(format!("The limit for {longer} cannot be lower than the limit for {period}"));
            }
        }
    }
    if !has_value {
        return Err("You need to set at least one limit: second, minute, hour, day, month, year".into());
    }
    match invalid_value.or(invalid_order) {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// The redis policy needs a server to talk to.
pub(super) fn check_redis(conf: &Object) -> Result<(), String> {
    if conf.get("policy").and_then(Value::as_str) != Some("redis") {
        return Ok(());
    }
    for (field, what) in [("redis_host", "host"), ("redis_port", "port"), ("redis_timeout", "timeout")] {
        if !conf.contains_key(field) {
            return Err(format!("You need to specify a Redis {what}"));
        }
    }
    Ok(())
}
