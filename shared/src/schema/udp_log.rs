//! udp-log's config (priority 8): the UDP endpoint for log records.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "udp-log",
    8,
    Table::new(&[
        Field::new("host", Kind::String).required(),
        Field::new("port", Kind::Number).required(),
        Field::new("timeout", Kind::Number).default(Fill::Int(10_000)),
    ]),
);
