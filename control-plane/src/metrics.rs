//! `GET /metrics` on the Admin API: Prometheus text (format 0.0.4) with the control plane's
//! own metrics — Admin API requests and their latency by method, route and status, the head of
//! the change log, and the data planes connected. Values read from the store are read at
//! scrape time, so an idle control plane costs nothing.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Admin API latency buckets, in seconds: a read answers in about a millisecond, a write
/// commits in a few, an import of thousands of entities takes seconds.
const BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route's template (`/services/{svc}`), so the label set stays bounded; `unmatched`
    /// for paths no route serves.
    pub route: String,
    pub code: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// What the Admin API records as it answers.
#[derive(Debug)]
pub struct AdminMetrics {
    pub requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for AdminMetrics {
    fn default() -> Self {
        Self { requests: Family::new_with_constructor(latency_histogram) }
    }
}

/// The values only known at scrape time.
pub struct Scraped {
    pub changelog_head: i64,
    pub data_planes_connected: i64,
    pub data_planes_known: i64,
    pub connections_active: i64,
    pub database_reachable: bool,
    /// Each connected data plane (node id, hostname) and how many revisions it is behind.
    pub lag: Vec<(String, String, i64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PlaneLabels {
    node_id: String,
    hostname: String,
}

/// The exposition: the recorded families plus `scraped`.
pub fn render(metrics: &AdminMetrics, counters: &crate::admin::Counters, scraped: &Scraped) -> String {
    let mut registry = Registry::default();
    registry.register(
        "gatehouse_admin_request_duration_seconds",
        "Admin API requests by method, route template and status, and how long they took",
        metrics.requests.clone(),
    );
    registry.register(
        "gatehouse_changelog_head",
        "The change log's head revision (0 when the database does not answer)",
        ConstGauge::new(scraped.changelog_head),
    );
    registry.register(
        "gatehouse_data_planes_connected",
        "Data planes heard from within the staleness window",
        ConstGauge::new(scraped.data_planes_connected),
    );
    registry.register(
        "gatehouse_data_planes_known",
        "Data planes the control plane has a record of",
        ConstGauge::new(scraped.data_planes_known),
    );
    registry.register(
        "gatehouse_admin_connections_active",
        "Admin API connections open now",
        ConstGauge::new(scraped.connections_active),
    );
    registry.register(
        "gatehouse_admin_connections_accepted",
        "Admin API connections accepted since start",
        prometheus_client::metrics::counter::ConstCounter::new(counters.accepted.load(Ordering::Relaxed)),
    );
    registry.register(
        "gatehouse_database_reachable",
        "1 when the store answers",
        ConstGauge::new(i64::from(scraped.database_reachable)),
    );
    let lag: prometheus_client::metrics::family::Family<PlaneLabels, prometheus_client::metrics::gauge::Gauge> =
        Default::default();
    for (node_id, hostname, behind) in &scraped.lag {
        lag.get_or_create(&PlaneLabels { node_id: node_id.clone(), hostname: hostname.clone() }).set(*behind);
    }
    registry.register(
        "gatehouse_data_plane_config_lag",
        "Revisions each connected data plane is behind the change log's head (as it last reported)",
        lag,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}
