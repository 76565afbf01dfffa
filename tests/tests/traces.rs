#![allow(clippy::unwrap_used)]
//! OpenTelemetry: the real binaries export spans and metrics over OTLP/gRPC to a collector
//! the test runs (`gatehouse_tests::otlp`). A proxied request is a span tree continued from
//! the client's `traceparent` and sent on to the upstream; an Admin API write is traced to
//! its commit and linked from the sync span that carries it to the data plane, whose apply
//! span continues that trace.

use std::time::Duration;

use gatehouse_tests::otlp::{Collector, ReceivedSpan};
use gatehouse_tests::proxy::{Standalone, Upstream};
use gatehouse_tests::*;

const WAIT: Duration = Duration::from_secs(20);

async fn traced_gateway(collector: &Collector, rate: &str) -> Standalone {
    let endpoint = collector.endpoint();
    Standalone::start_with_env(&[
        ("GATEHOUSE_TRACING_ENDPOINT", endpoint.as_str()),
        ("GATEHOUSE_TRACING_SAMPLING_RATE", rate),
        ("GATEHOUSE_METRICS_OTLP_INTERVAL_MS", "1000"),
        // The SDK's batch delay (5 s by default), shortened so the test waits less.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str, trace_id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.name == name && s.trace_id == trace_id)
}

/// The root `kong` span of `trace_id` and its children, each inside it in time.
fn tree(spans: &[ReceivedSpan], trace_id: &str) -> (ReceivedSpan, Vec<String>) {
    let root = named(spans, "kong", trace_id).unwrap_or_else(|| panic!("no kong span in {trace_id}")).clone();
    let children: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id == root.span_id).collect();
    for c in &children {
        assert_eq!(c.trace_id, root.trace_id);
        assert!(
            c.start_unix_nano >= root.start_unix_nano && c.end_unix_nano <= root.end_unix_nano,
            "{c:?} outside {root:?}"
        );
    }
    (root, children.iter().map(|c| c.name.clone()).collect())
}

#[tokio::test]
async fn a_proxied_request_is_a_span_tree_continued_from_the_client_and_sent_upstream() {
    let collector = Collector::start().await;
    let gw = traced_gateway(&collector, "1").await;
    let up = Upstream::echo("traced").await;
    let (_, route) = gw.expose(&up, json!({"name": "traced"}), json!({"paths": ["/traced"]})).await;
    gw.post(&format!("/routes/{}/plugins", id_of(&route)), json!({"name": "key-auth"})).await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "secret"})).await;
    gw.sync().await;

    // Continued from the client: same trace, the client's span as the root's parent.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    let reply = gw.get_with("/traced", &[("apikey", "secret"), ("traceparent", &traceparent)]).await;
    reply.assert_status(200);
    let sent = reply.echo().header("traceparent").unwrap().to_owned();
    let spans = collector
        .wait_for_spans(WAIT, "the kong span of the client's trace", |s| named(s, "kong", client_trace).is_some())
        .await;
    let (root, children) = tree(&spans, client_trace);
    assert_eq!(root.parent_span_id, client_span);
    assert_eq!(root.service_name, "gatehouse-cp");
    assert_eq!(root.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    assert_eq!(root.attributes.get("kong.route.id"), Some(&id_of(&route)));
    assert_eq!(sent, format!("00-{client_trace}-{}-01", root.span_id), "the upstream continues the gateway's span");
    for phase in [
        "kong.router",
        "kong.access.plugin.key-auth",
        "kong.balancer",
        "kong.upstream.connect",
        "kong.upstream.response",
    ] {
        assert!(children.iter().any(|c| c == phase), "{phase} missing from {children:?}");
    }

    // Begun here (sampling rate 1), with `Kong-Debug` too (it changes nothing but the fields it adds).
    for debug in ["0", "1"] {
        let mut headers = vec![("apikey", "secret")];
        if debug == "1" {
            headers.push(("kong-debug", "1"));
        }
        let reply = gw.get_with("/traced", &headers).await;
        reply.assert_status(200);
        let sent = reply.echo().header("traceparent").unwrap().to_owned();
        let trace_id = sent.split('-').nth(1).unwrap().to_owned();
        assert_ne!(trace_id, client_trace);
        let spans = collector
            .wait_for_spans(WAIT, "the kong span of a new trace", |s| named(s, "kong", &trace_id).is_some())
            .await;
        let (root, children) = tree(&spans, &trace_id);
        assert_eq!(root.parent_span_id, "", "a new trace's root has no parent");
        assert!(children.iter().any(|c| c == "kong.access.plugin.key-auth"), "kong-debug {debug}: {children:?}");
        assert!(children.iter().any(|c| c == "kong.upstream.response"), "kong-debug {debug}: {children:?}");
    }

    // A service named by host: its resolution is a span of its own.
    let named_service = gw.post("/services", json!({"name": "named", "host": "localhost", "port": up.port()})).await;
    gw.route(&named_service, json!({"paths": ["/named"]})).await;
    gw.sync().await;
    let reply = gw.get("/named").await;
    reply.assert_status(200);
    let trace_id = reply.echo().header("traceparent").unwrap().split('-').nth(1).unwrap().to_owned();
    let spans =
        collector.wait_for_spans(WAIT, "the named service's trace", |s| named(s, "kong", &trace_id).is_some()).await;
    let dns = named(&spans, "kong.dns", &trace_id).unwrap_or_else(|| panic!("no kong.dns span: {spans:#?}"));
    assert_eq!(dns.attributes.get("dns.question.name").map(String::as_str), Some("localhost"));
    assert_eq!(dns.parent_span_id, named(&spans, "kong", &trace_id).unwrap().span_id);

    // A client that says "not sampled" is not traced, and its context goes on unchanged.
    let unsampled = format!("00-{client_trace}-{client_span}-00");
    let reply = gw.get_with("/traced", &[("apikey", "secret"), ("traceparent", &unsampled)]).await;
    assert_eq!(reply.echo().header("traceparent"), Some(unsampled.as_str()));
}

#[tokio::test]
async fn an_admin_write_is_traced_to_its_commit_and_the_sync_that_applies_it() {
    let collector = Collector::start().await;
    let gw = traced_gateway(&collector, "1").await;
    gw.post("/services", json!({"name": "written", "host": "example.org"})).await;
    gw.sync().await;
    let is_write = |s: &ReceivedSpan| {
        s.name == "admin.request"
            && s.attributes.get("http.route").map(String::as_str) == Some("/services")
            && s.attributes.get("http.request.method").map(String::as_str) == Some("POST")
    };
    let spans = collector
        .wait_for_spans(WAIT, "the write, its sync and its apply", |spans| {
            spans.iter().any(is_write)
                && spans.iter().any(|s| s.name == "sync.delta" && !s.links.is_empty())
                && spans.iter().any(|s| s.name == "sync.apply")
        })
        .await;
    let write = spans.iter().find(|s| is_write(s)).unwrap();
    assert_eq!(write.attributes.get("http.response.status_code").map(String::as_str), Some("201"));
    let commit = spans
        .iter()
        .find(|s| s.name == "store.commit" && s.trace_id == write.trace_id)
        .unwrap_or_else(|| panic!("no store.commit in the write's trace: {spans:#?}"));
    assert_eq!(commit.parent_span_id, write.span_id);
    let delta = spans
        .iter()
        .find(|s| s.name == "sync.delta" && s.links.iter().any(|(t, _)| *t == write.trace_id))
        .unwrap_or_else(|| panic!("no sync.delta linked to the write: {spans:#?}"));
    assert_eq!(delta.links[0], (commit.trace_id.clone(), commit.span_id.clone()));
    let apply = spans
        .iter()
        .find(|s| s.name == "sync.apply" && s.parent_span_id == delta.span_id)
        .unwrap_or_else(|| panic!("no sync.apply under the sync.delta: {spans:#?}"));
    assert_eq!(apply.trace_id, delta.trace_id);
    assert_eq!(apply.attributes.get("revision"), delta.attributes.get("revision"));
}

#[tokio::test]
async fn metrics_are_exported_over_otlp_when_an_endpoint_is_set() {
    let collector = Collector::start().await;
    let gw = traced_gateway(&collector, "0").await;
    let up = Upstream::echo("exported").await;
    let (_, route) = gw.expose(&up, json!({"name": "exported"}), json!({"paths": ["/exported"]})).await;
    gw.sync().await;
    for _ in 0..3 {
        gw.get("/exported").await.assert_status(200);
    }
    let route = id_of(&route);
    let points = collector
        .wait_for_metrics(WAIT, "three requests counted, and the Admin API's latency", |points| {
            points.iter().any(|(svc, name, attrs, v)| {
                svc == "gatehouse-dp"
                    && name == "kong_http_requests_total"
                    && attrs.get("route") == Some(&route)
                    && attrs.get("code").map(String::as_str) == Some("200")
                    && *v == 3.0
            }) && points
                .iter()
                .any(|(svc, name, _, _)| svc == "gatehouse-cp" && name == "gatehouse_admin_request_duration_seconds")
        })
        .await;
    assert!(points.iter().any(|(_, name, _, _)| name == "kong_request_latency_ms"));
    // Sampling rate 0: nothing from the proxy was traced.
    assert!(!collector.spans().iter().any(|s| s.name == "kong"));
}
