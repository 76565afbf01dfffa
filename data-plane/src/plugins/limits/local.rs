//! The `local` policy: counters in this data plane's memory, shared by its worker threads
//! without a lock. Each counter is one atomic word holding its window and its count, so a
//! check and an increment never race with a window rolling over.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use super::{Identifier, Period, Scope};

/// Counters by a 64-bit hash of Kong's key (route, service, identifier, limit name, period):
/// no key string is built on the request path, and at 64 bits a collision between two live
/// counters is not a practical concern.
static COUNTERS: LazyLock<papaya::HashMap<u64, Slot>> = LazyLock::new(papaya::HashMap::new);

/// One counter: its window's tag and count in one word, and its period (for sweeping).
struct Slot {
    word: AtomicU64,
    period: Period,
}

/// How many counters may exist before those of closed windows are swept.
const SWEEP_ABOVE: usize = 100_000;

/// The window's tag in a counter's high half: its start in seconds, as 32 bits (unique per
/// period for over a century).
fn tag(window: u64) -> u64 {
    window & 0xFFFF_FFFF
}

/// The counter's key: computed once per request and period, then read and bumped by it.
pub fn key(scope: &Scope, id: &Identifier<'_>, name: Option<&str>, period: Period) -> u64 {
    static SEED: LazyLock<foldhash::fast::RandomState> = LazyLock::new(foldhash::fast::RandomState::default);
    let mut h = SEED.build_hasher();
    scope.route_id.hash(&mut h);
    scope.service_id.hash(&mut h);
    match id {
        Identifier::Id(s) => s.hash(&mut h),
        Identifier::Ip(ip) => ip.hash(&mut h),
    }
    name.hash(&mut h);
    period.hash(&mut h);
    h.finish()
}

/// What has been counted in the current window.
pub fn usage(scope: &Scope, id: &Identifier<'_>, name: Option<&str>, period: Period, window: u64) -> u64 {
    usage_of(key(scope, id, name, period), window)
}

/// [`usage`] of a counter by its [`key`].
pub fn usage_of(key: u64, window: u64) -> u64 {
    let map = COUNTERS.pin();
    match map.get(&key) {
        Some(slot) => {
            let v = slot.word.load(Ordering::Acquire);
            if v >> 32 == tag(window) {
                v & 0xFFFF_FFFF
            } else {
                0
            }
        }
        None => 0,
    }
}

/// Adds `by` to the current window's count (a counter of an older window starts again).
pub fn increment(scope: &Scope, id: &Identifier<'_>, name: Option<&str>, period: Period, window: u64, by: u64) {
    increment_of(key(scope, id, name, period), period, window, by);
}

/// [`increment`] of a counter by its [`key`].
pub fn increment_of(key: u64, period: Period, window: u64, by: u64) {
    let map = COUNTERS.pin();
    let slot = map.get_or_insert_with(key, || Slot { word: AtomicU64::new(tag(window) << 32), period });
    let word = &slot.word;
    let mut current = word.load(Ordering::Acquire);
    loop {
        let next = if current >> 32 == tag(window) {
            (current & 0xFFFF_FFFF_0000_0000) | ((current & 0xFFFF_FFFF) + by).min(0xFFFF_FFFF)
        } else {
            (tag(window) << 32) | by.min(0xFFFF_FFFF)
        };
        match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(seen) => current = seen,
        }
    }
    if map.len() > SWEEP_ABOVE {
        sweep(super::now_secs());
    }
}

/// Drops the counters whose window has closed: what remains is one counter per identifier
/// and period still counting.
fn sweep(now: u64) {
    COUNTERS.pin().retain(|_, slot| {
        let start = slot.word.load(Ordering::Relaxed) >> 32;
        start + slot.period.longest_secs() > tag(now)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_window_and_starts_again_in_the_next() {
        let scope = Scope::new(Some("r"), None);
        let id = Identifier::Id("tester-local");
        let w = 1_000_000;
        assert_eq!(usage(&scope, &id, None, Period::Minute, w), 0);
        increment(&scope, &id, None, Period::Minute, w, 1);
        increment(&scope, &id, None, Period::Minute, w, 2);
        assert_eq!(usage(&scope, &id, None, Period::Minute, w), 3);
        assert_eq!(usage(&scope, &id, None, Period::Hour, w), 0, "periods count apart");
        assert_eq!(usage(&scope, &id, Some("video"), Period::Minute, w), 0, "names count apart");
        assert_eq!(usage(&scope, &id, None, Period::Minute, w + 60), 0, "a new window reads 0");
        increment(&scope, &id, None, Period::Minute, w + 60, 1);
        assert_eq!(usage(&scope, &id, None, Period::Minute, w + 60), 1);
        assert_eq!(usage(&scope, &id, None, Period::Minute, w), 0, "the old window is gone");
    }

    #[test]
    fn concurrent_increments_are_all_counted() {
        let scope = Scope::new(None, Some("s"));
        let w = 2_000_000;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        increment(&scope, &Identifier::Id("many"), None, Period::Second, w, 1);
                    }
                });
            }
        });
        assert_eq!(usage(&scope, &Identifier::Id("many"), None, Period::Second, w), 4000);
    }
}
