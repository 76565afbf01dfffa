//! request-transformer's config (priority 801): an optional method change and five rule
//! groups (remove, rename, replace, add, append) over body, headers and querystring.

use serde_json::Value;

use super::checks::colon_entries;
use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

/// Methods nginx knows (`ngx.HTTP_<METHOD>`), the only ones Kong can switch a request to.
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "OPTIONS",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
    "TRACE",
];

/// remove and rename entries are bare names (`old:new` for rename is not checked).
static NAMES: Table = Table::new(&[
    Field::new("body", Kind::Array).default(Fill::List(&[])),
    Field::new("headers", Kind::Array).default(Fill::List(&[])),
    Field::new("querystring", Kind::Array).default(Fill::List(&[])),
]);

/// replace, add and append entries set a value, so they need `name:value`.
static NAME_VALUES: Table = Table::new(&[
    Field::new("body", Kind::Array).default(Fill::List(&[])).check(colon_entries),
    Field::new("headers", Kind::Array).default(Fill::List(&[])).check(colon_entries),
    Field::new("querystring", Kind::Array).default(Fill::List(&[])).check(colon_entries),
]);

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "request-transformer",
    801,
    Table::new(&[
        Field::new("http_method", Kind::String).check(known_method),
        Field::new("remove", Kind::Table).schema(&NAMES),
        Field::new("rename", Kind::Table).schema(&NAMES),
        Field::new("replace", Kind::Table).schema(&NAME_VALUES),
        Field::new("add", Kind::Table).schema(&NAME_VALUES),
        Field::new("append", Kind::Table).schema(&NAME_VALUES),
    ]),
);

/// Compared upper-cased; the value is stored as given.
fn known_method(value: Option<&Value>, _: &Object) -> Result<(), String> {
    let Some(method) = value.and_then(Value::as_str) else {
        return Ok(());
    };
    let method = method.to_ascii_uppercase();
    if METHODS.contains(&method.as_str()) {
        Ok(())
    } else {
        Err(format!("{method} is not supported"))
    }
}
