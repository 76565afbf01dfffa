//! The configuration as data planes hold it: every entity document by table and id, at one
//! revision of one epoch (cluster id). Data planes apply delta batches to a copy and swap it
//! in whole; the control plane builds the same shape for full snapshots.
//!
//! Tables are persistent maps and documents are shared (`Arc`): copying the set to apply a
//! batch costs a pointer per table, and applying a change copies only the path to its entry,
//! so a delta costs the same at a hundred routes as at a hundred thousand.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::proto::Change;

/// Tables whose rows travel to data planes.
pub const TABLES: [&str; 17] = [
    "services",
    "routes",
    "consumers",
    "certificates",
    "snis",
    "plugins",
    "upstreams",
    "targets",
    "target_health",
    // Credentials of the auth plugins (`crate::credential`), by consumer or oauth2 application.
    "keyauth_credentials",
    "basicauth_credentials",
    "hmacauth_credentials",
    "jwt_secrets",
    "acls",
    "oauth2_credentials",
    "oauth2_tokens",
    "oauth2_authorization_codes",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    #[error("{entity} {id}: unknown entity type")]
    UnknownEntity { entity: String, id: String },
    #[error("{entity} {id}: invalid document: {reason}")]
    BadDocument { entity: String, id: String, reason: String },
    #[error("batch from revision {from} does not follow revision {current}")]
    OutOfOrder { from: i64, current: i64 },
}

impl ApplyError {
    /// The entity to blame, for a NACK.
    pub fn entity(&self) -> (&str, &str) {
        match self {
            ApplyError::UnknownEntity { entity, id } | ApplyError::BadDocument { entity, id, .. } => (entity, id),
            ApplyError::OutOfOrder { .. } => ("", ""),
        }
    }
}

/// One epoch's configuration at one revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSet {
    pub epoch: String,
    pub revision: i64,
    pub entities: BTreeMap<String, Table>,
}

/// One table's documents by id.
pub type Table = imbl::OrdMap<String, Arc<Value>>;

impl ConfigSet {
    pub fn new(epoch: impl Into<String>, revision: i64) -> Self {
        ConfigSet { epoch: epoch.into(), revision, entities: BTreeMap::new() }
    }

    /// Applies `changes` in order (upserts replace, deletes remove).
    ///
    /// # Errors
    /// An unknown entity type or a document that is not a JSON object; `self` is then
    /// partially changed, so callers apply to a copy.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        for c in changes {
            if !TABLES.contains(&c.entity.as_str()) {
                return Err(ApplyError::UnknownEntity { entity: c.entity.clone(), id: c.id.clone() });
            }
            let table = self.entities.entry(c.entity.clone()).or_default();
            if c.deleted {
                table.remove(&c.id);
                continue;
            }
            let doc: Value = serde_json::from_str(&c.document).map_err(|e| ApplyError::BadDocument {
                entity: c.entity.clone(),
                id: c.id.clone(),
                reason: e.to_string(),
            })?;
            if !doc.is_object() {
                return Err(ApplyError::BadDocument {
                    entity: c.entity.clone(),
                    id: c.id.clone(),
                    reason: "not an object".into(),
                });
            }
            table.insert(c.id.clone(), Arc::new(doc));
        }
        Ok(())
    }

    /// The documents of one table.
    pub fn table(&self, name: &str) -> impl Iterator<Item = &Arc<Value>> {
        self.entities.get(name).into_iter().flat_map(|t| t.values())
    }

    /// One document.
    pub fn get(&self, table: &str, id: &str) -> Option<&Arc<Value>> {
        self.entities.get(table).and_then(|t| t.get(id))
    }

    pub fn len(&self) -> usize {
        self.entities.values().map(Table::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The strings of a stored document's array field (other elements skipped); empty when absent.
pub fn strings(doc: &Value, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(entity: &str, id: &str, doc: &str) -> Change {
        Change { entity: entity.into(), id: id.into(), document: doc.into(), deleted: false }
    }

    #[test]
    fn applies_upserts_and_deletes() {
        let mut set = ConfigSet::new("e", 0);
        set.apply(&[upsert("services", "a", r#"{"id":"a"}"#), upsert("routes", "b", r#"{"id":"b"}"#)]).unwrap();
        assert_eq!(set.len(), 2);
        set.apply(&[Change { entity: "routes".into(), id: "b".into(), document: String::new(), deleted: true }])
            .unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn every_credential_entity_travels() {
        for schema in crate::credential::ALL {
            assert!(TABLES.contains(&schema.name()), "{} is not synced", schema.name());
        }
        let mut set = ConfigSet::new("e", 0);
        set.apply(&[upsert("keyauth_credentials", "k", r#"{"id":"k","key":"abc"}"#)]).unwrap();
        assert_eq!(set.table("keyauth_credentials").count(), 1);
    }

    #[test]
    fn refuses_unknown_entities_and_bad_documents() {
        let mut set = ConfigSet::new("e", 0);
        assert!(matches!(set.apply(&[upsert("apis", "a", "{}")]), Err(ApplyError::UnknownEntity { .. })));
        assert!(matches!(set.apply(&[upsert("services", "a", "[1]")]), Err(ApplyError::BadDocument { .. })));
    }
}
