//! The `redis` policy: counters in Redis under Kong's keys, so every data plane (and a Kong
//! node sharing the server) counts against the same limit. A check is one pipelined `MGET` of
//! every period's counter; the increment goes out after the answer, off the request's path
//! (`INCRBY`, then `EXPIRE` on a key it created), as Kong increments in a timer.

use std::collections::HashMap;
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
        let shared =
            targets.entry(url.clone()).or_insert_with(|| Arc::new(Shared { url, conn: OnceCell::new() })).clone();
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
        self.within(async {
            let mut conn = self.connection().await?;
            let values: Vec<Option<u64>> = redis::cmd("MGET").arg(keys).query_async(&mut conn).await?;
            Ok(values.into_iter().map(Option::unwrap_or_default).collect())
        })
        .await
    }

    /// Adds `by` to each key, giving a key it creates its period's lifetime. Runs on its own
    /// task: the request does not wait for it.
    pub fn increment(&self, keys: Vec<(String, u64)>, by: u64) {
        let target = self.clone();
        tokio::spawn(async move {
            let done = target
                .within(async {
                    let mut conn = target.connection().await?;
                    let mut pipe = redis::pipe();
                    for (key, _) in &keys {
                        pipe.cmd("INCRBY").arg(key).arg(by);
                    }
                    let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
                    let mut expire = redis::pipe();
                    let mut created = false;
                    for ((key, ttl), count) in keys.iter().zip(counts) {
                        if count == by {
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
            if let Err(e) = done {
                tracing::warn!(error = %e, "rate limiting: could not increment the Redis counters");
            }
        });
    }
}

/// Percent-encodes a password for the URL's userinfo.
fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
