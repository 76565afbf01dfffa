//! http-log's config (priority 12): the endpoint log records are sent to and how.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "http-log",
    12,
    Table::new(&[
        Field::new("http_endpoint", Kind::Url).required(),
        // Kong gives `method` and `content_type` no type: only the enum applies (no trimming).
        Field::untyped("method").default(Fill::Str("POST")).one_of(&["POST", "PUT", "PATCH"]),
        Field::untyped("content_type").default(Fill::Str("application/json")).one_of(&["application/json"]),
        Field::new("timeout", Kind::Number).default(Fill::Int(10_000)),
        Field::new("keepalive", Kind::Number).default(Fill::Int(60_000)),
    ]),
);
