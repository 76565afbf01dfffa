#![allow(clippy::unwrap_used)]
//! The `changes` table: one revision per successful write, 1..N without gaps, rows of a
//! revision contiguous, revision order = commit order, `config_revision` = max revision.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_tests::*;

/// Revisions present in the log, in order, with their rows.
fn by_revision(changes: &[Change]) -> BTreeMap<i64, Vec<Change>> {
    let mut m: BTreeMap<i64, Vec<Change>> = BTreeMap::new();
    for c in changes {
        m.entry(c.revision).or_default().push(c.clone());
    }
    m
}

/// Revisions are exactly 1..=N and each revision's seqs are distinct and consecutive.
#[track_caller]
fn assert_log_shape(changes: &[Change]) -> i64 {
    let revs = by_revision(changes);
    let n = revs.len() as i64;
    assert_eq!(
        revs.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "revisions must be 1..=N with no gaps"
    );
    for (rev, rows) in &revs {
        let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        seqs.sort();
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..first + seqs.len() as i64).collect::<Vec<_>>(),
            "revision {rev}: seqs must be distinct and contiguous"
        );
        for r in rows {
            assert!(r.op == "upsert" || r.op == "delete", "op {:?}", r.op);
        }
    }
    n
}

/// Rows added after revision `after`, as (revision → rows).
fn since(changes: &[Change], after: i64) -> BTreeMap<i64, Vec<Change>> {
    by_revision(changes).into_iter().filter(|(r, _)| *r > after).collect()
}

both!(each_write_adds_one_revision, |gw| async move {
    assert_eq!(gw.revision().await, 0);
    assert_eq!(gw.changes().await, Vec::<Change>::new());

    let s = gw.create_service("svc").await;
    let sid = id_of(&s);
    assert_eq!(gw.revision().await, 1);
    let log = gw.changes().await;
    assert_log_shape(&log);
    let row = log
        .iter()
        .find(|c| c.entity == "services" && c.entity_id == sid)
        .unwrap_or_else(|| panic!("no services row for {sid}: {log:?}"));
    assert_eq!(row.revision, 1);
    assert_eq!(row.op, "upsert");
    let doc = row.doc_json().expect("an upsert carries the document");
    assert_eq!(doc["id"], json!(sid));
    assert_eq!(doc["host"], json!("svc.example.com"));

    gw.patch_json("/services/svc", &json!({"host": "patched.example.com"})).await.expect(200);
    assert_eq!(gw.revision().await, 2);
    let log = gw.changes().await;
    let rev2 = &since(&log, 1)[&2];
    let row = rev2.iter().find(|c| c.entity_id == sid).unwrap();
    assert_eq!((row.entity.as_str(), row.op.as_str()), ("services", "upsert"));
    assert_eq!(row.doc_json().unwrap()["host"], json!("patched.example.com"));

    let r = gw.create_route(&sid, &["/x"]).await;
    let rid = id_of(&r);
    assert_eq!(gw.revision().await, 3);
    gw.put_json(&format!("/routes/{rid}"), &json!({"paths": ["/y"], "service": {"id": sid}})).await.expect(200);
    assert_eq!(gw.revision().await, 4);
    gw.delete(&format!("/routes/{rid}")).await.assert_status(204);
    assert_eq!(gw.revision().await, 5);
    let log = gw.changes().await;
    let rev5 = &since(&log, 4)[&5];
    assert!(rev5.iter().any(|c| c.entity == "routes" && c.entity_id == rid && c.op == "delete"), "{rev5:?}");

    // Rejected or no-op writes add nothing.
    gw.post_json("/services", &json!({})).await.assert_status(400);
    gw.post_json("/services", &json!({"name": "svc", "host": "x.com"})).await.assert_status(409);
    gw.patch_json(&format!("/services/{}", new_id()), &json!({"retries": 1})).await.assert_status(404);
    gw.delete(&format!("/services/{}", new_id())).await.assert_status(204);
    gw.delete(&format!("/routes/{rid}")).await.assert_status(204);
    gw.post_json("/plugins", &json!({"name": "nope"})).await.assert_status(400);
    gw.delete(&format!("/plugins/{}", new_id())).await.assert_status(404);
    assert_eq!(gw.revision().await, 5);
    let log = gw.changes().await;
    assert_eq!(assert_log_shape(&log), 5);
});

both!(o_layer_writes_are_logged, |gw| async move {
    let mut rev = 0;
    let mut step = |expect_entity: &'static str| {
        rev += 1;
        (rev, expect_entity)
    };

    let p = gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    let (r1, e1) = step("plugins");
    gw.patch_json(&format!("/plugins/{}", id_of(&p)), &json!({"enabled": false})).await.expect(200);
    let (r2, e2) = step("plugins");
    let u = gw.create_upstream("up.xyz").await;
    let (r3, e3) = step("upstreams");
    let t = gw.create_target("up.xyz", "1.2.3.4:80", 10).await;
    let (r4, e4) = step("targets");
    gw.delete("/upstreams/up.xyz/targets/1.2.3.4:80").await.assert_status(204);
    let (r5, e5) = step("targets");
    gw.delete(&format!("/plugins/{}", id_of(&p))).await.assert_status(204);
    let (r6, e6) = step("plugins");

    assert_eq!(gw.revision().await, 6);
    let log = gw.changes().await;
    assert_eq!(assert_log_shape(&log), 6);
    let revs = by_revision(&log);
    for (r, entity, id, op) in [
        (r1, e1, id_of(&p), "upsert"),
        (r2, e2, id_of(&p), "upsert"),
        (r3, e3, id_of(&u), "upsert"),
        (r4, e4, id_of(&t), "upsert"),
        (r6, e6, id_of(&p), "delete"),
    ] {
        assert!(
            revs[&r].iter().any(|c| c.entity == entity && c.entity_id == id && c.op == op),
            "revision {r}: expected {op} {entity} {id}, got {:?}",
            revs[&r]
        );
    }
    // Deleting a target inserts a weight-0 entry.
    let zero = revs[&r5]
        .iter()
        .find(|c| c.entity == e5 && c.op == "upsert")
        .unwrap_or_else(|| panic!("revision {r5}: {:?}", revs[&r5]));
    assert_eq!(zero.doc_json().unwrap()["weight"], json!(0));
});

both!(cascade_deletes_are_in_the_same_revision, |gw| async move {
    let s = gw.create_service("svc").await;
    let p1 = gw.post_json("/services/svc/plugins", &json!({"name": "key-auth"})).await.expect(201);
    let p2 = gw.post_json("/services/svc/plugins", &json!({"name": "basic-auth"})).await.expect(201);
    let (cert, key) = self_signed(&["a.example.com"]);
    let c = gw
        .post_json("/certificates", &json!({"cert": cert, "key": key, "snis": ["a.example.com", "b.example.com"]}))
        .await
        .expect(201);
    let u = gw.create_upstream("up.xyz").await;
    let t = gw.create_target("up.xyz", "1.2.3.4:80", 10).await;
    let base = gw.revision().await;
    assert_eq!(base, 6, "one revision per write, also for a certificate with SNIs");

    gw.delete("/services/svc").await.assert_status(204);
    gw.delete(&format!("/certificates/{}", id_of(&c))).await.assert_status(204);
    gw.delete("/upstreams/up.xyz").await.assert_status(204);
    assert_eq!(gw.revision().await, base + 3);

    let log = gw.changes().await;
    assert_log_shape(&log);
    let revs = since(&log, base);
    let deleted = |rev: i64| -> BTreeSet<(String, String)> {
        revs[&rev].iter().filter(|c| c.op == "delete").map(|c| (c.entity.clone(), c.entity_id.clone())).collect()
    };
    let d1 = deleted(base + 1);
    for (entity, id) in [("services", id_of(&s)), ("plugins", id_of(&p1)), ("plugins", id_of(&p2))] {
        assert!(d1.contains(&(entity.to_owned(), id.clone())), "{entity} {id} in {d1:?}");
    }
    let d2 = deleted(base + 2);
    assert!(d2.contains(&("certificates".to_owned(), id_of(&c))), "{d2:?}");
    let snis_deleted = d2.iter().filter(|(e, _)| e == "snis").count();
    assert_eq!(snis_deleted, 2, "{d2:?}");
    let d3 = deleted(base + 3);
    assert!(d3.contains(&("upstreams".to_owned(), id_of(&u))), "{d3:?}");
    assert!(d3.contains(&("targets".to_owned(), id_of(&t))), "{d3:?}");
});

both!(concurrent_writers_get_gapless_ordered_revisions, |gw| async move {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 25;
    let writers = (0..WRITERS).map(|w| {
        let gw = &gw;
        async move {
            let mut created = Vec::new();
            for i in 0..PER_WRITER {
                let name = format!("w{w}-s{i}");
                let s = gw
                    .post_json("/services", &json!({"name": name, "host": format!("{name}.example.com")}))
                    .await
                    .expect(201);
                gw.patch_json(
                    &format!("/services/{}", id_of(&s)),
                    &json!({"host": format!("{name}.patched.example.com")}),
                )
                .await
                .expect(200);
                created.push((id_of(&s), name));
            }
            created
        }
    });
    let per_writer: Vec<Vec<(String, String)>> = futures::future::join_all(writers).await;

    let total = (WRITERS * PER_WRITER * 2) as i64;
    let log = gw.changes().await;
    let n = assert_log_shape(&log);
    assert_eq!(n, total, "one revision per write");
    assert_eq!(gw.revision().await, total, "config_revision = max revision");

    let mut rows_by_entity: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for c in &log {
        rows_by_entity.entry(c.entity_id.as_str()).or_default().push(c);
    }
    for (w, writes) in per_writer.iter().enumerate() {
        let mut last_rev = 0;
        for (id, name) in writes {
            let rows = &rows_by_entity[id.as_str()];
            assert_eq!(rows.len(), 2, "writer {w}, {name}: {rows:?}");
            let (create, update) = (rows[0], rows[1]);
            assert!(create.revision < update.revision, "{name}: {rows:?}");
            assert_eq!(
                create.doc_json().unwrap()["host"],
                json!(format!("{name}.example.com")),
                "{name}: the first revision is the create"
            );
            assert_eq!(
                update.doc_json().unwrap()["host"],
                json!(format!("{name}.patched.example.com")),
                "{name}: the second revision is the update"
            );
            assert!(
                create.revision > last_rev,
                "writer {w}: {name} was written after its previous write but got an older revision"
            );
            last_rev = update.revision;
        }
    }
});
