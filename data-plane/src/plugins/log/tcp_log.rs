//! tcp-log (kong-0.14-plugins §7.3): the JSON record and `\r\n` on a kept-alive connection,
//! plain or TLS (`tls`, `tls_sni`; the server's certificate is not verified, as in Kong).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{dropped, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

pub struct TcpLog {
    target: Arc<Target>,
    outbox: Outbox<Bytes>,
}

/// Where records go and how.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub keepalive: Duration,
    /// The TLS server name, when TLS is on.
    pub tls: Option<String>,
}

impl TcpLog {
    pub fn new(config: &Value) -> Result<TcpLog, BuildError> {
        let host = config.get("host").and_then(Value::as_str).ok_or_else(|| BuildError("host is required".into()))?;
        let ms = |k: &str, d: u64| Duration::from_millis(config.get(k).and_then(Value::as_u64).unwrap_or(d));
        let tls = (config.get("tls").and_then(Value::as_bool) == Some(true)).then(|| {
            config.get("tls_sni").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(host).to_owned()
        });
        Ok(TcpLog {
            target: Arc::new(Target {
                host: host.to_owned(),
                port: config.get("port").and_then(Value::as_u64).unwrap_or(0) as u16,
                timeout: ms("timeout", 10_000),
                keepalive: ms("keepalive", 60_000),
                tls,
            }),
            outbox: Outbox::new("tcp-log"),
        })
    }
}

/// A stream to the target, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// Client TLS settings, built once: verified against the web's root certificates (for
/// public endpoints, or a logger told to verify), or not verified, as Kong's loggers are.
pub fn tls_config(verify: bool) -> Arc<rustls::ClientConfig> {
    static VERIFIED: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    static UNVERIFIED: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if verify {
        VERIFIED
            .get_or_init(|| {
                let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
                Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
            })
            .clone()
    } else {
        UNVERIFIED
            .get_or_init(|| {
                Arc::new(
                    rustls::ClientConfig::builder()
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(crate::tls::NoVerify))
                        .with_no_client_auth(),
                )
            })
            .clone()
    }
}

/// A TCP connection to the target, within its timeout.
pub async fn connect_tcp(target: &Target) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::time::timeout(target.timeout, tokio::net::TcpStream::connect((target.host.as_str(), target.port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// TLS over `tcp` with the server name `sni`, within the target's timeout.
pub async fn handshake(
    target: &Target,
    tcp: tokio::net::TcpStream,
    sni: &str,
    verify: bool,
) -> std::io::Result<Stream> {
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let tls =
        tokio::time::timeout(target.timeout, tokio_rustls::TlsConnector::from(tls_config(verify)).connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::new(tls))
}

/// Connects with TLS (whether or not the target asks for it) verified against the web's
/// root certificates.
pub async fn connect_verified(target: &Target) -> std::io::Result<Stream> {
    let tcp = connect_tcp(target).await?;
    handshake(target, tcp, target.tls.as_deref().unwrap_or(&target.host), true).await
}

/// Connects, within the timeout, with TLS (not verified) when the target asks for it.
pub async fn connect(target: &Target) -> std::io::Result<Stream> {
    let tcp = connect_tcp(target).await?;
    match &target.tls {
        None => Ok(Box::new(tcp)),
        Some(sni) => handshake(target, tcp, sni, false).await,
    }
}

async fn send_lines(target: Arc<Target>, rx: mpsc::Receiver<Bytes>, failures: Arc<std::sync::atomic::AtomicU64>) {
    let mut conn: Option<(Stream, tokio::time::Instant)> = None;
    let mut batch: Vec<u8> = Vec::new();
    let mut queue = super::Batches::new(rx);
    loop {
        // The lines that come within `GATHER` go with one write.
        batch.clear();
        let take = |line: Bytes| {
            batch.extend_from_slice(&line);
            batch.len() < 256 * 1024
        };
        let Some(lines) = queue.gather(take).await else { return };
        let fail = |e: &dyn std::fmt::Display| {
            for _ in 0..lines {
                dropped(&failures, "tcp-log", e);
            }
        };
        // A connection idle past `keepalive` is closed and made anew.
        if conn.as_ref().is_some_and(|(_, used)| used.elapsed() > target.keepalive) {
            conn = None;
        }
        if conn.is_none() {
            match connect(&target).await {
                Ok(s) => conn = Some((s, tokio::time::Instant::now())),
                Err(e) => {
                    fail(&e);
                    continue;
                }
            }
        }
        if let Some((s, used)) = &mut conn {
            let written = tokio::time::timeout(target.timeout, async {
                s.write_all(&batch).await?;
                s.flush().await
            })
            .await;
            match written {
                Ok(Ok(())) => *used = tokio::time::Instant::now(),
                Ok(Err(e)) => {
                    fail(&e);
                    conn = None;
                }
                Err(_) => {
                    fail(&"write timed out");
                    conn = None;
                }
            }
        }
    }
}

impl Plugin for TcpLog {
    fn name(&self) -> &'static str {
        "tcp-log"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let json = entry.json();
        let mut line = Vec::with_capacity(json.len() + 2);
        line.extend_from_slice(&json);
        line.extend_from_slice(b"\r\n");
        self.outbox.push(Bytes::from(line), |rx| send_lines(self.target.clone(), rx, self.outbox.counter()));
    }
}
