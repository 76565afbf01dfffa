//! The `cluster` policy: counters shared by every data plane through the control plane, which
//! keeps them in its store (so every control-plane replica sees the same totals).
//!
//! A data plane counts locally and, every [`FLUSH`], sends what it counted since its last
//! batch over the sync stream; the control plane adds it and answers with the totals. A check
//! reads `last total from the control plane + what this data plane counted since that total`.
//! The request path takes no lock and never waits on the network.
//!
//! Accuracy: with N data planes each admitting r requests a second, a data plane does not
//! see the others' last `FLUSH` plus one round trip of traffic, so a limit can be overrun by
//! about `(N - 1) × r × (FLUSH + RTT)` requests in a window (at 3 × 300 req/s, 20 ms flushes
//! and a loopback round trip: about 12). While the control plane is unreachable each data
//! plane enforces on its own count plus the last total it had.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_shared::proto::{CounterBatch, CounterIncrement, CounterTotals};

/// How often counted increments go to the control plane.
pub const FLUSH: Duration = Duration::from_millis(20);

/// One shared counter, as this data plane knows it.
#[derive(Debug)]
struct Slot {
    /// Everything this data plane counted under the key.
    local: AtomicU64,
    /// How much of `local` went out in batches (the sync task's).
    sent: AtomicU64,
    /// How much of `local` the last total from the control plane includes.
    acked: AtomicU64,
    /// That total.
    total: AtomicU64,
    expires_at_ms: i64,
}

/// A batch sent and not yet answered: its id, and each counter's `sent` as it was.
type Batch = (u64, Vec<(Arc<Slot>, u64)>);

/// This data plane's view of the shared counters.
#[derive(Debug, Default)]
pub struct SharedCounts {
    slots: papaya::HashMap<String, Arc<Slot>>,
    next_batch: AtomicU64,
    /// Batches sent and not yet answered, oldest first: for each counter, `sent` as it was.
    /// Only the sync task touches it.
    in_flight: Mutex<VecDeque<Batch>>,
}

impl SharedCounts {
    /// The count under `key`: the cluster's last total plus what this data plane has counted
    /// since.
    pub fn usage(&self, key: &str) -> u64 {
        match self.slots.pin().get(key) {
            Some(s) => {
                s.total.load(Ordering::Acquire)
                    + s.local.load(Ordering::Acquire).saturating_sub(s.acked.load(Ordering::Acquire))
            }
            None => 0,
        }
    }

    /// Counts `by` under `key`, whose window closes at `expires_at_ms`.
    pub fn increment(&self, key: &str, by: u64, expires_at_ms: i64) {
        let map = self.slots.pin();
        let slot = match map.get(key) {
            Some(s) => s.clone(),
            None => map
                .get_or_insert_with(key.to_owned(), || {
                    Arc::new(Slot {
                        local: AtomicU64::new(0),
                        sent: AtomicU64::new(0),
                        acked: AtomicU64::new(0),
                        total: AtomicU64::new(0),
                        expires_at_ms,
                    })
                })
                .clone(),
        };
        slot.local.fetch_add(by, Ordering::AcqRel);
    }

    /// What was counted since the last batch, as the next batch (`None` when nothing was).
    /// Counters whose window has closed are forgotten.
    pub fn drain(&self, now_ms: i64) -> Option<CounterBatch> {
        let map = self.slots.pin();
        let mut increments = Vec::new();
        let mut sent = Vec::new();
        for (key, slot) in map.iter() {
            let local = slot.local.load(Ordering::Acquire);
            let before = slot.sent.swap(local, Ordering::AcqRel);
            if local > before {
                increments.push(CounterIncrement {
                    key: key.clone(),
                    delta: (local - before) as i64,
                    expires_at: slot.expires_at_ms,
                });
                sent.push((slot.clone(), local));
            }
        }
        map.retain(|_, slot| slot.expires_at_ms >= now_ms);
        if increments.is_empty() {
            return None;
        }
        let id = self.next_batch.fetch_add(1, Ordering::Relaxed);
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back((id, sent));
        Some(CounterBatch { id, increments })
    }

    /// The control plane's totals for a batch.
    pub fn settle(&self, totals: &CounterTotals) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Answers come in order; older unanswered batches (a lost store write) are dropped.
        while let Some((id, sent)) = in_flight.pop_front() {
            if id != totals.id {
                continue;
            }
            for ((slot, sent_at), total) in sent.iter().zip(&totals.totals) {
                // -1: the control plane did not count this one; the slot keeps what it had.
                let Ok(total) = u64::try_from(*total) else { continue };
                slot.total.store(total, Ordering::Release);
                slot.acked.store(*sent_at, Ordering::Release);
            }
            return;
        }
    }

    /// A new stream: batches sent on the old one will never be answered.
    pub fn reconnected(&self) {
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_the_cluster_total_plus_what_was_counted_since() {
        let c = SharedCounts::default();
        c.increment("k", 3, i64::MAX);
        assert_eq!(c.usage("k"), 3);
        let batch = c.drain(0).expect("a batch");
        assert_eq!(batch.increments[0].delta, 3);
        c.increment("k", 2, i64::MAX);
        assert!(c.drain(0).is_some(), "the 2 since");
        // Other data planes counted 10 meanwhile: the first batch's total is 13.
        c.settle(&CounterTotals { id: batch.id, totals: vec![13] });
        assert_eq!(c.usage("k"), 15, "13 known to the cluster, 2 of ours not yet in it");
        c.increment("k", 1, i64::MAX);
        assert_eq!(c.usage("k"), 16);
        assert!(c.drain(i64::MAX - 1).is_some());
        assert!(c.drain(i64::MAX).is_none(), "nothing new");
    }

    #[test]
    fn a_total_the_control_plane_did_not_count_leaves_the_others_paired() {
        let c = SharedCounts::default();
        c.increment("a", 1, i64::MAX);
        c.increment("b", 1, i64::MAX);
        let batch = c.drain(0).expect("a batch");
        let totals = batch.increments.iter().map(|i| if i.key == "a" { -1 } else { 40 }).collect();
        c.settle(&CounterTotals { id: batch.id, totals });
        assert_eq!(c.usage("b"), 40, "b got its own total");
        assert_eq!(c.usage("a"), 1, "a keeps what it counted");
    }
}
