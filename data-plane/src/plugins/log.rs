//! The log phase: what a request left behind ([`LogEntry`]), Kong's basic serializer over it
//! (kong-0.14-plugins §7.1), and the bounded queue every log plugin sends through.
//!
//! An entry is captured only for routes whose plugins log, and the JSON record is built once,
//! off the response path, by the first logger that asks for it. A logger never holds a proxy
//! worker: records go into a bounded queue per plugin configuration, a task of its own sends
//! them, and when the receiver is slow or down records are dropped and counted.

pub mod file_log;
pub mod galileo;
pub mod http_log;
mod pipelined;
mod record;
pub mod statsd;
pub mod syslog;
pub mod tcp_log;
pub mod udp_log;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::HeaderMap;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{Consumer, Credential};
use gatehouse_shared::snapshot::{ConfigSet, Doc};

/// One balancer attempt (Kong's `tries`).
#[derive(Debug, Clone)]
pub struct Try {
    pub ip: String,
    pub port: u16,
    pub balancer_start_ms: u64,
    /// For an attempt that failed: `next` when another followed, `failed` for the last.
    pub failed: Option<&'static str>,
    /// The status Kong's balancer records for a failed attempt (502, 504).
    pub code: Option<u16>,
}

/// What the log phase knows of a request once its answer has gone.
#[derive(Debug)]
pub struct LogEntry {
    pub status: u16,
    pub route_id: Arc<str>,
    pub service_id: Arc<str>,
    /// The consumer the request was authenticated as.
    pub consumer: Option<Arc<Consumer>>,
    pub credential: Option<Credential>,
    /// When the request arrived, as an instant and in Unix milliseconds.
    pub started: Instant,
    pub started_at_ms: u64,
    pub method: String,
    /// The request target as received (path and query).
    pub uri: String,
    pub https: bool,
    /// The client's Host without its port.
    pub host: String,
    /// The listener's port (nginx's `$server_port`).
    pub server_port: u16,
    /// The request's fields as plugins left them.
    pub request_headers: HeaderMap,
    pub request_size: u64,
    /// Path and query sent upstream; `None` when the request was not proxied.
    pub upstream_uri: Option<String>,
    /// The answer's head as written (the direct path), parsed into `response_headers` only
    /// when a logger asks for its fields: most records are not built on the path that wrote it.
    pub response_head: Option<bytes::Bytes>,
    response_headers: OnceLock<HeaderMap>,
    /// Bytes of the answer: its head, plus the body as it was sent.
    pub response_size: AtomicU64,
    pub tries: Vec<Try>,
    /// Milliseconds spent in the gateway before the request went upstream.
    pub kong_latency_ms: u64,
    /// Milliseconds the upstream took to answer; `None` when not proxied (Kong's -1).
    pub proxy_latency_ms: Option<u64>,
    pub client_ip: IpAddr,
    /// The address the client connected to (nginx's `$server_addr`), when known.
    pub server_addr: Option<IpAddr>,
    /// The client's HTTP version.
    pub http_version: http::Version,
    /// The request body as a plugin read it in `access`, for loggers that keep bodies
    /// (galileo's `log_bodies`); `None` when none asked or it was too large to hold.
    pub request_body: Option<bytes::Bytes>,
    /// The request came with a body (whatever its framing).
    pub request_has_body: bool,
    /// Bytes of the answer's head; `response_size` less this is its body as sent.
    pub response_head_size: u64,
    /// The response body as sent, kept when a plugin asked for it ([`crate::plugins::Plugin::captures_bodies`])
    /// and while it stays within [`crate::plugins::ctx::BODY_LIMIT`].
    pub response_body: Option<bytes::BytesMut>,
    /// The configuration the request was served with, for the route, service and consumer.
    pub set: Arc<ConfigSet>,
    /// The route and service as the record shows them, serialized once per route.
    pub entities: Arc<Entities>,
    record: OnceLock<bytes::Bytes>,
}

/// A route and its service as JSON text in a log record (nulls left out, as Kong's log shows
/// an entity); `None` for one the configuration lacks.
#[derive(Debug, Default)]
pub struct Entities {
    pub route: Option<Box<serde_json::value::RawValue>>,
    pub service: Option<Box<serde_json::value::RawValue>>,
    /// The Service's name, as the metric plugins name it.
    pub service_name: Option<String>,
}

impl Entities {
    pub fn of(set: &ConfigSet, route_id: &str, service_id: &str) -> Entities {
        let text = |doc: &Value| serde_json::value::to_raw_value(&record::WithoutNulls(doc)).ok();
        let route = set.get("routes", route_id).map(Doc::value);
        let service = set.get("services", service_id).map(Doc::value);
        Entities {
            route: route.as_ref().and_then(text),
            service: service.as_ref().and_then(text),
            service_name: service.as_ref().and_then(|s| s.get("name")).and_then(Value::as_str).map(str::to_owned),
        }
    }
}

/// The Unix time in milliseconds of an instant. A log record asks for this twice per request,
/// and on some virtual machines each reading of a clock costs a system call, so the wall clock
/// is read again only when asked about an instant more than a second from its last reading
/// (on a busy gateway, once a second; a step of the wall clock shows from then on).
pub fn unix_ms(at: Instant) -> u64 {
    /// The two clocks compared: the wall clock's reading of `epoch`, in Unix nanoseconds.
    struct Clocks {
        epoch: Instant,
        unix_at_epoch: AtomicU64,
        /// Nanoseconds after `epoch` of the last reading.
        read_at: AtomicU64,
    }
    fn wall() -> u64 {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        unix.as_nanos() as u64
    }
    static CLOCKS: OnceLock<Clocks> = OnceLock::new();
    let clocks = CLOCKS.get_or_init(|| {
        let epoch = Instant::now();
        Clocks { epoch, unix_at_epoch: AtomicU64::new(wall()), read_at: AtomicU64::new(0) }
    });
    let Some(since) = at.checked_duration_since(clocks.epoch) else {
        // Before the first call: measured from now.
        return (wall().saturating_sub(at.elapsed().as_nanos() as u64)) / 1_000_000;
    };
    let since = since.as_nanos() as u64;
    if since.abs_diff(clocks.read_at.load(Ordering::Relaxed)) >= 1_000_000_000 {
        let (unix, now) = (wall(), Instant::now());
        let now_since = now.saturating_duration_since(clocks.epoch).as_nanos() as u64;
        clocks.unix_at_epoch.store(unix.saturating_sub(now_since), Ordering::Relaxed);
        clocks.read_at.store(now_since, Ordering::Relaxed);
    }
    (clocks.unix_at_epoch.load(Ordering::Relaxed) + since) / 1_000_000
}

/// The size of a head as it goes on the wire (`name: value\r\n` per field).
pub fn head_size(first_line: usize, headers: &HeaderMap) -> u64 {
    let fields: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    (first_line + 2 + fields + 2) as u64
}

/// Fields as Kong's `get_headers()` serializes them: lower-case names, a repeated one as a list.
pub(crate) fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value =
            if values.len() == 1 { values.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(values) };
        map.insert(name.as_str().to_owned(), value);
    }
    Value::Object(map)
}

/// The query as Kong's `get_uri_args()`: repeated arguments as a list, one without `=` as `true`.
pub(crate) fn query_json(uri: &str) -> Value {
    let mut map = Map::new();
    let Some((_, query)) = uri.split_once('?') else { return Value::Object(map) };
    let decode = |s: &str| super::ctx::query_decoded(s).into_owned();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (decode(k), Value::String(decode(v))),
            None => (decode(part), Value::Bool(true)),
        };
        match map.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                map.insert(k, v);
            }
        }
    }
    Value::Object(map)
}

impl LogEntry {
    pub fn new(
        set: Arc<ConfigSet>,
        route_id: Arc<str>,
        service_id: Arc<str>,
        entities: Arc<Entities>,
        started: Instant,
        client_ip: IpAddr,
    ) -> LogEntry {
        LogEntry {
            status: 0,
            route_id,
            service_id,
            consumer: None,
            credential: None,
            started,
            started_at_ms: unix_ms(started),
            method: String::new(),
            uri: String::new(),
            https: false,
            host: String::new(),
            server_port: 0,
            request_headers: HeaderMap::new(),
            request_size: 0,
            upstream_uri: None,
            response_head: None,
            response_headers: OnceLock::new(),
            response_size: AtomicU64::new(0),
            tries: Vec::new(),
            kong_latency_ms: 0,
            proxy_latency_ms: None,
            client_ip,
            server_addr: None,
            http_version: http::Version::HTTP_11,
            request_body: None,
            request_has_body: false,
            response_head_size: 0,
            response_body: None,
            set,
            entities,
            record: OnceLock::new(),
        }
    }

    /// The answer's status, fields and head size, once its head is final.
    pub fn finish_answer(&mut self, answer: &http::response::Parts) {
        self.status = answer.status.as_u16();
        self.response_headers = OnceLock::from(answer.headers.clone());
        let line = "HTTP/1.1 ".len() + 4 + answer.status.canonical_reason().map_or(0, str::len);
        self.response_head_size = head_size(line, &answer.headers);
        self.response_size.store(self.response_head_size, Ordering::Relaxed);
    }

    /// The answer's fields as sent.
    pub fn response_headers(&self) -> &HeaderMap {
        self.response_headers.get_or_init(|| {
            let Some(head) = &self.response_head else { return HeaderMap::new() };
            // Room for every line of the head: the upstream's fields, the gateway's and plugins'.
            let lines = head.iter().filter(|b| **b == b'\n').count();
            let mut fields = vec![httparse::EMPTY_HEADER; lines];
            let mut res = httparse::Response::new(&mut fields);
            if res.parse(head).is_err() {
                return HeaderMap::new();
            }
            let mut map = HeaderMap::with_capacity(res.headers.len());
            for h in res.headers.iter() {
                if let (Ok(n), Ok(v)) =
                    (http::HeaderName::from_bytes(h.name.as_bytes()), http::HeaderValue::from_bytes(h.value))
                {
                    map.append(n, v);
                }
            }
            map
        })
    }

    /// `latencies.request`: the whole request, up to the log phase.
    pub fn request_latency_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The row of the consumer the request was authenticated as.
    pub fn consumer_row(&self) -> Option<&crate::credentials::ConsumerRow> {
        self.consumer.as_ref().map(|c| &c.row)
    }

    /// The Service's name, as the metric plugins name it.
    pub fn service_name(&self) -> Option<&str> {
        self.entities.service_name.as_deref()
    }

    /// Kong's basic serializer as JSON text, written once per entry (whichever logger asks
    /// first) straight from the entry, with no document built in between.
    pub fn json(&self) -> bytes::Bytes {
        thread_local! {
            /// Where records are written before they are copied out at their size: one
            /// allocation per record, not one per doubling of a growing buffer.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let write = || {
            let alone = || bytes::Bytes::from(serde_json::to_vec(&record::Record(self)).unwrap_or_default());
            let in_scratch = SCRATCH.try_with(|scratch| {
                let Ok(mut buf) = scratch.try_borrow_mut() else { return alone() };
                buf.clear();
                let written = serde_json::to_writer(&mut *buf, &record::Record(self));
                let record = written.map_or_else(|_| bytes::Bytes::new(), |()| bytes::Bytes::copy_from_slice(&buf));
                // An outsized record does not leave its buffer behind.
                if buf.capacity() > 64 * 1024 {
                    *buf = Vec::new();
                }
                record
            });
            // A thread being torn down has no scratch buffer left.
            in_scratch.unwrap_or_else(|_| alone())
        };
        self.record.get_or_init(write).clone()
    }

    /// The record as a JSON document (for tests and loggers that embed it).
    pub fn record(&self) -> Value {
        serde_json::from_slice(&self.json()).unwrap_or(Value::Null)
    }
}

/// A plugin configuration's outbox: a bounded queue and the one task that drains it, started
/// when the first record comes (a configuration being compiled has no runtime to start it
/// on), and ending when the configuration is dropped.
pub struct Outbox<T> {
    tx: OnceLock<mpsc::Sender<T>>,
    capacity: usize,
    dropped: Arc<AtomicU64>,
    last_warning: AtomicU64,
    name: &'static str,
}

/// Records a receiver may fall behind by before they are dropped.
pub const QUEUE: usize = 10_000;

/// Records dropped by every outbox of this process (shown on the status endpoint).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

impl<T: Send + 'static> Outbox<T> {
    pub fn new(name: &'static str) -> Outbox<T> {
        Outbox { tx: OnceLock::new(), capacity: QUEUE, dropped: Arc::default(), last_warning: AtomicU64::new(0), name }
    }

    /// Queues `item`; `start` makes the sending task the first time. A full queue drops it.
    pub fn push<F, Fut>(&self, item: T, start: F)
    where
        F: FnOnce(mpsc::Receiver<T>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            tokio::spawn(start(rx));
            tx
        });
        if tx.try_send(item).is_err() {
            self.drop_one();
        }
    }

    /// Counts a record that could not be sent, and says so at most every ten seconds.
    pub fn drop_one(&self) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        DROPPED.fetch_add(1, Ordering::Relaxed);
        let now = super::limits::now_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(plugin = self.name, dropped = total, "log records dropped: the receiver is slow or down");
        }
    }

    /// A handle the sending task uses to count what it could not deliver.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// How long a sender lets records gather once the first has come. A busy route then costs
/// one write, and one wake-up of the receiver (or of the thread that writes a file), per few
/// hundred records rather than per turn of the worker, which on a loaded core is a few
/// requests; five milliseconds is not a delay anyone reading a log can see.
pub const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// The receiving end of an outbox, which hands records out in batches.
pub struct Batches<T> {
    rx: mpsc::Receiver<T>,
    /// The last batch was full: more records are already waiting, so the next one does not
    /// wait for them to gather.
    behind: bool,
}

impl<T> Batches<T> {
    pub fn new(rx: mpsc::Receiver<T>) -> Batches<T> {
        Batches { rx, behind: false }
    }

    /// Waits for a record, lets more gather for [`GATHER`] (not when the last batch was full:
    /// they are waiting already), and gives them to `take` until the queue is empty or `take`
    /// says the batch is full (by returning `false`). `None` once the outbox is gone and its
    /// queue drained; otherwise how many records `take` got.
    pub async fn gather(&mut self, mut take: impl FnMut(T) -> bool) -> Option<usize> {
        let first = self.rx.recv().await?;
        if !take(first) {
            self.behind = true;
            return Some(1);
        }
        if !self.behind {
            tokio::time::sleep(GATHER).await;
        }
        Some(1 + self.drain(take))
    }

    /// Gives `take` the records already queued, without waiting, until it says the batch is
    /// full; how many it got.
    pub fn drain(&mut self, mut take: impl FnMut(T) -> bool) -> usize {
        let mut taken = 0;
        loop {
            let Ok(item) = self.rx.try_recv() else {
                self.behind = false;
                return taken;
            };
            taken += 1;
            if !take(item) {
                self.behind = true;
                return taken;
            }
        }
    }
}

/// Counts an undeliverable record from inside a sending task.
pub fn dropped(counter: &AtomicU64, name: &'static str, error: &dyn std::fmt::Display) {
    let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
    DROPPED.fetch_add(1, Ordering::Relaxed);
    if total == 1 || total.is_multiple_of(1000) {
        tracing::warn!(plugin = name, dropped = total, error = %error, "log record not delivered");
    }
}

/// Kong's syslog severities, in order of their numbers (emerg 0 … debug 7).
pub const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

pub fn severity(name: &str) -> u8 {
    SEVERITIES.iter().position(|s| *s == name).map_or(6, |i| i as u8)
}

/// The severity a syslog-style logger uses for a status, and whether `log_level` lets it out.
pub fn severity_for(config: &Value, status: u16) -> Option<u8> {
    let level = |k: &str| severity(config.get(k).and_then(Value::as_str).unwrap_or("info"));
    let chosen = match status {
        s if s >= 500 => level("server_errors_severity"),
        s if s >= 400 => level("client_errors_severity"),
        _ => level("successful_severity"),
    };
    (chosen <= level("log_level")).then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn records_are_handed_out_in_batches_no_larger_than_the_taker_allows() {
        let (tx, rx) = mpsc::channel(16);
        let mut batches = Batches::new(rx);
        for i in 0..5 {
            tx.send(i).await.expect("queued");
        }
        let mut got = Vec::new();
        let take = |i| {
            got.push(i);
            got.len() < 3
        };
        assert_eq!(batches.gather(take).await, Some(3), "a full batch stops at the taker's limit");
        assert_eq!(got, [0, 1, 2]);
        // What the full batch left, and what came since, make the next.
        tx.send(5).await.expect("queued");
        let mut rest = Vec::new();
        let take = |i| {
            rest.push(i);
            true
        };
        assert_eq!(batches.gather(take).await, Some(3));
        assert_eq!(rest, [3, 4, 5]);
        drop(tx);
        assert_eq!(batches.gather(|_| true).await, None, "the outbox is gone and its queue empty");
    }

    #[test]
    fn unix_time_of_instants_follows_the_wall_clock() {
        let wall = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
        for _ in 0..3 {
            let before = wall().as_millis() as u64;
            let got = unix_ms(Instant::now());
            let after = wall().as_millis() as u64;
            assert!(before.saturating_sub(2) <= got && got <= after + 2, "{before} <= {got} <= {after}");
        }
        // An instant long past (a slow request's start: the clock is read again), and a moment
        // ago again after it.
        let started = Instant::now();
        let unix_started = wall();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let got = unix_ms(Instant::now());
        assert!(got.abs_diff(wall().as_millis() as u64) <= 2, "{got}");
        assert!(unix_ms(started).abs_diff(unix_started.as_millis() as u64) <= 2, "{}", unix_ms(started));
        let got = unix_ms(Instant::now());
        assert!(got.abs_diff(wall().as_millis() as u64) <= 2, "{got}");
        // Before the first call of the process (its epoch) too.
        let long_ago = started.checked_sub(std::time::Duration::from_secs(1)).expect("the machine has been up for 1 s");
        let expected = (unix_started - std::time::Duration::from_secs(1)).as_millis() as u64;
        assert!(unix_ms(long_ago).abs_diff(expected) <= 2, "{} vs {expected}", unix_ms(long_ago));
    }

    #[test]
    fn querystrings_as_kong_reads_them() {
        assert_eq!(query_json("/p?a=1&a=2&b&c=x%20y"), json!({"a": ["1", "2"], "b": true, "c": "x y"}));
        assert_eq!(query_json("/p"), json!({}));
    }

    #[test]
    fn severities_follow_status_classes_and_the_level() {
        let c = json!({"log_level": "info", "successful_severity": "info", "client_errors_severity": "warning",
                       "server_errors_severity": "debug"});
        assert_eq!(severity_for(&c, 200), Some(6));
        assert_eq!(severity_for(&c, 404), Some(4));
        assert_eq!(severity_for(&c, 503), None, "debug is above the info level");
    }
}
