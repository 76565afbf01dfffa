//! Memory of closed connections goes back to the system even when no traffic follows.
//!
//! mimalloc (the binaries' allocator) returns freed pages to the system only from inside a
//! later allocation on the same thread. A worker that served 2,000 idle connections and then
//! went quiet kept their ~45 MB until the next request. Each worker therefore asks its own
//! heap once a second to release what has been free long enough (`mi_collect(false)`: the
//! pages past mimalloc's purge delay, not a forced compaction).

use std::time::Duration;

const EVERY: Duration = Duration::from_secs(1);

/// Runs for the life of the worker's runtime; spawn it on every worker, once on the main
/// runtime and once on the sync client's thread (where configurations are parsed and
/// compiled).
pub async fn trim() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        collect();
    }
}

/// Releases what the calling thread's heap has had free long enough.
pub fn collect() {
    #[allow(unsafe_code)]
    // SAFETY: mi_collect takes no pointers and only touches the calling thread's heap and
    // mimalloc's own bookkeeping; it is safe to call at any time, whichever allocator is
    // global (with another one it has nothing to collect).
    unsafe {
        libmimalloc_sys::mi_collect(false)
    };
}
