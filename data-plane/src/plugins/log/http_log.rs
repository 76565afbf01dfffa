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

/// Most records written together on one connection before their answers are read.
const PIPELINE: usize = 64;
/// Most bytes of records written together (a single larger record still goes alone).
const PIPELINE_BYTES: usize = 256 * 1024;

struct Endpoint {
    target: Target,
    /// Every request's head up to its `Content-Length` value, as Kong writes it: request line,
    /// Host (without port), `Connection: Keep-Alive`, Content-Type, Authorization.
    head: Vec<u8>,
}

impl Endpoint {
    /// Appends the request carrying `record` to `wire`.
    fn write(&self, record: &[u8], wire: &mut Vec<u8>) {
        wire.extend_from_slice(&self.head);
        wire.extend_from_slice(itoa::Buffer::new().format(record.len()).as_bytes());
        wire.extend_from_slice(b"\r\n\r\n");
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
        if !url.username().is_empty() {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or_default()));
            head.extend_from_slice(b"Authorization: Basic ");
            head.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(pair).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Length: ");
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
            }),
            outbox: Outbox::new("http-log"),
        })
    }
}

/// The sending task. Every record already queued (up to [`PIPELINE`]) is written in one go and
/// the answers read after; records that came meanwhile make the next batch. A receiver that
/// closes its connection after an answer has not processed the requests behind it (RFC 9112
/// §9.6): those are sent again, and from then on that receiver gets one request per
/// connection. Records a failed connection or exchange leaves unanswered are dropped and
/// counted, except when a kept connection fails before its first answer (closed while idle):
/// they go again once on a new connection.
async fn post_records(endpoint: Arc<Endpoint>, mut rx: mpsc::Receiver<Bytes>, failures: Arc<AtomicU64>) {
    let t = &endpoint.target;
    let mut conn: Option<(Connection, tokio::time::Instant)> = None;
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut wire: Vec<u8> = Vec::new();
    let mut one_at_a_time = false;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(record) => pending.push_back(record),
                None => return,
            }
            // Requests the worker serves in this turn queue their records too: they go together.
            tokio::task::yield_now().await;
        }
        while pending.len() < PIPELINE {
            let Ok(record) = rx.try_recv() else { break };
            pending.push_back(record);
        }
        if conn.as_ref().is_some_and(|(_, used)| used.elapsed() > t.keepalive) {
            conn = None;
        }
        let fresh = conn.is_none();
        if fresh {
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
        *used = tokio::time::Instant::now();
        if outcome.closing {
            conn = None;
            one_at_a_time |= outcome.answered < count;
        } else if let Some(e) = outcome.broken {
            conn = None;
            // A kept connection the receiver closed while it was idle fails before any answer:
            // the batch goes again on a new one, as HTTP clients retry on a reused connection.
            if fresh || outcome.answered > 0 || !e.closed() {
                for _ in pending.drain(..count - outcome.answered) {
                    dropped(&failures, "http-log", &e);
                }
            }
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
