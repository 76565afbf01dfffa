//! The change log: each committed batch takes the next revision from a single counter row and
//! appends one row per entity changed.
//!
//! Taking the counter row's lock first in every write transaction serialises writers, so
//! revisions are gap-free (a rolled-back batch returns its number) and commit in revision
//! order: a tailer reading `revision > N` can never miss a smaller revision that commits
//! later. This holds across several control-plane processes on one Postgres.

use serde_json::Value;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::table::{column_value, quoted};
use super::{Dialect, Doc, Op, StoreError, Table};

/// One change-log row.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: i64,
    pub seq: i32,
    pub entity: String,
    pub entity_id: String,
    pub op: String,
    pub doc: Option<String>,
}

pub(super) async fn apply(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    ops: Vec<Op>,
) -> Result<Option<i64>, StoreError> {
    let row =
        sqlx::query("UPDATE revision SET head = head + 1 WHERE id = 1 RETURNING head").fetch_one(&mut **tx).await?;
    let revision: i64 = row.try_get(0)?;
    let now = now_ms();
    let mut seq = 0i32;
    for op in ops {
        match op {
            Op::Insert(table, doc) => {
                insert(tx, table, &doc).await?;
                log(tx, revision, &mut seq, table, id_of(&doc), Some(&doc), now).await?;
            }
            Op::Update(table, doc) => {
                if update(tx, table, &doc).await? {
                    log(tx, revision, &mut seq, table, id_of(&doc), Some(&doc), now).await?;
                }
            }
            Op::Delete(table, id) => {
                let sql = format!("DELETE FROM {} WHERE id = $1", table.name());
                let done = sqlx::query(&sql).bind(&id).execute(&mut **tx).await?;
                if done.rows_affected() > 0 {
                    log(tx, revision, &mut seq, table, &id, None, now).await?;
                }
            }
            Op::Consume(table, id) => {
                let sql = format!("DELETE FROM {} WHERE id = $1", table.name());
                let done = sqlx::query(&sql).bind(&id).execute(&mut **tx).await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Gone { table: table.name().to_string(), id });
                }
                log(tx, revision, &mut seq, table, &id, None, now).await?;
            }
            Op::DeleteWhere(table, column, value) => {
                let sql = format!("DELETE FROM {} WHERE {} = $1 RETURNING id", table.name(), quoted(column));
                let rows = sqlx::query(&sql).bind(&value).fetch_all(&mut **tx).await?;
                for r in rows {
                    let id: String = r.try_get(0)?;
                    log(tx, revision, &mut seq, table, &id, None, now).await?;
                }
            }
            Op::DeleteWhereParent { table, column, parent, parent_column, value } => {
                let sql = format!(
                    "DELETE FROM {} WHERE {} IN (SELECT id FROM {} WHERE {} = $1) RETURNING id",
                    table.name(),
                    quoted(column),
                    parent.name(),
                    quoted(parent_column),
                );
                let rows = sqlx::query(&sql).bind(&value).fetch_all(&mut **tx).await?;
                for r in rows {
                    let id: String = r.try_get(0)?;
                    log(tx, revision, &mut seq, table, &id, None, now).await?;
                }
            }
        }
    }
    if seq == 0 {
        return Ok(None);
    }
    if dialect == Dialect::Postgres {
        // A wake-up for tailers in other processes; the rows above are the data.
        sqlx::query("SELECT pg_notify('gatehouse_changes', $1)").bind(revision.to_string()).execute(&mut **tx).await?;
    }
    Ok(Some(revision))
}

fn id_of(doc: &Doc) -> &str {
    doc.get("id").and_then(Value::as_str).unwrap_or_default()
}

fn created_at(doc: &Doc) -> i64 {
    doc.get("created_at").and_then(Value::as_i64).unwrap_or_default()
}

async fn insert(tx: &mut Transaction<'static, Any>, table: Table, doc: &Doc) -> Result<(), StoreError> {
    let cols = table.columns();
    let names: Vec<String> = cols.iter().map(|(c, _)| quoted(c)).collect();
    let placeholders: Vec<String> = (4..4 + cols.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {} (id, created_at, doc{}{}) VALUES ($1, $2, $3{}{})",
        table.name(),
        if names.is_empty() { "" } else { ", " },
        names.join(", "),
        if names.is_empty() { "" } else { ", " },
        placeholders.join(", "),
    );
    let mut q = sqlx::query(&sql).bind(id_of(doc).to_string()).bind(created_at(doc)).bind(serde_json::to_string(doc)?);
    for (_, path) in cols {
        q = q.bind(column_value(doc, path));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

async fn update(tx: &mut Transaction<'static, Any>, table: Table, doc: &Doc) -> Result<bool, StoreError> {
    let cols = table.columns();
    let sets: Vec<String> =
        cols.iter().enumerate().map(|(i, (c, _))| format!(", {} = ${}", quoted(c), i + 4)).collect();
    let sql = format!("UPDATE {} SET created_at = $2, doc = $3{} WHERE id = $1", table.name(), sets.concat());
    let mut q = sqlx::query(&sql).bind(id_of(doc).to_string()).bind(created_at(doc)).bind(serde_json::to_string(doc)?);
    for (_, path) in cols {
        q = q.bind(column_value(doc, path));
    }
    Ok(q.execute(&mut **tx).await?.rows_affected() > 0)
}

async fn log(
    tx: &mut Transaction<'static, Any>,
    revision: i64,
    seq: &mut i32,
    table: Table,
    id: &str,
    doc: Option<&Doc>,
    now: i64,
) -> Result<(), StoreError> {
    *seq += 1;
    let doc = doc.map(serde_json::to_string).transpose()?;
    sqlx::query(
        "INSERT INTO changes (revision, seq, entity, entity_id, op, doc, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(revision)
    .bind(*seq)
    .bind(table.name())
    .bind(id.to_string())
    .bind(if doc.is_some() { "upsert" } else { "delete" })
    .bind(doc)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn since(pool: &AnyPool, revision: i64, limit: i64) -> Result<Vec<Change>, StoreError> {
    let rows = sqlx::query(
        "SELECT revision, seq, entity, entity_id, op, doc FROM changes \
         WHERE revision > $1 ORDER BY revision, seq LIMIT $2",
    )
    .bind(revision)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Change {
                revision: r.try_get(0)?,
                seq: r.try_get(1)?,
                entity: r.try_get(2)?,
                entity_id: r.try_get(3)?,
                op: r.try_get(4)?,
                doc: r.try_get(5)?,
            })
        })
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
