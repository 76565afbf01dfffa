//! The `redis` policy: counters in Redis under Kong's keys, so every data plane (and a Kong
//! node sharing the server) counts against the same limit. A check is one pipelined `MGET` of
//! every period's counter; the increment goes out after the answer, off the request's path
//! (`INCRBY`, then `EXPIRE` on a key it created), as Kong increments in a timer.
//!
//! Every answer from Redis (an `MGET`'s counts, an `INCRBY`'s new totals) is remembered per
//! key, with the increments this data plane has sent since and not yet seen answered: while
//! that estimate is recent and far from a limit, a request is decided on it and waits for no
//! round trip ([`Target::estimate`]). Close to a limit every request asks Redis, as Kong does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

/// Where counters live: one multiplexed, self-reconnecting connection per server, database and
/// password, shared by every plugin configuration that names them.
#[derive(Clone)]
pub struct Target {
    shared: Arc<Shared>,
    timeout: Duration,
}

struct Shared {
    url: String,
    conn: OnceCell<redis::aio::ConnectionManager>,
    /// What Redis last said about each counter, and what this data plane has added since.
    known: papaya::HashMap<String, Known>,
    /// Increments not yet sent, by key.
    pending: papaya::HashMap<String, Pending>,
    /// Whether a task is sending `pending`.
    flushing: std::sync::atomic::AtomicBool,
}

/// Increments to send for one key, and the lifetime a key they create gets.
struct Pending {
    count: AtomicU64,
    ttl: u64,
}

/// How often summed increments go to Redis.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// One counter as this data plane last saw it.
#[derive(Default)]
struct Known {
    /// The total in Redis at its last answer.
    total: AtomicU64,
    /// Increments sent whose answer has not come back.
    in_flight: AtomicU64,
    /// When Redis last answered for it (milliseconds since the epoch); 0 for never.
    seen_ms: AtomicU64,
}

/// An estimate older than this is not used: the request asks Redis.
const FRESH_MS: u64 = 1_000;

/// Counters remembered before the stale ones are dropped (keys name their window, so those of
/// closed windows are never read again).
const FORGET_ABOVE: usize = 100_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
}

/// Connections by URL; consulted when a configuration compiles, never per request.
static TARGETS: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> = LazyLock::new(Mutex::default);

impl Target {
    pub fn new(host: &str, port: u16, password: Option<&str>, database: i64, timeout: Duration) -> Target {
        let auth = password.filter(|p| !p.is_empty()).map(|p| format!(":{}@", urlencode(p))).unwrap_or_default();
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let url = format!("redis://{auth}{host}:{port}/{database}");
        let mut targets = TARGETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = targets
            .entry(url.clone())
            .or_insert_with(|| {
                Arc::new(Shared {
                    url,
                    conn: OnceCell::new(),
                    known: papaya::HashMap::new(),
                    pending: papaya::HashMap::new(),
                    flushing: std::sync::atomic::AtomicBool::new(false),
                })
            })
            .clone();
        Target { shared, timeout }
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, RedisError> {
        let conn = self
            .shared
            .conn
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.shared.url.as_str())?;
                redis::aio::ConnectionManager::new(client).await
            })
            .await?;
        Ok(conn.clone())
    }

    async fn within<T>(&self, f: impl std::future::Future<Output = Result<T, RedisError>>) -> Result<T, RedisError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| RedisError::Timeout(self.timeout))?
    }

    /// The counts under `keys` (0 for a key that does not exist), in one round trip.
    pub async fn usage(&self, keys: &[String]) -> Result<Vec<u64>, RedisError> {
        let counts: Vec<u64> = self
            .within(async {
                let mut conn = self.connection().await?;
                let values: Vec<Option<u64>> = redis::cmd("MGET").arg(keys).query_async(&mut conn).await?;
                Ok(values.into_iter().map(Option::unwrap_or_default).collect())
            })
            .await?;
        let now = now_ms();
        for (key, count) in keys.iter().zip(&counts) {
            self.observe(key, *count, now);
        }
        Ok(counts)
    }

    /// The counts under `keys` as this data plane knows them without asking: Redis's last
    /// answer plus the increments sent since, if Redis answered for every key within
    /// [`FRESH_MS`]. Other data planes' increments since that answer are not in it, so a
    /// caller decides on it only far from a limit.
    pub fn estimate(&self, keys: &[String]) -> Option<smallvec::SmallVec<[u64; 6]>> {
        let known = self.shared.known.pin();
        let now = now_ms();
        keys.iter()
            .map(|key| {
                let k = known.get(key)?;
                let seen = k.seen_ms.load(Ordering::Acquire);
                (seen != 0 && now.saturating_sub(seen) <= FRESH_MS)
                    .then(|| k.total.load(Ordering::Acquire) + k.in_flight.load(Ordering::Acquire))
            })
            .collect()
    }

    /// Records Redis's count for `key`. Answers may arrive out of order; a count only grows
    /// within its window, so the larger is the newer.
    fn observe(&self, key: &str, count: u64, now: u64) {
        let known = self.shared.known.pin();
        let k = match known.get(key) {
            Some(k) => k,
            None => known.get_or_insert_with(key.to_owned(), Known::default),
        };
        k.total.fetch_max(count, Ordering::AcqRel);
        k.seen_ms.store(now, Ordering::Release);
    }

    /// Counts `by` as added and not yet answered for each key (taken off again, saturating,
    /// when Redis answers the batch that carried it: a memory cleared meanwhile starts again
    /// from zero).
    fn sending(&self, keys: &[(String, u64)], by: u64) {
        let known = self.shared.known.pin();
        for (key, _) in keys {
            let k = match known.get(key) {
                Some(k) => k,
                None => known.get_or_insert_with(key.clone(), Known::default),
            };
            k.in_flight.fetch_add(by, Ordering::AcqRel);
        }
    }

    /// Adds `by` to each key, giving a key it creates its period's lifetime. The request does
    /// not wait: increments are summed per key and sent every [`FLUSH_EVERY`] by one task per
    /// server, one pipelined `INCRBY` per key with anything to add (Kong increments in a timer
    /// too, one round trip per request).
    pub fn increment(&self, keys: Vec<(String, u64)>, by: u64) {
        self.sending(&keys, by);
        {
            let pending = self.shared.pending.pin();
            for (key, ttl) in keys {
                pending
                    .get_or_insert_with(key, || Pending { count: AtomicU64::new(0), ttl })
                    .count
                    .fetch_add(by, Ordering::AcqRel);
            }
        }
        // Looked at before it is written: most requests find a flush already running, and a
        // swap on every request would bounce the flag's cache line between workers.
        if !self.shared.flushing.load(Ordering::Acquire) && !self.shared.flushing.swap(true, Ordering::AcqRel) {
            let target = self.clone();
            tokio::spawn(async move { target.flush_while_busy().await });
        }
    }

    /// Sends what is pending every [`FLUSH_EVERY`]; stops after a second with nothing to send
    /// (the next increment starts it again).
    async fn flush_while_busy(self) {
        let mut idle = 0;
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let batch: Vec<(String, u64, u64)> = {
                let pending = self.shared.pending.pin();
                let batch = pending
                    .iter()
                    .filter_map(|(key, p)| {
                        let n = p.count.swap(0, Ordering::AcqRel);
                        (n > 0).then(|| (key.clone(), n, p.ttl))
                    })
                    .collect();
                if pending.len() > FORGET_ABOVE {
                    pending.retain(|_, p| p.count.load(Ordering::Acquire) > 0);
                }
                // Off the request path: estimates not refreshed within FRESH_MS are never used
                // again (their window has closed, or a request will ask Redis anew).
                let known = self.shared.known.pin();
                if known.len() > FORGET_ABOVE {
                    let now = now_ms();
                    known.retain(|_, k| {
                        now.saturating_sub(k.seen_ms.load(Ordering::Acquire)) <= FRESH_MS
                            || k.in_flight.load(Ordering::Acquire) > 0
                    });
                }
                batch
            };
            if batch.is_empty() {
                idle += 1;
                if idle * FLUSH_EVERY.as_millis() >= 1_000 {
                    self.shared.flushing.store(false, Ordering::Release);
                    // An increment that saw the flag still set is sent by whoever starts next,
                    // unless it came between the last batch and the flag: look once more.
                    let left = self.shared.pending.pin().iter().any(|(_, p)| p.count.load(Ordering::Acquire) > 0);
                    if left && !self.shared.flushing.swap(true, Ordering::AcqRel) {
                        idle = 0;
                        continue;
                    }
                    return;
                }
                continue;
            }
            idle = 0;
            self.send(batch).await;
        }
    }

    async fn send(&self, batch: Vec<(String, u64, u64)>) {
        let done = self
            .within(async {
                let mut conn = self.connection().await?;
                let mut pipe = redis::pipe();
                for (key, by, _) in &batch {
                    pipe.cmd("INCRBY").arg(key).arg(*by);
                }
                let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
                let now = now_ms();
                let mut expire = redis::pipe();
                let mut created = false;
                for ((key, by, ttl), count) in batch.iter().zip(counts) {
                    self.observe(key, count, now);
                    if count == *by {
                        expire.cmd("EXPIRE").arg(key).arg(*ttl).ignore();
                        created = true;
                    }
                }
                if created {
                    let () = expire.query_async(&mut conn).await?;
                }
                Ok(())
            })
            .await;
        let known = self.shared.known.pin();
        for (key, by, _) in &batch {
            if let Some(k) = known.get(key) {
                let _ = k.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(*by)));
            }
        }
        if let Err(e) = done {
            tracing::warn!(error = %e, "rate limiting: could not increment the Redis counters");
        }
    }
}

/// Percent-encodes a password for the URL's userinfo.
fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
