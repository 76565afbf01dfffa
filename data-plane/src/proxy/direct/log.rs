//! The log phase's entry on the direct path, filled in as the request is served.

use std::time::Instant;

use super::ProxyError;
use crate::plugins;

/// What the log phase needs of a request on the direct path: the plugins that log, and the
/// entry the answer completes.
pub(super) struct DirectLog {
    pub(super) resolved: plugins::Resolved,
    pub(super) entry: plugins::LogEntry,
}

impl DirectLog {
    /// Records an upstream try (Kong's `tries`).
    pub(super) fn try_peer(&mut self, service: &crate::service::Service, peer: Option<&crate::balancer::ring::Peer>) {
        let (ip, port) = match (peer, service.ip) {
            (Some(p), _) => (p.addr.ip().to_string(), p.addr.port()),
            (None, Some(ip)) => (ip.to_string(), service.port),
            (None, None) => (service.host().to_owned(), service.port),
        };
        let balancer_start_ms = plugins::log::unix_ms(Instant::now());
        self.entry.tries.push(plugins::log::Try { ip, port, balancer_start_ms, failed: None, code: None });
    }

    /// Marks the last try failed, with the status Kong's balancer records for it.
    pub(super) fn failed(&mut self, error: &ProxyError) {
        if let Some(t) = self.entry.tries.last_mut() {
            t.failed = Some("next");
            t.code = Some(if matches!(error, ProxyError::Timeout) { 504 } else { 502 });
        }
    }

    /// The answer's head as written in `head` (a complete HTTP/1 response head, which starts
    /// `HTTP/1.x NNN`); its fields are parsed only if a logger asks for them.
    pub(super) fn answered(&mut self, head: &[u8]) {
        let code = head.get(9..12).and_then(|c| std::str::from_utf8(c).ok()?.parse().ok());
        self.entry.status = code.unwrap_or(0);
        self.entry.response_head = Some(bytes::Bytes::copy_from_slice(head));
        self.entry.response_head_size = head.len() as u64;
    }

    /// Hands the entry to the log phase with one of Gatehouse's own answers (an upstream
    /// failure's page).
    pub(super) fn finish_own(mut self, answer: &http::response::Parts, body: u64) {
        self.entry.finish_answer(answer);
        self.entry.response_size.fetch_add(body, std::sync::atomic::Ordering::Relaxed);
        self.resolved.log(self.entry);
    }

    /// Hands the entry to the log phase, with the bytes sent for the answer.
    pub(super) fn finish(self, sent: u64) {
        let DirectLog { resolved, entry } = self;
        entry.response_size.store(sent, std::sync::atomic::Ordering::Relaxed);
        resolved.log_now(entry);
    }
}
