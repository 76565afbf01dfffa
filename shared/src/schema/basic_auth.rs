//! basic-auth's config (priority 1001, no consumer). Credentials themselves (username and
//! hashed password) are entities, not config.

use super::checks;
use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "basic-auth",
    1001,
    Table::new(&[
        Field::new("anonymous", Kind::String).default(Fill::Str("")).check(checks::anonymous),
        Field::new("hide_credentials", Kind::Boolean).default(Fill::Bool(false)),
    ])
    .no_consumer(),
);
