//! Store failures, split into what the Admin API turns into 4xx (constraint violations) and
//! what it reports as 500.

use super::Dialect;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write; `column` is the entity field (e.g. `name`, `id`).
    #[error("unique violation on {table}.{column}")]
    Unique { table: String, column: String },
    /// A foreign key refused the write (a parent is missing or a child still refers to it).
    #[error("foreign key violation")]
    ForeignKey,
    /// A row an [`Op::Consume`](super::Op::Consume) needed was already deleted.
    #[error("{table} {id} no longer exists")]
    Gone { table: String, id: String },
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("corrupt document: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl StoreError {
    /// Turns a raw database error into `Unique`/`ForeignKey` where it is one, reading the
    /// index name (Postgres: `ux_<table>_<column>`) or SQLite's `table.column` message.
    pub(super) fn classify(self, dialect: Dialect) -> StoreError {
        let StoreError::Db(sqlx::Error::Database(db)) = &self else { return self };
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                let (table, column) = match dialect {
                    Dialect::Postgres => parse_pg_constraint(db.constraint().unwrap_or_default()),
                    Dialect::Sqlite => parse_sqlite_message(db.message()),
                };
                StoreError::Unique { table, column }
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => StoreError::ForeignKey,
            _ => self,
        }
    }
}

fn parse_pg_constraint(name: &str) -> (String, String) {
    if let Some(table) = name.strip_suffix("_pkey") {
        return (table.to_string(), "id".to_string());
    }
    let rest = name.strip_prefix("ux_").unwrap_or(name);
    for table in super::Table::ALL {
        if let Some(col) = rest.strip_prefix(table.name()).and_then(|c| c.strip_prefix('_')) {
            return (table.name().to_string(), col.to_string());
        }
    }
    (String::new(), rest.to_string())
}

fn parse_sqlite_message(msg: &str) -> (String, String) {
    // "UNIQUE constraint failed: consumers.username" or "... failed: index 'ux_plugins_name'"
    let detail = msg.rsplit(": ").next().unwrap_or_default();
    if let Some(index) = detail.strip_prefix("index '").and_then(|s| s.strip_suffix('\'')) {
        return parse_pg_constraint(index);
    }
    let first = detail.split(", ").next().unwrap_or_default();
    match first.split_once('.') {
        Some((t, c)) => (t.to_string(), c.to_string()),
        None => (String::new(), first.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_constraint_names() {
        assert_eq!(parse_pg_constraint("ux_consumers_custom_id"), ("consumers".into(), "custom_id".into()));
        assert_eq!(parse_pg_constraint("services_pkey"), ("services".into(), "id".into()));
        assert_eq!(parse_sqlite_message("UNIQUE constraint failed: snis.name"), ("snis".into(), "name".into()));
        assert_eq!(
            parse_sqlite_message("UNIQUE constraint failed: index 'ux_plugins_name'"),
            ("plugins".into(), "name".into())
        );
        assert_eq!(
            parse_pg_constraint("ux_oauth2_tokens_refresh_token"),
            ("oauth2_tokens".into(), "refresh_token".into())
        );
        assert_eq!(parse_pg_constraint("ux_acls_group"), ("acls".into(), "group".into()));
        // A per-consumer index names its first column; the caller knows what it guards.
        assert_eq!(
            parse_sqlite_message("UNIQUE constraint failed: acls.consumer_id, acls.group"),
            ("acls".into(), "consumer_id".into())
        );
    }
}
