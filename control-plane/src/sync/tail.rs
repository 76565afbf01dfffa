//! Follows the change log's head revision and publishes it on a `watch` channel.
//!
//! The carrier of data is always the `changes` table; wake-ups (this process's commits,
//! Postgres notifications) only make the next read happen sooner. A periodic poll keeps it
//! correct when a notification is lost, and the same loop applies the retention policy.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::SyncSettings;
use crate::store::{Dialect, Store};

/// The head revision as the sync sessions of this process see it.
#[derive(Clone)]
pub struct Tail {
    head: watch::Receiver<i64>,
}

impl Tail {
    /// Starts following `store`'s head until `shutdown` fires.
    pub async fn start(
        store: Store,
        database_url: String,
        settings: SyncSettings,
        mut shutdown: watch::Receiver<bool>,
    ) -> Tail {
        let initial = store.head_revision().await.unwrap_or(0);
        let (tx, rx) = watch::channel(initial);
        let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
        if store.dialect() == Dialect::Postgres {
            tokio::spawn(listen(database_url, wake_tx.clone(), shutdown.clone()));
        }
        let mut local = store.subscribe_commits();
        tokio::spawn(async move {
            let mut last_compaction = Instant::now();
            let mut compacted = store.compacted_through().await.unwrap_or(0);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(settings.poll) => {}
                    // Without a LISTEN task (SQLite) the channel is closed: the branch is then skipped.
                    Some(()) = wake_rx.recv() => {}
                    r = local.changed() => { if r.is_err() { break; } }
                    _ = shutdown.changed() => break,
                }
                let mut over_retention = false;
                match store.head_revision().await {
                    Ok(head) => {
                        over_retention = head - compacted > settings.retention * 2;
                        tx.send_if_modified(|v| {
                            let newer = head > *v;
                            if newer {
                                *v = head;
                            }
                            newer
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the head revision"),
                }
                if over_retention || last_compaction.elapsed() > Duration::from_secs(10) {
                    last_compaction = Instant::now();
                    match store.compact(settings.retention).await {
                        Ok(n) => {
                            compacted = store.compacted_through().await.unwrap_or(compacted);
                            if n > 0 {
                                tracing::info!(rows = n, through = compacted, "compacted the change log");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "change-log compaction failed"),
                    }
                }
            }
        });
        Tail { head: rx }
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }
}

/// `LISTEN gatehouse_changes`, turning each notification into a wake-up; reconnects on error.
async fn listen(url: String, wake: tokio::sync::mpsc::Sender<()>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for changes; polling only");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen("gatehouse_changes").await {
            tracing::warn!(error = %e, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(_) => { let _ = wake.try_send(()); }
                    Err(e) => { tracing::debug!(error = %e, "notification stream broke"); break; }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
