//! What plugins do through the control plane: writes that must commit there before the
//! request that made them is answered (oauth2's codes and tokens), and the counters of the
//! rate limiters' `cluster` policy. The sync client carries both on its stream; plugins reach
//! them through [`ControlPlane`] without knowing the configuration being served.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use gatehouse_shared::proto::Change;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::limits::cluster::SharedCounts;

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

/// The data plane's link to the control plane, as plugins use it.
#[derive(Debug)]
pub struct ControlPlane {
    pub writes: Writes,
    /// Rate-limit counters shared through the control plane (the `cluster` policy).
    pub shared_counts: SharedCounts,
    /// The revision of the configuration being served (-1 before any).
    served: AtomicI64,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane { writes: Writes::default(), shared_counts: SharedCounts::default(), served: AtomicI64::new(-1) }
    }
}

impl ControlPlane {
    /// The configuration being served is now at `revision`.
    pub fn serving(&self, revision: i64) {
        self.served.store(revision, Ordering::Release);
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
        while self.served.load(Ordering::Acquire) < revision && started.elapsed() < WRITE_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(revision)
    }
}
