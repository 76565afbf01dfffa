#![allow(clippy::unwrap_used)]
//! `GET /` and `GET /status`.

use std::collections::BTreeSet;

use gatehouse_tests::*;

both!(root_reports_kong_0_14_node_info, |gw| async move {
    let r = gw.get("/").await;
    r.assert_status(200);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    let b = r.body;
    assert_eq!(b["version"], json!("0.14.1"), "{b}");
    assert_eq!(b["tagline"], json!("Welcome to kong"), "{b}");
    assert!(is_uuid(&b["node_id"]), "node_id: {b}");
    assert!(b["hostname"].is_string(), "hostname: {b}");
    assert!(b["configuration"].is_object(), "configuration: {b}");

    let available = b["plugins"]["available_on_server"]
        .as_object()
        .unwrap_or_else(|| panic!("available_on_server must be an object: {b}"));
    let names: BTreeSet<&str> = available.keys().map(String::as_str).collect();
    // Only plugins that run are available: Kong's `loaded_plugins`.
    let expected: BTreeSet<&str> = ENABLED_PLUGINS.iter().copied().collect();
    assert_eq!(names, expected);
    for (name, v) in available {
        assert_eq!(v, &json!(true), "available_on_server.{name}");
    }
    assert_eq!(b["plugins"]["enabled_in_cluster"], json!([]));

    // node_id is stable for the life of the process.
    let again = gw.get("/").await.expect(200);
    assert_eq!(again["node_id"], b["node_id"]);
});

both!(enabled_in_cluster_lists_distinct_plugin_names, |gw| async move {
    let a = gw.create_service("a").await;
    let b = gw.create_service("b").await;
    let ka = gw.post_json("/plugins", &json!({"name": "key-auth", "service_id": a["id"]})).await.expect(201);
    let kb = gw.post_json("/plugins", &json!({"name": "key-auth", "service_id": b["id"]})).await.expect(201);
    gw.post_json("/plugins", &json!({"name": "acl", "config": {"whitelist": ["admins"]}})).await.expect(201);

    let root = gw.get("/").await.expect(200);
    let mut enabled: Vec<String> = serde_json_strings(&root["plugins"]["enabled_in_cluster"]);
    enabled.sort();
    assert_eq!(enabled, vec!["acl", "key-auth"]);

    for p in [&ka, &kb] {
        gw.delete(&format!("/plugins/{}", p["id"].as_str().unwrap())).await.assert_status(204);
    }
    let root = gw.get("/").await.expect(200);
    assert_eq!(root["plugins"]["enabled_in_cluster"], json!(["acl"]));
});

fn serde_json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("enabled_in_cluster must be an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("plugin name").to_owned())
        .collect()
}

both!(status_reports_database_and_config_revision, |gw| async move {
    let r = gw.get("/status").await;
    r.assert_status(200);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    let b = r.body;
    assert_eq!(b["database"]["reachable"], json!(true), "{b}");
    for key in [
        "total_requests",
        "connections_active",
        "connections_accepted",
        "connections_handled",
        "connections_reading",
        "connections_writing",
        "connections_waiting",
    ] {
        assert!(b["server"][key].is_u64(), "server.{key} in {b}");
    }
    assert_eq!(b["config_revision"], json!(0), "{b}");

    // The request counter counts.
    let t1 = b["server"]["total_requests"].as_u64().unwrap();
    for _ in 0..3 {
        gw.get("/services").await.assert_status(200);
    }
    let t2 = gw.get("/status").await.expect(200)["server"]["total_requests"].as_u64().unwrap();
    assert!(t2 >= t1 + 4, "total_requests went from {t1} to {t2} over 4 requests");

    gw.create_consumer("bob").await;
    assert_eq!(gw.revision().await, 1);
    gw.create_service("svc").await;
    assert_eq!(gw.revision().await, 2);
});
