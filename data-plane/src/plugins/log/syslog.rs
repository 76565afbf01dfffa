//! syslog (kong-0.14-plugins §7.6) and loggly (§7.7): the JSON record at a severity chosen by
//! the answer's status class, sent only when `log_level` lets that severity out. syslog writes
//! to the local syslog socket (facility user, ident `kong`; `GATEHOUSE_SYSLOG_SOCKET` names
//! another socket); loggly sends RFC 5424 frames over UDP.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::udp_log::send_datagrams;
use super::{dropped, severity_for, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

/// The facility Kong logs under: user (1), so PRI = 8 + severity.
const USER: u8 = 8;

/// `YYYY-MM-DD`, `HH:MM:SS` and the month's index of a Unix time.
fn utc(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (y, m, d) = crate::plugins::limits::civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    (y, m, d, t / 3600, t / 60 % 60, t % 60)
}

pub struct Syslog {
    config: Value,
    socket: PathBuf,
    outbox: Outbox<Bytes>,
}

impl Syslog {
    pub fn new(config: &Value) -> Syslog {
        let socket =
            std::env::var_os("GATEHOUSE_SYSLOG_SOCKET").map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from);
        Syslog { config: config.clone(), socket, outbox: Outbox::new("syslog") }
    }
}

async fn to_socket(path: PathBuf, mut rx: mpsc::Receiver<Bytes>, failures: Arc<AtomicU64>) {
    let mut socket: Option<tokio::net::UnixDatagram> = None;
    while let Some(frame) = rx.recv().await {
        if socket.is_none() {
            match tokio::net::UnixDatagram::unbound().and_then(|s| s.connect(&path).map(|()| s)) {
                Ok(s) => socket = Some(s),
                Err(e) => {
                    dropped(&failures, "syslog", &format!("{}: {e}", path.display()));
                    continue;
                }
            }
        }
        if let Some(s) = &socket {
            if let Err(e) = s.send(&frame).await {
                dropped(&failures, "syslog", &e);
                socket = None;
            }
        }
    }
}

impl Plugin for Syslog {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let Some(severity) = severity_for(&self.config, entry.status) else { return };
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let (_, m, d, hh, mm, ss) = utc(crate::plugins::limits::now_secs());
        let month = MONTHS[(m as usize).saturating_sub(1) % 12];
        let record = entry.json();
        let frame = format!(
            "<{}>{month} {d:>2} {hh:02}:{mm:02}:{ss:02} kong: {}",
            USER + severity,
            String::from_utf8_lossy(&record)
        );
        self.outbox.push(Bytes::from(frame), |rx| to_socket(self.socket.clone(), rx, self.outbox.counter()));
    }
}

pub struct Loggly {
    config: Value,
    target: (String, u16),
    timeout: Duration,
    /// `[<key>@41058 tag="…" …]`, made once.
    structured: String,
    outbox: Outbox<Bytes>,
}

impl Loggly {
    pub fn new(config: &Value) -> Result<Loggly, BuildError> {
        let key = config.get("key").and_then(Value::as_str).ok_or_else(|| BuildError("key is required".into()))?;
        let tags: String = config
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|t| format!(" tag=\"{t}\""))
            .collect();
        Ok(Loggly {
            config: config.clone(),
            target: (
                config.get("host").and_then(Value::as_str).unwrap_or("logs-01.loggly.com").to_owned(),
                config.get("port").and_then(Value::as_u64).unwrap_or(514) as u16,
            ),
            timeout: Duration::from_millis(config.get("timeout").and_then(Value::as_u64).unwrap_or(10_000)),
            structured: format!("[{key}@41058{tags}]"),
            outbox: Outbox::new("loggly"),
        })
    }
}

impl Plugin for Loggly {
    fn name(&self) -> &'static str {
        "loggly"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let Some(severity) = severity_for(&self.config, entry.status) else { return };
        let (y, m, d, hh, mm, ss) = utc(crate::plugins::limits::now_secs());
        let frame = format!(
            "<{}>1 {y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z {} kong - - {} {}",
            USER + severity,
            crate::hostname(),
            self.structured,
            String::from_utf8_lossy(&entry.json())
        );
        self.outbox.push(Bytes::from(frame), |rx| {
            send_datagrams(self.target.clone(), self.timeout, rx, self.outbox.counter(), "loggly")
        });
    }
}
