//! tcp-log's config (priority 7): the TCP (optionally TLS) endpoint for log records.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "tcp-log",
    7,
    Table::new(&[
        Field::new("host", Kind::String).required(),
        Field::new("port", Kind::Number).required(),
        Field::new("timeout", Kind::Number).default(Fill::Int(10_000)),
        Field::new("keepalive", Kind::Number).default(Fill::Int(60_000)),
        Field::new("tls", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("tls_sni", Kind::String),
    ]),
);
