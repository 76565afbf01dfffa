//! Declarative configuration in Kong's format (`_format_version`; services with nested routes
//! and plugins, consumers with credentials and ACLs, upstreams with targets, certificates
//! with SNIs, global plugins), YAML or JSON.
//!
//! A file is validated by the Admin API itself: its entities are replayed, parents first, as
//! Admin API requests against a scratch SQLite store, so every rule, default and error message
//! is the Admin API's. What the scratch store then holds is the file's configuration, which
//! `import` makes the store's in one transaction (one revision, none when nothing differs),
//! `diff` compares, and a DB-less data plane serves.
//!
//! Entities keep the ids the file gives. One without an id takes the id of the stored entity
//! with the same natural key (a service's or upstream's name, a consumer's username, a
//! credential's key, a plugin's name and scope, …), else a name-based UUID (v5) of that key or,
//! for entities without one (routes), of their parent and content: the same file always
//! yields the same ids, so importing it twice changes nothing.

mod export;
mod plan;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use export::export;
pub use plan::{plan, Target};

use crate::store::{Doc, Op, Store, StoreError, Table};

/// What a declarative file could not be turned into.
#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    #[error("the file is neither YAML nor JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Format(String),
    /// An entity the Admin API refused: where it is in the file, and the Admin API's answer.
    #[error("{path}: {message}")]
    Entity { path: String, message: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Versions of Kong's declarative format whose entities Gatehouse reads (the entity fields
/// are Kong 0.14's, as the Admin API takes them).
const FORMAT_VERSIONS: [&str; 4] = ["1.1", "2.1", "2.2", "3.0"];

/// Top-level keys of a document.
const TOP_LEVEL: [&str; 6] = ["_format_version", "services", "consumers", "upstreams", "certificates", "plugins"];

/// Parses a file's text, YAML or JSON (JSON is YAML), and checks its top level.
///
/// # Errors
/// Not YAML, not a mapping, an unknown `_format_version` or top-level key.
pub fn parse(text: &str) -> Result<Value, DeclarativeError> {
    let doc: Value = yaml_serde::from_str(text).map_err(|e| DeclarativeError::Syntax(e.to_string()))?;
    let Value::Object(top) = &doc else {
        return Err(DeclarativeError::Format("the document must be a mapping".into()));
    };
    match top.get("_format_version") {
        Some(Value::String(v)) if FORMAT_VERSIONS.contains(&v.as_str()) => {}
        // YAML reads `_format_version: 1.1` as a number.
        Some(v @ Value::Number(_)) => {
            return Err(DeclarativeError::Format(format!("_format_version must be a string: write \"{v}\"")))
        }
        Some(v) => {
            return Err(DeclarativeError::Format(format!(
                "_format_version {v} is not supported (expected one of {})",
                FORMAT_VERSIONS.join(", ")
            )))
        }
        None => return Err(DeclarativeError::Format("_format_version is required".into())),
    }
    if let Some(unknown) = top.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(DeclarativeError::Format(format!("{unknown}: unknown top-level key")));
    }
    Ok(doc)
}

/// Tables a declarative file describes, parents before children. Runtime state (OAuth2 tokens
/// and codes, manual target health) is not configuration and is left alone.
pub const TABLES: [Table; 14] = [
    Table::Services,
    Table::Routes,
    Table::Consumers,
    Table::Upstreams,
    Table::Targets,
    Table::Certificates,
    Table::Snis,
    Table::KeyauthCredentials,
    Table::BasicauthCredentials,
    Table::HmacauthCredentials,
    Table::JwtSecrets,
    Table::Acls,
    Table::Oauth2Credentials,
    Table::Plugins,
];

/// Every configuration row of a store, by table and id.
pub type Rows = BTreeMap<Table, BTreeMap<String, Doc>>;

/// Reads every configuration row of `store` at one revision.
///
/// # Errors
/// A database failure.
pub async fn rows(store: &Store) -> Result<(i64, Rows), DeclarativeError> {
    let snapshot = store.snapshot().await?;
    let mut rows = Rows::new();
    for (table, id, doc) in snapshot.rows {
        if !TABLES.contains(&table) {
            continue;
        }
        if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(&doc) {
            rows.entry(table).or_default().insert(id, doc);
        }
    }
    Ok((snapshot.revision, rows))
}

/// A document without the fields the store stamps (creation and update times), for comparing
/// a file's entity with a stored one.
fn content(doc: &Doc) -> Map<String, Value> {
    doc.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "created_at" | "updated_at"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What making the store hold a file's configuration takes.
#[derive(Debug, Default)]
pub struct Diff {
    pub created: Vec<(Table, String)>,
    pub updated: Vec<(Table, String)>,
    pub deleted: Vec<(Table, String)>,
    ops: Vec<Op>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// One line per change, `+` created, `~` updated, `-` deleted.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (sign, list) in [("+", &self.created), ("~", &self.updated), ("-", &self.deleted)] {
            for (table, id) in list {
                out.push_str(&format!("{sign} {} {id}\n", table.name()));
            }
        }
        out.push_str(&format!(
            "{} to create, {} to update, {} to delete\n",
            self.created.len(),
            self.updated.len(),
            self.deleted.len()
        ));
        out
    }
}

/// Compares the store's configuration with `target`.
///
/// # Errors
/// A database failure.
pub async fn diff(store: &Store, target: &Target) -> Result<Diff, DeclarativeError> {
    let (_, current) = rows(store).await?;
    let empty = BTreeMap::new();
    let now_s = crate::store::now_ms() / 1000;
    let mut d = Diff::default();
    // Deletions first, children before parents, so that no row is left pointing at one gone;
    // OAuth2 tokens and codes of what goes are removed with it.
    for table in TABLES.iter().rev() {
        let wanted = target.rows.get(table).unwrap_or(&empty);
        for id in current.get(table).unwrap_or(&empty).keys() {
            if !wanted.contains_key(id) {
                match table {
                    Table::Oauth2Credentials => {
                        d.ops.push(Op::DeleteWhere(Table::Oauth2Tokens, "credential_id", id.clone()));
                        d.ops.push(Op::DeleteWhere(Table::Oauth2AuthorizationCodes, "credential_id", id.clone()));
                    }
                    Table::Services => {
                        d.ops.push(Op::DeleteWhere(Table::Oauth2Tokens, "service_id", id.clone()));
                        d.ops.push(Op::DeleteWhere(Table::Oauth2AuthorizationCodes, "service_id", id.clone()));
                    }
                    Table::Upstreams => d.ops.push(Op::DeleteWhere(Table::TargetHealth, "upstream_id", id.clone())),
                    _ => {}
                }
                d.ops.push(Op::Delete(*table, id.clone()));
                d.deleted.push((*table, id.clone()));
            }
        }
    }
    for table in TABLES {
        let stored = current.get(&table).unwrap_or(&empty);
        for (id, doc) in target.rows.get(&table).unwrap_or(&empty) {
            match stored.get(id) {
                None => {
                    d.ops.push(Op::Insert(table, doc.clone()));
                    d.created.push((table, id.clone()));
                }
                Some(old) if content(old) != content(doc) => {
                    let mut doc = doc.clone();
                    if let Some(created) = old.get("created_at") {
                        doc.insert("created_at".into(), created.clone());
                    }
                    if doc.contains_key("updated_at") {
                        doc.insert("updated_at".into(), Value::from(now_s));
                    }
                    d.ops.push(Op::Update(table, doc));
                    d.updated.push((table, id.clone()));
                }
                Some(_) => {}
            }
        }
    }
    Ok(d)
}

/// Makes the store hold `target`'s configuration: one transaction, one revision; nothing
/// (and no revision) when it already does. Returns the diff applied and the new revision.
///
/// # Errors
/// A database failure, or a constraint the transaction broke (the store is then unchanged).
pub async fn import(store: &Store, target: &Target) -> Result<(Diff, Option<i64>), DeclarativeError> {
    let mut d = diff(store, target).await?;
    if d.is_empty() {
        return Ok((d, None));
    }
    let ops = std::mem::take(&mut d.ops);
    let revision = store.commit(ops).await?;
    Ok((d, revision))
}

/// The configuration set a DB-less data plane serves from a file.
///
/// # Errors
/// As [`plan`].
pub async fn config_set(doc: &Value, revision: i64) -> Result<gatehouse_shared::snapshot::ConfigSet, DeclarativeError> {
    let target = plan(None, doc, None).await?;
    let mut set = gatehouse_shared::snapshot::ConfigSet::new("declarative", revision);
    for (table, docs) in target.rows {
        let entities = set.entities.entry(table.name().to_string()).or_default();
        for (id, doc) in docs {
            entities.insert(id.into(), gatehouse_shared::snapshot::Doc::of(&Value::Object(doc)));
        }
    }
    Ok(set)
}
