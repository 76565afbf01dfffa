//! Traces of proxied requests, sampled at the head.
//!
//! A request is traced when the client's `traceparent` (or B3) says it is sampled, or, when
//! it says nothing, with the configured probability. An unsampled request costs one branch
//! (tracing off) or one random number; a sampled one records a few instants as it is served
//! and, once answered, becomes a root span with a child per phase (router, each plugin's
//! access, balancer, upstream connect, upstream answer, log), built through the
//! OpenTelemetry SDK with the recorded times. The upstream receives the trace in `traceparent`.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SamplingDecision, SamplingResult, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status,
    TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

/// The tracer and the share of requests sampled, once tracing is set up.
static TRACER: OnceLock<(opentelemetry_sdk::trace::SdkTracer, f64)> = OnceLock::new();

/// Turns request tracing on, with `tracer` and `ratio` (once per process).
pub fn install(tracer: opentelemetry_sdk::trace::SdkTracer, ratio: f64) {
    let _ = TRACER.set((tracer, ratio));
}

/// Whether any request can be traced (checked before looking at headers at all).
#[inline]
pub fn on() -> bool {
    TRACER.get().is_some()
}

/// A trace context a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None`: the client left the decision to us (B3 without a flag).
    pub sampled: Option<bool>,
}

/// Lower-case hex only: both W3C and B3 say upper case makes a value invalid.
fn lower_hex(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn hex_u128(s: &[u8]) -> Option<u128> {
    if s.len() > 32 || !lower_hex(s) {
        return None;
    }
    u128::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    if s.len() != 16 || !lower_hex(s) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower-case;
/// zero ids and version `ff` are invalid (and ignored, as the specification says); a later
/// version may append fields.
pub fn parse_traceparent(v: &[u8]) -> Option<Incoming> {
    let mut parts = v.trim_ascii().split(|b| *b == b'-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || !lower_hex(version) || version == b"ff" || trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    if version == b"00" && parts.next().is_some() {
        return None;
    }
    let trace_id = hex_u128(trace).filter(|t| *t != 0)?;
    let span_id = hex_u64(span).filter(|s| *s != 0)?;
    let flags =
        if lower_hex(flags) { u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()? } else { return None };
    Some(Incoming { trace_id: TraceId::from(trace_id), span_id: SpanId::from(span_id), sampled: Some(flags & 1 == 1) })
}

/// A B3 sampling state: `1` (or `d`, debug) sampled, `0` denied.
fn b3_decision(v: &[u8]) -> Option<Option<bool>> {
    match v {
        b"1" | b"d" | b"true" => Some(Some(true)),
        b"0" | b"false" => Some(Some(false)),
        _ => None,
    }
}

/// A decision without a context (B3's bare `0`, `1` or `d`): no ids to continue.
fn decision_only(sampled: bool) -> Incoming {
    Incoming { trace_id: TraceId::INVALID, span_id: SpanId::INVALID, sampled: Some(sampled) }
}

/// B3 single header: `<trace id>-<span id>[-<1|0|d>[-<parent>]]` (a 16-hex trace id is
/// widened), or a bare decision (`0`, `1`, `d`).
pub fn parse_b3(v: &[u8]) -> Option<Incoming> {
    let v = v.trim_ascii();
    if let Some(Some(sampled)) = b3_decision(v) {
        return Some(decision_only(sampled));
    }
    let mut parts = v.split(|b| *b == b'-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = match parts.next() {
        None => None,
        Some(d) => b3_decision(d)?,
    };
    if trace.len() != 16 && trace.len() != 32 {
        return None;
    }
    Some(Incoming {
        trace_id: TraceId::from(hex_u128(trace).filter(|t| *t != 0)?),
        span_id: SpanId::from(hex_u64(span).filter(|s| *s != 0)?),
        sampled,
    })
}

/// B3 multiple headers: `X-B3-TraceId` and `X-B3-SpanId`, with `X-B3-Sampled` or
/// `X-B3-Flags: 1` (debug, which means sampled); a decision alone is not a context.
pub fn parse_b3_multi(
    trace: Option<&[u8]>,
    span: Option<&[u8]>,
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Option<Incoming> {
    let decision = match (flags.map(<[u8]>::trim_ascii), sampled.map(<[u8]>::trim_ascii)) {
        (Some(b"1"), _) => Some(true),
        (_, Some(s)) => b3_decision(s).flatten(),
        _ => None,
    };
    let (Some(trace), Some(span)) = (trace.map(<[u8]>::trim_ascii), span.map(<[u8]>::trim_ascii)) else {
        return decision.map(decision_only);
    };
    if trace.len() != 16 && trace.len() != 32 {
        return decision.map(decision_only);
    }
    Some(Incoming {
        trace_id: TraceId::from(hex_u128(trace).filter(|t| *t != 0)?),
        span_id: SpanId::from(hex_u64(span).filter(|s| *s != 0)?),
        sampled: decision,
    })
}

/// The trace context a request carries, read with `get` (a header by lower-case name): W3C
/// first, then B3's single header, then its multiple headers.
pub fn incoming<'h>(get: impl Fn(&str) -> Option<&'h [u8]>) -> Option<Incoming> {
    if let Some(v) = get("traceparent") {
        if let Some(i) = parse_traceparent(v) {
            return Some(i);
        }
    }
    if let Some(v) = get("b3") {
        return parse_b3(v);
    }
    parse_b3_multi(get("x-b3-traceid"), get("x-b3-spanid"), get("x-b3-sampled"), get("x-b3-flags"))
}

/// When a phase of a request begins, if the request is traced (no clock read otherwise).
pub fn clock(trace: &Option<Box<Trace>>) -> Option<Instant> {
    trace.as_ref().map(|_| Instant::now())
}

/// Records a phase begun at `start` (from [`clock`]) as ending now; its attributes are made
/// only for a traced request.
pub fn phase(
    trace: &mut Option<Box<Trace>>,
    start: Option<Instant>,
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) {
    if let (Some(t), Some(start)) = (trace.as_mut(), start) {
        t.child(name, start, Instant::now(), attributes());
    }
}

/// As [`phase`], for a call to the upstream (a client span).
pub fn call(
    trace: &mut Option<Box<Trace>>,
    start: Option<Instant>,
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) {
    if let (Some(t), Some(start)) = (trace.as_mut(), start) {
        t.upstream(name, start, Instant::now(), attributes());
    }
}

/// `attributes` with the status of the upstream's answer, when there was one.
pub fn answered(mut attributes: Vec<KeyValue>, status: Option<u16>) -> Vec<KeyValue> {
    if let Some(code) = status {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
    }
    attributes
}

/// The attributes of an upstream try: the peer's address and the try's number.
pub fn peer(
    service: &crate::service::Service,
    peer: Option<&crate::balancer::ring::Peer>,
    try_number: usize,
) -> Vec<KeyValue> {
    let (address, port) = match (peer, service.ip) {
        (Some(p), _) => (p.addr.ip().to_string(), i64::from(p.addr.port())),
        (None, Some(ip)) => (ip.to_string(), i64::from(service.port)),
        (None, None) => (service.host().to_owned(), i64::from(service.port)),
    };
    vec![
        KeyValue::new("server.address", address),
        KeyValue::new("server.port", port),
        KeyValue::new("kong.balancer.try", try_number as i64),
    ]
}

/// A DNS resolution a new connection made: when it ran, and the address it found.
#[derive(Clone, Copy, Debug)]
pub struct DnsAnswer {
    pub start: std::time::Instant,
    pub end: std::time::Instant,
    pub addr: std::net::SocketAddr,
}

/// Records the DNS resolution a new connection made (a service named by host) as a span.
pub fn dns(trace: Option<&mut Trace>, service: &crate::service::Service, resolved: Option<DnsAnswer>) {
    if let (Some(t), Some(r)) = (trace, resolved) {
        let attributes = vec![
            KeyValue::new("dns.question.name", service.host().to_owned()),
            KeyValue::new("dns.answer", r.addr.ip().to_string()),
        ];
        t.child("kong.dns", r.start, r.end, attributes);
    }
}

/// The root span's attributes for a request routed to a route and its service.
pub fn request(method: &str, path: &str, host: &str, route_id: &str, service_id: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new("url.path", path.to_owned()),
        KeyValue::new("server.address", host.to_owned()),
        KeyValue::new("kong.route.id", route_id.to_owned()),
        KeyValue::new("kong.service.id", service_id.to_owned()),
    ]
}

/// The span of applying a delta: a child of the control plane's span that sent it (its
/// `traceparent`), or nothing when the delta is untraced.
pub fn sync_apply(revision: i64, traceparent: &str) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let Some(parent) = parse_traceparent(traceparent.as_bytes()) else { return tracing::Span::none() };
    let span = tracing::info_span!("sync.apply", revision);
    let flags = if parent.sampled == Some(true) { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let context = SpanContext::new(parent.trace_id, parent.span_id, flags, true, TraceState::default());
    let _ = span.set_parent(Context::new().with_remote_span_context(context));
    span
}

/// A phase of a traced request.
struct Child {
    name: Cow<'static, str>,
    kind: SpanKind,
    start: Instant,
    end: Instant,
    attributes: Vec<KeyValue>,
}

/// A sampled request's trace, filled in as it is served and emitted once it is answered.
pub struct Trace {
    trace_id: TraceId,
    root: SpanId,
    parent: Option<SpanId>,
    /// The request's start, on both clocks (spans carry wall-clock times).
    started: Instant,
    started_at: SystemTime,
    children: Vec<Child>,
    pub attributes: Vec<KeyValue>,
}

impl Trace {
    /// The trace for a request begun at `started`, if it is sampled: the client's decision
    /// when it sent one, else the configured probability.
    pub fn begin(incoming: Option<Incoming>, started: Instant) -> Option<Box<Trace>> {
        let (_, ratio) = TRACER.get()?;
        let sampled = match incoming.and_then(|i| i.sampled) {
            Some(s) => s,
            None => *ratio >= 1.0 || fastrand::f64() < *ratio,
        };
        if !sampled {
            return None;
        }
        // A decision without ids (B3's bare `1`) starts a trace of its own.
        let incoming = incoming.filter(|i| i.trace_id != TraceId::INVALID);
        let trace_id = match incoming {
            Some(i) => i.trace_id,
            None => TraceId::from(fastrand::u128(1..)),
        };
        let started_at = SystemTime::now() - started.elapsed();
        Some(Box::new(Trace {
            trace_id,
            root: SpanId::from(fastrand::u64(1..)),
            parent: incoming.map(|i| i.span_id),
            started,
            started_at,
            children: Vec::with_capacity(8),
            attributes: Vec::with_capacity(8),
        }))
    }

    /// The `traceparent` the upstream receives: this trace, with the gateway's span as parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.root)
    }

    /// The trace id in hex (for logs).
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    /// Records a phase that ran from `start` to `end`.
    pub fn child(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        start: Instant,
        end: Instant,
        attributes: Vec<KeyValue>,
    ) {
        self.children.push(Child { name: name.into(), kind: SpanKind::Internal, start, end, attributes });
    }

    /// Records a call to the upstream (a client span).
    pub fn upstream(&mut self, name: &'static str, start: Instant, end: Instant, attributes: Vec<KeyValue>) {
        self.children.push(Child { name: name.into(), kind: SpanKind::Client, start, end, attributes });
    }

    fn at(&self, i: Instant) -> SystemTime {
        self.started_at + i.saturating_duration_since(self.started)
    }

    /// Emits the request's spans, the root named `kong` (as Kong's OpenTelemetry plugin
    /// names it) ending now, with `status` the answer's.
    pub fn finish(mut self, status: u16) {
        let Some((tracer, _)) = TRACER.get() else { return };
        let end = Instant::now();
        let sampled = SamplingResult {
            decision: SamplingDecision::RecordAndSample,
            attributes: Vec::new(),
            trace_state: TraceState::default(),
        };
        let parent = match self.parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                self.trace_id,
                p,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut attributes = std::mem::take(&mut self.attributes);
        attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
        let mut root = tracer.build_with_context(
            SpanBuilder::from_name("kong")
                .with_kind(SpanKind::Server)
                .with_trace_id(self.trace_id)
                .with_span_id(self.root)
                .with_start_time(self.started_at)
                .with_attributes(attributes)
                .with_sampling_result(sampled.clone()),
            &parent,
        );
        if status >= 500 {
            root.set_status(Status::error(format!("status {status}")));
        }
        let root_cx = Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            self.root,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ));
        for c in std::mem::take(&mut self.children) {
            let (start, end) = (self.at(c.start), self.at(c.end));
            let mut span = tracer.build_with_context(
                SpanBuilder::from_name(c.name)
                    .with_kind(c.kind)
                    .with_start_time(start)
                    .with_attributes(c.attributes)
                    .with_sampling_result(sampled.clone()),
                &root_cx,
            );
            span.end_with_timestamp(end);
        }
        root.end_with_timestamp(self.at(end));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_as_the_specification_says() {
        let t = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(t.sampled, Some(true));
        let unsampled = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(unsampled.sampled, Some(false));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            b"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // A later version may add fields after the flags.
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }

    #[test]
    fn b3_single_and_multiple_headers_are_accepted() {
        let b = parse_b3(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90").unwrap();
        assert_eq!(b.trace_id.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(b.sampled, Some(true));
        let short = parse_b3(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1").unwrap();
        assert_eq!(short.trace_id.to_string(), "000000000000000064fe8b2a57d3eff7");
        assert_eq!(short.sampled, None);
        let m = parse_b3_multi(Some(b"64fe8b2a57d3eff7"), Some(b"e457b5a2e4d86bd1"), Some(b"0"), None).unwrap();
        assert_eq!(m.sampled, Some(false));
        let debug = parse_b3_multi(Some(b"64fe8b2a57d3eff7"), Some(b"e457b5a2e4d86bd1"), None, Some(b"1")).unwrap();
        assert_eq!(debug.sampled, Some(true));
        // A bare decision: denied means not traced, whatever the sampling rate.
        assert_eq!(parse_b3(b"0").map(|i| i.sampled), Some(Some(false)));
        assert_eq!(parse_b3_multi(None, None, Some(b"0"), None).map(|i| i.sampled), Some(Some(false)));
        assert_eq!(parse_b3(b"80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1"), None, "upper case is invalid");
    }
}
