//! response-transformer's config (priority 800): four rule groups (remove, replace, add,
//! append) over response headers and top-level JSON body keys.

use super::checks::colon_entries;
use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

/// remove entries are bare names.
static NAMES: Table = Table::new(&[
    Field::new("json", Kind::Array).default(Fill::List(&[])),
    Field::new("headers", Kind::Array).default(Fill::List(&[])),
]);

/// replace, add and append entries set a value, so they need `name:value`.
static NAME_VALUES: Table = Table::new(&[
    Field::new("json", Kind::Array).default(Fill::List(&[])).check(colon_entries),
    Field::new("headers", Kind::Array).default(Fill::List(&[])).check(colon_entries),
]);

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "response-transformer",
    800,
    Table::new(&[
        Field::new("remove", Kind::Table).schema(&NAMES),
        Field::new("replace", Kind::Table).schema(&NAME_VALUES),
        Field::new("add", Kind::Table).schema(&NAME_VALUES),
        Field::new("append", Kind::Table).schema(&NAME_VALUES),
    ]),
);
