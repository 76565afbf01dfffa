//! Control plane → data plane sync, end to end: real `gatehouse-cp` and `gatehouse-dp`
//! processes over mTLS, on a real Postgres (and SQLite where the backend does not matter).

use std::time::Duration;

use gatehouse_tests::cluster::{ClusterCert, ControlPlane, DataPlane, SyncClient};
use gatehouse_tests::{json, migrate, Backend, Database};

const WITHIN: Duration = Duration::from_secs(15);

async fn postgres() -> Database {
    let db = Database::create(Backend::Postgres).await;
    migrate(&db).await;
    db
}

#[tokio::test]
async fn new_data_plane_gets_a_snapshot_then_follows_writes() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let head = cp.create_services(3, "snap").await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let status = dp.wait_revision(head, WITHIN).await;
    assert_eq!(status["entities"], 3);
    assert_eq!(status["sync"]["snapshots_applied"], 1);
    assert_eq!(status["control_plane_connected"], true);

    let svc = cp.post("/services", &json!({"name": "later", "host": "example.org"})).await;
    let head = cp.revision().await;
    let status = dp.wait_revision(head, WITHIN).await;
    assert_eq!(status["entities"], 4);
    assert_eq!(status["sync"]["snapshots_applied"], 1, "a write travels as a delta");

    cp.delete(&format!("/services/{}", svc["id"].as_str().unwrap_or_default())).await;
    let status = dp.wait_revision(cp.revision().await, WITHIN).await;
    assert_eq!(status["entities"], 3);

    // The control plane lists the data plane with its revision and no lag.
    let started = std::time::Instant::now();
    loop {
        let dps = cp.data_planes().await;
        if dps.len() == 1 && dps[0]["config_revision"] == cp.revision().await && dps[0]["sync_status"] == "normal" {
            assert_eq!(dps[0]["revision_lag"], 0);
            assert_eq!(dps[0]["id"], status["node_id"]);
            break;
        }
        assert!(started.elapsed() < WITHIN, "data plane never shown as in sync: {dps:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn works_on_sqlite_too() {
    let db = Database::create(Backend::Sqlite).await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let head = cp.create_services(2, "lite").await;
    let status = dp.wait_revision(head, WITHIN).await;
    assert_eq!(status["entities"], 2);
}

#[tokio::test]
async fn offline_data_plane_resumes_with_deltas_only() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    cp.create_services(1, "first").await;
    let mut dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let revision = cp.revision().await;
    dp.wait_revision(revision, WITHIN).await;
    // The cache writer batches writes: let it catch up before the process goes away.
    dp.wait_cached(revision, WITHIN).await;
    dp.kill();

    let head = cp.create_services(500, "offline").await;
    dp.restart().await;
    let status = dp.wait_revision(head, Duration::from_secs(30)).await;
    assert_eq!(status["entities"], 501);
    assert_eq!(status["sync"]["snapshots_applied"], 0, "no snapshot after a resume: {status}");
    assert!(status["sync"]["deltas_applied"].as_u64().unwrap_or(0) >= 1);
}

#[tokio::test]
async fn data_plane_behind_the_retained_log_gets_a_snapshot() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[("GATEHOUSE_CLUSTER_CHANGELOG_RETENTION", "10")]).await;
    cp.create_services(1, "first").await;
    let mut dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let revision = cp.revision().await;
    dp.wait_revision(revision, WITHIN).await;
    // The cache writer batches writes: let it catch up before the process goes away.
    dp.wait_cached(revision, WITHIN).await;
    dp.kill();

    let head = cp.create_services(60, "gone").await;
    // Wait for compaction to pass the data plane's revision.
    let started = std::time::Instant::now();
    loop {
        let rows = db.changes().await;
        if rows.first().is_some_and(|c| c.revision > 2) {
            break;
        }
        assert!(started.elapsed() < WITHIN, "the change log was never compacted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dp.restart().await;
    let status = dp.wait_revision(head, WITHIN).await;
    assert_eq!(status["entities"], 61);
    assert_eq!(status["sync"]["snapshots_applied"], 1, "{status}");
}

#[tokio::test]
async fn a_write_on_one_replica_reaches_a_data_plane_on_another() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp1 = ControlPlane::start(&db, &cert, &[]).await;
    let cp2 = ControlPlane::start(&db, &cert, &[]).await;
    let dp = DataPlane::start(&cp2.cluster_addr(), &cert, &[]).await;
    dp.wait_connected(true, WITHIN).await;
    let head = cp1.create_services(5, "replica").await;
    let status = dp.wait_revision(head, WITHIN).await;
    assert_eq!(status["entities"], 5);
    // Both replicas show the data plane.
    let started = std::time::Instant::now();
    while cp1.data_planes().await.first().map(|d| d["config_revision"].clone()) != Some(json!(head)) {
        assert!(started.elapsed() < WITHIN, "replica 1 does not show the data plane at {head}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn data_plane_keeps_serving_without_its_control_plane_and_restarts_from_cache() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let mut cp = ControlPlane::start(&db, &cert, &[]).await;
    let head = cp.create_services(4, "kept").await;
    let mut dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    dp.wait_revision(head, WITHIN).await;
    dp.wait_cached(head, WITHIN).await;

    cp.kill();
    dp.wait_connected(false, WITHIN).await;
    let status = dp.status().await;
    assert_eq!(status["config_revision"], head, "the data plane keeps its configuration");
    assert_eq!(status["entities"], 4);

    // Restarted while the control plane is still down: it serves the cached revision.
    dp.restart().await;
    let status = dp.status().await;
    assert_eq!(status["config_revision"], head);
    assert_eq!(status["entities"], 4);
    assert_eq!(status["control_plane_connected"], false);

    // And it resumes when the control plane is back.
    cp.restart().await;
    dp.wait_connected(true, WITHIN).await;
    let head = cp.create_services(1, "back").await;
    dp.wait_revision(head, WITHIN).await;
}

/// A delta is appended to the cache rather than rewriting the whole configuration; a damaged
/// delta at the cache's end is discarded on restart and the revision before it serves.
#[tokio::test]
async fn a_damaged_delta_at_the_end_of_the_cache_is_discarded() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let mut cp = ControlPlane::start(&db, &cert, &[]).await;
    let first = cp.create_services(1, "gen1").await;
    let mut dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    dp.wait_revision(first, WITHIN).await;
    dp.wait_cached(first, WITHIN).await;
    let image = std::fs::read(dp.cache_dir.join("config.json")).expect("the image");
    let second = cp.create_services(1, "gen2").await;
    dp.wait_revision(second, WITHIN).await;
    dp.wait_cached(second, WITHIN).await;
    let generation = std::fs::read(dp.cache_dir.join("config.json")).expect("the cache");
    assert!(generation.len() > image.len() && generation.starts_with(&image), "the delta is appended to the image");
    cp.kill();
    dp.kill();

    // Whole, the deltas bring a restart to the newest revision.
    dp.restart().await;
    assert_eq!(dp.status().await["config_revision"], second);
    assert_eq!(dp.status().await["config_cache_revision"], second);
    dp.kill();
    let cache = dp.cache_dir.join("config.json");
    let mut bytes = std::fs::read(&cache).expect("the cache");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&cache, bytes).expect("damage the delta");
    dp.restart().await;
    let status = dp.status().await;
    assert_eq!(status["config_revision"], first, "the image's revision serves: {status}");
    assert_eq!(status["entities"], 1);
}

#[tokio::test]
async fn a_data_plane_without_the_cluster_certificate_is_refused() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let stranger = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    cp.create_services(1, "secret").await;
    let dp = DataPlane::start(&cp.cluster_addr(), &stranger, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = dp.status().await;
    assert_eq!(status["control_plane_connected"], false);
    assert_eq!(status["config_revision"], 0);
    assert_eq!(status["entities"], 0);
    assert!(cp.data_planes().await.is_empty());

    // The in-test client with the wrong certificate cannot open a stream either.
    let mut client = SyncClient::new();
    assert!(client.sync_once(&cp.cluster_addr(), &stranger, 1, Duration::from_secs(3)).await.is_err());
}

#[tokio::test]
async fn a_refused_batch_keeps_the_last_good_revision_and_the_control_plane_shows_it() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let good = cp.create_services(1, "ok").await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[("GATEHOUSE_PLUGINS", "key-auth")]).await;
    dp.wait_revision(good, WITHIN).await;

    let plugin = cp.post("/plugins", &json!({"name": "basic-auth"})).await;
    let bad = cp.revision().await;
    let started = std::time::Instant::now();
    loop {
        let dps = cp.data_planes().await;
        if dps.first().is_some_and(|d| d["sync_status"] == "nack") {
            assert_eq!(dps[0]["config_revision"], good);
            assert_eq!(dps[0]["revision_lag"], bad - good);
            assert_eq!(dps[0]["last_error"]["entity"], "plugins");
            assert_eq!(dps[0]["last_error"]["entity_id"], plugin["id"]);
            break;
        }
        assert!(started.elapsed() < WITHIN, "NACK never shown: {dps:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = dp.status().await;
    assert_eq!(status["config_revision"], good, "still serving the last good revision");
    assert!(status["sync"]["nacks_sent"].as_u64().unwrap_or(0) >= 1);

    // Removing the offending plugin repairs the data plane: it jumps past the bad revision.
    cp.delete(&format!("/plugins/{}", plugin["id"].as_str().unwrap_or_default())).await;
    let fixed = cp.revision().await;
    let status = dp.wait_revision(fixed, WITHIN).await;
    assert_eq!(status["entities"], 1);
}

#[tokio::test]
async fn fifty_data_planes_resume_without_snapshots_after_a_control_plane_restart() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let mut cp = ControlPlane::start(&db, &cert, &[]).await;
    let head = cp.create_services(20, "fleet").await;
    let addr = cp.cluster_addr();
    let mut clients: Vec<SyncClient> = (0..50).map(|_| SyncClient::new()).collect();
    for c in clients.iter_mut() {
        let got = c.sync_once(&addr, &cert, head, WITHIN).await.expect("first sync");
        assert!(got.snapshot_chunks >= 1, "a new data plane gets a snapshot");
        assert_eq!(got.revision, head);
    }
    cp.restart().await;
    let resumed = futures::future::join_all(clients.iter_mut().map(|c| {
        let addr = addr.clone();
        let cert = &cert;
        async move { c.sync_once(&addr, cert, head, WITHIN).await }
    }))
    .await;
    for got in resumed {
        let got = got.expect("resume after restart");
        assert_eq!(got.snapshot_chunks, 0, "resumed without a snapshot: {got:?}");
        assert_eq!(got.up_to_date, 1);
        assert_eq!(got.revision, head);
    }
}

/// Writes a certificate signed by `ca` for the cluster name, returning (cert path, key path).
fn issue(dir: &std::path::Path, name: &str, ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["gatehouse-cluster".to_string()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca, ca_key).expect("sign");
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path.display().to_string(), key_path.display().to_string())
}

fn certificate_authority(dir: &std::path::Path, name: &str) -> (rcgen::Certificate, rcgen::KeyPair, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let key = rcgen::KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("ca cert");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).expect("write ca");
    (cert, key, path.display().to_string())
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn pki_mode_verifies_data_planes_against_the_ca() {
    let db = postgres().await;
    let dir = tempfile::tempdir().expect("dir");
    let (ca, ca_key, ca_path) = certificate_authority(dir.path(), "cluster-ca");
    let (cp_cert, cp_key) = issue(dir.path(), "cp", &ca, &ca_key);
    let (dp_cert, dp_key) = issue(dir.path(), "dp", &ca, &ca_key);
    let (rogue_ca, rogue_key, _) = certificate_authority(dir.path(), "rogue-ca");
    let (rogue_cert, rogue_key_path) = issue(dir.path(), "rogue", &rogue_ca, &rogue_key);
    let unused = ClusterCert::generate();
    let pki = |cert: &str, key: &str| {
        vec![
            ("GATEHOUSE_CLUSTER_MTLS".to_string(), "pki".to_string()),
            ("GATEHOUSE_CLUSTER_CA_CERT".to_string(), ca_path.clone()),
            ("GATEHOUSE_CLUSTER_CERT".to_string(), cert.to_string()),
            ("GATEHOUSE_CLUSTER_CERT_KEY".to_string(), key.to_string()),
        ]
    };
    let cp_env = pki(&cp_cert, &cp_key);
    let cp = ControlPlane::start(&db, &unused, &refs(&cp_env)).await;
    let head = cp.create_services(2, "pki").await;

    let dp_env = pki(&dp_cert, &dp_key);
    let dp = DataPlane::start(&cp.cluster_addr(), &unused, &refs(&dp_env)).await;
    let status = dp.wait_revision(head, WITHIN).await;
    assert_eq!(status["entities"], 2);

    let rogue_env = pki(&rogue_cert, &rogue_key_path);
    let rogue = DataPlane::start(&cp.cluster_addr(), &unused, &refs(&rogue_env)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = rogue.status().await;
    assert_eq!(status["control_plane_connected"], false, "a certificate from another CA is refused");
    assert_eq!(status["config_revision"], 0);
    assert_eq!(cp.data_planes().await.len(), 1, "only the verified data plane is known");
}

/// User + system CPU ticks the process has used so far (/proc/<pid>/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// Regression: with SQLite (no LISTEN task) the tail loop once spun on a closed wake-up
/// channel, burning a core and hammering the database while nothing happened.
#[tokio::test]
async fn an_idle_control_plane_with_data_planes_uses_almost_no_cpu() {
    let db = Database::create(Backend::Sqlite).await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let head = cp.create_services(1, "idle").await;
    dp.wait_revision(head, WITHIN).await;
    let pid = cp.pid().expect("control plane pid");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(pid) - before;
    // 3 s of wall time is 300 ticks at 100 Hz; a spinning loop uses nearly all of them.
    assert!(used < 60, "idle control plane used {used} CPU ticks in 3 s");
}

/// The data-plane write path (OAuth2 codes and tokens) is not a way round the Admin API: a
/// write to a configuration entity is refused and changes nothing.
#[tokio::test]
async fn data_planes_cannot_write_configuration() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let before = cp.revision().await;
    let id = "6f0e8c1e-1111-4222-8333-944455556666";
    let change = gatehouse_shared::proto::Change {
        entity: "services".into(),
        id: id.into(),
        document: json!({"id": id, "name": "sneaky", "host": "evil.example", "port": 80}).to_string(),
        deleted: false,
    };
    let result = SyncClient::new().write(&cp.cluster_addr(), &cert, vec![change]).await.expect("write result");
    assert!(result.error.contains("cannot write 'services'"), "{result:?}");
    assert!(!result.spent, "{result:?}");
    assert_eq!(cp.revision().await, before, "nothing was committed");
    assert_eq!(cp.get("/services").await["data"], json!([]));

    // Spending a token that is not there (already spent elsewhere) is told apart.
    let spend = gatehouse_shared::proto::Change {
        entity: "oauth2_tokens".into(),
        id: "6f0e8c1e-1111-4222-8333-944455550000".into(),
        document: String::new(),
        deleted: true,
    };
    let result = SyncClient::new().write(&cp.cluster_addr(), &cert, vec![spend]).await.expect("write result");
    assert!(result.spent && !result.error.is_empty(), "{result:?}");
    assert_eq!(cp.revision().await, before, "nothing was committed");
}

/// rate-limiting's `cluster` policy: three data planes count one limit through the control
/// plane's store. Each data plane learns the others' counts with its next batch, so near the
/// limit it may admit one request per other data plane too many (the documented bound).
#[tokio::test]
async fn cluster_rate_limits_are_shared_by_data_planes() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let up = gatehouse_tests::proxy::Upstream::echo("cluster-limited").await;
    let svc = cp.post("/services", &json!({"host": "127.0.0.1", "port": up.port()})).await;
    cp.post("/routes", &json!({"service": {"id": svc["id"]}, "paths": ["/limited"]})).await;
    cp.post("/plugins", &json!({"name": "rate-limiting", "config": {"day": 30, "limit_by": "ip"}})).await;
    let head = cp.revision().await;
    let mut proxies = Vec::new();
    let mut dps = Vec::new();
    for _ in 0..3 {
        let [port] = gatehouse_tests::free_ports();
        let listen = format!("127.0.0.1:{port}");
        let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[("GATEHOUSE_PROXY_LISTEN", listen.as_str())]).await;
        dp.wait_revision(head, WITHIN).await;
        proxies.push(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        dps.push(dp);
    }
    let mut admitted = 0;
    for i in 0..45 {
        let addr = proxies[i % 3];
        let raw = format!("GET /limited HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", addr.port());
        let r = gatehouse_tests::proxy::exchange(addr, raw.as_bytes()).await.expect("answer");
        match r.status {
            200 => admitted += 1,
            429 => assert_eq!(r.json(), json!({"message": "API rate limit exceeded"})),
            other => panic!("unexpected {other}: {}", r.text()),
        }
        // Longer than a batch's flush and round trip.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!((30..=32).contains(&admitted), "admitted {admitted} of a shared limit of 30");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
    let total: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(value), 0)::BIGINT FROM ratelimit_counters")
        .fetch_one(&pool)
        .await
        .expect("counters");
    assert_eq!(total, admitted, "the store holds every admitted request");
}

/// Kong 3.x's rule: the control plane serves data planes of its major version whose minor
/// version is not newer than its own, and only those that have every plugin the configuration
/// uses. A refused one learns why (its log, its `/status`), and `/clustering/data-planes`
/// shows it `incompatible` with the reason; once the cause goes, it is served.
#[tokio::test]
async fn a_data_plane_the_control_plane_cannot_serve_is_refused_with_the_reason() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let head = cp.create_services(1, "compat").await;

    let ours = env!("CARGO_PKG_VERSION");
    let mut parts = ours.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    for version in [format!("{major}.{}.0", minor + 1), format!("{}.{minor}.0", major + 1), "unknown".to_owned()] {
        let mut client = SyncClient::new();
        client.version = version.clone();
        let refused = client.sync_once(&cp.cluster_addr(), &cert, head, Duration::from_secs(5)).await;
        let error = refused.expect_err(&format!("version {version} was served"));
        assert!(error.contains(&version), "{version}: {error}");
        let dps = cp.data_planes().await;
        let row = dps.iter().find(|d| d["id"] == client.node_id.as_str()).expect("the refused data plane is listed");
        assert_eq!(row["sync_status"], "incompatible", "{row}");
        assert!(row["last_error"]["reason"].as_str().is_some_and(|r| r.contains(&version)), "{row}");
    }
    // The same version, and an older minor one, are served.
    let mut older = vec![ours.to_owned()];
    if minor > 0 {
        older.push(format!("{major}.{}.9", minor - 1));
    }
    for version in older {
        let mut client = SyncClient::new();
        client.version = version.clone();
        let got = client.sync_once(&cp.cluster_addr(), &cert, head, WITHIN).await;
        assert_eq!(got.map(|g| g.revision), Ok(head), "version {version}");
    }

    // A real data plane without a plugin the configuration uses.
    let cors = cp.post("/plugins", &json!({"name": "cors"})).await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[("GATEHOUSE_PLUGINS", "key-auth")]).await;
    let started = std::time::Instant::now();
    let status = loop {
        let status = dp.status().await;
        if status["sync"]["refused"].is_string() {
            break status;
        }
        assert!(started.elapsed() < WITHIN, "never refused: {status}\n{}", dp.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status["sync"]["refused"].as_str().is_some_and(|r| r.contains("cors")), "{status}");
    assert_eq!(status["config_revision"], 0, "nothing was served to it");
    assert!(dp.logs().contains("refuses to serve this data plane"), "{}", dp.logs());
    let dps = cp.data_planes().await;
    let row = dps.iter().find(|d| d["sync_status"] == "incompatible" && d["hostname"] != "in-test");
    let row = row.unwrap_or_else(|| panic!("the data plane is not shown incompatible: {dps:?}"));
    assert!(row["last_error"]["reason"].as_str().is_some_and(|r| r.contains("cors")), "{row}");

    // Without the plugin it is served at its next attempt, and says so.
    cp.delete(&format!("/plugins/{}", cors["id"].as_str().unwrap_or_default())).await;
    let now = cp.revision().await;
    let status = dp.wait_revision(now, WITHIN).await;
    assert_eq!(status["sync"]["refused"], serde_json::Value::Null, "{status}");
}

/// Imports `n` services with a route each (3,000: 6,000 rows, about 1.5 MiB, two snapshot
/// chunks) in one revision with the CLI's declarative import.
async fn import_big(db: &Database, n: usize) {
    let mut text = String::from("_format_version: \"1.1\"\nservices:\n");
    for i in 0..n {
        text.push_str(&format!("- name: big{i}\n  url: http://127.0.0.1:9/\n  routes:\n  - paths: [/big{i}]\n"));
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("big.yml");
    std::fs::write(&file, text).expect("write the file");
    let out =
        gatehouse_tests::cli(db, &["config", "import", &file.display().to_string()], Duration::from_secs(300)).await;
    assert!(out.success, "{}", out.stderr);
}

/// Data planes that go away as their snapshot starts let go of what it holds (the only
/// snapshot permit here, a database transaction): the rows still to read were left waiting
/// for room in a channel no one read, and no data plane got a snapshot again.
#[tokio::test]
async fn data_planes_gone_mid_snapshot_leave_room_for_the_next() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[("GATEHOUSE_CLUSTER_MAX_SNAPSHOTS", "1")]).await;
    // 12,000 rows, four chunks: the first goes into the stream's buffer, the second finds
    // the data plane gone, and more rows than the read's channel holds are still to come.
    import_big(&db, 6_000).await;
    let head = cp.revision().await;
    for _ in 0..3 {
        SyncClient::new().hang_up_after_hello(&cp.cluster_addr(), &cert).await.expect("hello");
    }
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let status = dp.wait_revision(head, Duration::from_secs(30)).await;
    assert_eq!(status["entities"], 12_000, "{status}");
}

/// One revision larger than a change-log read (5,000 rows: here a declarative import of 3,000
/// services with a route each) reaches a connected data plane whole; it used to be sent cut
/// at the read's end, and the rest of the revision never followed.
#[tokio::test]
async fn a_revision_larger_than_one_read_reaches_data_planes_whole() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let before = cp.create_services(1, "first").await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    dp.wait_revision(before, WITHIN).await;
    import_big(&db, 3_000).await;
    let head = cp.revision().await;
    assert_eq!(head, before + 1, "one revision");
    let status = dp.wait_revision(head, Duration::from_secs(60)).await;
    assert_eq!(status["entities"], 6_000, "the whole revision: {status}");

    // A new data plane gets the same configuration as a snapshot streamed from the store in
    // chunks (about 1 MiB each), and routes by the last rows read.
    let fresh = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    let status = fresh.wait_revision(head, Duration::from_secs(60)).await;
    assert_eq!((&status["entities"], &status["sync"]["snapshots_applied"]), (&json!(6_000), &json!(1)), "{status}");
    let answer = reqwest::get(format!("{}/big2999", fresh.proxy_url)).await.expect("proxy answers");
    assert_eq!(answer.status(), 502, "routed to the last service's unreachable upstream, not 404");
    let logs = cp.logs();
    let sent = logs.lines().rfind(|l| l.contains("snapshot sent")).expect("the snapshot is logged");
    // The log's colours: escape sequences run from ESC to the `m` that ends them.
    let sent: String = sent
        .split('\u{1b}')
        .enumerate()
        .map(|(i, part)| if i == 0 { part } else { part.split_once('m').map_or(part, |(_, rest)| rest) })
        .collect();
    let field = |name: &str| -> u64 {
        let at = sent.find(&format!("{name}=")).map(|at| at + name.len() + 1).unwrap_or(sent.len());
        sent[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
    };
    assert!(field("chunks") >= 2 && field("bytes") > 1_000_000, "several chunks, their bytes counted: {sent}");
}

/// Whether process `pid` has `path` open.
fn holds_open(pid: u32, path: &std::path::Path) -> bool {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the data plane's /proc/PID/fd");
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// A plugin deleted after a reconnect lets go of what it holds (here file-log's open file).
/// The sync session used to keep the configuration it started with for its whole life: every
/// plugin instance of it, and every node a later delta replaced, stayed in memory until the
/// next reconnect.
#[tokio::test]
async fn a_plugin_deleted_after_a_reconnect_lets_go_of_its_file() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let mut cp = ControlPlane::start(&db, &cert, &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // As /proc shows it (the temporary directory may be reached through a symlink).
    let log = dir.path().canonicalize().expect("tempdir path").join("requests.log");
    // A port this test bound and let go: nothing listens, the request is a 502, logged like
    // any other.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let service = cp.post("/services", &json!({"name": "logged", "url": format!("http://127.0.0.1:{closed}/")})).await;
    cp.post("/routes", &json!({"paths": ["/logged"], "service": {"id": service["id"]}})).await;
    let plugin = cp.post("/plugins", &json!({"name": "file-log", "config": {"path": log.display().to_string()}})).await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    dp.wait_revision(cp.revision().await, WITHIN).await;
    let pid = dp.pid().expect("the data plane runs");

    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + WITHIN;
    while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
        let response = http.get(format!("{}/logged", dp.proxy_url)).send().await.expect("proxied request");
        assert_eq!(response.status().as_u16(), 502, "the upstream is down");
        assert!(std::time::Instant::now() < deadline, "file-log wrote no line to {}", log.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(holds_open(pid, &log), "file-log keeps its file open between requests");

    // The control plane restarts; the data plane reconnects (its second sync session).
    cp.restart().await;
    let deadline = std::time::Instant::now() + WITHIN;
    while dp.status().await["sync"]["connects"].as_u64() < Some(2) {
        assert!(std::time::Instant::now() < deadline, "the data plane did not reconnect: {}", dp.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cp.delete(&format!("/plugins/{}", plugin["id"].as_str().expect("plugin id"))).await;
    dp.wait_revision(cp.revision().await, WITHIN).await;
    let deadline = std::time::Instant::now() + WITHIN;
    while holds_open(pid, &log) {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted file-log still holds {} open {WITHIN:?} after the data plane applied the delete",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
