#![allow(clippy::unwrap_used)]
//! Concurrent writes: constraint races end in 409/400 (never 500, never duplicates or
//! orphans), concurrent upserts create once, and the change log stays gapless.

use std::collections::BTreeSet;

use gatehouse_tests::reqwest::Method;
use gatehouse_tests::*;
use serde_json::Value;

const RACERS: usize = 8;

/// Fires the same request `RACERS` times at once; returns the responses.
async fn race(gw: &Gateway, method: Method, path: &str, body: &Value) -> Vec<Resp> {
    let reqs = (0..RACERS).map(|_| gw.json(method.clone(), path, body));
    futures::future::join_all(reqs).await
}

fn statuses(resps: &[Resp]) -> Vec<u16> {
    resps.iter().map(|r| r.status).collect()
}

fn assert_gapless(changes: &[Change], expected_revisions: i64) {
    let revs: BTreeSet<i64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(
        revs.into_iter().collect::<Vec<_>>(),
        (1..=expected_revisions).collect::<Vec<_>>(),
        "revisions must be 1..=N, one per successful write"
    );
}

both!(concurrent_duplicate_creates_have_one_winner, |gw| async move {
    let (cert, key) = self_signed(&["dup.example.com"]);
    let c = gw.post_json("/certificates", &json!({"cert": cert, "key": key})).await.expect(201);
    let svc = gw.create_service("scope").await;
    let mut writes = 2;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/services", json!({"name": "dup", "host": "example.com"}), "/services"),
        ("/consumers", json!({"username": "dup"}), "/consumers"),
        ("/consumers", json!({"custom_id": "dup-custom"}), "/consumers"),
        ("/snis", json!({"name": "dup.example.com", "certificate": {"id": c["id"]}}), "/snis"),
        ("/upstreams", json!({"name": "dup.xyz"}), "/upstreams"),
        ("/plugins", json!({"name": "key-auth"}), "/plugins"),
        ("/plugins", json!({"name": "basic-auth", "service_id": svc["id"]}), "/plugins"),
    ];
    for (path, body, list) in cases {
        let before = gw.list_all(list).await.len();
        let statuses = statuses(&race(&gw, Method::POST, path, &body).await);
        let won = statuses.iter().filter(|s| **s == 201).count();
        let lost = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!((won, lost), (1, RACERS - 1), "POST {path} {body} raced {RACERS} times: statuses {statuses:?}");
        assert_eq!(gw.list_all(list).await.len(), before + 1, "POST {path} {body}: exactly one row stored");
        writes += 1;
    }
    let log = gw.changes().await;
    assert_gapless(&log, writes);
    assert_eq!(gw.revision().await, writes);
});

both!(concurrent_put_upserts_create_once, |gw| async move {
    let s = gw.create_service("svc").await;
    let route_id = new_id();
    let cases: Vec<(String, Value, &str)> = vec![
        ("/services/put-race".to_owned(), json!({"host": "example.com"}), "/services"),
        ("/consumers/put-race".to_owned(), json!({"custom_id": "c"}), "/consumers"),
        (format!("/routes/{route_id}"), json!({"paths": ["/race"], "service": {"id": s["id"]}}), "/routes"),
    ];
    let mut wrong = Vec::new();
    for (path, body, list) in cases {
        let before = gw.list_all(list).await.len();
        let resps = race(&gw, Method::PUT, &path, &body).await;
        let statuses = statuses(&resps);
        let loser = resps.iter().find(|r| r.status >= 300).map(|r| r.text.clone()).unwrap_or_default();
        let created = statuses.iter().filter(|s| **s == 201).count();
        let ok = statuses.iter().all(|s| *s == 200 || *s == 201);
        let stored = gw.list_all(list).await.len() - before;
        if !ok || created != 1 || stored != 1 {
            wrong.push(format!(
                "PUT {path} raced {RACERS} times: statuses {statuses:?} (want one 201, the rest 200), {stored} row(s) stored; e.g. {loser}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let log = gw.changes().await;
    let max = log.iter().map(|c| c.revision).max().unwrap_or(0);
    assert_gapless(&log, max);
    assert_eq!(gw.revision().await, max);
});

both!(route_create_racing_service_delete_leaves_no_orphan, |gw| async move {
    for i in 0..12 {
        let s = gw.create_service(&format!("svc{i}")).await;
        let sid = id_of(&s);
        let body = json!({"paths": ["/x"], "service": {"id": sid}});
        let path = format!("/services/{sid}");
        let (route, del) = tokio::join!(gw.post_json("/routes", &body), gw.delete(&path));
        match (route.status, del.status) {
            (201, 400) => {
                assert_eq!(del.body["code"], json!(4), "{}", del.text);
                gw.get(&format!("/services/{sid}")).await.assert_status(200);
            }
            (400, 204) => {
                assert_eq!(route.body["code"], json!(4), "{}", route.text);
                gw.get(&format!("/services/{sid}")).await.assert_status(404);
            }
            other => panic!(
                "round {i}: route {} {} / delete {} {}: {other:?}",
                route.status, route.text, del.status, del.text
            ),
        }
    }
    // No route points at a missing service.
    let services: BTreeSet<String> = ids(&gw.list_all("/services").await).into_iter().collect();
    for r in gw.list_all("/routes").await {
        let sid = r["service"]["id"].as_str().unwrap().to_owned();
        assert!(services.contains(&sid), "orphan route {r}");
    }
    let log = gw.changes().await;
    let max = log.iter().map(|c| c.revision).max().unwrap_or(0);
    assert_gapless(&log, max);
});

both!(mixed_concurrent_writers_keep_the_log_gapless, |gw| async move {
    const N: usize = 15;
    gw.create_upstream("up.xyz").await;
    // The duplicate the failing writes collide with exists before they race (were it one of
    // the consumers created below, a failing write could run first and succeed).
    gw.create_consumer("taken").await;
    let (cert, key) = self_signed(&["a.example.com"]);
    let consumers = async {
        for i in 0..N {
            gw.create_consumer(&format!("c{i}")).await;
        }
    };
    let targets = async {
        for i in 0..N {
            gw.create_target("up.xyz", &format!("10.0.0.{i}:80"), 10).await;
        }
    };
    let plugins = async {
        for i in 0..N {
            let s = gw.create_service(&format!("s{i}")).await;
            gw.post_json("/plugins", &json!({"name": "key-auth", "service_id": s["id"]})).await.expect(201);
        }
    };
    let certs = async {
        for i in 0..N {
            gw.post_json("/certificates", &json!({"cert": cert, "key": key, "snis": [format!("h{i}.example.com")]}))
                .await
                .expect(201);
        }
    };
    let failures = async {
        for _ in 0..N {
            gw.post_json("/services", &json!({"host": 1})).await.assert_status(400);
            gw.post_json("/consumers", &json!({"username": "taken", "custom_id": "again"})).await.assert_client_error();
        }
    };
    tokio::join!(consumers, targets, plugins, certs, failures);
    let expected = (2 + N * 5) as i64;
    let log = gw.changes().await;
    assert_gapless(&log, expected);
    assert_eq!(gw.revision().await, expected);
});
