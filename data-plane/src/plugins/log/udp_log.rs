//! udp-log (kong-0.14-plugins §7.4): one datagram per request, the JSON record.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{dropped, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

pub struct UdpLog {
    target: (String, u16),
    timeout: Duration,
    outbox: Outbox<Bytes>,
}

impl UdpLog {
    pub fn new(config: &Value) -> Result<UdpLog, BuildError> {
        let host = config.get("host").and_then(Value::as_str).ok_or_else(|| BuildError("host is required".into()))?;
        let port = config.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
        let timeout = Duration::from_millis(config.get("timeout").and_then(Value::as_u64).unwrap_or(10_000));
        Ok(UdpLog { target: (host.to_owned(), port), timeout, outbox: Outbox::new("udp-log") })
    }
}

/// A UDP socket connected to `target`, within `timeout` (the name is resolved again each time).
pub async fn connected(target: &(String, u16), timeout: Duration) -> std::io::Result<tokio::net::UdpSocket> {
    let bind = if target.0.contains(':') { "[::]:0" } else { "0.0.0.0:0" };
    let made = async {
        let s = tokio::net::UdpSocket::bind(bind).await?;
        s.connect((target.0.as_str(), target.1)).await?;
        Ok(s)
    };
    tokio::time::timeout(timeout, made)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))
}

/// Sends datagrams from one socket, connected to the target once (made again on failure).
pub async fn send_datagrams(
    target: (String, u16),
    timeout: Duration,
    mut rx: mpsc::Receiver<Bytes>,
    failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    name: &'static str,
) {
    let mut socket: Option<tokio::net::UdpSocket> = None;
    while let Some(datagram) = rx.recv().await {
        if socket.is_none() {
            match connected(&target, timeout).await {
                Ok(s) => socket = Some(s),
                Err(e) => {
                    dropped(&failures, name, &e);
                    continue;
                }
            }
        }
        if let Some(s) = &socket {
            if let Err(e) = s.send(&datagram).await {
                dropped(&failures, name, &e);
                socket = None;
            }
        }
    }
}

impl Plugin for UdpLog {
    fn name(&self) -> &'static str {
        "udp-log"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        self.outbox.push(entry.json(), |rx| {
            send_datagrams(self.target.clone(), self.timeout, rx, self.outbox.counter(), "udp-log")
        });
    }
}
