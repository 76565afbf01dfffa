//! galileo (kong-0.14-plugins §7.10; deprecated in Kong 0.14): each request as an ALF 1.1.0
//! entry (a HAR entry), batched per plugin configuration and POSTed to the collector's
//! `/1.1.0/single` over HTTPS (or HTTP with `https = false`).
//!
//! A batch goes out once it holds `queue_size` entries, or after `flush_timeout` seconds
//! without a new one, as Kong's buffer does. A batch the collector could not take (no
//! connection, an error, a 5xx) is tried again at the back of the queue after
//! min(60, n²) seconds, `retry_count` attempts in all; a 4xx or a failed TLS handshake drops
//! it. Batches waiting to go are bounded at 200 MB, one batch at 20 MB: past either, it is
//! dropped and counted like any undelivered record.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::tcp_log::{connect_tcp, handshake, Stream, Target};
use super::{dropped, query_json, LogEntry, Outbox};
use crate::plugins::{Access, BuildError, Plugin, RequestCtx};

/// The ALF version and the agent Kong names itself as.
const ALF_VERSION: &str = "1.1.0";
const CREATOR: &str = "galileo-agent-kong";
const CREATOR_VERSION: &str = "2.0.0";
/// The largest batch Kong sends, and the most it holds waiting to be sent.
const ALF_MAX: usize = 20 << 20;
const QUEUED_MAX: usize = 200 << 20;
/// The longest pause between attempts after failures.
const MAX_RETRY_DELAY: u64 = 60;

struct Settings {
    service_token: String,
    environment: Option<String>,
    target: Target,
    https: bool,
    verify: bool,
    /// Attempts per batch, the first included (Kong drops a batch once it was tried this often).
    retry_count: u64,
    queue_size: usize,
    flush_timeout: Duration,
    failures: Arc<AtomicU64>,
}

pub struct Galileo {
    settings: Arc<Settings>,
    log_bodies: bool,
    outbox: Outbox<Value>,
}

impl Galileo {
    pub fn new(config: &Value) -> Result<Galileo, BuildError> {
        let text = |k: &str| config.get(k).and_then(Value::as_str);
        let number = |k: &str, d: f64| config.get(k).and_then(Value::as_f64).unwrap_or(d).max(0.0);
        let flag = |k: &str, d: bool| config.get(k).and_then(Value::as_bool).unwrap_or(d);
        let host = text("host").ok_or_else(|| BuildError("host is required".into()))?;
        let port = config.get("port").and_then(Value::as_u64).unwrap_or(443);
        let port = u16::try_from(port).map_err(|_| BuildError(format!("port {port} is out of range")))?;
        let token = text("service_token").ok_or_else(|| BuildError("service_token is required".into()))?;
        let https = flag("https", true);
        let outbox = Outbox::new("galileo");
        Ok(Galileo {
            settings: Arc::new(Settings {
                service_token: token.to_owned(),
                environment: text("environment").map(str::to_owned),
                target: Target {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port,
                    timeout: Duration::from_secs_f64(number("connection_timeout", 30.0)),
                    keepalive: Duration::from_secs(60),
                    tls: https.then(|| host.to_owned()),
                },
                https,
                verify: flag("https_verify", false),
                retry_count: number("retry_count", 10.0) as u64,
                queue_size: (number("queue_size", 1000.0) as usize).max(1),
                flush_timeout: Duration::from_secs_f64(number("flush_timeout", 2.0)),
                failures: outbox.counter(),
            }),
            log_bodies: flag("log_bodies", false),
            outbox,
        })
    }
}

/// Fields as HAR's `[{name, value}]`: a repeated one once per value.
fn pairs(headers: &HeaderMap) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(n, v)| json!({"name": n.as_str(), "value": String::from_utf8_lossy(v.as_bytes())}))
            .collect(),
    )
}

/// The query as HAR's `[{name, value}]`, an argument without `=` having the value `true`.
fn query_pairs(uri: &str) -> Value {
    let Value::Object(args) = query_json(uri) else { return json!([]) };
    let mut out = Vec::new();
    for (name, value) in args {
        match value {
            Value::Array(values) => out.extend(values.into_iter().map(|v| json!({"name": name, "value": v}))),
            v => out.push(json!({"name": name, "value": v})),
        }
    }
    Value::Array(out)
}

/// The last value of a field, as Kong's ALF reads one.
fn last<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(name).iter().next_back().and_then(|v| v.to_str().ok())
}

/// Kong's guess at whether a message has a body, from its fields (RFC 2616).
fn fields_say_body(headers: &HeaderMap) -> bool {
    last(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
        || headers.contains_key(TRANSFER_ENCODING)
        || last(headers, CONTENT_TYPE.as_str()) == Some("multipart/byteranges")
}

/// `{size of the head}` as Kong approximates it: the first line, each `name: value`, the ends.
fn head_size(first_line: &str, headers: &HeaderMap) -> usize {
    let fields: usize = headers.iter().map(|(n, v)| n.as_str().len() + 2 + v.len() + 2).sum();
    first_line.len() + 2 + fields + 2
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time in milliseconds.
fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = crate::plugins::limits::civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

fn content(body: &[u8], mime: &str) -> Value {
    json!({"text": base64::engine::general_purpose::STANDARD.encode(body), "encoding": "base64", "mimeType": mime})
}

/// One request as an ALF entry.
fn alf_entry(entry: &LogEntry, log_bodies: bool) -> Value {
    let version = match entry.http_version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let req_headers = &entry.request_headers;
    let res_headers = entry.response_headers();
    let mime = |h: &HeaderMap| last(h, CONTENT_TYPE.as_str()).unwrap_or("application/octet-stream").to_owned();
    let length = |h: &HeaderMap| last(h, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());

    let mut request = json!({
        "httpVersion": version,
        "method": entry.method,
        "url": format!("{}://{}{}", if entry.https { "https" } else { "http" }, entry.host, entry.uri),
        "queryString": query_pairs(&entry.uri),
        "headers": pairs(req_headers),
        "headersSize": head_size(&format!("{} {} {version}", entry.method, entry.uri), req_headers),
        "bodyCaptured": entry.request_has_body || fields_say_body(req_headers),
        "bodySize": length(req_headers).unwrap_or(0),
    });
    let sent_body = entry.response_size.load(Ordering::Relaxed).saturating_sub(entry.response_head_size);
    let mut response = json!({
        "status": entry.status,
        "statusText": "",
        "httpVersion": version,
        "headers": pairs(res_headers),
        "headersSize": 0,
        "bodyCaptured": fields_say_body(res_headers) || sent_body > 0,
        "bodySize": length(res_headers).unwrap_or(sent_body),
    });
    if log_bodies {
        if let Some(body) = &entry.request_body {
            request["postData"] = content(body, &mime(req_headers));
            request["bodySize"] = json!(body.len());
        }
        if let Some(body) = &entry.response_body {
            response["content"] = content(body, &mime(res_headers));
            response["bodySize"] = json!(body.len());
        }
    }
    // Kong's timings: up to the upstream request, waiting for its head, reading its body.
    let proxied = entry.upstream_uri.is_some();
    let send = if proxied { entry.kong_latency_ms } else { 0 };
    let wait = entry.proxy_latency_ms.unwrap_or(0);
    let receive = if proxied { entry.request_latency_ms().saturating_sub(send + wait) } else { 0 };
    let mut alf = Map::new();
    alf.insert("time".into(), json!(send + wait + receive));
    alf.insert("startedDateTime".into(), json!(iso8601(entry.started_at_ms)));
    if let Some(addr) = entry.server_addr {
        alf.insert("serverIPAddress".into(), json!(addr.to_string()));
    }
    alf.insert("clientIPAddress".into(), json!(entry.client_ip.to_string()));
    alf.insert("request".into(), request);
    alf.insert("response".into(), response);
    alf.insert("timings".into(), json!({"send": send, "wait": wait, "receive": receive}));
    Value::Object(alf)
}

/// A batch as the collector takes it.
fn serialize(settings: &Settings, entries: Vec<Value>) -> Result<Bytes, serde_json::Error> {
    let mut alf = Map::new();
    alf.insert("version".into(), json!(ALF_VERSION));
    alf.insert("serviceToken".into(), json!(settings.service_token));
    if let Some(env) = &settings.environment {
        alf.insert("environment".into(), json!(env));
    }
    alf.insert(
        "har".into(),
        json!({"log": {"creator": {"name": CREATOR, "version": CREATOR_VERSION}, "entries": entries}}),
    );
    serde_json::to_vec(&Value::Object(alf)).map(Bytes::from)
}

/// Collects entries into batches: full at `queue_size`, or flushed after `flush_timeout`
/// without a new entry, and once more when the configuration goes away.
async fn batch(settings: Arc<Settings>, mut rx: mpsc::Receiver<Value>) {
    let queued = Arc::new(AtomicUsize::new(0));
    let (to_send, sending) = mpsc::unbounded_channel();
    tokio::spawn(send_batches(settings.clone(), sending, queued.clone()));
    let mut entries = Vec::new();
    let mut last_added = Instant::now();
    let flush = |entries: &mut Vec<Value>| {
        if entries.is_empty() {
            return;
        }
        match serialize(&settings, std::mem::take(entries)) {
            Ok(alf) if alf.len() > ALF_MAX => dropped(&settings.failures, "galileo", &"ALF too large (> 20MB)"),
            Ok(alf) if queued.load(Ordering::Relaxed) + alf.len() > QUEUED_MAX => {
                dropped(&settings.failures, "galileo", &"buffer is full, discarding this ALF");
            }
            Ok(alf) => {
                queued.fetch_add(alf.len(), Ordering::Relaxed);
                let _ = to_send.send((alf, 0u64));
            }
            Err(e) => dropped(&settings.failures, "galileo", &e),
        }
    };
    loop {
        let idle_flush = last_added + settings.flush_timeout;
        tokio::select! {
            next = rx.recv() => match next {
                Some(entry) => {
                    entries.push(entry);
                    last_added = Instant::now();
                    if entries.len() >= settings.queue_size {
                        flush(&mut entries);
                    }
                }
                None => {
                    flush(&mut entries);
                    return;
                }
            },
            () = tokio::time::sleep_until(idle_flush), if !entries.is_empty() => flush(&mut entries),
        }
    }
}

/// Why a batch did not reach the collector, and whether it is worth another try.
enum Failure {
    Retry(String),
    Drop(String),
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn open(settings: &Settings) -> Result<Sender, Failure> {
    let t = &settings.target;
    let tcp =
        connect_tcp(t).await.map_err(|e| Failure::Retry(format!("could not connect to Galileo collector: {e}")))?;
    let io: Stream = if settings.https {
        let sni = t.tls.as_deref().unwrap_or(&t.host);
        // Kong gives up on an ALF whose handshake failed rather than trying it again.
        handshake(t, tcp, sni, settings.verify)
            .await
            .map_err(|e| Failure::Drop(format!("could not perform SSL handshake with Galileo collector: {e}")))?
    } else {
        Box::new(tcp)
    };
    let (sender, driver) =
        http1::handshake(TokioIo::new(io)).await.map_err(|e| Failure::Retry(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = driver.await;
    });
    Ok(sender)
}

async fn post(settings: &Settings, conn: &mut Option<Sender>, alf: &Bytes) -> Result<(), Failure> {
    if conn.as_ref().is_some_and(Sender::is_closed) {
        *conn = None;
    }
    let sender = match conn {
        Some(s) => s,
        None => conn.insert(open(settings).await?),
    };
    let t = &settings.target;
    let mut req = http::Request::new(Full::new(alf.clone()));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/1.1.0/single");
    let h = req.headers_mut();
    let host = if (settings.https && t.port == 443) || (!settings.https && t.port == 80) {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    h.insert(HOST, HeaderValue::from_str(&host).map_err(|e| Failure::Drop(e.to_string()))?);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(alf.len()));
    let exchange = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    let outcome = tokio::time::timeout(t.timeout, exchange).await;
    let (status, body) = match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            *conn = None;
            return Err(Failure::Retry(format!("could not send ALF to Galileo collector: {e}")));
        }
        Err(_) => {
            *conn = None;
            return Err(Failure::Retry("could not send ALF to Galileo collector: timeout".into()));
        }
    };
    let said = String::from_utf8_lossy(&body);
    match status.as_u16() {
        500.. => Err(Failure::Retry(format!("Galileo collector HTTP error ({status}): {said}"))),
        400..=499 => Err(Failure::Drop(format!("Galileo collector refused this ALF ({status}): {said}"))),
        _ => Ok(()),
    }
}

/// Sends batches oldest first; a failed one goes to the back of the queue and the next
/// attempt waits min(60, n²) seconds, n growing with each failure in a row.
async fn send_batches(
    settings: Arc<Settings>,
    mut incoming: mpsc::UnboundedReceiver<(Bytes, u64)>,
    queued: Arc<AtomicUsize>,
) {
    let mut queue: VecDeque<(Bytes, u64)> = VecDeque::new();
    let mut conn: Option<Sender> = None;
    let mut delay_index: u64 = 1;
    loop {
        if queue.is_empty() {
            match incoming.recv().await {
                Some(b) => queue.push_back(b),
                None => return,
            }
        }
        while let Ok(b) = incoming.try_recv() {
            queue.push_back(b);
        }
        let Some((alf, tries)) = queue.pop_front() else { continue };
        let done = |queued: &AtomicUsize| {
            queued.fetch_sub(alf.len(), Ordering::Relaxed);
        };
        match post(&settings, &mut conn, &alf).await {
            Ok(()) => {
                delay_index = 1;
                done(&queued);
            }
            Err(Failure::Drop(why)) => {
                dropped(&settings.failures, "galileo", &why);
                done(&queued);
            }
            Err(Failure::Retry(why)) => {
                delay_index += 1;
                let delay = MAX_RETRY_DELAY.min(delay_index * delay_index);
                tracing::warn!(error = %why, retry_in_secs = delay, "could not reach Galileo collector");
                if tries + 1 < settings.retry_count {
                    queue.push_back((alf, tries + 1));
                } else {
                    dropped(&settings.failures, "galileo", &format!("ALF was already tried {} times", tries + 1));
                    done(&queued);
                }
                tokio::time::sleep(Duration::from_secs(delay)).await;
            }
        }
    }
}

impl Plugin for Galileo {
    fn name(&self) -> &'static str {
        "galileo"
    }

    fn reads_body(&self, _chunked: bool) -> bool {
        self.log_bodies
    }

    /// With `log_bodies`, the request body is read (up to the limit plugins buffer) so the
    /// record can carry it; it still goes upstream as it came.
    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if !self.log_bodies {
            return Access::Continue;
        }
        // nginx has no body data for an empty body: no `postData`.
        ctx.log_body = ctx.read_body().filter(|b| !b.is_empty());
        Access::Continue
    }

    fn logs(&self) -> bool {
        true
    }

    fn captures_bodies(&self) -> bool {
        self.log_bodies
    }

    fn log(&self, entry: &LogEntry) {
        let alf = alf_entry(entry, self.log_bodies);
        self.outbox.push(alf, |rx| batch(self.settings.clone(), rx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_head_sizes_as_kong_writes_them() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_796_526_245_999), "2026-12-06T03:04:05Z");
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        // "GET / HTTP/1.1" + CRLF + "host: a" + CRLF + CRLF
        assert_eq!(head_size("GET / HTTP/1.1", &h), 14 + 2 + 9 + 2);
    }

    #[test]
    fn query_arguments_become_name_value_pairs() {
        assert_eq!(
            query_pairs("/p?a=1&a=2&flag"),
            json!([{"name": "a", "value": "1"}, {"name": "a", "value": "2"}, {"name": "flag", "value": true}])
        );
    }

    #[test]
    fn a_message_has_a_body_by_its_fields() {
        let mut h = HeaderMap::new();
        assert!(!fields_say_body(&h));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!fields_say_body(&h));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(fields_say_body(&h));
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("multipart/byteranges"));
        assert!(fields_say_body(&h));
    }
}
