#![allow(clippy::unwrap_used)]
//! Pagination: absolute `next` URLs that can be followed verbatim, `size` defaults and
//! limits, invalid `size`/`offset`, N-layer order by id, O-layer `total`.
//! The 2,500-entity walk runs once per backend.

use std::collections::BTreeSet;

use futures::StreamExt;
use gatehouse_tests::*;
use serde_json::Value;

const MANY: usize = 2500;

/// Asserts every id once and, for the N-layer, ascending order.
fn assert_complete(seen: &[String], expected: &BTreeSet<String>, what: &str) {
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "{what}: duplicate ids across pages");
    assert_eq!(&unique, expected, "{what}: not every id was seen");
    let mut ordered = seen.to_vec();
    ordered.sort();
    assert!(ordered == seen, "{what}: N-layer lists are ordered by primary key");
}

both!(walks_2500_services_page_by_page, |gw| async move {
    let created: Vec<Value> = futures::stream::iter(0..MANY)
        .map(|i| {
            let gw = &gw;
            async move {
                gw.post_json("/services", &json!({"name": format!("svc-{i:04}"), "host": "example.com"}))
                    .await
                    .expect(201)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let expected: BTreeSet<String> = ids(&created).into_iter().collect();
    assert_eq!(expected.len(), MANY);

    // Default size is 100; `next` is absolute and followable verbatim.
    let first = gw.get("/services").await.expect(200);
    assert_eq!(data(&first).len(), 100);
    assert!(first.get("total").is_none(), "{}", first["total"]);
    assert!(first["offset"].is_string(), "offset on a non-last page");
    let next = first["next"].as_str().unwrap_or_else(|| panic!("no next on page 1"));
    assert!(
        next.starts_with(&format!("{}/services?", gw.base)) && next.contains("offset="),
        "next must be an absolute URL with an offset: {next}"
    );
    let pages = gw.pages("/services").await;
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    assert_complete(&seen, &expected, "size=default via next");
    assert_eq!(pages.len(), MANY / 100, "100 per page");
    let last = pages.last().unwrap();
    assert_eq!(last["next"], Value::Null);
    assert!(last.get("offset").is_none(), "no offset on the last page");

    // Pages of 1000 by following next.
    let pages = gw.pages("/services?size=1000").await;
    assert_eq!(data(&pages[0]).len(), 1000);
    for p in &pages {
        assert!(data(p).len() <= 1000);
    }
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    assert_complete(&seen, &expected, "size=1000 via next");

    // Pages of 1000 by passing the offset token back with an explicit size.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut offset: Option<String> = None;
    loop {
        let path = match &offset {
            None => "/services?size=1000".to_owned(),
            Some(o) => format!("/services?size=1000&offset={}", enc(o)),
        };
        let page = gw.get(&path).await.expect(200);
        let items = data(&page);
        sizes.push(items.len());
        seen.extend(ids(&items));
        match page.get("offset").and_then(Value::as_str) {
            Some(o) => offset = Some(o.to_owned()),
            None => break,
        }
        assert!(sizes.len() < 10, "offset walk does not end");
    }
    assert_eq!(sizes, vec![1000, 1000, 500]);
    assert_complete(&seen, &expected, "size=1000 via offset");

    // Pages of 100 by following next, from an explicit size.
    let pages = gw.pages("/services?size=100").await;
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    assert_complete(&seen, &expected, "size=100 via next");

    // Above the maximum is clamped.
    let clamped = gw.get("/services?size=5000").await.expect(200);
    assert_eq!(data(&clamped).len(), 1000);
});

both!(invalid_size_and_offset_are_400, |gw| async move {
    for i in 0..3 {
        gw.create_service(&format!("s{i}")).await;
    }
    gw.create_upstream("up.xyz").await;
    let before = gw.snapshot().await;
    for path in [
        "/services?size=abc",
        "/services?size=-1",
        "/routes?size=x",
        "/consumers?size=-5",
        "/plugins?size=abc",
        "/upstreams?size=-1",
    ] {
        let r = gw.get(path).await;
        r.assert_status(400);
    }
    for bad in ["!!!", "bm90LWpzb24"] {
        for coll in ["/services", "/consumers", "/routes", "/certificates", "/snis"] {
            let e = gw.get(&format!("{coll}?offset={bad}")).await.n_error(400, 7, "invalid offset");
            let msg = e["message"].as_str().unwrap();
            assert!(msg.starts_with(&format!("'{bad}' is not a valid offset")), "{coll}: {msg}");
        }
    }
    for coll in ["/plugins", "/upstreams"] {
        let r = gw.get(&format!("{coll}?offset=!!!")).await;
        r.assert_client_error();
    }
    gw.assert_unchanged(&before).await;
});

both!(o_layer_lists_have_total_and_absolute_next, |gw| async move {
    let upstreams: Vec<Value> = futures::stream::iter(0..25)
        .map(|i| {
            let gw = &gw;
            async move { gw.create_upstream(&format!("up{i:02}.xyz")).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let expected: BTreeSet<String> = ids(&upstreams).into_iter().collect();

    let first = gw.get("/upstreams?size=10").await.expect(200);
    assert_eq!(first["total"], json!(25));
    assert_eq!(data(&first).len(), 10);
    assert!(first["offset"].is_string(), "{first}");
    let next = first["next"].as_str().unwrap();
    assert!(next.starts_with(&format!("{}/upstreams?", gw.base)), "next must be absolute: {next}");

    let pages = gw.pages("/upstreams?size=10").await;
    assert_eq!(pages.iter().map(|p| data(p).len()).collect::<Vec<_>>(), vec![10, 10, 5]);
    for p in &pages {
        assert_eq!(p["total"], json!(25));
    }
    let last = pages.last().unwrap();
    assert_eq!(last["next"], Value::Null);
    assert!(last.get("offset").is_none(), "{last}");
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 25, "no duplicates");
    assert_eq!(unique, expected);

    // Plugins: default size, then small pages.
    let services: Vec<Value> = futures::stream::iter(0..12)
        .map(|i| {
            let gw = &gw;
            async move { gw.create_service(&format!("svc{i:02}")).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut plugin_ids = BTreeSet::new();
    for s in &services {
        let p = gw.post_json("/plugins", &json!({"name": "key-auth", "service_id": s["id"]})).await.expect(201);
        plugin_ids.insert(id_of(&p));
    }
    let all = gw.get("/plugins").await.expect(200);
    assert_eq!(all["total"], json!(12));
    assert_eq!(all["next"], Value::Null);
    let pages = gw.pages("/plugins?size=5").await;
    assert_eq!(pages.len(), 3);
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    assert_eq!(seen.len(), 12);
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), plugin_ids);
    let none = gw.get("/plugins?name=basic-auth").await.expect(200);
    assert_eq!(none["total"], json!(0));
    assert_eq!(none["data"], json!([]));
    // Filters carry over to the next page.
    // Non-matching rows: one global basic-auth plus six per-service ones.
    gw.post_json("/plugins", &json!({"name": "basic-auth"})).await.expect(201);
    for s in services.iter().take(6) {
        gw.post_json("/plugins", &json!({"name": "basic-auth", "service_id": s["id"]})).await.expect(201);
    }
    let filtered = gw.pages("/plugins?size=5&name=key-auth").await;
    for p in &filtered {
        assert_eq!(p["total"], json!(12), "total counts matching rows only");
        for item in data(p) {
            assert_eq!(item["name"], json!("key-auth"), "filter lost on a later page");
        }
    }
    assert_eq!(filtered.iter().map(|p| data(p).len()).sum::<usize>(), 12);
    assert_eq!(filtered.len(), 3);
});

both!(n_layer_small_collections_paginate, |gw| async move {
    let s = gw.create_service("svc").await;
    let mut route_ids = BTreeSet::new();
    for i in 0..5 {
        route_ids.insert(id_of(&gw.create_route(&id_of(&s), &[&format!("/r{i}")]).await));
    }
    let mut consumer_ids = BTreeSet::new();
    for i in 0..5 {
        consumer_ids.insert(id_of(&gw.create_consumer(&format!("c{i}")).await));
    }
    let (cert, key) = self_signed(&["a.example.com"]);
    let mut cert_ids = BTreeSet::new();
    for i in 0..3 {
        let c = gw
            .post_json(
                "/certificates",
                &json!({"cert": cert, "key": key, "snis": [format!("s{i}a.example.com"), format!("s{i}b.example.com")]}),
            )
            .await
            .expect(201);
        cert_ids.insert(id_of(&c));
    }

    for (path, expected, pages_expected) in [
        ("/services/svc/routes?size=2", &route_ids, 3),
        ("/routes?size=2", &route_ids, 3),
        ("/consumers?size=2", &consumer_ids, 3),
        ("/certificates?size=2", &cert_ids, 2),
    ] {
        let pages = gw.pages(path).await;
        assert_eq!(pages.len(), pages_expected, "{path}");
        let first_next = pages[0]["next"].as_str().unwrap();
        assert!(first_next.starts_with(&gw.base), "{path}: {first_next}");
        let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
        assert_complete(&seen, expected, path);
    }
    let pages = gw.pages("/snis?size=4").await;
    let seen: Vec<String> = pages.iter().flat_map(|p| ids(&data(p))).collect();
    assert_eq!(seen.len(), 6);
    assert_eq!(pages.len(), 2);
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    assert_eq!(seen, sorted_seen);
});

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

both!(offset_token_with_a_non_uuid_key_is_400, |gw| async move {
    for i in 0..3 {
        gw.create_service(&format!("s{i}")).await;
    }
    // base64 of `["not-a-uuid"]`: well-formed Kong-style token whose key is no id.
    let bad = "WyJub3QtYS11dWlkIl0";
    for coll in ["/services", "/consumers", "/routes"] {
        gw.get(&format!("{coll}?offset={bad}")).await.n_error(400, 7, "invalid offset");
    }
});
