//! http-log (kong-0.14-plugins §7.2): each JSON record POSTed (or PUT, PATCH) to
//! `http_endpoint` over one kept-alive connection, HTTP or HTTPS (not verified, as in Kong);
//! `user:pass@` in the URL becomes Basic authentication. Answers are read and discarded.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use super::tcp_log::{connect, Target};
use super::{dropped, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

struct Endpoint {
    target: Target,
    method: http::Method,
    /// Path and query.
    path: String,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
    content_type: HeaderValue,
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
        let authorization = (!url.username().is_empty()).then(|| {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or_default()));
            HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))).ok()
        });
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(HttpLog {
            endpoint: Arc::new(Endpoint {
                target: Target {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port: url.port_or_known_default().unwrap_or(if https { 443 } else { 80 }),
                    timeout: ms("timeout", 10_000),
                    keepalive: ms("keepalive", 60_000),
                    tls: https.then(|| host.clone()),
                },
                method: http::Method::from_bytes(text("method").unwrap_or("POST").as_bytes())
                    .map_err(|e| BuildError(e.to_string()))?,
                path,
                host: HeaderValue::from_str(&host).map_err(|e| BuildError(e.to_string()))?,
                authorization: authorization.flatten(),
                content_type: HeaderValue::from_str(text("content_type").unwrap_or("application/json"))
                    .map_err(|e| BuildError(e.to_string()))?,
            }),
            outbox: Outbox::new("http-log"),
        })
    }
}

async fn post_records(
    endpoint: Arc<Endpoint>,
    mut rx: mpsc::Receiver<Bytes>,
    failures: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut conn: Option<(http1::SendRequest<Full<Bytes>>, tokio::time::Instant)> = None;
    while let Some(record) = rx.recv().await {
        let t = &endpoint.target;
        if conn.as_ref().is_some_and(|(s, used)| used.elapsed() > t.keepalive || s.is_closed()) {
            conn = None;
        }
        if conn.is_none() {
            let opened = async {
                let io = connect(t).await?;
                let (sender, driver) = http1::handshake(TokioIo::new(io)).await.map_err(std::io::Error::other)?;
                tokio::spawn(async move {
                    let _ = driver.await;
                });
                Ok::<_, std::io::Error>(sender)
            };
            match opened.await {
                Ok(s) => conn = Some((s, tokio::time::Instant::now())),
                Err(e) => {
                    dropped(&failures, "http-log", &e);
                    continue;
                }
            }
        }
        let Some((sender, used)) = &mut conn else { continue };
        let mut req = http::Request::new(Full::new(record.clone()));
        *req.method_mut() = endpoint.method.clone();
        *req.uri_mut() = match endpoint.path.parse() {
            Ok(u) => u,
            Err(e) => {
                dropped(&failures, "http-log", &e);
                continue;
            }
        };
        let h = req.headers_mut();
        h.insert(HOST, endpoint.host.clone());
        h.insert(CONTENT_TYPE, endpoint.content_type.clone());
        h.insert(CONTENT_LENGTH, HeaderValue::from(record.len()));
        if let Some(a) = &endpoint.authorization {
            h.insert(AUTHORIZATION, a.clone());
        }
        let exchange = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            // Read the answer so the connection can carry the next record.
            resp.into_body().collect().await.map(|_| ())
        };
        match tokio::time::timeout(t.timeout, exchange).await {
            Ok(Ok(())) => *used = tokio::time::Instant::now(),
            Ok(Err(e)) => {
                dropped(&failures, "http-log", &e);
                conn = None;
            }
            Err(_) => {
                dropped(&failures, "http-log", &"timed out");
                conn = None;
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
        let record = entry.json();
        let (endpoint, failures) = (self.endpoint.clone(), self.outbox.counter());
        self.outbox.push(record, move |rx| post_records(endpoint, rx, failures));
    }
}
