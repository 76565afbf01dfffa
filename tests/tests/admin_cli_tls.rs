#![allow(clippy::unwrap_used)]
//! The `gatehouse-cp` CLI (`migrations status|up`, `run` on an un-migrated database),
//! the HTTPS Admin API listener, and persistence across restarts.

use std::time::Duration;

use gatehouse_tests::*;

per_backend!(migrations_status_and_up, |backend| async move {
    let db = Database::create(backend).await;
    let minute = Duration::from_secs(60);
    let mut before_up = None;
    if backend == Backend::Postgres {
        let out = cli(&db, &["migrations", "status"], minute).await;
        assert!(out.success, "`migrations status` on an empty database: {out:?}");
        assert!(out.all().to_lowercase().contains("pending"), "status before `up` lists pending migrations: {out:?}");
        before_up = Some(out.all());
    }
    let up = cli(&db, &["migrations", "up"], minute).await;
    assert!(up.success, "`migrations up`: {up:?}");
    let status = cli(&db, &["migrations", "status"], minute).await;
    assert!(status.success, "`migrations status`: {status:?}");
    assert!(status.all().to_lowercase().contains("applied"), "status after `up` lists applied migrations: {status:?}");
    if let Some(before) = before_up {
        assert_ne!(before, status.all(), "status must change after `up`");
    }
    // Idempotent.
    let again = cli(&db, &["migrations", "up"], minute).await;
    assert!(again.success, "second `migrations up`: {again:?}");

    // And the gateway runs on it.
    let gw = Gateway::start_on(db, Options::default()).await;
    gw.create_consumer("bob").await;
    assert_eq!(gw.revision().await, 1);
});

#[tokio::test]
async fn run_refuses_an_unmigrated_postgres() {
    let db = Database::create(Backend::Postgres).await;
    let out = cli(&db, &["run"], Duration::from_secs(20)).await;
    assert!(out.code.is_some(), "`run` on an un-migrated Postgres must exit on its own: {out:?}");
    assert!(!out.success, "`run` must fail without migrations: {out:?}");
    assert!(out.all().contains("migrations up"), "the error must tell the user to run `migrations up`: {out:?}");
}

#[tokio::test]
async fn sqlite_migrates_itself_on_run() {
    let gw = Gateway::start(Backend::Sqlite).await;
    gw.create_service("svc").await;
    let status = cli(&gw.db, &["migrations", "status"], Duration::from_secs(60)).await;
    assert!(status.success, "{status:?}");
    assert!(status.all().to_lowercase().contains("applied"), "{status:?}");
}

per_backend!(https_admin_listener, |backend| async move {
    let gw = Gateway::start_with(backend, Options { admin_ssl: true }).await;
    let https = gw.https_base.clone().unwrap();
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).no_proxy().build().unwrap();

    let root = client.get(format!("{https}/")).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 200);
    let body: serde_json::Value = root.json().await.unwrap();
    assert_eq!(body["version"], json!("0.14.1"));

    let created = client.post(format!("{https}/consumers")).json(&json!({"username": "tls-bob"})).send().await.unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // Same store behind both listeners.
    gw.get("/consumers/tls-bob").await.assert_status(200);

    // `next` is built from the request: https scheme and the TLS port.
    gw.create_consumer("plain-alice").await;
    let page: serde_json::Value =
        client.get(format!("{https}/consumers?size=1")).send().await.unwrap().json().await.unwrap();
    let next = page["next"].as_str().unwrap_or_else(|| panic!("no next: {page}"));
    assert!(next.starts_with(&format!("{https}/consumers?")), "{next}");

    // The served certificate is one the gateway generated into its prefix.
    let probe = reqwest::Client::builder().danger_accept_invalid_certs(true).tls_info(true).no_proxy().build().unwrap();
    let resp = probe.get(format!("{https}/status")).send().await.unwrap();
    let served = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("peer certificate");
    let generated = pem_certificates_under(&gw.prefix());
    assert!(
        generated.contains(&served),
        "the admin TLS certificate must be the one generated under GATEHOUSE_PREFIX ({} certificate(s) found there)",
        generated.len()
    );

    // The certificate is self-signed: a verifying client refuses it.
    let strict = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(strict.get(format!("{https}/")).send().await.is_err(), "a self-signed admin certificate must not verify");
    // Plain HTTP keeps working.
    gw.get("/").await.assert_status(200);
});

per_backend!(restart_keeps_configuration_and_revision, |backend| async move {
    let mut gw = Gateway::start(backend).await;
    let s = gw.create_service("svc").await;
    gw.create_route(&id_of(&s), &["/x"]).await;
    gw.post_json("/plugins", &json!({"name": "key-auth"})).await.expect(201);
    assert_eq!(gw.revision().await, 3);

    gw.restart().await;
    assert_eq!(gw.get("/services/svc").await.expect(200), s);
    assert_eq!(gw.list_all("/routes").await.len(), 1);
    assert_eq!(gw.get("/plugins").await.expect(200)["total"], json!(1));
    assert_eq!(gw.revision().await, 3);
    gw.create_consumer("bob").await;
    assert_eq!(gw.revision().await, 4);
});

/// DER of every PEM certificate in files under `dir` (recursively).
fn pem_certificates_under(dir: &std::path::Path) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let mut rest = text.as_str();
            while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
                let after = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
                let Some(end) = after.find("-----END CERTIFICATE-----") else { break };
                let b64: String = after[..end].chars().filter(|c| !c.is_whitespace()).collect();
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    out.push(der);
                }
                rest = &after[end..];
            }
        }
    }
    out
}

#[tokio::test]
async fn two_control_planes_share_one_postgres() {
    let a = Gateway::start(Backend::Postgres).await;
    let b = Gateway::start_on(a.db.handle(), Options::default()).await;

    // What one writes, the other reads.
    let s = a.create_service("from-a").await;
    assert_eq!(b.get("/services/from-a").await.expect(200), s);
    b.create_consumer("from-b").await;
    a.get("/consumers/from-b").await.assert_status(200);

    // Concurrent writes through both keep revisions gapless and in commit order.
    tokio::join!(
        write_consumers(&a, "a1"),
        write_consumers(&a, "a2"),
        write_consumers(&b, "b1"),
        write_consumers(&b, "b2")
    );
    let expected = 2 + 80;
    let log = a.changes().await;
    let revs: std::collections::BTreeSet<i64> = log.iter().map(|c| c.revision).collect();
    assert_eq!(revs.into_iter().collect::<Vec<_>>(), (1..=expected).collect::<Vec<_>>());
    // Both report the head revision (allowing a replica a moment to catch up).
    for cp in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rev = cp.revision().await;
            if rev == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "config_revision {rev} never reached the head revision {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(a.list_all("/consumers").await.len(), 81);
    drop(b);
}

async fn write_consumers(cp: &Gateway, tag: &str) {
    for i in 0..20 {
        cp.create_consumer(&format!("{tag}-{i}")).await;
    }
}
