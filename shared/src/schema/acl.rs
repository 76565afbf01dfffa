//! acl's config (priority 950, no consumer): one group list, allowing or denying.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "acl",
    950,
    Table::new(&[
        Field::new("whitelist", Kind::Array),
        Field::new("blacklist", Kind::Array),
        Field::new("hide_groups_header", Kind::Boolean).default(Fill::Bool(false)),
    ])
    .no_consumer()
    .self_check(exactly_one_list),
);

fn non_empty(conf: &Object, name: &str) -> bool {
    conf.get(name).and_then(Value::as_array).is_some_and(|list| !list.is_empty())
}

/// Allow and deny lists cannot be combined, and an ACL with neither means nothing.
fn exactly_one_list(conf: &Object) -> Result<(), String> {
    match (non_empty(conf, "whitelist"), non_empty(conf, "blacklist")) {
        (true, true) => Err("You cannot set both a whitelist and a blacklist".to_string()),
        (false, false) => Err("You must set at least a whitelist or blacklist".to_string()),
        _ => Ok(()),
    }
}
