//! OTLP/gRPC export of the metrics a process serves at `/metrics`.
//!
//! Both planes already render their metrics as Prometheus text (format 0.0.4), partly with
//! the `prometheus-client` registry and partly by hand. Converting that text, rather than
//! instrumenting a second time with an OpenTelemetry SDK, keeps one source of truth: what a
//! collector receives is exactly what a scrape of `/metrics` shows, under the same names and
//! labels, and the request path pays nothing more for it.
//!
//! The mapping follows the `# TYPE` lines: a `counter` becomes a monotonic cumulative Sum, a
//! `histogram` a cumulative Histogram, and everything else (`gauge`, `untyped`, kinds this
//! module does not know, samples with no `# TYPE` at all) a Gauge. Cumulative points start
//! when the export loop started, since that is as far back as this process can vouch for.
//!
//! Parsing is lenient and total: a line it cannot read is skipped, never an error and never a
//! panic, because it runs inside long-lived servers and a bad line must cost one series at
//! most.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The instrumentation scope every exported metric is put under.
const SCOPE: &str = "gatehouse";

/// At most one failure warning per this long: a collector down for an hour costs sixty log
/// lines, not one per export.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How long a connection attempt may take before the export is given up until the next tick.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one export call may take; a collector that hangs must not stall the loop forever.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on the export interval: zero would make `tokio::time::interval` panic, and a huge
/// one would overflow the deadline arithmetic.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Label pairs in the order the text gives them.
type Labels = Vec<(String, String)>;

/// How a family is exported. `untyped`, unknown kinds and samples without a `# TYPE` are
/// gauges: a point-in-time value is the only reading that claims nothing the text did not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn parse(word: &str) -> Kind {
        match word {
            "counter" => Kind::Counter,
            "histogram" => Kind::Histogram,
            _ => Kind::Gauge,
        }
    }
}

/// Which series of a family a sample feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The value of a counter or gauge.
    Value,
    /// A cumulative `_bucket` of a histogram.
    Bucket,
    /// A histogram's `_sum`.
    Sum,
    /// A histogram's `_count`.
    Count,
}

/// Where a sample belongs.
enum Target {
    Family(usize, Part),
    /// It names a family but cannot be part of it (a histogram sample with no suffix).
    Skip,
    /// No `# TYPE` covers it: it becomes an untyped family of its own, as Prometheus reads it.
    Orphan,
}

/// One histogram series (labels other than `le`), gathered from its `_bucket`, `_sum` and
/// `_count` samples, which may come in any order.
struct Series {
    labels: Labels,
    /// `(le, cumulative count)`, as read.
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// One metric family: its `# TYPE` name and kind and the samples that matched it.
struct Family {
    name: String,
    kind: Kind,
    /// Counter and gauge samples.
    numbers: Vec<(Labels, f64)>,
    /// Histogram series in the order they first appeared.
    series: Vec<Series>,
    /// Position in `series` by label set, sorted so that label order does not split a series.
    series_index: HashMap<Labels, usize>,
}

impl Family {
    fn new(name: &str, kind: Kind) -> Family {
        Family { name: name.to_owned(), kind, numbers: Vec::new(), series: Vec::new(), series_index: HashMap::new() }
    }

    fn add(&mut self, part: Part, labels: Labels, value: f64) {
        match part {
            Part::Value => self.numbers.push((labels, value)),
            Part::Bucket => {
                let (le, labels): (Labels, Labels) = labels.into_iter().partition(|(k, _)| k == "le");
                let Some(le) = le.into_iter().next().and_then(|(_, v)| parse_value(&v)) else { return };
                if le.is_nan() {
                    return;
                }
                if let Some(series) = self.series_for(labels) {
                    series.buckets.push((le, value));
                }
            }
            Part::Sum => {
                if let Some(series) = self.series_for(labels) {
                    series.sum = Some(value);
                }
            }
            Part::Count => {
                if let Some(series) = self.series_for(labels) {
                    series.count = Some(value);
                }
            }
        }
    }

    /// The histogram series with these labels, created on first sight.
    fn series_for(&mut self, labels: Labels) -> Option<&mut Series> {
        let mut key = labels.clone();
        key.sort();
        let i = match self.series_index.get(&key) {
            Some(i) => *i,
            None => {
                let i = self.series.len();
                self.series.push(Series { labels, buckets: Vec::new(), sum: None, count: None });
                self.series_index.insert(key, i);
                i
            }
        };
        self.series.get_mut(i)
    }
}

/// The families of one exposition, by `# TYPE` name, in the order they were declared.
#[derive(Default)]
struct Families {
    list: Vec<Family>,
    index: HashMap<String, usize>,
    help: HashMap<String, String>,
}

impl Families {
    /// The family named `name`; the first `# TYPE` for a name wins, as a scraper would
    /// refuse the rest.
    fn declare(&mut self, name: &str, kind: Kind) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.list.len();
        self.list.push(Family::new(name, kind));
        self.index.insert(name.to_owned(), i);
        i
    }

    /// The family named exactly `name`, if it has this kind.
    fn find(&self, name: &str, kind: Kind) -> Option<usize> {
        let i = *self.index.get(name)?;
        (self.list.get(i)?.kind == kind).then_some(i)
    }

    /// Matches a sample name to its family: the exact name first (a counter typed with its
    /// `_total`, as `prometheus-client` writes it, or any gauge), then a counter typed
    /// without `_total`, then a histogram's suffixed samples.
    fn resolve(&self, name: &str) -> Target {
        if let Some(i) = self.index.get(name) {
            return match self.list.get(*i).map(|f| f.kind) {
                Some(Kind::Counter | Kind::Gauge) => Target::Family(*i, Part::Value),
                Some(Kind::Histogram) | None => Target::Skip,
            };
        }
        if let Some(i) = name.strip_suffix("_total").and_then(|base| self.find(base, Kind::Counter)) {
            return Target::Family(i, Part::Value);
        }
        for (suffix, part) in [("_bucket", Part::Bucket), ("_sum", Part::Sum), ("_count", Part::Count)] {
            if let Some(i) = name.strip_suffix(suffix).and_then(|base| self.find(base, Kind::Histogram)) {
                return Target::Family(i, part);
            }
        }
        Target::Orphan
    }

    fn add(&mut self, sample: Sample<'_>) {
        let (i, part) = match self.resolve(sample.name) {
            Target::Family(i, part) => (i, part),
            Target::Skip => return,
            Target::Orphan => (self.declare(sample.name, Kind::Gauge), Part::Value),
        };
        if let Some(family) = self.list.get_mut(i) {
            family.add(part, sample.labels, sample.value);
        }
    }

    /// Reads the `# HELP` and `# TYPE` lines; other comments (`# EOF`, `# UNIT`, free text)
    /// say nothing this export uses.
    fn read_comment(&mut self, comment: &str) {
        let Some((keyword, rest)) = next_word(comment) else { return };
        let Some((name, rest)) = next_word(rest) else { return };
        if !is_metric_name(name) {
            return;
        }
        match keyword {
            "HELP" => {
                self.help.entry(name.to_owned()).or_insert_with(|| unescape_help(rest.trim()));
            }
            "TYPE" => {
                if let Some((kind, _)) = next_word(rest) {
                    self.declare(name, Kind::parse(kind));
                }
            }
            _ => {}
        }
    }

    /// The metrics to export; families no sample matched are left out, as an empty metric
    /// tells a collector nothing.
    fn into_metrics(mut self, start: u64, now: u64) -> Vec<Metric> {
        let mut help = std::mem::take(&mut self.help);
        self.list
            .into_iter()
            .filter_map(|family| {
                let description = help.remove(&family.name).unwrap_or_default();
                to_metric(family, description, start, now)
            })
            .collect()
    }
}

/// One sample line: `name{labels} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: Labels,
    value: f64,
}

/// Converts a Prometheus text exposition (format 0.0.4) into one OTLP export request for
/// the service `service_name`, with points taken at `now_unix_nano` and cumulative ones
/// counted from `start_unix_nano`. Lines it cannot read are skipped.
pub fn convert(
    text: &str,
    service_name: &str,
    now_unix_nano: u64,
    start_unix_nano: u64,
) -> ExportMetricsServiceRequest {
    let mut families = Families::default();
    // Declarations first, so a sample is matched to its family wherever its `# TYPE` is.
    for line in text.lines() {
        if let Some(comment) = line.trim().strip_prefix('#') {
            families.read_comment(comment);
        }
    }
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(sample) = parse_sample(line) {
            families.add(sample);
        }
    }
    let metrics = families.into_metrics(start_unix_nano, now_unix_nano);
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", service_name)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn to_metric(family: Family, description: String, start: u64, now: u64) -> Option<Metric> {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match family.kind {
        Kind::Counter | Kind::Gauge if family.numbers.is_empty() => return None,
        Kind::Histogram if family.series.is_empty() => return None,
        Kind::Counter => Data::Sum(Sum {
            data_points: number_points(family.numbers, start, now),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        // A gauge has no start: its value is not accumulated over any interval.
        Kind::Gauge => Data::Gauge(Gauge { data_points: number_points(family.numbers, 0, now) }),
        Kind::Histogram => Data::Histogram(Histogram {
            data_points: family.series.into_iter().map(|s| histogram_point(s, start, now)).collect(),
            aggregation_temporality: cumulative,
        }),
    };
    Some(Metric { name: family.name, description, data: Some(data), ..Default::default() })
}

fn number_points(numbers: Vec<(Labels, f64)>, start: u64, now: u64) -> Vec<NumberDataPoint> {
    numbers
        .into_iter()
        .map(|(labels, value)| NumberDataPoint {
            attributes: attributes(labels),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(Value::AsDouble(value)),
            ..Default::default()
        })
        .collect()
}

/// One OTLP histogram point from a series' cumulative buckets. OTLP counts each bucket on
/// its own and has an implicit last one above the highest bound, so the finite bounds become
/// `explicit_bounds` and each count is the difference from the bucket below.
fn histogram_point(series: Series, start: u64, now: u64) -> HistogramDataPoint {
    let mut buckets = series.buckets;
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // `1` and `1.0` are one bound: keep the first reading.
    buckets.dedup_by(|later, earlier| later.0 == earlier.0);
    let infinite = buckets.iter().find(|(le, _)| *le == f64::INFINITY).map(|(_, c)| *c);
    // `-Inf` would be a bucket no value can be below; it and NaN carry nothing to keep.
    let finite: Vec<(f64, f64)> = buckets.into_iter().filter(|(le, _)| le.is_finite()).collect();
    let last_finite = finite.last().map(|(_, c)| *c);
    let total = infinite.or(series.count).or(last_finite).unwrap_or(0.0);

    let mut bucket_counts = Vec::with_capacity(finite.len() + 1);
    let mut below = 0u64;
    for (_, cumulative) in &finite {
        let cumulative = to_count(*cumulative);
        // A cumulative count that goes down (a torn read) gives an empty bucket, and the
        // buckets still add up to the total.
        bucket_counts.push(cumulative.saturating_sub(below));
        below = below.max(cumulative);
    }
    bucket_counts.push(to_count(total).saturating_sub(below));

    HistogramDataPoint {
        attributes: attributes(series.labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: to_count(series.count.unwrap_or(total)),
        sum: series.sum,
        bucket_counts,
        explicit_bounds: finite.into_iter().map(|(le, _)| le).collect(),
        ..Default::default()
    }
}

/// A count read as a float: negative and NaN become 0 and anything too large saturates
/// (which is what `as` does; it never panics).
fn to_count(value: f64) -> u64 {
    value as u64
}

fn attributes(labels: Labels) -> Vec<KeyValue> {
    labels.into_iter().map(|(k, v)| string_kv(k, v)).collect()
}

fn string_kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

/// Reads a sample line, or `None` when it is not one. Anything after the value (a
/// timestamp) is ignored: the export stamps every point with its own time.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let (name, rest) = line.split_at_checked(end)?;
    if !is_metric_name(name) {
        return None;
    }
    let rest = rest.trim_start();
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (Vec::new(), rest),
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name, labels, value })
}

/// Reads `a="x",b="y"}` (just after the `{`) and returns the labels and what follows the
/// `}`. A label given twice makes the line unreadable, as OTLP attribute keys are unique.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels: Labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (name, rest) = s.split_once('=')?;
        let name = name.trim();
        if !is_metric_name(name) || name.contains(':') || labels.iter().any(|(k, _)| k == name) {
            return None;
        }
        let (value, rest) = parse_quoted(rest.trim_start().strip_prefix('"')?)?;
        labels.push((name.to_owned(), value));
        s = rest.trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// Reads a label value up to its closing quote (the opening one already consumed), undoing
/// the `\\`, `\"` and `\n` escapes; any other escape is kept as written. Returns the value
/// and what follows the closing quote, or `None` if the quote never closes.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, s.get(i + 1..)?)),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

/// `# HELP` text escapes only backslash and newline.
fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A sample value: a Go-style float, including `+Inf`, `-Inf` and `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The first whitespace-separated word of `s` and the rest after it.
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let (word, rest) = s.split_at_checked(end)?;
    (!word.is_empty()).then_some((word, rest))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| !c.is_ascii_digit()) && name.chars().all(is_name_char)
}

/// Nanoseconds since the Unix epoch; 0 for a clock set before it.
fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Why one export did not reach the collector.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("invalid OTLP endpoint")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect to the collector")]
    Connect(#[source] tonic::transport::Error),
    #[error("export failed: {0}")]
    Rpc(tonic::Status),
    #[error("the collector rejected {0} data points: {1}")]
    Rejected(i64, String),
}

/// The error and its causes on one line: tonic's transport errors say little on their own.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Rate-limits failure warnings to one per [`WARN_EVERY`], counting the ones held back.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl Warnings {
    fn failed(&mut self, endpoint: &str, error: &str) {
        self.failing = true;
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            self.suppressed = self.suppressed.saturating_add(1);
            return;
        }
        tracing::warn!(
            endpoint = %endpoint,
            error = %error,
            suppressed = self.suppressed,
            "OTLP metrics export failed"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }

    /// Says once that exports go through again, so a warning in the log is not left
    /// looking like the current state.
    fn succeeded(&mut self, endpoint: &str) {
        if self.failing {
            self.failing = false;
            tracing::info!(endpoint = %endpoint, "OTLP metrics export resumed");
        }
    }
}

/// Connects to the collector. An `https://` endpoint gets TLS with the roots tonic is built
/// with; a plain `http://` one (a sidecar or in-cluster collector) speaks h2c.
async fn connect(endpoint: &str) -> Result<MetricsServiceClient<Channel>, ExportError> {
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(ExportError::Endpoint)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT);
    if ep.uri().scheme_str() == Some("https") {
        ep = ep.tls_config(ClientTlsConfig::new().with_enabled_roots()).map_err(ExportError::Endpoint)?;
    }
    let channel = ep.connect().await.map_err(ExportError::Connect)?;
    Ok(MetricsServiceClient::new(channel))
}

/// Sends one request, connecting first if there is no client. A client whose call failed
/// is dropped, so the next export connects afresh (and resolves the name again).
async fn export(
    client: &mut Option<MetricsServiceClient<Channel>>,
    endpoint: &str,
    request: ExportMetricsServiceRequest,
) -> Result<(), ExportError> {
    let mut connected = match client.take() {
        Some(c) => c,
        None => connect(endpoint).await?,
    };
    let response = connected.export(request).await.map_err(ExportError::Rpc)?.into_inner();
    *client = Some(connected);
    match response.partial_success {
        Some(partial) if partial.rejected_data_points > 0 => {
            Err(ExportError::Rejected(partial.rejected_data_points, partial.error_message))
        }
        _ => Ok(()),
    }
}

/// Calls `render`, treating a panic in it as a failed export rather than the end of the loop.
fn rendered<F: Fn() -> String>(render: &F) -> Result<String, &'static str> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(render)).map_err(|_| "rendering the metrics panicked")
}

fn has_metrics(request: &ExportMetricsServiceRequest) -> bool {
    request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).any(|s| !s.metrics.is_empty())
}

/// What both export loops keep between ticks.
struct Exporter {
    endpoint: String,
    service_name: String,
    /// When the loop started: the start of every cumulative point.
    start: u64,
    period: Duration,
    ticks: tokio::time::Interval,
    client: Option<MetricsServiceClient<Channel>>,
    warnings: Warnings,
}

impl Exporter {
    fn new(endpoint: String, service_name: String, interval: Duration) -> Exporter {
        let period = interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        // The first export waits one period, so it does not race the process's own start.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A slow collector delays the next export; it does not cause a burst of catch-up ones.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Exporter {
            endpoint,
            service_name,
            start: unix_nanos(),
            period,
            ticks,
            client: None,
            warnings: Warnings::default(),
        }
    }

    async fn tick(&mut self) {
        self.ticks.tick().await;
    }

    /// Converts and sends one rendering, or records why there is none.
    async fn send(&mut self, text: Result<String, &'static str>) {
        let text = match text {
            Ok(text) => text,
            Err(why) => return self.warnings.failed(&self.endpoint, why),
        };
        let request = convert(&text, &self.service_name, unix_nanos(), self.start);
        if !has_metrics(&request) {
            return;
        }
        match export(&mut self.client, &self.endpoint, request).await {
            Ok(()) => self.warnings.succeeded(&self.endpoint),
            Err(e) => self.warnings.failed(&self.endpoint, &describe(&e)),
        }
    }
}

/// Every `interval` (kept between 1 s and a day), renders the process's `/metrics` text with
/// `render`, converts it and exports it to the OTLP/gRPC collector at `endpoint`
/// (`http://host:4317`). It connects on the first export, reconnects after any failure,
/// logs failures at most once a minute, and never returns: spawn it, and abort the task to
/// stop it. `render` runs on the runtime thread, so it should be as cheap as a scrape; a
/// rendering that needs to wait (on a store) belongs in [`export_loop_async`].
pub async fn export_loop<F>(endpoint: String, service_name: String, interval: Duration, render: F)
where
    F: Fn() -> String + Send + 'static,
{
    let mut exporter = Exporter::new(endpoint, service_name, interval);
    loop {
        exporter.tick().await;
        exporter.send(rendered(&render)).await;
    }
}

/// [`export_loop`] for a rendering that awaits something (the control plane reads its store
/// for `/metrics`). Each rendering runs as its own task, so a panic in it is one failed
/// export, and it is aborted if it takes longer than the interval.
pub async fn export_loop_async<F, Fut>(endpoint: String, service_name: String, interval: Duration, render: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let mut exporter = Exporter::new(endpoint, service_name, interval);
    loop {
        exporter.tick().await;
        let mut task = tokio::spawn(render());
        let text = match tokio::time::timeout(exporter.period, &mut task).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(_)) => Err("rendering the metrics panicked"),
            Err(_) => {
                task.abort();
                Err("rendering the metrics took longer than the export interval")
            }
        };
        exporter.send(text).await;
    }
}

/// Runs an export loop until `stop` says true (the process's shutdown), so it does not keep
/// what it reads alive past it.
pub async fn until_stopped(
    export: impl std::future::Future<Output = ()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        () = export => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

#[cfg(test)]
mod tests;
