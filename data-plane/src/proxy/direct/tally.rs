//! What one request on the direct path contributes to `crate::metrics` and its trace.

use std::time::Instant;

use crate::metrics::{self, Series};
use crate::trace::Trace;

/// One request's contribution to `crate::metrics`, filled in as it is served.
pub(super) struct Tally {
    /// When the request's head was complete.
    pub(super) started: Instant,
    pub(super) series: Series,
    /// 0 until an upstream's answer is relayed; Gatehouse's own answers are read back from
    /// `Scratch::out`, which holds each of them whole once sent.
    pub(super) status: u16,
    pub(super) upstream_ms: Option<u64>,
    pub(super) kong_ms: Option<u64>,
    pub(super) egress: u64,
    /// The request's trace, when it is sampled (`crate::trace`).
    pub(super) trace: Option<Box<Trace>>,
}

impl Tally {
    pub(super) fn new(started: Instant) -> Tally {
        Tally {
            started,
            series: Series::unrouted(),
            status: 0,
            upstream_ms: None,
            kong_ms: None,
            egress: 0,
            trace: None,
        }
    }

    /// Records the request answered, `ingress` bytes long.
    pub(super) fn record(&mut self, ingress: usize, out: &[u8]) {
        if self.series == Series::OFF && self.trace.is_none() {
            return;
        }
        if self.status == 0 {
            // "HTTP/1.1 NNN ...": one of Gatehouse's own answers, whole in `out`.
            self.status = out.get(9..12).and_then(|c| std::str::from_utf8(c).ok()?.parse().ok()).unwrap_or(0);
            self.egress = out.len() as u64;
        }
        let request_ms = metrics::ms(self.started, Instant::now());
        metrics::record(&metrics::Observation {
            series: self.series,
            status: self.status,
            request_ms,
            upstream_ms: self.upstream_ms,
            kong_ms: self.kong_ms.unwrap_or(request_ms),
            ingress: ingress as u64,
            egress: self.egress,
        });
        if let Some(t) = self.trace.take() {
            (*t).finish(self.status);
        }
    }
}
