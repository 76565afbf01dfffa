//! datadog's config (priority 10): like statsd's, but host, port and metrics are required
//! and each metric may carry DogStatsD tags.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::statsd::{check_metrics, default_metrics as statsd_metrics};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "datadog",
    10,
    Table::new(&[
        Field::new("host", Kind::String).required().default(Fill::Str("localhost")),
        Field::new("port", Kind::Number).required().default(Fill::Int(8125)),
        Field::new("metrics", Kind::Array).required().default(Fill::Json(default_metrics)).check(metrics),
        Field::new("prefix", Kind::String).default(Fill::Str("kong")),
    ]),
);

/// statsd's defaults, each tagged `app:kong`.
fn default_metrics() -> Value {
    let mut metrics = statsd_metrics();
    for metric in metrics.as_array_mut().into_iter().flatten() {
        if let Some(metric) = metric.as_object_mut() {
            metric.insert("tags".to_string(), Value::from(vec!["app:kong"]));
        }
    }
    metrics
}

fn metrics(value: Option<&Value>, _: &Object) -> Result<(), String> {
    check_metrics(value, true)
}
