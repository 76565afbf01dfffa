//! Readiness probes: `GET /status/ready` on the control plane's Admin API (the database
//! answers and no migration is pending) and on a data plane's status listener (a
//! configuration is loaded). Orchestrators call them without a token or a loopback Host.

use std::time::Duration;

use gatehouse_tests::cluster::{ClusterCert, ControlPlane, DataPlane};
use gatehouse_tests::proxy::{dead_port, Standalone};
use gatehouse_tests::{both, json, Backend, Gateway};
use serde_json::Value;
use sqlx::Connection as _;

fn plain() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("client")
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = plain().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Forgets the newest applied migration, as a store a newer release has not migrated yet.
async fn forget_newest_migration(gw: &Gateway) {
    let sql = "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)";
    match gw.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&gw.db.url).await.expect("connect");
            sqlx::query(sql).execute(&mut c).await.expect("delete");
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&gw.db.url).await.expect("connect");
            sqlx::query(sql).execute(&mut c).await.expect("delete");
        }
    }
}

both!(control_plane_is_ready_until_a_migration_is_pending, |gw| async move {
    let (status, body) = get(&gw.url("/status/ready"), &[]).await;
    assert_eq!((status, body), (200, json!({"ready": true})));
    forget_newest_migration(&gw).await;
    let (status, body) = get(&gw.url("/status/ready"), &[]).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("migrations pending: "), "{body}");
    // Liveness does not depend on it.
    assert_eq!(get(&gw.url("/status"), &[]).await.0, 200);
});

#[tokio::test]
async fn probes_need_no_token_and_no_loopback_host() {
    let gw = Standalone::start_with_env(&[("GATEHOUSE_ADMIN_TOKEN", "s3cret")]).await;
    let pod = [("Host", "10.1.2.3:8001")];
    let (status, body) = get(&format!("{}/status/ready", gw.admin), &pod).await;
    assert_eq!((status, body), (200, json!({"ready": true})));
    assert_eq!(get(&format!("{}/status", gw.admin), &pod).await.0, 200);
    // Everything else still needs the token.
    assert_eq!(get(&format!("{}/services", gw.admin), &pod).await.0, 401);
    assert_eq!(get(&format!("{}/status/ready/x", gw.admin), &pod).await.0, 401);
    let (status, body) = get(&format!("http://127.0.0.1:{}/status/ready", gw.status_port), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
}

#[tokio::test]
async fn a_data_plane_is_ready_once_it_has_a_configuration() {
    let cert = ClusterCert::generate();
    // Nothing listens where it looks for its control plane, and it has no cache.
    let dp = DataPlane::start(&format!("127.0.0.1:{}", dead_port()), &cert, &[]).await;
    let ready_url = dp.status_url.replace("/status", "/status/ready");
    let (status, body) = get(&ready_url, &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["message"], "no configuration loaded yet");

    let db = gatehouse_tests::Database::create(Backend::Sqlite).await;
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    cp.post("/services", &json!({"name": "ready", "url": "http://127.0.0.1:9"})).await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let revision = cp.revision().await;
    assert!(revision > 0);
    dp.wait_revision(revision, Duration::from_secs(20)).await;
    let (status, body) = get(&dp.status_url.replace("/status", "/status/ready"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
}
