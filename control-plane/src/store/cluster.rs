//! What the sync server needs from the store beyond entity CRUD: consistent full snapshots,
//! change-log retention, and the registry of data planes.

use serde_json::Value;
use sqlx::Row;

use super::{Dialect, Store, StoreError, Table};

/// One row of the data-plane registry.
#[derive(Debug, Clone)]
pub struct DataPlaneRow {
    pub id: String,
    pub hostname: String,
    pub ip: String,
    pub version: String,
    pub last_seen: i64,
    pub config_revision: i64,
    pub sync_status: String,
    pub control_plane: String,
    /// Anything else worth showing (plugins, last NACK reason).
    pub doc: Value,
}

/// The `sync_status` of a data plane the control plane refused to serve (its version, or a
/// plugin the configuration uses that it lacks); `last_error.reason` says why.
pub const INCOMPATIBLE: &str = "incompatible";

impl DataPlaneRow {
    /// Whether it counts as connected at `now` (Unix seconds): not marked disconnected (or
    /// refused as incompatible), and heard from within `stale_secs`.
    pub fn connected(&self, now: i64, stale_secs: i64) -> bool {
        !matches!(self.sync_status.as_str(), "disconnected" | INCOMPATIBLE) && now - self.last_seen <= stale_secs
    }
}

/// One row of a snapshot: (revision, table, id, document JSON).
pub type SnapshotRow = (i64, Table, String, String);

/// Every entity at one revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    /// (table, id, document JSON)
    pub rows: Vec<(Table, String, String)>,
}

impl Store {
    /// Reads the head revision and every entity in one read transaction, so the rows are
    /// exactly the state at that revision.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut rows = Vec::new();
        let collect = async {
            while let Some((_, table, id, doc)) = rx.recv().await {
                rows.push((table, id, doc));
            }
        };
        let (revision, ()) = tokio::join!(self.snapshot_into(tx), collect);
        Ok(Snapshot { revision: revision?, rows })
    }

    /// The rows of [`Store::snapshot`] sent one by one as the database returns them, each with
    /// the revision they are at: a data plane applies the first rows while later ones are
    /// still being read, and the control plane never holds a whole configuration per
    /// snapshot. Returns the revision; stops early, without error, when `rows` is closed.
    pub async fn snapshot_into(&self, rows: tokio::sync::mpsc::Sender<SnapshotRow>) -> Result<i64, StoreError> {
        use futures::TryStreamExt as _;
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        }
        let revision: i64 =
            sqlx::query("SELECT head FROM revision WHERE id = 1").fetch_one(&mut *tx).await?.try_get(0)?;
        for table in Table::ALL {
            let sql = format!("SELECT id, doc FROM {} ORDER BY id", table.name());
            let mut fetched = sqlx::query(&sql).fetch(&mut *tx);
            while let Some(r) = fetched.try_next().await? {
                if rows.send((revision, table, r.try_get(0)?, r.try_get(1)?)).await.is_err() {
                    return Ok(revision);
                }
            }
        }
        tx.commit().await?;
        Ok(revision)
    }

    /// Every revision up to and including this one has been removed from the change log.
    pub async fn compacted_through(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT value FROM cluster WHERE key = 'compacted_through'").fetch_optional(&self.pool).await?;
        Ok(row.and_then(|r| r.try_get::<String, _>(0).ok()).and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Drops change-log rows older than the newest `keep` revisions. Returns the rows removed.
    pub async fn compact(&self, keep: i64) -> Result<u64, StoreError> {
        let head = self.head_revision().await?;
        let through = head - keep;
        if through <= self.compacted_through().await? {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        // Record the horizon first: a session that sees it sends a snapshot instead of deltas.
        sqlx::query(
            "INSERT INTO cluster (key, value) VALUES ('compacted_through', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(through.to_string())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM changes WHERE revision <= $1").bind(through).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub async fn upsert_data_plane(&self, dp: &DataPlaneRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO data_planes (id, hostname, ip, version, last_seen, config_revision, sync_status, control_plane, doc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, ip = excluded.ip, version = excluded.version, \
             last_seen = excluded.last_seen, config_revision = excluded.config_revision, \
             sync_status = excluded.sync_status, control_plane = excluded.control_plane, doc = excluded.doc",
        )
        .bind(&dp.id)
        .bind(&dp.hostname)
        .bind(&dp.ip)
        .bind(&dp.version)
        .bind(dp.last_seen)
        .bind(dp.config_revision)
        .bind(&dp.sync_status)
        .bind(&dp.control_plane)
        .bind(dp.doc.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_planes(&self) -> Result<Vec<DataPlaneRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, hostname, ip, version, last_seen, config_revision, sync_status, control_plane, doc \
             FROM data_planes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DataPlaneRow {
                    id: r.try_get(0)?,
                    hostname: r.try_get(1)?,
                    ip: r.try_get(2)?,
                    version: r.try_get(3)?,
                    last_seen: r.try_get(4)?,
                    config_revision: r.try_get(5)?,
                    sync_status: r.try_get(6)?,
                    control_plane: r.try_get(7)?,
                    doc: serde_json::from_str(&r.try_get::<String, _>(8)?).unwrap_or(Value::Null),
                })
            })
            .collect()
    }
}
