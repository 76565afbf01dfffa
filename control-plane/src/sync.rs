//! The sync server: streams the change log to data planes over gRPC (mTLS).
//!
//! [`tail`] follows the head revision (this process's commits at once; other processes'
//! through Postgres `LISTEN/NOTIFY` as a wake-up and a poll as the correctness path) and
//! compacts the log; [`server`] accepts streams; each [`session`] brings one data plane from
//! the revision it holds to the head: deltas when the log still has them, a chunked snapshot
//! otherwise.

mod compatibility;
pub mod links;
mod server;
mod session;
mod tail;
mod tls;

use std::time::Duration;

pub use server::SyncServer;
pub use tail::Tail;
pub use tls::{generate_shared_cert, ClusterTls, MtlsMode};

/// Sync settings from the process configuration.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Revisions kept in the change log; older ones are compacted away.
    pub retention: i64,
    /// How often the head is polled when no wake-up arrives.
    pub poll: Duration,
    /// Concurrent snapshot builds allowed (a reconnect storm queues behind this).
    pub max_snapshots: usize,
    /// A data plane not heard from for this long is shown as disconnected.
    pub stale_after: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            retention: 100_000,
            poll: Duration::from_millis(250),
            max_snapshots: 4,
            stale_after: Duration::from_secs(30),
        }
    }
}
