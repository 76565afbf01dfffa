//! file-log's config (priority 9): the file log records are appended to.
//!
//! Kong validates by creating the file on the node that stores the config. Here the control
//! plane is not where logs are written (data planes are), so only the path's shape is checked
//! at the Admin API; a data plane reports an unwritable path when it opens the file.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "file-log",
    9,
    Table::new(&[
        Field::new("path", Kind::String).required().check(check_path),
        Field::new("reopen", Kind::Boolean).default(Fill::Bool(false)),
    ]),
);

fn check_path(value: Option<&Value>, _: &Object) -> Result<(), String> {
    let Some(path) = value.and_then(Value::as_str) else {
        return Ok(());
    };
    if path.contains('\0') || path.ends_with('/') {
        return Err(format!("Cannot create file: {path}: Is a directory or an invalid path"));
    }
    Ok(())
}
