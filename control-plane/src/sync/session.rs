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
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use bytes::Bytes;
use gatehouse_shared::proto::control_plane_frame::Message as Out;
use gatehouse_shared::proto::data_plane_message::Message as In;
use gatehouse_shared::proto::{
    Change, ControlPlaneFrame, CounterTotals, DataPlaneMessage, Deltas, Hello, SnapshotChunk, UpToDate, WriteResult,
};
use prost::Message as _;
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

/// The revisions after one revision, cut into batches of whole revisions and each batch
/// encoded as the `Deltas` message a data plane receives.
type Batches = Arc<Vec<Batch>>;

/// One `Deltas` message, encoded.
struct Batch {
    /// The first revision it holds: a data plane needs it to follow the one it has.
    first: i64,
    /// The revision a data plane is at once it applies the batch.
    revision: i64,
    deltas: Bytes,
}

/// The last change-log read, shared by this process's sessions. When a write reaches the
/// head every connected data plane needs the same revisions at the same moment: the first
/// session to ask reads them and encodes them, and the others wait for that and send the same
/// bytes, so a write costs the database one read and the control plane one encoding whatever
/// the number of data planes. A session that needs other revisions (it is behind) reads on its
/// own, without waiting for anyone.
#[derive(Default)]
pub(super) struct LastRead(std::sync::Mutex<Option<Read>>);

/// A read of the revisions after a revision (the first), started at a head (the second).
type Read = (i64, i64, Arc<tokio::sync::OnceCell<Batches>>);

impl LastRead {
    /// The revisions after `from`, as of a head of at least `head`, in encoded batches.
    async fn since(&self, store: &Store, epoch: &str, from: i64, head: i64) -> Result<Batches, StoreError> {
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
        read.get_or_try_init(|| async { Ok(Arc::new(encode(epoch, from, &whole_revisions(store, from).await?))) })
            .await
            .cloned()
    }
}

/// Cuts `rows` (the revisions after `from`) into batches of whole revisions of about
/// [`CHUNK_BYTES`] and encodes each.
fn encode(epoch: &str, from: i64, rows: &[crate::store::changelog::Change]) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut changes = Vec::new();
    let mut bytes = 0;
    let mut batch_from = from;
    let mut opened = None;
    for (i, row) in rows.iter().enumerate() {
        let first = *opened.get_or_insert(row.revision);
        bytes += row.doc.as_ref().map_or(0, String::len) + 64;
        changes.push(Change {
            entity: row.entity.clone(),
            id: row.entity_id.clone(),
            document: row.doc.clone().unwrap_or_default(),
            deleted: row.op == "delete",
        });
        let revision_ends = rows.get(i + 1).is_none_or(|next| next.revision != row.revision);
        if revision_ends && (bytes >= CHUNK_BYTES || i + 1 == rows.len()) {
            batches.push(Batch {
                first,
                revision: row.revision,
                deltas: deltas(epoch, batch_from, row.revision, std::mem::take(&mut changes)),
            });
            batch_from = row.revision;
            bytes = 0;
            opened = None;
        }
    }
    batches
}

/// One batch, encoded, in the trace of the last traced write it carries (so it is sampled
/// with it) and linked to every such write; each data plane's apply span continues it.
fn deltas(epoch: &str, from_revision: i64, revision: i64, changes: Vec<Change>) -> Bytes {
    let span = tracing::info_span!("sync.delta", revision, from_revision, changes = changes.len());
    let writes = crate::sync::links::between(from_revision, revision);
    if let Some(last) = writes.last() {
        let parent = opentelemetry::Context::new().with_remote_span_context(last.clone());
        let _ = span.set_parent(parent);
    }
    for write in writes {
        span.add_link(write);
    }
    let traceparent = crate::sync::links::traceparent(&span);
    let _entered = span.enter();
    Deltas { epoch: epoch.to_owned(), from_revision, revision, changes, traceparent }.encode_to_vec().into()
}

/// Up to about [`READ_BATCH`] rows after revision `from`, ending at a revision's end: a read
/// cut short drops its last revision, and one revision larger than a batch is read whole.
async fn whole_revisions(store: &Store, from: i64) -> Result<Vec<crate::store::changelog::Change>, StoreError> {
    let mut limit = READ_BATCH;
    loop {
        let mut rows = store.changes_since(from, limit).await?;
        if (rows.len() as i64) < limit {
            return Ok(rows);
        }
        let last = rows.last().map_or(0, |r| r.revision);
        if let Some(end) = rows.iter().position(|r| r.revision == last).filter(|end| *end > 0) {
            rows.truncate(end);
            return Ok(rows);
        }
        limit *= 2;
    }
}

type Outbound = mpsc::Sender<Result<ControlPlaneFrame, Status>>;

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
        self.out.send(Ok(ControlPlaneFrame { message: Some(message) })).await.map_err(|_| End::Gone)
    }

    async fn send_snapshot(&mut self) -> Result<(), End> {
        let _permit = self.shared.snapshots.acquire().await.map_err(|_| End::Gone)?;
        let epoch = self.shared.cluster_id.clone();
        let (mut index, mut entities, mut bytes, mut sent_bytes) = (0, Vec::new(), 0, 0);
        let (tx, mut rx) = mpsc::channel::<crate::store::SnapshotRow>(1024);
        let out = &self.out;
        let send = |chunk: SnapshotChunk| out.send(Ok(ControlPlaneFrame { message: Some(Out::Snapshot(chunk)) }));
        // Chunks go out while the store is still reading: rows stream from the database.
        let sending = async {
            let sent = async {
                while let Some((revision, table, id, document)) = rx.recv().await {
                    bytes += document.len() + id.len() + 16;
                    entities.push(Change { entity: table.name().to_string(), id, document, deleted: false });
                    if bytes >= CHUNK_BYTES {
                        let entities = std::mem::take(&mut entities);
                        let chunk = SnapshotChunk { epoch: epoch.clone(), revision, index, last: false, entities };
                        sent_bytes += chunk.encoded_len();
                        send(chunk).await.map_err(|_| End::Gone)?;
                        index += 1;
                        bytes = 0;
                    }
                }
                Ok::<(), End>(())
            }
            .await;
            // The data plane gone, the read must not wait for room that no one makes: a closed
            // channel ends it at its next row, and with it the transaction and the permit.
            rx.close();
            sent
        };
        let (revision, sent) = tokio::join!(self.shared.store.snapshot_into(tx), sending);
        sent?;
        let revision = revision?;
        let chunk = SnapshotChunk { epoch, revision, index, last: true, entities };
        sent_bytes += chunk.encoded_len();
        send(chunk).await.map_err(|_| End::Gone)?;
        tracing::info!(node = %self.row.id, revision, chunks = index + 1, bytes = sent_bytes, "snapshot sent");
        self.sent = revision;
        Ok(())
    }

    /// Sends every revision after `sent` up to the head, in batches of whole revisions.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let head = self.shared.tail.head();
            if head <= self.sent || self.refused.is_some_and(|r| head <= r) {
                return Ok(());
            }
            let shared = &self.shared;
            let batches = shared.last_read.since(&shared.store, &shared.cluster_id, self.sent, head).await?;
            let Some(first) = batches.first() else { return Ok(()) };
            if first.first != self.sent + 1 {
                // The log no longer holds what this data plane needs.
                self.send_snapshot().await?;
                continue;
            }
            for batch in batches.iter() {
                self.send(Out::Deltas(batch.deltas.clone())).await?;
                self.sent = batch.revision;
            }
        }
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

#[cfg(test)]
mod fan_out_tests {
    use std::sync::Arc;

    use gatehouse_shared::proto::{control_plane_message, ControlPlaneMessage, Deltas, UpToDate};
    use prost::Message as _;
    use serde_json::json;

    use super::{encode, LastRead, Out, CHUNK_BYTES};
    use crate::store::changelog::Change as Row;
    use crate::store::{Op, Store, Table};

    fn row(revision: i64, seq: i32, doc_bytes: usize) -> Row {
        Row {
            revision,
            seq,
            entity: "services".into(),
            entity_id: format!("id-{revision}-{seq}"),
            op: "insert".into(),
            doc: Some(format!("{{\"pad\":\"{}\"}}", "x".repeat(doc_bytes))),
        }
    }

    /// What a data plane decodes from a frame the control plane wrote.
    fn as_received(frame: super::ControlPlaneFrame) -> ControlPlaneMessage {
        ControlPlaneMessage::decode(frame.encode_to_vec().as_slice()).expect("a data plane can decode every frame")
    }

    #[test]
    fn a_data_plane_reads_every_frame_as_the_message_of_the_contract() {
        use gatehouse_shared::proto::{Change, CounterTotals, SnapshotChunk, WriteResult};
        let change = Change { entity: "routes".into(), id: "r".into(), document: "{}".into(), deleted: false };
        let deltas = Deltas {
            epoch: "e".into(),
            from_revision: 4,
            revision: 6,
            changes: vec![change.clone()],
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        };
        let up = UpToDate { epoch: "e".into(), revision: 9 };
        let chunk = SnapshotChunk { epoch: "e".into(), revision: 3, index: 1, last: true, entities: vec![change] };
        let result = WriteResult { id: "w".into(), revision: 7, error: "no".into(), spent: true };
        let totals = CounterTotals { id: 5, totals: vec![1, -1] };
        use control_plane_message::Message as M;
        let pairs = [
            (Out::Deltas(deltas.encode_to_vec().into()), M::Deltas(deltas)),
            (Out::UpToDate(up.clone()), M::UpToDate(up)),
            (Out::Snapshot(chunk.clone()), M::Snapshot(chunk)),
            (Out::WriteResult(result.clone()), M::WriteResult(result)),
            (Out::CounterTotals(totals.clone()), M::CounterTotals(totals)),
        ];
        for (sent, expected) in pairs {
            let frame = super::ControlPlaneFrame { message: Some(sent) };
            assert_eq!(as_received(frame), ControlPlaneMessage { message: Some(expected) });
        }
    }

    #[test]
    fn batches_hold_whole_revisions_and_follow_one_another() {
        // Revision 1 (two rows) stays under a batch; revision 2's first row takes it over, and
        // its second row goes with it (a batch ends only where a revision does); 3 is the rest.
        let big = CHUNK_BYTES * 2 / 5;
        let rows = [row(1, 0, big), row(1, 1, big), row(2, 0, big), row(2, 1, 10), row(3, 0, 10)];
        let batches = encode("e", 0, &rows);
        let decoded: Vec<(i64, i64, i64, usize)> = batches
            .iter()
            .map(|b| {
                let d = Deltas::decode(b.deltas.as_ref()).unwrap();
                assert_eq!(d.revision, b.revision);
                (b.first, d.from_revision, d.revision, d.changes.len())
            })
            .collect();
        assert_eq!(decoded, [(1, 0, 2, 4), (3, 2, 3, 1)]);
        assert!(encode("e", 7, &[]).is_empty());
    }

    #[tokio::test]
    async fn sessions_at_one_revision_send_one_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        store.migrate_up().await.unwrap();
        let consumer = |n: u32| {
            json!({"id": format!("00000000-0000-4000-8000-00000000000{n}"), "created_at": 1, "username": format!("u{n}")})
                .as_object()
                .cloned()
                .unwrap()
        };
        let first = store.commit(vec![Op::Insert(Table::Consumers, consumer(1))]).await.unwrap().unwrap();
        let head = store.commit(vec![Op::Insert(Table::Consumers, consumer(2))]).await.unwrap().unwrap();
        let last_read = LastRead::default();
        let a = last_read.since(&store, "e", first - 1, head).await.unwrap();
        let b = last_read.since(&store, "e", first - 1, head).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "a second session at the same revision reuses the first one's bytes");
        assert_eq!(a.len(), 1);
        let d = Deltas::decode(a[0].deltas.as_ref()).unwrap();
        assert_eq!((d.from_revision, d.revision, d.changes.len()), (first - 1, head, 2));
        // A session at another revision gets its own read.
        let c = last_read.since(&store, "e", first, head).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(Deltas::decode(c[0].deltas.as_ref()).unwrap().changes.len(), 1);
        let d = last_read.since(&store, "e", first - 1, head).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &d), "the last read was another revision's");
        assert!(Arc::ptr_eq(&d, &last_read.since(&store, "e", first - 1, head).await.unwrap()));
    }
}
