//! Defaults and rules of the logging plugins.

use serde_json::{json, Value};

use super::{create, defaults, fields};

#[test]
fn http_log_requires_an_endpoint() {
    assert_eq!(defaults("http-log"), Err(fields(&[("config.http_endpoint", "http_endpoint is required")])));
    assert_eq!(
        create("http-log", json!({"http_endpoint": " http://user:pw@logs.example.com:8080/x "})),
        Ok(json!({
            "http_endpoint": "http://user:pw@logs.example.com:8080/x",
            "method": "POST",
            "content_type": "application/json",
            "timeout": 10000,
            "keepalive": 60000
        }))
    );
    assert_eq!(
        create("http-log", json!({"http_endpoint": "http://l", "method": "GET"})),
        Err(fields(&[("config.method", "\"GET\" is not allowed. Allowed values are: \"POST\", \"PUT\", \"PATCH\"")])),
    );
}

#[test]
fn tcp_log_requires_host_and_port() {
    assert_eq!(
        defaults("tcp-log"),
        Err(fields(&[("config.host", "host is required"), ("config.port", "port is required")])),
    );
    assert_eq!(
        create("tcp-log", json!({"host": "127.0.0.1", "port": "9999"})),
        Ok(json!({"host": "127.0.0.1", "port": 9999, "timeout": 10000, "keepalive": 60000, "tls": false}))
    );
}

#[test]
fn udp_log_requires_host_and_port() {
    assert_eq!(
        defaults("udp-log"),
        Err(fields(&[("config.host", "host is required"), ("config.port", "port is required")])),
    );
    assert_eq!(
        create("udp-log", json!({"host": "h", "port": 53})),
        Ok(json!({"host": "h", "port": 53, "timeout": 10000}))
    );
    assert_eq!(create("udp-log", json!({"host": "", "port": 53})), Err(fields(&[("config.host", "host is required")])),);
}

#[test]
fn file_log_checks_the_path_without_touching_the_disk() {
    assert_eq!(defaults("file-log"), Err(fields(&[("config.path", "path is required")])));
    let path = std::env::temp_dir().join(format!("gatehouse-file-log-{}.log", uuid::Uuid::new_v4()));
    let path_text = path.to_string_lossy().to_string();
    assert_eq!(create("file-log", json!({"path": path_text})), Ok(json!({"path": path_text, "reopen": false})));
    assert!(!path.exists(), "the control plane does not create data-plane log files");
    assert_eq!(
        create("file-log", json!({"path": "/var/log/"})),
        Err(fields(&[("config.path", "Cannot create file: /var/log/: Is a directory or an invalid path")])),
    );
}

#[test]
fn syslog_defaults() {
    assert_eq!(
        defaults("syslog"),
        Ok(json!({
            "log_level": "info",
            "successful_severity": "info",
            "client_errors_severity": "info",
            "server_errors_severity": "info"
        }))
    );
    assert_eq!(
        create("syslog", json!({"log_level": "error"})),
        Err(fields(&[(
            "config.log_level",
            "\"error\" is not allowed. Allowed values are: \"debug\", \"info\", \"notice\", \"warning\", \"err\", \"crit\", \"alert\", \"emerg\""
        )])),
    );
}

#[test]
fn loggly_requires_a_key() {
    assert_eq!(defaults("loggly"), Err(fields(&[("config.key", "key is required")])));
    assert_eq!(
        create("loggly", json!({"key": "token", "tags": "a,b"})),
        Ok(json!({
            "key": "token",
            "tags": ["a", "b"],
            "host": "logs-01.loggly.com",
            "port": 514,
            "log_level": "info",
            "successful_severity": "info",
            "client_errors_severity": "info",
            "server_errors_severity": "info",
            "timeout": 10000
        }))
    );
}

#[test]
fn statsd_defaults() {
    let out = defaults("statsd").expect("valid");
    assert_eq!(out["host"], json!("localhost"));
    assert_eq!(out["port"], json!(8125));
    assert_eq!(out["prefix"], json!("kong"));
    let metrics = out["metrics"].as_array().expect("metrics array");
    assert_eq!(metrics.len(), 10);
    assert_eq!(metrics[0], json!({"name": "request_count", "stat_type": "counter", "sample_rate": 1}));
    assert_eq!(metrics[5], json!({"name": "unique_users", "stat_type": "set", "consumer_identifier": "custom_id"}));
}

#[test]
fn statsd_metric_rules() {
    let cases = [
        (json!([{"name": "latency"}]), "name and stat_type must be defined for all stats"),
        (json!([{"name": "hits", "stat_type": "counter"}]), "unrecognized metric name: hits"),
        (json!([{"name": "latency", "stat_type": "clock"}]), "unrecognized stat_type: clock"),
        (
            json!([{"name": "unique_users", "stat_type": "counter", "sample_rate": 1}]),
            "unique_users metric only works with stat_type 'set'",
        ),
        (
            json!([{"name": "request_count", "stat_type": "counter"}]),
            "sample rate must be defined for counters and gauges.",
        ),
        (
            json!([{"name": "latency", "stat_type": "gauge", "sample_rate": 0.5}]),
            "sample rate must be defined for counters and gauges.",
        ),
        (
            json!([{"name": "request_per_user", "stat_type": "counter", "sample_rate": 1}]),
            "consumer_identifier must be defined for metric request_per_user",
        ),
        (
            json!([{"name": "unique_users", "stat_type": "set", "consumer_identifier": "email"}]),
            "invalid consumer_identifier for metric 'unique_users'. Choices are consumer_id, custom_id, and username",
        ),
        (
            json!([{"name": "status_count", "stat_type": "gauge", "sample_rate": 1}]),
            "status_count metric only works with stat_type 'counter'",
        ),
        (json!("latency"), "name and stat_type must be defined for all stats"),
    ];
    for (metrics, message) in cases {
        assert_eq!(
            create("statsd", json!({"metrics": metrics})),
            Err(fields(&[("config.metrics", message)])),
            "{metrics}"
        );
    }
    let out = create("statsd", json!({"metrics": [{"name": "latency", "stat_type": "timer"}]}));
    assert!(out.is_ok());
}

#[test]
fn datadog_defaults_are_tagged() {
    let out = defaults("datadog").expect("valid");
    assert_eq!(out["host"], json!("localhost"));
    assert_eq!(out["port"], json!(8125));
    assert_eq!(out["prefix"], json!("kong"));
    let metrics = out["metrics"].as_array().expect("metrics array");
    assert_eq!(metrics.len(), 10);
    assert!(metrics.iter().all(|m| m["tags"] == json!(["app:kong"])));
    assert_eq!(
        metrics[0],
        json!({"name": "request_count", "stat_type": "counter", "sample_rate": 1, "tags": ["app:kong"]})
    );
}

#[test]
fn datadog_tags_need_values_after_colons() {
    let metric = |tags: Value| json!({"metrics": [{"name": "latency", "stat_type": "timer", "tags": tags}]});
    assert!(create("datadog", metric(json!(["env:prod", "canary", "a:b:"]))).is_ok());
    for bad in ["env:", "env::x", ":"] {
        assert_eq!(
            create("datadog", metric(json!([bad]))),
            Err(fields(&[(
                "config.metrics",
                format!("malformed tags: key '{bad}' has no value. Tags must be list of key[:value]").as_str()
            )])),
        );
    }
    assert_eq!(create("datadog", json!({"host": ""})), Err(fields(&[("config.host", "host is required")])),);
}

#[test]
fn galileo_requires_a_service_token() {
    assert_eq!(defaults("galileo"), Err(fields(&[("config.service_token", "service_token is required")])));
    assert_eq!(
        create("galileo", json!({"service_token": "t"})),
        Ok(json!({
            "service_token": "t",
            "retry_count": 10,
            "queue_size": 1000,
            "flush_timeout": 2,
            "log_bodies": false,
            "connection_timeout": 30,
            "host": "collector.galileo.mashape.com",
            "port": 443,
            "https": true,
            "https_verify": false
        }))
    );
}
