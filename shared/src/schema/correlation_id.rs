//! correlation-id's config (priority 1): the header carrying the id and how ids are made.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "correlation-id",
    1,
    Table::new(&[
        Field::new("header_name", Kind::String).default(Fill::Str("Kong-Request-ID")),
        Field::new("generator", Kind::String).default(Fill::Str("uuid#counter")).one_of(&[
            "uuid",
            "uuid#counter",
            "tracker",
        ]),
        Field::new("echo_downstream", Kind::Boolean).default(Fill::Bool(false)),
    ]),
);
