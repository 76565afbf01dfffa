//! file-log's config (priority 9): the file log records are appended to.
//!
//! As in Kong, validating the config creates the file when it does not exist yet, so an
//! unwritable path is refused when the plugin is configured rather than silently at log time.
//! This runs on the node that validates (the control plane).

use std::fs::OpenOptions;
use std::path::Path;

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "file-log",
    9,
    Table::new(&[
        Field::new("path", Kind::String)
            .required()
            .check(create_if_missing),
        Field::new("reopen", Kind::Boolean).default(Fill::Bool(false)),
    ]),
);

fn create_if_missing(value: Option<&Value>, _: &Object) -> Result<(), String> {
    let Some(path) = value.and_then(Value::as_str) else {
        return Ok(());
    };
    if Path::new(path).exists() {
        return Ok(());
    }
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) => Err(format!("Cannot create file: {path}: {}", os_reason(&err))),
    }
}

/// The C library's wording (`No such file or directory`), which is what Lua's `io.open`
/// reports; Rust appends ` (os error N)` to it.
fn os_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
