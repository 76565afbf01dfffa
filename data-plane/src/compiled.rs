//! The configuration a data plane serves, compiled from a [`ConfigSet`] off the request path.
//! Compilation is also the data plane's validation: a set it cannot compile is refused
//! (NACK) and the previous one keeps serving.

use std::collections::HashSet;
use std::sync::Arc;

use gatehouse_shared::snapshot::ConfigSet;
use serde_json::Value;

/// Why a configuration cannot be served here.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{entity} {id}: {reason}")]
pub struct CompileError {
    pub entity: String,
    pub id: String,
    pub reason: String,
}

/// A compiled configuration; requests read it through one `Arc`.
#[derive(Debug, Default)]
pub struct Compiled {
    pub set: Arc<ConfigSet>,
}

impl Compiled {
    /// # Errors
    /// The first entity this data plane cannot serve (e.g. a plugin it does not have).
    pub fn compile(set: Arc<ConfigSet>, plugins: &HashSet<String>) -> Result<Compiled, CompileError> {
        for plugin in set.table("plugins") {
            let name = plugin.get("name").and_then(Value::as_str).unwrap_or_default();
            if !plugins.contains(name) {
                return Err(CompileError {
                    entity: "plugins".into(),
                    id: plugin.get("id").and_then(Value::as_str).unwrap_or_default().into(),
                    reason: format!("plugin '{name}' is not available on this data plane"),
                });
            }
        }
        Ok(Compiled { set })
    }

    pub fn revision(&self) -> i64 {
        self.set.revision
    }
}
