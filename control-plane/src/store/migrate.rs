//! Versioned migrations, embedded in the binary: `migrations/postgres` and `migrations/sqlite`.
//! Applied migrations are checksummed by sqlx: never edit one, add another.

use sqlx::migrate::{Migrate, Migrator};
use sqlx::AnyPool;

use super::{Dialect, StoreError};

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

fn migrator(dialect: Dialect) -> &'static Migrator {
    match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Sqlite => &SQLITE,
    }
}

/// What `gatehouse-cp migrations status` prints.
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    pub applied: Vec<String>,
    pub pending: Vec<String>,
}

pub(super) async fn up(pool: &AnyPool, dialect: Dialect) -> Result<Vec<String>, StoreError> {
    let before = status(pool, dialect).await?;
    migrator(dialect).run(pool).await?;
    Ok(before.pending)
}

pub(super) async fn status(pool: &AnyPool, dialect: Dialect) -> Result<MigrationStatus, StoreError> {
    let mut conn = pool.acquire().await?;
    conn.ensure_migrations_table().await?;
    let applied: Vec<i64> = conn.list_applied_migrations().await?.iter().map(|m| m.version).collect();
    let mut status = MigrationStatus { applied: Vec::new(), pending: Vec::new() };
    for m in migrator(dialect).iter() {
        let label = format!("{:04}_{}", m.version, m.description.replace(' ', "_"));
        if applied.contains(&m.version) {
            status.applied.push(label);
        } else {
            status.pending.push(label);
        }
    }
    Ok(status)
}
