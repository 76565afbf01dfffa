#![allow(clippy::unwrap_used)]

use super::*;

const START: u64 = 1_000;
const NOW: u64 = 2_000;

fn metrics(text: &str) -> Vec<Metric> {
    let request = convert(text, "test-service", NOW, START);
    assert_eq!(request.resource_metrics.len(), 1);
    let resource = request.resource_metrics.into_iter().next().unwrap();
    assert_eq!(resource.resource.unwrap().attributes, vec![string_kv("service.name", "test-service")]);
    assert_eq!(resource.scope_metrics.len(), 1);
    let scope = resource.scope_metrics.into_iter().next().unwrap();
    assert_eq!(scope.scope.unwrap().name, "gatehouse");
    scope.metrics
}

fn find<'a>(metrics: &'a [Metric], name: &str) -> &'a Metric {
    metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no metric {name} in {metrics:?}"))
}

fn number(labels: &[(&str, &str)], value: f64, start: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: labels.iter().map(|(k, v)| string_kv(*k, *v)).collect(),
        start_time_unix_nano: start,
        time_unix_nano: NOW,
        value: Some(Value::AsDouble(value)),
        ..Default::default()
    }
}

const TEXT: &str = r#"# HELP http_requests_total Requests served, by method and path.
# TYPE http_requests_total counter
http_requests_total{method="GET",path="/a\"b"} 3
http_requests_total{method="POST",path="/c\\d\ne"} 1.5
# HELP temperature_celsius Degrees now.\nSecond line.
# TYPE temperature_celsius gauge
temperature_celsius 21.5
# HELP latency_seconds Request latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{route="a",le="0.1"} 1
latency_seconds_bucket{route="a",le="0.5"} 3
latency_seconds_bucket{route="a",le="1"} 6
latency_seconds_bucket{route="a",le="+Inf"} 10
latency_seconds_sum{route="a"} 12.5
latency_seconds_count{route="a"} 10
latency_seconds_bucket{route="b",le="0.1"} 0
latency_seconds_bucket{route="b",le="0.5"} 0
latency_seconds_bucket{route="b",le="1"} 2
latency_seconds_bucket{route="b",le="+Inf"} 5
latency_seconds_sum{route="b"} 7
latency_seconds_count{route="b"} 5
# HELP jobs Jobs run.
# TYPE jobs counter
jobs_total 4
# EOF
"#;

#[test]
fn a_counter_is_a_monotonic_cumulative_sum_with_unescaped_labels() {
    let metrics = metrics(TEXT);
    let m = find(&metrics, "http_requests_total");
    assert_eq!(m.description, "Requests served, by method and path.");
    let expected = Sum {
        data_points: vec![
            number(&[("method", "GET"), ("path", "/a\"b")], 3.0, START),
            number(&[("method", "POST"), ("path", "/c\\d\ne")], 1.5, START),
        ],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
        is_monotonic: true,
    };
    assert_eq!(m.data, Some(Data::Sum(expected)));
}

#[test]
fn a_counter_typed_without_total_takes_its_total_sample() {
    let metrics = metrics(TEXT);
    let m = find(&metrics, "jobs");
    let Some(Data::Sum(sum)) = &m.data else { panic!("{m:?}") };
    assert_eq!(sum.data_points, vec![number(&[], 4.0, START)]);
    assert!(sum.is_monotonic);
}

#[test]
fn a_gauge_is_a_gauge_with_its_help_unescaped() {
    let metrics = metrics(TEXT);
    let m = find(&metrics, "temperature_celsius");
    assert_eq!(m.description, "Degrees now.\nSecond line.");
    assert_eq!(m.data, Some(Data::Gauge(Gauge { data_points: vec![number(&[], 21.5, 0)] })));
}

#[test]
fn a_histogram_has_per_bucket_counts_one_point_per_label_set() {
    let metrics = metrics(TEXT);
    let m = find(&metrics, "latency_seconds");
    assert_eq!(m.description, "Request latency.");
    let point = |route: &str, bucket_counts: Vec<u64>, sum: f64, count: u64| HistogramDataPoint {
        attributes: vec![string_kv("route", route)],
        start_time_unix_nano: START,
        time_unix_nano: NOW,
        count,
        sum: Some(sum),
        bucket_counts,
        explicit_bounds: vec![0.1, 0.5, 1.0],
        ..Default::default()
    };
    let expected = Histogram {
        data_points: vec![point("a", vec![1, 2, 3, 4], 12.5, 10), point("b", vec![0, 0, 2, 3], 7.0, 5)],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    };
    assert_eq!(m.data, Some(Data::Histogram(expected)));
}

#[test]
fn every_family_is_exported_once_in_declaration_order() {
    let names: Vec<String> = metrics(TEXT).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["http_requests_total", "temperature_celsius", "latency_seconds", "jobs"]);
}

#[test]
fn prometheus_client_output_and_hand_written_output_both_convert() {
    // As `prometheus-client`'s `prometheus_text` writes a counter and a labelled
    // histogram, followed by hand-written families as data-plane/src/metrics.rs writes them.
    let text = "# HELP gatehouse_sync_connects_total Sync streams opened to the control plane.\n\
                # TYPE gatehouse_sync_connects_total counter\n\
                gatehouse_sync_connects_total 2\n\
                # HELP gatehouse_admin_request_duration_seconds Admin API requests.\n\
                # TYPE gatehouse_admin_request_duration_seconds histogram\n\
                gatehouse_admin_request_duration_seconds_bucket{method=\"GET\",code=\"200\",le=\"0.0005\"} 1\n\
                gatehouse_admin_request_duration_seconds_bucket{method=\"GET\",code=\"200\",le=\"1e+06\"} 2\n\
                gatehouse_admin_request_duration_seconds_bucket{method=\"GET\",code=\"200\",le=\"+Inf\"} 2\n\
                gatehouse_admin_request_duration_seconds_sum{method=\"GET\",code=\"200\"} 0.0035\n\
                gatehouse_admin_request_duration_seconds_count{method=\"GET\",code=\"200\"} 2\n\
                # HELP kong_bandwidth_bytes Bytes of requests (ingress) and answers (egress)\n\
                # TYPE kong_bandwidth_bytes counter\n\
                kong_bandwidth_bytes{service=\"s\",route=\"r\",direction=\"ingress\"} 10\n";
    let metrics = metrics(text);
    let Some(Data::Sum(connects)) = &find(&metrics, "gatehouse_sync_connects_total").data else { panic!() };
    assert_eq!(connects.data_points, vec![number(&[], 2.0, START)]);
    let Some(Data::Histogram(h)) = &find(&metrics, "gatehouse_admin_request_duration_seconds").data else { panic!() };
    let p = h.data_points.first().unwrap();
    assert_eq!(h.data_points.len(), 1);
    assert_eq!(p.explicit_bounds, vec![0.0005, 1e6]);
    assert_eq!(p.bucket_counts, vec![1, 1, 0]);
    assert_eq!((p.count, p.sum), (2, Some(0.0035)));
    assert_eq!(p.attributes, vec![string_kv("method", "GET"), string_kv("code", "200")]);
    let Some(Data::Sum(bytes)) = &find(&metrics, "kong_bandwidth_bytes").data else { panic!() };
    assert_eq!(
        bytes.data_points,
        vec![number(&[("service", "s"), ("route", "r"), ("direction", "ingress")], 10.0, START)]
    );
}

#[test]
fn malformed_input_is_skipped_without_panicking() {
    let text = "garbage without a value\n\
                {}{}{\n\
                #\n\
                # TYPE\n\
                # TYPE broken\n\
                # HELP\n\
                # TYPE 9starts_with_digit counter\n\
                orphan_metric{a=\"1\"} 7\n\
                unterminated{a=\"never closed} 1\n\
                unquoted{a=1} 2\n\
                duplicated{a=\"1\",a=\"2\"} 3\n\
                bad_value 1.2.3\n\
                trailing_backslash{a=\"x\\\n\
                no_value{a=\"1\"}\n\
                \u{e9}t\u{e9} 1\n\
                caf\u{e9}{l=\"\u{e9}\"} 1\n\
                # TYPE h histogram\n\
                h_bucket{le=\"1\"} 2\n\
                h_bucket{le=\"+Inf\"} 3\n\
                h_bucket{le=\"NaN\"} 1\n\
                h_bucket{le=\"oops\"} 1\n\
                h_bucket 5\n\
                h 9\n\
                h_sum 4\n\
                \u{0}\u{7f}\\\"}{=,\n";
    let metrics = metrics(text);
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["h", "orphan_metric"]);
    let orphan = find(&metrics, "orphan_metric");
    assert_eq!(orphan.data, Some(Data::Gauge(Gauge { data_points: vec![number(&[("a", "1")], 7.0, 0)] })));
    let Some(Data::Histogram(h)) = &find(&metrics, "h").data else { panic!() };
    let p = h.data_points.first().unwrap();
    assert_eq!(h.data_points.len(), 1);
    assert_eq!(p.explicit_bounds, vec![1.0]);
    assert_eq!(p.bucket_counts, vec![2, 1]);
    assert_eq!(p.count, 3, "without _count the +Inf bucket is the count");
    assert_eq!(p.sum, Some(4.0));
}

#[test]
fn empty_and_odd_expositions_do_not_panic() {
    let odd = ["", "\n\n", "# EOF", "x", "{", "x{", "x{a", "x{a=", "x{a=\"", "x{a=\"\\", "x{a=\"b\"", "x{a=\"b\","];
    for text in odd.into_iter().chain(["# HELP x \\", "# TYPE x", "x_total{} 1 2 3"]) {
        let request = convert(text, "s", NOW, START);
        assert_eq!(request.resource_metrics.len(), 1, "{text:?}");
    }
    // A histogram with only a _count, and one whose cumulative counts go down.
    let text = "# TYPE a histogram\na_count 4\n\
                # TYPE b histogram\nb_bucket{le=\"1\"} 5\nb_bucket{le=\"2\"} 3\nb_bucket{le=\"+Inf\"} 6\n";
    let metrics = metrics(text);
    let Some(Data::Histogram(a)) = &find(&metrics, "a").data else { panic!() };
    let a = a.data_points.first().unwrap();
    assert_eq!((a.bucket_counts.clone(), a.count, a.sum), (vec![4], 4, None));
    let Some(Data::Histogram(b)) = &find(&metrics, "b").data else { panic!() };
    let b = b.data_points.first().unwrap();
    assert_eq!((b.bucket_counts.clone(), b.count), (vec![5, 0, 1], 6));
}

#[test]
fn label_values_unescape() {
    assert_eq!(parse_quoted(r#"a\"b\\c\nd" rest"#), Some(("a\"b\\c\nd".to_owned(), " rest")));
    assert_eq!(parse_quoted(r#"\q""#), Some(("\\q".to_owned(), "")));
    assert_eq!(parse_quoted("open"), None);
    assert_eq!(parse_quoted("\\"), None);
}

#[test]
fn a_failure_warning_is_held_back_within_a_minute() {
    let mut w = Warnings::default();
    w.failed("http://x", "down");
    w.failed("http://x", "down");
    assert_eq!(w.suppressed, 1);
    w.succeeded("http://x");
    assert!(!w.failing);
}
