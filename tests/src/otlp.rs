//! An in-process OpenTelemetry collector for end-to-end tests.
//!
//! [`Collector::start`] serves the OTLP `TraceService` and `MetricsService` over gRPC
//! (HTTP/2 plaintext) on `127.0.0.1:<ephemeral>`; point the gateway's OTLP exporter at
//! [`Collector::endpoint`]. Every export is flattened as it arrives into [`ReceivedSpan`]s and
//! [`MetricPoint`]s, with ids as lower-case hex and attribute values as strings, so tests can
//! compare them with plain literals. Exporters batch and flush on their own schedule, so
//! assertions go through [`Collector::wait_for_spans`] / [`Collector::wait_for_metrics`],
//! which poll until a predicate holds.
//!
//! Every export is answered with an empty (fully accepted) response. The server stops
//! accepting on `Drop`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint;
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// How often the `wait_for_*` helpers look at what has arrived.
const POLL: Duration = Duration::from_millis(20);

/// One span as the collector received it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The `service.name` resource attribute of the batch the span came in ("" if absent).
    pub service_name: String,
    pub name: String,
    /// Lower-case hex, 32 characters.
    pub trace_id: String,
    /// Lower-case hex, 16 characters.
    pub span_id: String,
    /// Lower-case hex; "" for a root span.
    pub parent_span_id: String,
    /// The OTLP `SpanKind` number (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Every attribute, its value rendered as a string: `GET`, `200`, `true`, `0.5`.
    pub attributes: BTreeMap<String, String>,
    /// `(trace_id, span_id)` of each link, lower-case hex.
    pub links: Vec<(String, String)>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

/// One metric data point: `(service_name, metric name, attributes as strings, value)`.
///
/// The value is the number of a Sum or Gauge point (integers converted to `f64`; NaN if the
/// point carries no value), or the `count` of a Histogram, ExponentialHistogram or Summary
/// point.
pub type MetricPoint = (String, String, BTreeMap<String, String>, f64);

/// What has arrived so far, in arrival order.
#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<MetricPoint>,
}

/// The gRPC services' handle on the shared [`Received`].
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Received>>);

impl Sink {
    /// Nothing panics while holding the lock, but a poisoned lock must not take the
    /// collector down with it either: the data is append-only and stays consistent.
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = flatten_spans(request.into_inner());
        self.lock().spans.extend(spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let points = flatten_metrics(request.into_inner());
        self.lock().metrics.extend(points);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector on `127.0.0.1:<ephemeral>`; stops accepting on `Drop`.
pub struct Collector {
    addr: SocketAddr,
    sink: Sink,
    task: JoinHandle<()>,
}

impl Collector {
    /// Binds `127.0.0.1:0` and serves `TraceService` and `MetricsService` there.
    ///
    /// The listener is bound before this returns and handed to the server as is, so the
    /// port cannot be taken by someone else in between (unlike [`crate::free_port`]).
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP collector");
        let addr = listener.local_addr().expect("local_addr");
        let sink = Sink::default();
        let router = Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()));
        let task = tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(TcpIncoming::from(listener)).await {
                eprintln!("OTLP collector on {addr} stopped: {e}");
            }
        });
        Collector { addr, sink, task }
    }

    /// `http://127.0.0.1:<port>`, the form OTLP/gRPC exporters take.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.lock().spans.clone()
    }

    /// Every metric data point received so far, in arrival order (see [`MetricPoint`]).
    pub fn metric_points(&self) -> Vec<MetricPoint> {
        self.sink.lock().metrics.clone()
    }

    /// Polls every 20 ms until `pred(&spans)` holds and returns the spans it held for.
    ///
    /// # Panics
    /// After `timeout`, listing `what` was awaited and every span received so far.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        wait_until(timeout, what, "spans", || self.spans(), pred).await
    }

    /// Polls every 20 ms until `pred(&points)` holds and returns the points it held for.
    ///
    /// # Panics
    /// After `timeout`, listing `what` was awaited and every point received so far.
    pub async fn wait_for_metrics(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[MetricPoint]) -> bool,
    ) -> Vec<MetricPoint> {
        wait_until(timeout, what, "metric points", || self.metric_points(), pred).await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // Closes the listener. Connections already accepted run in tasks of their own
        // (spawned by tonic) and end with the test's runtime; what they still deliver lands
        // in a `Received` nobody reads any more.
        self.task.abort();
    }
}

/// The polling loop behind [`Collector::wait_for_spans`] and [`Collector::wait_for_metrics`].
async fn wait_until<T: Debug>(
    timeout: Duration,
    what: &str,
    kind: &str,
    snapshot: impl Fn() -> Vec<T>,
    pred: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let items = snapshot();
        if pred(&items) {
            return items;
        }
        if Instant::now() >= deadline {
            let listed: Vec<String> = items.iter().map(|i| format!("  {i:?}")).collect();
            panic!("{what}: not seen within {timeout:?}; {} {kind} received:\n{}", items.len(), listed.join("\n"));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn flatten_spans(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service_name = service_name(rs.resource.as_ref());
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                });
            }
        }
    }
    out
}

fn flatten_metrics(request: ExportMetricsServiceRequest) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for rm in request.resource_metrics {
        let service_name = service_name(rm.resource.as_ref());
        for sm in rm.scope_metrics {
            for metric in sm.metrics {
                let points: Vec<(BTreeMap<String, String>, f64)> = match &metric.data {
                    Some(Data::Gauge(g)) => g.data_points.iter().map(number_point).collect(),
                    Some(Data::Sum(s)) => s.data_points.iter().map(number_point).collect(),
                    Some(Data::Histogram(h)) => {
                        h.data_points.iter().map(|p| (attributes(&p.attributes), p.count as f64)).collect()
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        h.data_points.iter().map(|p| (attributes(&p.attributes), p.count as f64)).collect()
                    }
                    Some(Data::Summary(s)) => {
                        s.data_points.iter().map(|p| (attributes(&p.attributes), p.count as f64)).collect()
                    }
                    None => Vec::new(),
                };
                for (attrs, value) in points {
                    out.push((service_name.clone(), metric.name.clone(), attrs, value));
                }
            }
        }
    }
    out
}

fn number_point(p: &NumberDataPoint) -> (BTreeMap<String, String>, f64) {
    let value = match p.value {
        Some(NumberValue::AsDouble(d)) => d,
        Some(NumberValue::AsInt(i)) => i as f64,
        None => f64::NAN,
    };
    (attributes(&p.attributes), value)
}

/// The `service.name` resource attribute, or "" when the batch has none.
fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .map(|kv| render(kv.value.as_ref()))
        .unwrap_or_default()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), render(kv.value.as_ref()))).collect()
}

/// An attribute value as a string: strings as they are, integers, booleans and doubles in
/// Rust's `Display` form (`200`, `true`, `0.5`; a whole double prints without a fraction,
/// `2`), bytes as hex, arrays as `[a, b]`, key-value lists as `{k=v, ...}`, no value as "".
fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        Some(AnyValueKind::BoolValue(b)) => b.to_string(),
        Some(AnyValueKind::IntValue(i)) => i.to_string(),
        Some(AnyValueKind::DoubleValue(d)) => d.to_string(),
        Some(AnyValueKind::BytesValue(b)) => hex(b),
        Some(AnyValueKind::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| render(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(AnyValueKind::KvlistValue(l)) => {
            let items: Vec<String> =
                l.values.iter().map(|kv| format!("{}={}", kv.key, render(kv.value.as_ref()))).collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Lower-case hex, as trace and span ids are written everywhere else (W3C `traceparent`,
/// logs): "" for no bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", AnyValueKind::StringValue(service.to_owned()))],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn receives_spans_with_hex_ids() {
        let collector = Collector::start().await;
        let span = Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0xab; 8],
            parent_span_id: vec![0x0c; 8],
            name: "GET /things".to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: vec![
                kv("http.request.method", AnyValueKind::StringValue("GET".to_owned())),
                kv("http.response.status_code", AnyValueKind::IntValue(200)),
                kv("cached", AnyValueKind::BoolValue(false)),
                kv("ratio", AnyValueKind::DoubleValue(0.5)),
            ],
            links: vec![Link { trace_id: vec![0xff; 16], span_id: vec![1; 8], ..Default::default() }],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("gatehouse-test"),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        };
        let mut client = TraceServiceClient::connect(collector.endpoint()).await.expect("connect to the collector");
        client.export(request).await.expect("export spans");

        let spans = collector.spans();
        assert_eq!(spans.len(), 1, "{spans:?}");
        let s = &spans[0];
        assert_eq!(s.service_name, "gatehouse-test");
        assert_eq!(s.name, "GET /things");
        assert_eq!(s.trace_id, "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(s.span_id, "abababababababab");
        assert_eq!(s.parent_span_id, "0c0c0c0c0c0c0c0c");
        assert_eq!(s.kind, 2);
        assert_eq!(s.attributes["http.request.method"], "GET");
        assert_eq!(s.attributes["http.response.status_code"], "200");
        assert_eq!(s.attributes["cached"], "false");
        assert_eq!(s.attributes["ratio"], "0.5");
        assert_eq!(s.links, vec![("ff".repeat(16), "01".repeat(8))]);
        assert_eq!((s.start_unix_nano, s.end_unix_nano), (1_000, 2_000));

        // The export above completed, so waiting returns at once.
        let waited = collector.wait_for_spans(Duration::from_secs(1), "the span", |s| s.len() == 1).await;
        assert_eq!(waited.len(), 1);
    }

    #[tokio::test]
    async fn receives_metric_points() {
        let collector = Collector::start().await;
        let sum = Metric {
            name: "requests".to_owned(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: vec![kv("route", AnyValueKind::StringValue("r1".to_owned()))],
                    value: Some(NumberValue::AsInt(3)),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let histogram = Metric {
            name: "latency".to_owned(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint { count: 7, ..Default::default() }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("gatehouse-test"),
                scope_metrics: vec![ScopeMetrics { metrics: vec![sum, histogram], ..Default::default() }],
                ..Default::default()
            }],
        };
        let mut client = MetricsServiceClient::connect(collector.endpoint()).await.expect("connect to the collector");
        client.export(request).await.expect("export metrics");

        let points = collector.metric_points();
        let route = BTreeMap::from([("route".to_owned(), "r1".to_owned())]);
        assert_eq!(
            points,
            vec![
                ("gatehouse-test".to_owned(), "requests".to_owned(), route, 3.0),
                ("gatehouse-test".to_owned(), "latency".to_owned(), BTreeMap::new(), 7.0),
            ]
        );
    }
}
