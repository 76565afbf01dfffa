//! response-ratelimiting's config (priority 900): named limits whose usage the upstream
//! reports in a response header, each with per-period quotas.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::rate_limiting::{check_periods, check_redis, LIMIT_BY, POLICIES};
use super::PluginSchema;

/// One named limit: quotas per period. Flexible: the keys of `limits` are free limit names.
static LIMIT: Table = Table::new(&[
    Field::new("second", Kind::Number),
    Field::new("minute", Kind::Number),
    Field::new("hour", Kind::Number),
    Field::new("day", Kind::Number),
    Field::new("month", Kind::Number),
    Field::new("year", Kind::Number),
])
.flexible();

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "response-ratelimiting",
    900,
    Table::new(&[
        Field::new("header_name", Kind::String).default(Fill::Str("x-kong-limit")),
        Field::new("limit_by", Kind::String).one_of(LIMIT_BY).default(Fill::Str("consumer")),
        Field::new("policy", Kind::String).one_of(POLICIES).default(Fill::Str("cluster")),
        Field::new("fault_tolerant", Kind::Boolean).default(Fill::Bool(true)),
        Field::new("redis_host", Kind::String),
        Field::new("redis_port", Kind::Number).default(Fill::Int(6379)),
        Field::new("redis_password", Kind::String),
        Field::new("redis_timeout", Kind::Number).default(Fill::Int(2000)),
        Field::new("redis_database", Kind::Number).default(Fill::Int(0)),
        Field::new("block_on_first_violation", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("limits", Kind::Table).schema(&LIMIT),
        Field::new("hide_client_headers", Kind::Boolean).default(Fill::Bool(false)),
    ])
    .self_check(check_config),
);

fn check_config(conf: &Object) -> Result<(), String> {
    let limits = conf.get("limits").and_then(Value::as_object).filter(|l| !l.is_empty());
    let Some(limits) = limits else {
        return Err("You need to set at least one limit name".to_string());
    };
    for limit in limits.values() {
        if let Some(limit) = limit.as_object() {
            check_periods(limit)?;
        }
    }
    check_redis(conf)
}
