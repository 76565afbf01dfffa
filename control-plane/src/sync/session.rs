//! One data plane's stream: from the revision it holds to the head, then following the head.
//!
//! The session sends whole revisions only. Deltas when the change log still holds every
//! revision after the data plane's; otherwise (revision 0, another epoch, compacted away, or
//! ahead of us) a snapshot in chunks of at most 1 MiB, built under a semaphore so a reconnect
//! storm cannot exhaust the control plane. After a NACK the session stays put until the head
//! moves past the refused revision, then resends everything since the last ACK as one batch,
//! so a later fix can repair a bad revision.

use opentelemetry::trace::TraceContextExt as _;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use gatehouse_shared::proto::control_plane_message::Message as Out;
use gatehouse_shared::proto::data_plane_message::Message as In;
use gatehouse_shared::proto::{
    Change, ControlPlaneMessage, CounterTotals, DataPlaneMessage, Deltas, Hello, SnapshotChunk, UpToDate, WriteResult,
};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tonic::{Status, Streaming};

use super::{compatibility, Tail};
use crate::store::{now_ms, DataPlaneRow, Doc, Op, Store, StoreError, Table};

/// Why a data plane's write was not committed.
struct Refused {
    error: String,
    /// A row it deletes was gone (see `WriteResult.spent`).
    spent: bool,
}

impl From<String> for Refused {
    fn from(error: String) -> Refused {
        Refused { error, spent: false }
    }
}

/// Entities a data plane may create and delete through the sync stream.
const WRITABLE: [&str; 2] = ["oauth2_tokens", "oauth2_authorization_codes"];

/// Chunks and batches stay under this many bytes of documents.
const CHUNK_BYTES: usize = 1024 * 1024 - 64 * 1024;
/// Change rows read per query while catching up.
const READ_BATCH: i64 = 5_000;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Counters one batch may add to.
const MAX_COUNTERS: usize = 10_000;

/// The totals of the counted increments put back in the batch's order, -1 for the others.
fn aligned(counted: &[bool], added: Vec<i64>) -> Vec<i64> {
    let mut added = added.into_iter();
    counted.iter().map(|ok| if *ok { added.next().unwrap_or(-1) } else { -1 }).collect()
}

pub(super) struct Shared {
    pub store: Store,
    pub tail: Tail,
    pub cluster_id: String,
    pub node_id: String,
    pub snapshots: Arc<Semaphore>,
    pub last_read: LastRead,
}

/// Change-log rows from one revision on, whole revisions only.
type Rows = Arc<Vec<crate::store::changelog::Change>>;

/// The last change-log read, shared by this process's sessions. When a write reaches the
/// head every connected data plane needs the same rows at the same moment: the first session
/// to ask reads them and the others wait for that read and take the same rows, so a write
/// costs the database one read whatever the number of data planes. A session that needs
/// other rows (it is behind) reads on its own, without waiting for anyone.
#[derive(Default)]
pub(super) struct LastRead(std::sync::Mutex<Option<Read>>);

/// A read of the rows after a revision (the first), started at a head (the second).
type Read = (i64, i64, Arc<tokio::sync::OnceCell<Rows>>);

impl LastRead {
    /// The rows after revision `from`, whole revisions only, as of a head of at least `head`.
    async fn since(&self, store: &Store, from: i64, head: i64) -> Result<Rows, StoreError> {
        let read = {
            let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*last {
                Some((read_from, read_at, read)) if *read_from == from && *read_at >= head => read.clone(),
                _ => {
                    let read = Arc::new(tokio::sync::OnceCell::new());
                    *last = Some((from, head, read.clone()));
                    read
                }
            }
        };
        read.get_or_try_init(|| whole_revisions(store, from)).await.cloned()
    }
}

/// Up to about [`READ_BATCH`] rows after revision `from`, ending at a revision's end: a read
/// cut short drops its last revision, and one revision larger than a batch is read whole.
async fn whole_revisions(store: &Store, from: i64) -> Result<Rows, StoreError> {
    let mut limit = READ_BATCH;
    loop {
        let mut rows = store.changes_since(from, limit).await?;
        if (rows.len() as i64) < limit {
            return Ok(Arc::new(rows));
        }
        let last = rows.last().map_or(0, |r| r.revision);
        if let Some(end) = rows.iter().position(|r| r.revision == last).filter(|end| *end > 0) {
            rows.truncate(end);
            return Ok(Arc::new(rows));
        }
        limit *= 2;
    }
}

type Outbound = mpsc::Sender<Result<ControlPlaneMessage, Status>>;

struct Session {
    shared: Arc<Shared>,
    out: Outbound,
    row: DataPlaneRow,
    /// The newest revision sent (the data plane will be there once it applies everything).
    sent: i64,
    acked: i64,
    /// A revision the data plane refused; nothing is resent until the head passes it.
    refused: Option<i64>,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("data plane went away")]
    Gone,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub(super) async fn run(shared: Arc<Shared>, mut inbound: Streaming<DataPlaneMessage>, out: Outbound, ip: String) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(DataPlaneMessage { message: Some(In::Hello(h)) }))) => h,
        _ => {
            let _ = out.send(Err(Status::invalid_argument("the first message must be Hello"))).await;
            return;
        }
    };
    tracing::info!(node = %hello.node_id, revision = hello.revision, %ip, "data plane connected");
    let refusal = match compatibility::refusal(&hello, &shared.store).await {
        Ok(r) => r,
        Err(e) => {
            let _ = out.send(Err(Status::unavailable(format!("the control plane's store: {e}")))).await;
            return;
        }
    };
    if let Some(reason) = refusal {
        tracing::warn!(node = %hello.node_id, version = %hello.version, %reason, "data plane refused");
        let mut row = row_for(&hello, &ip, &shared.node_id);
        row.sync_status = crate::store::INCOMPATIBLE.into();
        row.doc["last_error"] = json!({ "reason": reason });
        if let Err(e) = shared.store.upsert_data_plane(&row).await {
            tracing::warn!(error = %e, "cannot record data-plane status");
        }
        let _ = out.send(Err(Status::failed_precondition(reason))).await;
        return;
    }
    let mut session = Session {
        row: row_for(&hello, &ip, &shared.node_id),
        sent: hello.revision,
        acked: hello.revision,
        refused: None,
        shared,
        out,
    };
    session.record("syncing").await;
    let result = session.serve(&hello, &mut inbound).await;
    if let Err(e) = &result {
        tracing::info!(node = %session.row.id, reason = %e, "data plane session ended");
    }
    session.record("disconnected").await;
}

fn row_for(hello: &Hello, ip: &str, cp: &str) -> DataPlaneRow {
    DataPlaneRow {
        id: hello.node_id.clone(),
        hostname: hello.hostname.clone(),
        ip: ip.to_string(),
        version: hello.version.clone(),
        last_seen: now_ms() / 1000,
        config_revision: hello.revision,
        sync_status: "syncing".into(),
        control_plane: cp.to_string(),
        doc: json!({ "plugins": hello.plugins }),
    }
}

impl Session {
    async fn serve(&mut self, hello: &Hello, inbound: &mut Streaming<DataPlaneMessage>) -> Result<(), End> {
        let mut head_rx = self.shared.tail.subscribe();
        let head = *head_rx.borrow_and_update();
        let compacted = self.shared.store.compacted_through().await?;
        let fresh = hello.epoch != self.shared.cluster_id || hello.revision == 0;
        if fresh || hello.revision < compacted || hello.revision > head {
            self.send_snapshot().await?;
        } else if hello.revision == head {
            self.send(Out::UpToDate(UpToDate { epoch: self.shared.cluster_id.clone(), revision: head })).await?;
        }
        self.catch_up().await?;
        loop {
            tokio::select! {
                changed = head_rx.changed() => {
                    if changed.is_err() { return Ok(()); }
                    self.catch_up().await?;
                }
                msg = inbound.message() => match msg {
                    Ok(Some(DataPlaneMessage { message: Some(m) })) => self.handle(m).await?,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return Err(End::Gone),
                },
                _ = self.out.closed() => return Err(End::Gone),
            }
        }
    }

    async fn handle(&mut self, message: In) -> Result<(), End> {
        match message {
            In::Ack(ack) => {
                self.acked = ack.revision;
                self.row.config_revision = ack.revision;
                self.row.doc["last_error"] = serde_json::Value::Null;
                self.refused = None;
                let status = if ack.revision >= self.shared.tail.head() { "normal" } else { "syncing" };
                self.record(status).await;
            }
            In::Nack(nack) => {
                tracing::warn!(node = %self.row.id, revision = nack.revision, reason = %nack.reason, "data plane refused a batch");
                self.refused = Some(nack.revision);
                self.sent = self.acked;
                self.row.doc["last_error"] = json!({
                    "revision": nack.revision, "entity": nack.entity, "entity_id": nack.entity_id, "reason": nack.reason,
                });
                self.record("nack").await;
            }
            In::Status(status) => {
                self.row.config_revision = status.applied_revision;
                self.row.doc["targets"] = serde_json::to_value(
                    status
                        .targets
                        .iter()
                        .map(|t| json!({"upstream_id": t.upstream_id, "target": t.target, "health": t.health}))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default();
                let current = self.row.sync_status.clone();
                self.record(&current).await;
            }
            In::Write(w) => {
                let result = self.write(&w.changes).await;
                let reply = match result {
                    Ok(revision) => WriteResult { id: w.id, revision, error: String::new(), spent: false },
                    Err(Refused { error, spent }) => {
                        tracing::warn!(node = %self.row.id, %error, "data-plane write refused");
                        WriteResult { id: w.id, revision: 0, error, spent }
                    }
                };
                self.send(Out::WriteResult(reply)).await?;
            }
            In::Counters(batch) => {
                // Bounded: a batch carries at most what one data plane counted in a moment. The
                // answer has a total for every increment, in order (the data plane pairs them by
                // position): -1 for one not counted (past the bound, or not a counter's key).
                let counted: Vec<bool> = batch
                    .increments
                    .iter()
                    .enumerate()
                    .map(|(n, i)| {
                        n < MAX_COUNTERS
                            && (i.key.starts_with("ratelimit:") || i.key.starts_with("response-ratelimit:"))
                    })
                    .collect();
                let increments: Vec<(String, i64, i64)> = batch
                    .increments
                    .into_iter()
                    .zip(&counted)
                    .filter(|(_, ok)| **ok)
                    .map(|(i, _)| (i.key, i.delta.max(0), i.expires_at))
                    .collect();
                let added = match self.shared.store.add_counters(&increments).await {
                    Ok(t) => t,
                    Err(e) => {
                        // The data plane keeps counting on its own until the store is back.
                        tracing::warn!(error = %e, "cannot add rate-limit counters");
                        return Ok(());
                    }
                };
                let totals = aligned(&counted, added);
                self.send(Out::CounterTotals(CounterTotals { id: batch.id, totals })).await?;
            }
            In::Hello(_) => {}
        }
        Ok(())
    }

    /// Commits what a data plane created at request time. Only the runtime entities a data
    /// plane owns may be written this way: configuration stays with the Admin API.
    async fn write(&self, changes: &[Change]) -> Result<i64, Refused> {
        let mut ops = Vec::with_capacity(changes.len());
        for c in changes {
            let table = Table::from_name(&c.entity)
                .filter(|t| WRITABLE.contains(&t.name()))
                .ok_or_else(|| format!("data planes cannot write '{}'", c.entity))?;
            if c.deleted {
                // A code or refresh token is spent once: a second writer's delete fails the
                // whole write, so only one token comes of it.
                ops.push(Op::Consume(table, c.id.clone()));
            } else {
                let doc: Doc = serde_json::from_str(&c.document).map_err(|e| format!("bad document: {e}"))?;
                if doc.get("id").and_then(serde_json::Value::as_str) != Some(c.id.as_str()) {
                    return Err(String::from("document id does not match").into());
                }
                ops.push(Op::Insert(table, doc));
            }
        }
        match self.shared.store.commit(ops).await {
            Ok(Some(revision)) => Ok(revision),
            Ok(None) => Ok(self.shared.tail.head()),
            Err(e) => Err(Refused { spent: matches!(e, StoreError::Gone { .. }), error: e.to_string() }),
        }
    }

    /// Persists this data plane's row so every control-plane replica can show it.
    async fn record(&mut self, status: &str) {
        self.row.sync_status = status.to_string();
        self.row.last_seen = now_ms() / 1000;
        if let Err(e) = self.shared.store.upsert_data_plane(&self.row).await {
            tracing::warn!(error = %e, "cannot record data-plane status");
        }
    }

    async fn send(&self, message: Out) -> Result<(), End> {
        self.out.send(Ok(ControlPlaneMessage { message: Some(message) })).await.map_err(|_| End::Gone)
    }

    async fn send_snapshot(&mut self) -> Result<(), End> {
        let _permit = self.shared.snapshots.acquire().await.map_err(|_| End::Gone)?;
        let snapshot = self.shared.store.snapshot().await?;
        let epoch = self.shared.cluster_id.clone();
        let mut index = 0;
        let mut entities = Vec::new();
        let mut bytes = 0;
        for (table, id, document) in snapshot.rows {
            bytes += document.len() + id.len() + 16;
            entities.push(Change { entity: table.name().to_string(), id, document, deleted: false });
            if bytes >= CHUNK_BYTES {
                let chunk = SnapshotChunk {
                    epoch: epoch.clone(),
                    revision: snapshot.revision,
                    index,
                    last: false,
                    entities: std::mem::take(&mut entities),
                };
                self.send(Out::Snapshot(chunk)).await?;
                index += 1;
                bytes = 0;
            }
        }
        let chunk = SnapshotChunk { epoch, revision: snapshot.revision, index, last: true, entities };
        self.send(Out::Snapshot(chunk)).await?;
        tracing::info!(node = %self.row.id, revision = snapshot.revision, chunks = index + 1, "snapshot sent");
        self.sent = snapshot.revision;
        Ok(())
    }

    /// Sends every revision after `sent` up to the head, in batches of whole revisions.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let head = self.shared.tail.head();
            if head <= self.sent || self.refused.is_some_and(|r| head <= r) {
                return Ok(());
            }
            let rows = self.shared.last_read.since(&self.shared.store, self.sent, head).await?;
            let Some(first) = rows.first() else { return Ok(()) };
            if first.revision != self.sent + 1 {
                // The log no longer holds what this data plane needs.
                self.send_snapshot().await?;
                continue;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut batch_end = self.sent;
            for (i, row) in rows.iter().enumerate() {
                bytes += row.doc.as_ref().map_or(0, String::len) + 64;
                batch.push(Change {
                    entity: row.entity.clone(),
                    id: row.entity_id.clone(),
                    document: row.doc.clone().unwrap_or_default(),
                    deleted: row.op == "delete",
                });
                batch_end = row.revision;
                let revision_ends = rows.get(i + 1).is_none_or(|next| next.revision != row.revision);
                if revision_ends && bytes >= CHUNK_BYTES {
                    self.send_deltas(std::mem::take(&mut batch), batch_end).await?;
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                self.send_deltas(batch, batch_end).await?;
            }
        }
    }

    async fn send_deltas(&mut self, changes: Vec<Change>, revision: i64) -> Result<(), End> {
        // In the trace of the last traced write it carries (so it is sampled with it), linked
        // to every such write; the data plane's apply span continues it.
        let span = tracing::info_span!("sync.delta", revision, from_revision = self.sent, changes = changes.len());
        let writes = crate::sync::links::between(self.sent, revision);
        if let Some(last) = writes.last() {
            let parent = opentelemetry::Context::new().with_remote_span_context(last.clone());
            let _ = span.set_parent(parent);
        }
        for write in writes {
            span.add_link(write);
        }
        let traceparent = crate::sync::links::traceparent(&span);
        let deltas =
            Deltas { epoch: self.shared.cluster_id.clone(), from_revision: self.sent, revision, changes, traceparent };
        self.send(Out::Deltas(deltas)).instrument(span).await?;
        self.sent = revision;
        Ok(())
    }
}

#[cfg(test)]
mod aligned_tests {
    #[test]
    fn an_increment_not_counted_keeps_the_others_in_place() {
        assert_eq!(super::aligned(&[true, false, true], vec![7, 9]), vec![7, -1, 9]);
        assert_eq!(super::aligned(&[false, false], Vec::new()), vec![-1, -1]);
    }
}
