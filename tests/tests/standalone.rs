//! `gatehouse-cp standalone`: the embedded data plane is fed over an in-process link, so the
//! process listens only where it was told to, and a cluster listener opened on request uses
//! the configured mTLS like `run`'s.

use std::time::Duration;

use gatehouse_shared::proto::config_sync_client::ConfigSyncClient;
use gatehouse_shared::proto::data_plane_message::Message as DpMsg;
use gatehouse_shared::proto::{DataPlaneMessage, Hello};
use gatehouse_tests::cluster::{ClusterCert, SyncClient};
use gatehouse_tests::proxy::{Standalone, Upstream};
use gatehouse_tests::{free_port, json, listening_ports};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

/// Admin API, proxy (plain and TLS) and the status endpoint: nothing else.
fn configured(gw: &Standalone) -> Vec<u16> {
    let mut ports = vec![gw.admin_port, gw.proxy_port, gw.proxy_tls_port, gw.status_port];
    ports.sort_unstable();
    ports
}

#[tokio::test]
async fn standalone_opens_no_cluster_socket_and_still_syncs() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("embedded").await;
    gw.expose(&up, json!({}), json!({"paths": ["/e"], "strip_path": false})).await;
    gw.sync().await;
    assert_eq!(gw.get("/e").await.echo().path(), "/e");

    let open: Vec<u16> = listening_ports(gw.pid()).into_iter().collect();
    assert_eq!(open, configured(&gw), "the process listens on more than its configured ports");
    let dps = gw.admin_get("/clustering/data-planes").await;
    assert_eq!(dps["data"].as_array().map(Vec::len), Some(1), "the embedded data plane is listed: {dps}");
}

#[tokio::test]
async fn standalone_cluster_listener_requires_the_configured_mtls() {
    let cert = ClusterCert::generate();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let gw = Standalone::start_with_env(&[
        ("GATEHOUSE_CLUSTER_LISTEN", addr.as_str()),
        ("GATEHOUSE_CLUSTER_CERT", cert.cert.to_str().expect("utf-8 path")),
        ("GATEHOUSE_CLUSTER_CERT_KEY", cert.key.to_str().expect("utf-8 path")),
    ])
    .await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.sync().await;

    let mut expected = configured(&gw);
    expected.push(port);
    expected.sort_unstable();
    assert_eq!(listening_ports(gw.pid()).into_iter().collect::<Vec<_>>(), expected);

    // A plaintext client gets no configuration.
    let plain = async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let hello = Hello { node_id: "intruder".into(), ..Hello::default() };
        tx.send(DataPlaneMessage { message: Some(DpMsg::Hello(hello)) }).await.map_err(|e| e.to_string())?;
        let mut inbound = ConfigSyncClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        inbound.message().await.map_err(|e| e.to_string())
    };
    let got = tokio::time::timeout(Duration::from_secs(10), plain).await.expect("the plaintext attempt hangs");
    assert!(got.is_err(), "a plaintext client was served: {got:?}");

    // A holder of the cluster certificate is served, as by `gatehouse-cp run`.
    let target = gw.admin_get("/status").await["config_revision"].as_i64().expect("config_revision");
    let got = SyncClient::new().sync_once(&addr, &cert, target, Duration::from_secs(10)).await.expect("mTLS sync");
    assert_eq!(got.revision, target);
}

/// The store and the data plane's cache hold every credential: owner-only (0700 directories,
/// 0600 files), as created.
#[tokio::test]
async fn secrets_on_disk_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let gw = Standalone::start().await;
    let c = gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post(&format!("/consumers/{}/key-auth", gatehouse_tests::id_of(&c)), json!({"key": "secret-key"})).await;
    gw.sync().await;
    let cache = gw.dir().join("prefix/dp-cache");
    let current = cache.join("config.json");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&current).is_ok_and(|s| s.contains("secret-key")) {
        assert!(started.elapsed() < Duration::from_secs(10), "the cache was not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&gw.dir().join("gh.db")), 0o600, "the SQLite store");
    assert_eq!(mode(&gw.dir().join("prefix")), 0o700, "the prefix");
    assert_eq!(mode(&cache), 0o700, "the cache directory");
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// Reads until the peer closes; `Err` if it is still open after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.map_err(|_| "still open".to_owned())?;
    Ok(got)
}

/// Idle connections and unfinished heads are closed on the header timeout, on the Admin API
/// and on the data plane's status listener; past the bound, a connection is told so.
#[tokio::test]
async fn admin_and_status_connections_time_out_and_are_bounded() {
    use tokio::io::AsyncWriteExt as _;
    let gw = Standalone::start_with_env(&[
        ("GATEHOUSE_CLIENT_HEADER_TIMEOUT_MS", "500"),
        ("GATEHOUSE_ADMIN_MAX_CONNECTIONS", "3"),
    ])
    .await;
    let limit = Duration::from_secs(10);
    for port in [gw.admin_port, gw.status_port] {
        let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        closed_within(&mut idle, limit).await.unwrap_or_else(|e| panic!("port {port}: an idle connection is {e}"));

        let mut partial = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        partial.write_all(b"GET /status HTTP/1.1\r\nHo").await.expect("write");
        closed_within(&mut partial, limit).await.unwrap_or_else(|e| panic!("port {port}: a partial head is {e}"));

        let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        kept.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
        let got = closed_within(&mut kept, limit)
            .await
            .unwrap_or_else(|e| panic!("port {port}: a kept-alive connection is {e}"));
        assert!(got.starts_with(b"HTTP/1.1 200"), "answered before it was closed: {}", String::from_utf8_lossy(&got));
    }

    // Three idle connections fill the Admin API; a fourth is refused in Kong's shape.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", gw.admin_port)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", gw.admin_port)).await.expect("connect");
    let got = closed_within(&mut extra, limit).await.expect("the refused connection is closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.ends_with(r#"{"message":"Too many connections to the Admin API"}"#), "{text}");
    // Once they time out, the Admin API serves again.
    for mut h in held {
        closed_within(&mut h, limit).await.expect("held connections time out");
    }
    gw.admin_get("/status").await;
}

/// `/status` counts the Admin API's connections as they are: open ones, and of those the
/// ones handling a request and the ones waiting for their next.
#[tokio::test]
async fn admin_status_counts_connections_as_they_are() {
    let gw = Standalone::start().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", gw.admin_port)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = gw.admin_get("/status").await;
    let n = |k: &str| s["server"][k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert!(n("connections_active") >= 4, "{s}");
    assert_eq!(n("connections_writing"), 1, "this request: {s}");
    assert_eq!(n("connections_waiting"), n("connections_active") - 1, "{s}");
    drop(held);
}

/// A raw `GET path` to the Admin API with `headers`: (status, headers, body).
async fn admin_raw(gw: &Standalone, path: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut req = client.get(format!("{}{path}", gw.admin));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("admin request");
    let (status, h) = (r.status().as_u16(), r.headers().clone());
    (status, h, r.json().await.unwrap_or(Value::Null))
}

/// Secure defaults beyond Kong 0.14: no page may read the Admin API unless its origin is
/// listed; without a token it answers loopback host names only (DNS rebinding); with one,
/// every request must carry it.
#[tokio::test]
async fn admin_api_secure_defaults() {
    let gw = Standalone::start_with_env(&[("GATEHOUSE_ADMIN_CORS_ORIGINS", "http://ui.test")]).await;
    let (status, _, body) = admin_raw(&gw, "/services", &[("Host", "evil.example")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("evil.example")), "{body}");
    for host in ["localhost", "127.0.0.1:1234", "[::1]"] {
        assert_eq!(admin_raw(&gw, "/services", &[("Host", host)]).await.0, 200, "{host}");
    }
    // The probes answer any Host (a kubelet probes the pod's address), and only them.
    assert_eq!(admin_raw(&gw, "/status", &[("Host", "10.1.2.3:8001")]).await.0, 200);
    let (_, h, _) = admin_raw(&gw, "/", &[("Origin", "http://ui.test")]).await;
    assert_eq!(h.get("access-control-allow-origin").map(|v| v.to_str().unwrap_or_default()), Some("http://ui.test"));
    let (_, h, _) = admin_raw(&gw, "/", &[("Origin", "http://other.test")]).await;
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");

    let gw = Standalone::start_with_env(&[("GATEHOUSE_ADMIN_TOKEN", "s3cret-token")]).await;
    for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0LXRva2Vu")] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let (status, h, body) = admin_raw(&gw, "/consumers", &headers).await;
        assert_eq!((status, body), (401, json!({"message": "Unauthorized"})), "{auth:?}");
        assert!(h.get("www-authenticate").is_some(), "{h:?}");
    }
    let (status, _, _) =
        admin_raw(&gw, "/consumers", &[("Authorization", "Bearer s3cret-token"), ("Host", "admin.example")]).await;
    assert_eq!(status, 200, "with a token, any Host");
    gw.post("/consumers", json!({"username": "through-the-harness"})).await;
}

/// An Admin API reachable from other hosts without authentication does not start, unless
/// `admin_auth = off` says so.
#[tokio::test]
async fn an_exposed_admin_api_needs_a_token_or_an_explicit_off() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let run = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(gatehouse_tests::cp_binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("GATEHOUSE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GATEHOUSE_DATABASE_URL", format!("sqlite://{}", dir.path().join("db").display()))
            .env("GATEHOUSE_PREFIX", dir.path().join("prefix"))
            .env("GATEHOUSE_ADMIN_LISTEN", format!("0.0.0.0:{port}"))
            .env("GATEHOUSE_ADMIN_SSL_LISTEN", "off")
            .env("GATEHOUSE_CLUSTER_LISTEN", "off")
            .envs(extra.iter().copied())
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let out = run(&[]).output().expect("run gatehouse-cp");
    assert!(!out.status.success(), "it started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_token") && err.contains("admin_auth"), "{err}");

    let mut child = run(&[("GATEHOUSE_ADMIN_AUTH", "off")]).spawn().expect("spawn");
    let started = std::time::Instant::now();
    loop {
        let r = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/status")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "exited with admin_auth = off");
        assert!(started.elapsed() < Duration::from_secs(20), "did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
