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
