//! Whatever a client sends the proxy on an HTTP/1 connection: the head parser, framing
//! refusals, chunked bodies, routing, upstream URI building (a route
//! with strip_path and a regex, to a service with a path) — never a panic, and whatever comes
//! back starts as an HTTP/1 answer. The service's upstream is a closed loopback port, so a
//! routed request ends in a quick 502; time is paused, so timeouts cost nothing.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse_data_plane::balancer::Registry;
use gatehouse_data_plane::compiled::Compiled;
use gatehouse_data_plane::live::Live;
use gatehouse_data_plane::message::Conn;
use gatehouse_data_plane::proxy::{fuzzing, Connector, Proxy};
use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn change(entity: &str, doc: serde_json::Value) -> Change {
    Change {
        entity: entity.into(),
        id: doc["id"].as_str().unwrap_or_default().into(),
        document: doc.to_string(),
        deleted: false,
    }
}

fn proxy() -> Arc<Proxy> {
    let mut set = ConfigSet::new("fuzz", 1);
    set.apply(&[
        change(
            "services",
            json!({"id": "s1", "protocol": "http", "host": "127.0.0.1", "port": 1, "path": "/base",
                   "retries": 1, "connect_timeout": 100, "read_timeout": 100, "write_timeout": 100}),
        ),
        change(
            "routes",
            json!({"id": "r1", "paths": ["/a", "/r/(?<n>\\d+)"], "strip_path": true, "service": {"id": "s1"},
                   "protocols": ["http", "https"], "methods": ["GET", "POST", "PUT"]}),
        ),
        change("routes", json!({"id": "r2", "hosts": ["*.example.test"], "service": {"id": "s1"}})),
    ])
    .expect("the fuzz configuration applies");
    let balancers = Registry::default();
    let compiled = Compiled::compile(Arc::new(set), &HashSet::new(), &balancers).expect("and compiles");
    let live = Arc::new(Live::new(balancers));
    live.store(compiled);
    Arc::new(Proxy { live, connector: Connector::new(), trusted: Vec::new(), headers: Default::default() })
}

fuzz_target!(|data: &[u8]| {
    static PROXY: OnceLock<Arc<Proxy>> = OnceLock::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
    let Ok(runtime) = runtime else { return };
    runtime.block_on(async {
        let proxy = PROXY.get_or_init(proxy).clone();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let conn = Arc::new(Conn::new("127.0.0.1:40000".parse().expect("an address"), false, 8000));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let served = tokio::spawn(fuzzing::serve_http1(proxy, conn, server, shutdown, Duration::from_secs(5)));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut out)).await;
        drop(client);
        if let Err(e) = served.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1."),
            "not an HTTP/1 answer: {:?}",
            String::from_utf8_lossy(&out)
        );
    });
});
