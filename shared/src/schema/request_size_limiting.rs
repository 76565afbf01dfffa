//! request-size-limiting's config (priority 951): the largest accepted body, in megabytes.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "request-size-limiting",
    951,
    Table::new(&[Field::new("allowed_payload_size", Kind::Number).default(Fill::Int(128))]),
);
