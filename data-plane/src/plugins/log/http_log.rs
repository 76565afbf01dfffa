//! http-log (kong-0.14-plugins §7.2): each JSON record POSTed (or PUT, PATCH) to
//! `http_endpoint` over one kept-alive connection, HTTP or HTTPS (not verified, as in Kong);
//! `user:pass@` in the URL becomes Basic authentication.
//!
//! One request per record, as Kong sends them, but records queued while earlier ones were on
//! the wire go out together, written back to back ([`super::pipelined`]): a busy route costs a write
//! and a read per batch, not per request.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::pipelined::Connection;
use super::tcp_log::{connect, Target};
use super::{dropped, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

/// Most records written together on one connection before the next batch waits for their
/// answers. A batch's round trip is the receiver's reaction time, milliseconds when it shares
/// a busy CPU: the batch must hold what a busy route logs meanwhile.
const PIPELINE: usize = 512;
/// Most bytes of records written together (a single larger record still goes alone): what
/// the sending buffer of one http-log configuration grows to at most.
const PIPELINE_BYTES: usize = 512 * 1024;
/// The sending buffer kept between batches while the queue is empty.
const IDLE_WIRE: usize = 64 * 1024;

struct Endpoint {
    target: Target,
    /// Every request's head up to its `Content-Length` value, as Kong writes it: request line,
    /// Host (without port), `Connection: Keep-Alive`, Content-Type.
    head: Vec<u8>,
    /// The rest of the head after the length: Kong's `Authorization` when the URL has a user.
    tail: Vec<u8>,
}

impl Endpoint {
    /// Appends the request carrying `record` to `wire`.
    fn write(&self, record: &[u8], wire: &mut Vec<u8>) {
        wire.extend_from_slice(&self.head);
        wire.extend_from_slice(itoa::Buffer::new().format(record.len()).as_bytes());
        wire.extend_from_slice(&self.tail);
        wire.extend_from_slice(record);
    }
}

pub struct HttpLog {
    endpoint: Arc<Endpoint>,
    outbox: Outbox<Bytes>,
}

impl HttpLog {
    pub fn new(config: &Value) -> Result<HttpLog, BuildError> {
        let text = |k: &str| config.get(k).and_then(Value::as_str);
        let raw = text("http_endpoint").ok_or_else(|| BuildError("http_endpoint is required".into()))?;
        let url = url::Url::parse(raw).map_err(|e| BuildError(format!("http_endpoint: {e}")))?;
        let https = url.scheme() == "https";
        let host = url.host_str().ok_or_else(|| BuildError("http_endpoint has no host".into()))?.to_owned();
        let ms = |k: &str, d: u64| Duration::from_millis(config.get(k).and_then(Value::as_u64).unwrap_or(d));
        let method = http::Method::from_bytes(text("method").unwrap_or("POST").as_bytes())
            .map_err(|e| BuildError(format!("method: {e}")))?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        // Checked as a field value: a line break in it would forge fields of its own.
        let content_type = http::HeaderValue::from_str(text("content_type").unwrap_or("application/json"))
            .map_err(|e| BuildError(format!("content_type: {e}")))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Keep-Alive\r\n").into_bytes();
        head.extend_from_slice(b"Content-Type: ");
        head.extend_from_slice(content_type.as_bytes());
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(b"Content-Length: ");
        let mut tail = b"\r\n".to_vec();
        if !url.username().is_empty() {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or_default()));
            tail.extend_from_slice(b"Authorization: Basic ");
            tail.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(pair).as_bytes());
            tail.extend_from_slice(b"\r\n");
        }
        tail.extend_from_slice(b"\r\n");
        Ok(HttpLog {
            endpoint: Arc::new(Endpoint {
                target: Target {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port: url.port_or_known_default().unwrap_or(if https { 443 } else { 80 }),
                    timeout: ms("timeout", 10_000),
                    keepalive: ms("keepalive", 60_000),
                    tls: https.then(|| host.clone()),
                },
                head,
                tail,
            }),
            outbox: Outbox::new("http-log"),
        })
    }
}

/// The sending task. The records that come within [`super::GATHER`] (up to [`PIPELINE`]) are
/// written in one go, the answers read as they come; records that came meanwhile make the
/// next batch.
///
/// A kept connection the receiver closed while idle (or wrote to unasked) is seen before a
/// batch goes on it, and replaced. A receiver that announces it closes after an answer has not
/// processed the requests behind it (RFC 9112 §9.6): those are sent again on a new connection.
/// One that closes after the first answer of every connection gets one request at a time until
/// a connection carries more than one answer again. Records a failed connection or exchange
/// leaves unanswered are dropped and counted, never sent twice: whether the receiver took them
/// cannot be known (a receiver that resets its connection with requests unread can take
/// answers already sent with it).
async fn post_records(endpoint: Arc<Endpoint>, rx: mpsc::Receiver<Bytes>, failures: Arc<AtomicU64>) {
    let mut queue = super::Batches::new(rx);
    let t = &endpoint.target;
    let mut conn: Option<(Connection, tokio::time::Instant)> = None;
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut wire: Vec<u8> = Vec::new();
    let mut one_at_a_time = false;
    loop {
        let (waiting, room) = (pending.is_empty(), pending.len() < PIPELINE);
        let take = |record: Bytes| {
            pending.push_back(record);
            pending.len() < PIPELINE
        };
        if waiting {
            // The records that come within `GATHER` go in one batch.
            if queue.gather(take).await.is_none() {
                return;
            }
        } else if room {
            queue.drain(take);
        }
        if conn.as_mut().is_some_and(|(c, used)| used.elapsed() > t.keepalive || !c.reusable()) {
            conn = None;
        }
        if conn.is_none() {
            match connect(t).await {
                Ok(io) => conn = Some((Connection::new(io, t.timeout), tokio::time::Instant::now())),
                Err(e) => {
                    // Nothing queued now can go: a receiver that is down costs one attempt per
                    // batch, not per record.
                    for _ in pending.drain(..) {
                        dropped(&failures, "http-log", &e);
                    }
                    continue;
                }
            }
        }
        let Some((c, used)) = &mut conn else { continue };
        wire.clear();
        let limit = if one_at_a_time { 1 } else { PIPELINE };
        let mut count = 0;
        for record in pending.iter().take(limit) {
            if count > 0 && wire.len() + record.len() > PIPELINE_BYTES {
                break;
            }
            endpoint.write(record, &mut wire);
            count += 1;
        }
        let outcome = c.exchange(&wire, count).await;
        pending.drain(..outcome.answered);
        // A burst's buffer is not kept once the queue is empty again.
        if pending.is_empty() && wire.capacity() > IDLE_WIRE {
            wire = Vec::new();
        }
        *used = tokio::time::Instant::now();
        if c.answered > 1 {
            one_at_a_time = false;
        }
        if outcome.closing {
            one_at_a_time |= c.answered == 1 && outcome.answered < count;
            conn = None;
        } else if let Some(e) = outcome.broken {
            for _ in pending.drain(..count - outcome.answered) {
                dropped(&failures, "http-log", &e);
            }
            conn = None;
        }
    }
}

impl Plugin for HttpLog {
    fn name(&self) -> &'static str {
        "http-log"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        self.outbox.push(entry.json(), |rx| post_records(self.endpoint.clone(), rx, self.outbox.counter()));
    }
}
