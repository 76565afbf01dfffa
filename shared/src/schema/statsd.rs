//! statsd's config (priority 11): the StatsD server, metric prefix and which metrics are
//! sent with which stat type. The metric rules are shared with datadog, which adds tags.

use serde_json::{json, Value};

use super::field::{Field, Fill, Kind, Object, Table};
use super::validate::display;
use super::PluginSchema;

const METRICS: &[&str] = &[
    "request_count",
    "latency",
    "request_size",
    "status_count",
    "response_size",
    "unique_users",
    "request_per_user",
    "upstream_latency",
    "kong_latency",
    "status_count_per_user",
];
const STAT_TYPES: &[&str] = &["gauge", "timer", "counter", "histogram", "meter", "set"];
const CONSUMER_IDENTIFIERS: &[&str] = &["consumer_id", "custom_id", "username"];
/// Metrics reported per consumer, which must say how the consumer is identified.
const PER_USER: &[&str] = &["status_count_per_user", "request_per_user", "unique_users"];
/// Metrics that only make sense as counters.
const COUNTERS_ONLY: &[&str] = &["status_count", "status_count_per_user", "request_per_user"];

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "statsd",
    11,
    Table::new(&[
        Field::new("host", Kind::String).default(Fill::Str("localhost")),
        Field::new("port", Kind::Number).default(Fill::Int(8125)),
        Field::new("metrics", Kind::Array).default(Fill::Json(default_metrics)).check(metrics),
        Field::new("prefix", Kind::String).default(Fill::Str("kong")),
    ]),
);

/// All ten metrics; per-user ones identify consumers by custom_id.
pub(super) fn default_metrics() -> Value {
    json!([
        {"name": "request_count", "stat_type": "counter", "sample_rate": 1},
        {"name": "latency", "stat_type": "timer"},
        {"name": "request_size", "stat_type": "timer"},
        {"name": "status_count", "stat_type": "counter", "sample_rate": 1},
        {"name": "response_size", "stat_type": "timer"},
        {"name": "unique_users", "stat_type": "set", "consumer_identifier": "custom_id"},
        {"name": "request_per_user", "stat_type": "counter", "sample_rate": 1,
         "consumer_identifier": "custom_id"},
        {"name": "upstream_latency", "stat_type": "timer"},
        {"name": "kong_latency", "stat_type": "timer"},
        {"name": "status_count_per_user", "stat_type": "counter", "sample_rate": 1,
         "consumer_identifier": "custom_id"},
    ])
}

fn metrics(value: Option<&Value>, _: &Object) -> Result<(), String> {
    check_metrics(value, false)
}

/// Lua truthiness for a JSON value read from a metric entry: absent, null and false are unset.
fn set<'a>(entry: &'a Value, key: &str) -> Option<&'a Value> {
    entry.get(key).filter(|v| !v.is_null() && *v != &Value::Bool(false))
}

fn one_of(value: &Value, allowed: &[&str]) -> bool {
    value.as_str().is_some_and(|s| allowed.contains(&s))
}

/// Kong's per-entry rules, in Kong's order; the first broken rule of the first bad entry is
/// reported. `with_tags` adds datadog's tag syntax rule.
pub(super) fn check_metrics(value: Option<&Value>, with_tags: bool) -> Result<(), String> {
    for entry in value.and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), Some(stat_type)) = (set(entry, "name"), set(entry, "stat_type")) else {
            return Err("name and stat_type must be defined for all stats".to_string());
        };
        if !one_of(name, METRICS) {
            return Err(format!("unrecognized metric name: {}", display(name)));
        }
        if !one_of(stat_type, STAT_TYPES) {
            return Err(format!("unrecognized stat_type: {}", display(stat_type)));
        }
        if with_tags {
            check_tags(entry)?;
        }
        let name = name.as_str().unwrap_or_default();
        let stat_type = stat_type.as_str().unwrap_or_default();
        if name == "unique_users" && stat_type != "set" {
            return Err("unique_users metric only works with stat_type 'set'".to_string());
        }
        if matches!(stat_type, "counter" | "gauge") {
            let rate = set(entry, "sample_rate").and_then(Value::as_f64);
            if !rate.is_some_and(|r| r >= 1.0) {
                return Err("sample rate must be defined for counters and gauges.".to_string());
            }
        }
        if PER_USER.contains(&name) {
            match set(entry, "consumer_identifier") {
                None => {
                    return Err(format!("consumer_identifier must be defined for metric {name}"));
                }
                Some(id) if !one_of(id, CONSUMER_IDENTIFIERS) => {
                    return Err(format!(
                        "invalid consumer_identifier for metric '{name}'. Choices are \
                         consumer_id, custom_id, and username"
                    ));
                }
                Some(_) => {}
            }
        }
        if COUNTERS_ONLY.contains(&name) && stat_type != "counter" {
            return Err(format!("{name} metric only works with stat_type 'counter'"));
        }
    }
    Ok(())
}

/// Datadog tags are `key` or `key:value`; a colon with nothing after it is malformed.
fn check_tags(entry: &Value) -> Result<(), String> {
    for tag in entry.get("tags").and_then(Value::as_array).into_iter().flatten() {
        let tag = display(tag);
        if tag.contains(':') && tag.split(':').nth(1).is_none_or(str::is_empty) {
            return Err(format!("malformed tags: key '{tag}' has no value. Tags must be list of key[:value]"));
        }
    }
    Ok(())
}
