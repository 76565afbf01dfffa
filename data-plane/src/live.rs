//! The configuration being served, swapped atomically by whoever loads configurations (the
//! sync client, or the declarative file's reload); readers take one `Arc` and keep it for a
//! whole request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::balancer::Registry;
use crate::compiled::Compiled;
use crate::plugins::control_plane::ControlPlane;

#[derive(Debug, Default)]
pub struct Live {
    current: ArcSwap<Compiled>,
    /// Upstream balancers, kept across configurations (their health state outlives a swap).
    pub balancers: Arc<Registry>,
    /// What plugins do through the control plane: writes, shared rate-limit counters.
    pub control_plane: Arc<ControlPlane>,
    connected: AtomicBool,
    /// A configuration has been loaded (from the control plane, a file or the cache).
    loaded: AtomicBool,
    pub counters: SyncCounters,
    /// Why the control plane last refused to serve this data plane (its version, a plugin
    /// it lacks), until it serves it again.
    refused: std::sync::Mutex<Option<String>>,
    /// The revision the disk cache holds, -1 before any.
    cached: std::sync::atomic::AtomicI64,
}

/// Frees `old` on a thread of its own. A large configuration (tens of thousands of routes)
/// takes milliseconds to free: on the sync task that would delay the next delta and its
/// acknowledgement. (A request still holding the old configuration frees it when it ends,
/// if it is the last: rare, as requests are short.)
pub fn reap(old: Box<dyn Send>) {
    static REAPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Box<dyn Send>>>> = std::sync::OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn Send>>();
        let spawned = std::thread::Builder::new().name("config-reaper".into()).spawn(move || {
            for old in rx {
                drop(old);
                // What a configuration freed goes back to the system, not only on the next
                // allocation of this thread (which is the next configuration's free).
                crate::memory::collect();
            }
        });
        spawned.ok().map(|_| tx)
    });
    // Without the thread (it could not start), the caller frees it.
    if let Some(tx) = reaper {
        if let Err(std::sync::mpsc::SendError(old)) = tx.send(old) {
            drop(old);
        }
    }
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
        Live { balancers: Arc::new(balancers), cached: (-1).into(), ..Live::default() }
    }

    /// The revision the disk cache holds, if it holds one.
    pub fn cached_revision(&self) -> Option<i64> {
        Some(self.cached.load(Ordering::Relaxed)).filter(|r| *r >= 0)
    }

    pub fn set_cached_revision(&self, revision: i64) {
        self.cached.store(revision, Ordering::Relaxed);
    }

    pub fn load(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    /// Swaps `compiled` in; the configuration it replaces is freed on the reaper thread.
    pub fn store(&self, compiled: Compiled) {
        reap(Box::new(self.swap(compiled)));
    }

    /// Swaps `compiled` in and hands back the configuration it replaces, for the caller to
    /// drop. For a delta's predecessor, which shares everything but what the delta changed:
    /// dropping it frees only that (microseconds for a few entities; a certificate change or
    /// a large batch, milliseconds), and freed on the thread that allocates configurations,
    /// its blocks go back to that thread's free lists, where the next delta's copies take
    /// them. Freed from the reaper, they came back only as the allocator collected them, and
    /// each delta took fresh memory meanwhile.
    pub fn swap(&self, compiled: Compiled) -> Arc<Compiled> {
        let revision = compiled.revision();
        let old = self.current.swap(Arc::new(compiled));
        // After the swap: a write waiting for this revision may answer once it serves here.
        self.control_plane.serving(revision);
        self.loaded.store(true, Ordering::Release);
        old
    }

    /// Whether a configuration has been loaded: until then the data plane answers every
    /// request with 404 and is not ready.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Why the control plane refuses this data plane, if it does.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_refused(&self, why: Option<String>) {
        *self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Says, when dropped, which thread dropped it.
    struct Freed(std::sync::mpsc::Sender<Option<String>>);

    impl Drop for Freed {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().name().map(str::to_owned));
        }
    }

    #[test]
    fn a_replaced_configuration_is_freed_on_the_reaper_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        reap(Box::new(Freed(tx)));
        let by = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(by.as_deref(), Some("config-reaper"));
    }
}
