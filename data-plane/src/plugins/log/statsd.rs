//! statsd (kong-0.14-plugins §7.8) and datadog (§7.9): metric lines
//! `<prefix>.<service>.<stat>:<value>|<type>[|@<rate>]`, datadog adding `|#<tags>`. A Service
//! without a name gives no metrics, as in Kong 0.14.1.
//!
//! Kong sends each line in a datagram of its own; Gatehouse sends lines together,
//! newline-separated, in datagrams of at most [`DATAGRAM`] bytes — the multi-metric packet
//! every statsd server (etsy statsd, the Datadog agent, Telegraf) reads. The lines of every
//! request queued while the last datagram went out share the next ones, so a busy route costs
//! one send per datagram, not one per request.

use std::io::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{dropped, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

struct Metric {
    name: String,
    /// What follows the value on the wire: `|<type>`, then `|@<rate>` and `|#<tags>` when set.
    suffix: String,
    identifier: Option<String>,
}

pub struct Statsd {
    name: &'static str,
    prefix: String,
    metrics: Vec<Metric>,
    target: Arc<(String, u16)>,
    outbox: Outbox<Bytes>,
}

fn kind(stat_type: &str) -> &'static str {
    match stat_type {
        "gauge" => "g",
        "timer" => "ms",
        "counter" => "c",
        "histogram" => "h",
        "meter" => "m",
        _ => "s",
    }
}

impl Statsd {
    /// `datadog` adds each metric's tags to its lines.
    pub fn new(config: &Value, datadog: bool) -> Result<Statsd, BuildError> {
        let metrics = config
            .get("metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| {
                let s = |k: &str| m.get(k).and_then(Value::as_str);
                let tags: Vec<&str> =
                    m.get("tags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
                let mut suffix = format!("|{}", kind(s("stat_type").unwrap_or_default()));
                if let Some(rate) = m.get("sample_rate").and_then(Value::as_f64).filter(|r| *r != 1.0) {
                    suffix.push_str(&format!("|@{rate}"));
                }
                if datadog && !tags.is_empty() {
                    suffix.push_str(&format!("|#{}", tags.join(",")));
                }
                Metric {
                    name: s("name").unwrap_or_default().to_owned(),
                    suffix,
                    identifier: s("consumer_identifier").map(str::to_owned),
                }
            })
            .collect();
        Ok(Statsd {
            name: if datadog { "datadog" } else { "statsd" },
            prefix: config.get("prefix").and_then(Value::as_str).unwrap_or("kong").to_owned(),
            metrics,
            target: Arc::new((
                config.get("host").and_then(Value::as_str).unwrap_or("localhost").to_owned(),
                config.get("port").and_then(Value::as_u64).unwrap_or(8125) as u16,
            )),
            outbox: Outbox::new(if datadog { "datadog" } else { "statsd" }),
        })
    }

    /// Every line this entry gives, each ended by a newline, appended to `out`.
    fn lines(&self, entry: &LogEntry, out: &mut Vec<u8>) {
        let Some(service) = entry.service_name() else { return };
        let consumer = entry.consumer_row();
        let cid = |how: Option<&str>| -> Option<String> {
            let c = consumer?;
            match how.unwrap_or("consumer_id") {
                "custom_id" => c.custom_id.as_deref().map(str::to_owned),
                "username" => c.username.as_deref().map(str::to_owned),
                _ => Some(c.id.replace('-', "_")),
            }
        };
        let status = entry.status;
        for m in &self.metrics {
            // `<prefix>.<service>.` then the stat's name; the value; the suffix.
            let mut line = |stat: std::fmt::Arguments<'_>, value: std::fmt::Arguments<'_>| {
                out.extend_from_slice(self.prefix.as_bytes());
                out.push(b'.');
                for part in service.split('.') {
                    out.extend_from_slice(part.as_bytes());
                    out.push(b'_');
                }
                out.pop();
                let _ = write!(out, ".{stat}:{value}");
                out.extend_from_slice(m.suffix.as_bytes());
                out.push(b'\n');
            };
            match m.name.as_str() {
                "request_count" => line(format_args!("request.count"), format_args!("1")),
                "latency" => line(format_args!("latency"), format_args!("{}", entry.request_latency_ms())),
                "request_size" => line(format_args!("request.size"), format_args!("{}", entry.request_size)),
                "response_size" => line(
                    format_args!("response.size"),
                    format_args!("{}", entry.response_size.load(std::sync::atomic::Ordering::Relaxed)),
                ),
                "upstream_latency" => line(
                    format_args!("upstream_latency"),
                    format_args!("{}", entry.proxy_latency_ms.map_or(-1, |l| l as i64)),
                ),
                "kong_latency" => line(format_args!("kong_latency"), format_args!("{}", entry.kong_latency_ms)),
                "status_count" => {
                    line(format_args!("request.status.{status}"), format_args!("1"));
                    line(format_args!("request.status.total"), format_args!("1"));
                }
                "unique_users" => {
                    if let Some(id) = cid(m.identifier.as_deref()) {
                        line(format_args!("user.uniques"), format_args!("{id}"));
                    }
                }
                "request_per_user" => {
                    if let Some(id) = cid(m.identifier.as_deref()) {
                        line(format_args!("user.{id}.request.count"), format_args!("1"));
                    }
                }
                "status_count_per_user" => {
                    if let Some(id) = cid(m.identifier.as_deref()) {
                        line(format_args!("user.{id}.request.status.{status}"), format_args!("1"));
                        line(format_args!("user.{id}.request.status.total"), format_args!("1"));
                    }
                }
                _ => {}
            }
        }
    }
}

impl Plugin for Statsd {
    fn name(&self) -> &'static str {
        self.name
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let mut lines = Vec::with_capacity(64 * self.metrics.len());
        self.lines(entry, &mut lines);
        if lines.is_empty() {
            return;
        }
        self.outbox
            .push(Bytes::from(lines), |rx| send_packed(self.target.clone(), rx, self.outbox.counter(), self.name));
    }
}

/// The largest datagram sent: what fits an Ethernet MTU with room for IP and UDP headers
/// (statsd clients' usual bound).
const DATAGRAM: usize = 1432;

/// Newline-ended lines gathered into datagrams of at most [`DATAGRAM`] bytes (a longer line
/// goes alone), each datagram's last newline left off.
#[derive(Default)]
struct Packer {
    datagram: Vec<u8>,
    full: Vec<Bytes>,
}

impl Packer {
    fn add(&mut self, lines: &[u8]) {
        for line in lines.split_inclusive(|b| *b == b'\n') {
            if !self.datagram.is_empty() && self.datagram.len() + line.len() > DATAGRAM + 1 {
                self.seal();
            }
            self.datagram.extend_from_slice(line);
        }
    }

    /// Ends the datagram being filled.
    fn seal(&mut self) {
        if self.datagram.last() == Some(&b'\n') {
            self.datagram.pop();
        }
        if !self.datagram.is_empty() {
            self.full.push(Bytes::copy_from_slice(&self.datagram));
        }
        self.datagram.clear();
    }

    /// Every datagram, the one being filled included.
    fn take(&mut self) -> std::vec::Drain<'_, Bytes> {
        self.seal();
        self.full.drain(..)
    }
}

/// Sends the lines of every request queued, packed, from one socket connected to the target
/// (made again after a failure).
async fn send_packed(
    target: Arc<(String, u16)>,
    rx: mpsc::Receiver<Bytes>,
    failures: Arc<AtomicU64>,
    name: &'static str,
) {
    let mut socket: Option<tokio::net::UdpSocket> = None;
    let mut packer = Packer::default();
    let mut queue = super::Batches::new(rx);
    loop {
        // The requests that come within `GATHER` are packed together.
        let mut packed = 0;
        let take = |lines: Bytes| {
            packer.add(&lines);
            packed += 1;
            packed < 256
        };
        let Some(requests) = queue.gather(take).await else { return };
        if socket.is_none() {
            match super::udp_log::connected(&target, Duration::from_secs(10)).await {
                Ok(s) => socket = Some(s),
                Err(e) => {
                    for _ in 0..requests {
                        dropped(&failures, name, &e);
                    }
                    packer.take().for_each(drop);
                    continue;
                }
            }
        }
        // After a failed send the rest of the batch is not tried on that socket: each datagram
        // not sent counts as a record dropped (it holds the metrics of one or more requests).
        let mut failed: Option<std::io::Error> = None;
        for datagram in packer.take() {
            match (&socket, &failed) {
                (Some(s), None) => {
                    if let Err(e) = s.send(&datagram).await {
                        dropped(&failures, name, &e);
                        failed = Some(e);
                    }
                }
                (_, Some(e)) => dropped(&failures, name, e),
                (None, None) => {}
            }
        }
        if failed.is_some() {
            socket = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Packer;

    fn packed(groups: &[&str]) -> Vec<String> {
        let mut p = Packer::default();
        for g in groups {
            p.add(g.as_bytes());
        }
        p.take().map(|d| String::from_utf8_lossy(&d).into_owned()).collect()
    }

    #[test]
    fn lines_of_several_requests_are_packed_into_datagrams_that_fit() {
        assert_eq!(packed(&["xxx\n", "xxxx\n"]), ["xxx\nxxxx"]);
        let line = |n: usize| format!("{}\n", "x".repeat(n));
        let sizes: Vec<usize> =
            packed(&[&line(1000), &(line(500) + &line(2000)), &line(10)]).iter().map(String::len).collect();
        assert_eq!(sizes, [1000, 500, 2000, 10], "a line longer than a datagram goes alone");
        let sizes: Vec<usize> = packed(&[&line(700), &line(731)]).iter().map(String::len).collect();
        assert_eq!(sizes, [1432], "two lines and their newline fill a datagram exactly");
        assert!(packed(&[]).is_empty());
    }
}
