//! statsd (kong-0.14-plugins §7.8) and datadog (§7.9): metric lines
//! `<prefix>.<service>.<stat>:<value>|<type>[|@<rate>]`, datadog adding `|#<tags>`. A Service
//! without a name gives no metrics, as in Kong 0.14.1.
//!
//! Kong sends each line in a datagram of its own; Gatehouse sends a request's lines together,
//! newline-separated, in datagrams of at most [`DATAGRAM`] bytes — the multi-metric packet
//! every statsd server (etsy statsd, the Datadog agent, Telegraf) reads — so a request costs
//! one send instead of eight.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::udp_log::send_datagrams;
use super::{LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

struct Metric {
    name: String,
    /// The wire suffix: `c`, `ms`, `g`, `h`, `m`, `s`.
    kind: &'static str,
    rate: Option<f64>,
    identifier: Option<String>,
    tags: Option<String>,
}

pub struct Statsd {
    name: &'static str,
    prefix: String,
    metrics: Vec<Metric>,
    target: (String, u16),
    outbox: Outbox<Bytes>,
}

fn suffix(stat_type: &str) -> &'static str {
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
                Metric {
                    name: s("name").unwrap_or_default().to_owned(),
                    kind: suffix(s("stat_type").unwrap_or_default()),
                    rate: m.get("sample_rate").and_then(Value::as_f64),
                    identifier: s("consumer_identifier").map(str::to_owned),
                    tags: (datadog && !tags.is_empty()).then(|| tags.join(",")),
                }
            })
            .collect();
        Ok(Statsd {
            name: if datadog { "datadog" } else { "statsd" },
            prefix: config.get("prefix").and_then(Value::as_str).unwrap_or("kong").to_owned(),
            metrics,
            target: (
                config.get("host").and_then(Value::as_str).unwrap_or("localhost").to_owned(),
                config.get("port").and_then(Value::as_u64).unwrap_or(8125) as u16,
            ),
            outbox: Outbox::new(if datadog { "datadog" } else { "statsd" }),
        })
    }

    /// Every line this entry gives.
    fn lines(&self, entry: &LogEntry) -> Vec<String> {
        let Some(service) = entry.service_name() else { return Vec::new() };
        let base = format!("{}.{}", self.prefix, service.replace('.', "_"));
        let consumer = entry.consumer();
        let cid = |how: Option<&str>| -> Option<String> {
            let c = consumer?;
            let field = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
            match how.unwrap_or("consumer_id") {
                "custom_id" => field("custom_id"),
                "username" => field("username"),
                _ => field("id").map(|id| id.replace('-', "_")),
            }
        };
        let mut out = Vec::new();
        for m in &self.metrics {
            let line = |stat: &str, value: String| {
                let mut l = format!("{base}.{stat}:{value}|{}", m.kind);
                if let Some(rate) = m.rate.filter(|r| *r != 1.0) {
                    l.push_str(&format!("|@{rate}"));
                }
                if let Some(tags) = &m.tags {
                    l.push_str(&format!("|#{tags}"));
                }
                l
            };
            let status = entry.status;
            match m.name.as_str() {
                "request_count" => out.push(line("request.count", "1".into())),
                "latency" => out.push(line("latency", entry.request_latency_ms().to_string())),
                "request_size" => out.push(line("request.size", entry.request_size.to_string())),
                "response_size" => {
                    out.push(line(
                        "response.size",
                        entry.response_size.load(std::sync::atomic::Ordering::Relaxed).to_string(),
                    ));
                }
                "upstream_latency" => {
                    out.push(line("upstream_latency", entry.proxy_latency_ms.map_or(-1, |l| l as i64).to_string()));
                }
                "kong_latency" => out.push(line("kong_latency", entry.kong_latency_ms.to_string())),
                "status_count" => {
                    out.push(line(&format!("request.status.{status}"), "1".into()));
                    out.push(line("request.status.total", "1".into()));
                }
                "unique_users" => {
                    if let Some(id) = cid(m.identifier.as_deref()) {
                        out.push(line("user.uniques", id));
                    }
                }
                "request_per_user" => {
                    if let Some(id) = cid(m.identifier.as_deref()) {
                        out.push(line(&format!("user.{id}.request.count"), "1".into()));
                    }
                }
                "status_count_per_user" => {
                    if let Some(id) = cid(m.identifier.as_deref()) {
                        out.push(line(&format!("user.{id}.request.status.{status}"), "1".into()));
                        out.push(line(&format!("user.{id}.request.status.total"), "1".into()));
                    }
                }
                _ => {}
            }
        }
        out
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
        for datagram in pack(self.lines(entry)) {
            let (target, failures, name) = (self.target.clone(), self.outbox.counter(), self.name);
            self.outbox.push(datagram, move |rx| send_datagrams(target, Duration::from_secs(10), rx, failures, name));
        }
    }
}

/// The largest datagram sent: what fits an Ethernet MTU with room for IP and UDP headers
/// (statsd clients' usual bound).
const DATAGRAM: usize = 1432;

/// Lines joined by newlines into datagrams of at most [`DATAGRAM`] bytes (a longer line goes
/// alone).
fn pack(lines: Vec<String>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in lines {
        if !current.is_empty() && current.len() + 1 + line.len() > DATAGRAM {
            out.push(Bytes::from(std::mem::take(&mut current)));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        out.push(Bytes::from(current));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_packed_into_datagrams_that_fit() {
        let line = |n: usize| "x".repeat(n);
        assert_eq!(super::pack(vec![line(3), line(4)]), vec![bytes::Bytes::from("xxx\nxxxx")]);
        let packed = super::pack(vec![line(1000), line(500), line(2000), line(10)]);
        let sizes: Vec<usize> = packed.iter().map(bytes::Bytes::len).collect();
        assert_eq!(sizes, [1000, 500, 2000, 10]);
        assert!(super::pack(Vec::new()).is_empty());
    }
}
