//! Logs, traces and OTLP metrics, set up the same way by both planes.
//!
//! Traces are off unless an OTLP endpoint is set. Then the Admin API, the store and sync
//! emit spans through the `tracing` bridge (their spans are few and cheap next to the work
//! they wrap), and the proxy, whose request path cannot afford a span per phase on every
//! request, samples at the head and builds the spans of a sampled request from the times it
//! recorded, after the answer (see the data plane's `trace` module).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// What to export, and where; read by both planes' configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// An OTLP/gRPC collector (`http://host:4317`); `None` turns traces and OTLP metrics off.
    pub endpoint: Option<String>,
    /// The share of traces begun here that are sampled (a client's decision, carried in
    /// `traceparent` or B3, wins).
    pub sampling_rate: f64,
    /// `service.name` on everything exported.
    pub service_name: String,
    /// How often metrics are exported over OTLP.
    pub metrics_interval: Duration,
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid value for {key}: '{value}' ({reason})")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl Settings {
    /// Reads the `tracing_*` settings as given (file or environment, already merged).
    ///
    /// # Errors
    /// An endpoint that is not an `http(s)://` URL, or a rate outside 0 to 1.
    pub fn parse(
        endpoint: Option<String>,
        sampling_rate: Option<String>,
        service_name: Option<String>,
        metrics_interval_ms: Option<String>,
        default_service: &str,
    ) -> Result<Settings, InvalidSetting> {
        let endpoint = endpoint.filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("off"));
        if let Some(e) = &endpoint {
            // TLS to the collector is not built in yet: an https:// endpoint would be accepted
            // and export nothing. A collector or agent beside the gateway takes plain gRPC.
            if !e.starts_with("http://") {
                return Err(InvalidSetting {
                    key: "tracing_endpoint",
                    value: e.clone(),
                    reason: "expected an http:// URL of an OTLP/gRPC collector (TLS to it is not supported), or off",
                });
            }
        }
        let sampling_rate = match sampling_rate {
            None => 0.01,
            Some(v) => match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    return Err(InvalidSetting {
                        key: "tracing_sampling_rate",
                        value: v,
                        reason: "expected a number from 0 to 1",
                    })
                }
            },
        };
        let metrics_interval = match metrics_interval_ms {
            None => Duration::from_secs(10),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms >= 1000 => Duration::from_millis(ms),
                _ => {
                    return Err(InvalidSetting {
                        key: "metrics_otlp_interval_ms",
                        value: v,
                        reason: "expected milliseconds, at least 1000",
                    })
                }
            },
        };
        Ok(Settings {
            endpoint,
            sampling_rate,
            service_name: service_name.filter(|s| !s.is_empty()).unwrap_or_else(|| default_service.to_owned()),
            metrics_interval,
        })
    }
}

/// The exporters set up by [`init`]; [`Telemetry::shutdown`] flushes what is pending.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The tracer the proxy builds its spans with, and the share of requests it samples.
    pub proxy: Option<(SdkTracer, f64)>,
}

impl Telemetry {
    /// Exports the spans still buffered (at shutdown).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// Sets up logging (`log_level`, or `RUST_LOG`; JSON lines when asked) to stderr, and, with
/// an endpoint, the OTLP trace exporter and the `tracing` bridge. Call it inside the Tokio
/// runtime that will run the exporter (its batches go out on that runtime).
///
/// # Errors
/// The exporter cannot be built (an endpoint tonic refuses).
pub fn init(log_level: &str, log_json: bool, settings: &Settings) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log_json { fmt.json().boxed() } else { fmt.boxed() };
    let Some(endpoint) = &settings.endpoint else {
        let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).try_init();
        return Ok(Telemetry { provider: None, proxy: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(settings.service_name.clone()).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_rate))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("gatehouse");
    // Only Gatehouse's own spans become traces (not every dependency's debug spans).
    let bridge = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(tracing_subscriber::filter::Targets::new().with_target("gatehouse", tracing::Level::INFO));
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(bridge).try_init();
    Ok(Telemetry { provider: Some(provider), proxy: Some((tracer, settings.sampling_rate)) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_off_by_default_and_checked() {
        let s = Settings::parse(None, None, None, None, "gatehouse-dp").unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.service_name, "gatehouse-dp");
        assert!((s.sampling_rate - 0.01).abs() < f64::EPSILON);
        let on = Settings::parse(Some("http://c:4317".into()), Some("1".into()), Some("edge".into()), None, "x");
        assert_eq!(on.as_ref().map(|s| s.endpoint.as_deref()), Ok(Some("http://c:4317")));
        let bad = Settings::parse(None, Some("1.5".into()), None, None, "x").unwrap_err();
        assert_eq!(bad.key, "tracing_sampling_rate");
        let bad = Settings::parse(Some("c:4317".into()), None, None, None, "x").unwrap_err();
        assert_eq!(bad.key, "tracing_endpoint");
        let tls = Settings::parse(Some("https://c:4317".into()), None, None, None, "x").unwrap_err();
        assert!(tls.reason.contains("TLS"), "{tls}");
        assert_eq!(Settings::parse(Some("off".into()), None, None, None, "x").unwrap().endpoint, None);
    }
}
