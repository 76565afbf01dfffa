//! galileo's config (priority 3, deprecated in Kong 0.14): the Galileo collector, the
//! service token, and batching/retry settings.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "galileo",
    3,
    Table::new(&[
        Field::new("environment", Kind::String),
        Field::new("retry_count", Kind::Number).default(Fill::Int(10)),
        Field::new("queue_size", Kind::Number).default(Fill::Int(1000)),
        Field::new("flush_timeout", Kind::Number).default(Fill::Int(2)),
        Field::new("log_bodies", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("service_token", Kind::String).required(),
        Field::new("connection_timeout", Kind::Number).default(Fill::Int(30)),
        Field::new("host", Kind::String).required().default(Fill::Str("collector.galileo.mashape.com")),
        Field::new("port", Kind::Number).required().default(Fill::Int(443)),
        Field::new("https", Kind::Boolean).default(Fill::Bool(true)),
        Field::new("https_verify", Kind::Boolean).default(Fill::Bool(false)),
    ]),
);
