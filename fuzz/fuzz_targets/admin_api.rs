//! Any request to the Admin API — method, path with query, content type and body all from the
//! fuzzer — is answered without a panic and without a 5xx: bad input is the client's error.
//! One SQLite store lives for the whole run, so later inputs meet what earlier ones created.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use gatehouse_control_plane::admin::{router, Admin, Node};
use gatehouse_control_plane::store::Store;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    runtime: tokio::runtime::Runtime,
    api: axum::Router,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
        let store = runtime.block_on(async {
            let store = Store::connect(&url).await.expect("store");
            store.migrate_up().await.expect("migrations");
            store
        });
        let api = router(Admin { store, node: std::sync::Arc::new(Node::default()) });
        World { runtime, api, _dir: dir }
    })
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=B"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let [m, t, rest @ ..] = data else { return };
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let (path, body) = rest.split_at(split);
    let Ok(path) = std::str::from_utf8(path) else { return };
    let mut req = http::Request::builder().method(METHODS[usize::from(*m) % METHODS.len()]).uri(format!("/{path}"));
    if let Some(ct) = TYPES[usize::from(*t) % TYPES.len()] {
        req = req.header("content-type", ct);
    }
    let body = body.get(1..).unwrap_or_default().to_vec();
    let Ok(req) = req.body(Body::from(body)) else { return };
    let world = world();
    let res = world.runtime.block_on(world.api.clone().oneshot(req)).expect("infallible");
    assert!(res.status().as_u16() < 500, "{} for {:?}", res.status(), String::from_utf8_lossy(data));
});
