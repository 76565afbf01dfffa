//! The configuration store: one table per entity (real columns for keys and filters, the
//! entity itself as a JSON document) and the change log, on Postgres or SQLite through sqlx.
//!
//! Both backends run the same SQL through sqlx's `Any` driver; what differs between them
//! (migrations, how writes are serialised, how constraint errors read) is the [`Dialect`].
//! Every write goes through [`Store::commit`], which applies a batch of [`Op`]s and appends
//! their change rows under one new revision in the same transaction.

pub(crate) mod changelog;
mod cluster;
mod error;
mod migrate;
mod table;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tracing::instrument;

pub(crate) use changelog::now_ms;
pub use changelog::Change;
pub use cluster::{DataPlaneRow, Snapshot, SnapshotRow, INCOMPATIBLE};
pub use error::StoreError;
pub use migrate::MigrationStatus;
pub use table::Table;

/// One entity document as stored (and as the Admin API renders it).
pub type Doc = Map<String, Value>;

/// The SQL dialect behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }

    /// Text of a top-level JSON document field, for filters on fields without a column.
    fn doc_field(self, field: &str) -> String {
        match self {
            Dialect::Postgres => format!("(doc::jsonb ->> '{field}')"),
            Dialect::Sqlite => format!("CAST(json_extract(doc, '$.{field}') AS TEXT)"),
        }
    }
}

/// One change inside a [`Store::commit`] batch.
#[derive(Debug, Clone)]
pub enum Op {
    Insert(Table, Doc),
    Update(Table, Doc),
    Delete(Table, String),
    /// Deletes a row that must exist: the whole commit fails ([`StoreError::Gone`]) if it is
    /// already gone, so two writers cannot both consume it (OAuth2 codes, refresh tokens).
    Consume(Table, String),
    /// Deletes every row whose `column` equals `value` (cascades), logging each deletion.
    DeleteWhere(Table, &'static str, String),
    /// Two-level cascade: deletes every row of `table` whose `column` holds the id of a row of
    /// `parent` whose `parent_column` equals `value` (an oauth2 application's tokens, by the
    /// application's consumer), logging each deletion.
    DeleteWhereParent {
        table: Table,
        column: &'static str,
        parent: Table,
        parent_column: &'static str,
        value: String,
    },
}

/// An equality filter on a list query.
#[derive(Debug, Clone)]
pub struct Filter {
    pub field: &'static str,
    pub value: String,
}

/// A keyset page request: rows ordered by id, strictly after `after`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub after: Option<String>,
    pub size: u32,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite allows one writer; serialising our own writers here avoids busy-lock retries.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    /// The newest revision this process committed: wakes this process's sync sessions at once.
    committed: Arc<tokio::sync::watch::Sender<i64>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

/// The store holds credentials: its file is created owner-only (0600) before the driver
/// opens it (SQLite gives its `-wal` and `-shm` files the same mode).
fn sqlite_file_private(url: &str) -> Result<(), StoreError> {
    let rest = url.trim_start_matches("sqlite:");
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') || url.contains("mode=memory") {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        gatehouse_shared::private_fs::create_dir(dir)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    gatehouse_shared::private_fs::ensure_file(path)
        .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", path.display())))
}

impl Store {
    /// Opens a pool on `url` (`postgres://…` or `sqlite://…`); creates a missing SQLite file.
    ///
    /// # Errors
    /// An unsupported scheme or a connection failure.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database url '{url}': expected postgres://… or sqlite://…"
            )));
        };
        if dialect == Dialect::Sqlite {
            sqlite_file_private(url)?;
        }
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10));
        let options = if dialect == Dialect::Sqlite {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await?;
        Ok(Store {
            pool,
            dialect,
            sqlite_writer: Arc::default(),
            committed: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// Revisions committed by this process, as they commit.
    /// Closes the pool, so a scratch store's file can be removed at once.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<i64> {
        self.committed.subscribe()
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether a connection can be had right now (`/status`'s `database.reachable`).
    pub async fn reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The newest committed revision (0 before the first write).
    pub async fn head_revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT head FROM revision WHERE id = 1").fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// The cluster id, created on first use: data planes use it to tell a fresh database
    /// (whose revisions restart at 1) from the one they synced with.
    pub async fn cluster_id(&self) -> Result<String, StoreError> {
        let fresh = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO cluster (key, value) VALUES ('cluster_id', $1) ON CONFLICT (key) DO NOTHING")
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM cluster WHERE key = 'cluster_id'").fetch_one(&self.pool).await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    #[instrument(skip_all, fields(table = table.name()))]
    pub async fn get(&self, table: Table, id: &str) -> Result<Option<Doc>, StoreError> {
        let sql = format!("SELECT doc FROM {} WHERE id = $1", table.name());
        let row = sqlx::query(&sql).bind(id.to_ascii_lowercase()).fetch_optional(&self.pool).await?;
        row.map(|r| decode_doc(&r)).transpose()
    }

    /// The first row whose `field` equals `value` (unique keys such as a service name).
    #[instrument(skip_all, fields(table = table.name()))]
    pub async fn find(&self, table: Table, field: &'static str, value: &str) -> Result<Option<Doc>, StoreError> {
        let filter = [Filter { field, value: value.to_string() }];
        Ok(self.list(table, &filter, &Page { after: None, size: 1 }).await?.into_iter().next())
    }

    /// Rows matching all `filters`, ordered by id, after the page cursor.
    #[instrument(skip_all, fields(table = table.name()))]
    pub async fn list(&self, table: Table, filters: &[Filter], page: &Page) -> Result<Vec<Doc>, StoreError> {
        let (mut sql, mut binds) = self.where_clause(table, filters, "SELECT doc");
        if let Some(after) = &page.after {
            binds.push(after.clone());
            sql.push_str(&format!(" AND id > ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page.size.max(1)));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool).await?.iter().map(decode_doc).collect()
    }

    #[instrument(skip_all, fields(table = table.name()))]
    pub async fn count(&self, table: Table, filters: &[Filter]) -> Result<i64, StoreError> {
        let (sql, binds) = self.where_clause(table, filters, "SELECT COUNT(*)");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        Ok(q.fetch_one(&self.pool).await?.try_get::<i64, _>(0)?)
    }

    fn where_clause(&self, table: Table, filters: &[Filter], select: &str) -> (String, Vec<String>) {
        let mut sql = format!("{select} FROM {} WHERE 1 = 1", table.name());
        let mut binds = Vec::new();
        for f in filters {
            binds.push(f.value.clone());
            let expr = if f.field == "id" || table.has_column(f.field) {
                table::quoted(f.field)
            } else {
                self.dialect.doc_field(f.field)
            };
            sql.push_str(&format!(" AND {expr} = ${}", binds.len()));
        }
        (sql, binds)
    }

    /// Applies `ops` in one transaction under one new revision, logging every row changed.
    /// Returns the revision, or `None` when nothing changed (no revision is used then).
    ///
    /// # Errors
    /// Constraint violations as [`StoreError::Unique`] / [`StoreError::ForeignKey`].
    #[instrument(name = "store.commit", skip_all, fields(ops = ops.len()))]
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Option<i64>, StoreError> {
        let _guard = match self.dialect {
            Dialect::Sqlite => Some(self.sqlite_writer.lock().await),
            Dialect::Postgres => None,
        };
        let mut tx = self.pool.begin().await?;
        let result = changelog::apply(&mut tx, self.dialect, ops).await;
        match result {
            Ok(Some(rev)) => {
                tx.commit().await?;
                crate::sync::links::remember(rev);
                self.committed.send_if_modified(|v| {
                    let newer = rev > *v;
                    if newer {
                        *v = rev;
                    }
                    newer
                });
                Ok(Some(rev))
            }
            Ok(None) => {
                tx.rollback().await?;
                Ok(None)
            }
            Err(e) => {
                // Dropping the transaction rolls it back.
                drop(tx);
                Err(e.classify(self.dialect))
            }
        }
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// A failing migration.
    pub async fn migrate_up(&self) -> Result<Vec<String>, StoreError> {
        migrate::up(&self.pool, self.dialect).await
    }

    /// Applied and pending migrations.
    ///
    /// # Errors
    /// A database failure.
    pub async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        migrate::status(&self.pool, self.dialect).await
    }

    /// Adds increments to the shared rate-limit counters (the `cluster` policy) in one
    /// transaction, and returns each counter's total after its increment, in order.
    ///
    /// # Errors
    /// A database failure.
    pub async fn add_counters(&self, increments: &[(String, i64, i64)]) -> Result<Vec<i64>, StoreError> {
        let _guard = match self.dialect {
            Dialect::Sqlite => Some(self.sqlite_writer.lock().await),
            Dialect::Postgres => None,
        };
        let mut tx = self.pool.begin().await?;
        let mut totals = Vec::with_capacity(increments.len());
        for (key, delta, expires_at) in increments {
            let row = sqlx::query(
                "INSERT INTO ratelimit_counters (key, expires_at, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = ratelimit_counters.value + excluded.value \
                 RETURNING value",
            )
            .bind(key.as_str())
            .bind(*expires_at)
            .bind(*delta)
            .fetch_one(&mut *tx)
            .await?;
            totals.push(row.try_get::<i64, _>(0)?);
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// Removes counters whose window has closed.
    ///
    /// # Errors
    /// A database failure.
    pub async fn expire_counters(&self, now_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM ratelimit_counters WHERE expires_at < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The change rows after `revision` (used by the sync server and by tests).
    pub async fn changes_since(&self, revision: i64, limit: i64) -> Result<Vec<Change>, StoreError> {
        changelog::since(&self.pool, revision, limit).await
    }
}

fn decode_doc(row: &AnyRow) -> Result<Doc, StoreError> {
    let text: String = row.try_get(0)?;
    match serde_json::from_str(&text)? {
        Value::Object(m) => Ok(m),
        _ => Err(StoreError::Corrupt("document is not an object".into())),
    }
}

impl Store {
    /// Distinct plugin names in use (`GET /`'s `enabled_in_cluster`).
    pub async fn distinct_plugin_names(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT name FROM plugins ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }
}
