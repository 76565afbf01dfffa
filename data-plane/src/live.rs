//! The configuration being served, swapped atomically by the sync task (its only writer);
//! readers take one `Arc` and keep it for a whole request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::balancer::Registry;
use crate::compiled::Compiled;

#[derive(Debug, Default)]
pub struct Live {
    current: ArcSwap<Compiled>,
    /// Upstream balancers, kept across configurations (their health state outlives a swap).
    pub balancers: Arc<Registry>,
    connected: AtomicBool,
    pub counters: SyncCounters,
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
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
}
