//! The configuration being served, swapped atomically by the sync task (its only writer);
//! readers take one `Arc` and keep it for a whole request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_shared::proto::Change;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::balancer::Registry;
use crate::compiled::Compiled;

/// A write on its way to the control plane, and where its outcome goes.
#[derive(Debug)]
pub struct PendingWrite {
    pub changes: Vec<Change>,
    pub done: oneshot::Sender<Result<i64, WriteError>>,
}

/// Why a write through the control plane did not commit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// A row the write deletes was already gone: a code or refresh token spent twice.
    #[error("already spent")]
    Spent,
    #[error("{0}")]
    Failed(String),
}

/// The data plane's write path to the control plane (see `WriteRequest` in sync.proto): the
/// sync client drains the queue onto its stream.
#[derive(Debug)]
pub struct Writes {
    tx: mpsc::Sender<PendingWrite>,
    pub rx: Mutex<mpsc::Receiver<PendingWrite>>,
}

impl Default for Writes {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1024);
        Writes { tx, rx: Mutex::new(rx) }
    }
}

/// How long a request waits for the control plane to commit what it wrote.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Live {
    current: ArcSwap<Compiled>,
    /// Upstream balancers, kept across configurations (their health state outlives a swap).
    pub balancers: Arc<Registry>,
    pub writes: Writes,
    connected: AtomicBool,
    /// A configuration has been loaded (from the control plane, a file or the cache).
    loaded: AtomicBool,
    pub counters: SyncCounters,
    /// Rate-limit counters shared through the control plane (the `cluster` policy).
    pub shared_counts: crate::plugins::limits::cluster::SharedCounts,
}

/// What the sync client has done since start, for the status endpoint.
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub snapshots: AtomicU64,
    pub deltas: AtomicU64,
    pub nacks: AtomicU64,
    pub connects: AtomicU64,
}

impl Live {
    pub fn new(balancers: Registry) -> Live {
        Live { balancers: Arc::new(balancers), ..Live::default() }
    }

    pub fn load(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    pub fn store(&self, compiled: Compiled) {
        self.current.store(Arc::new(compiled));
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether a configuration has been loaded: until then the data plane answers every
    /// request with 404 and is not ready.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Commits `changes` through the control plane, then waits until this data plane serves
    /// the revision holding them, so what a client was just handed works here at once.
    ///
    /// # Errors
    /// The control plane refused the write, or is unreachable.
    pub async fn write(&self, changes: Vec<Change>) -> Result<i64, WriteError> {
        let (done, result) = oneshot::channel();
        // While the control plane is away writes fail at once rather than pile up.
        self.writes
            .tx
            .try_send(PendingWrite { changes, done })
            .map_err(|_| WriteError::Failed("the control plane is unreachable".into()))?;
        let revision = tokio::time::timeout(WRITE_TIMEOUT, result)
            .await
            .map_err(|_| WriteError::Failed("the control plane did not answer in time".into()))?
            .map_err(|_| WriteError::Failed("the sync stream closed".into()))??;
        let started = tokio::time::Instant::now();
        while self.load().revision() < revision && started.elapsed() < WRITE_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(revision)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
}
