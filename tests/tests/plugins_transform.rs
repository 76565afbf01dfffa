//! request-transformer and response-transformer end to end (kong-0.14-plugins §6.1, §6.2):
//! what the upstream received, and what the client got back.

use gatehouse_tests::proxy::{Reply, Standalone, Upstream};
use gatehouse_tests::{id_of, json};
use serde_json::Value;

async fn send_body(gw: &Standalone, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", gw.proxy_port);
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    gw.send_raw(&raw).await.unwrap_or_else(|e| panic!("{method} {target}: {e}\nstderr:\n{}", gw.logs()))
}

async fn route_with(gw: &Standalone, up: &Upstream, path: &str, plugin: &str, config: Value) {
    let (_, route) = gw.expose(up, json!({}), json!({"paths": [path], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": plugin, "route_id": id_of(&route), "config": config})).await;
}

#[tokio::test]
async fn request_transformer_headers_query_and_bodies() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("rt-up").await;
    let rules = json!({
        "remove": {"headers": ["x-drop"], "querystring": ["drop"], "body": ["secret"]},
        "rename": {"headers": ["x-old:x-new"], "querystring": ["old:new"], "body": ["before:after"]},
        "replace": {"headers": ["x-rep:replaced"], "querystring": ["rep:R"], "body": ["kind:replaced"]},
        "add": {"headers": ["x-added:yes", "x-rep:not-added"], "querystring": ["added:1"], "body": ["extra:value"]},
        "append": {"headers": ["x-list:two"], "querystring": ["list:b"], "body": ["tags:t2"]}
    });
    route_with(&gw, &up, "/rt", "request-transformer", rules).await;
    route_with(&gw, &up, "/to-get", "request-transformer", json!({"http_method": "GET"})).await;
    route_with(&gw, &up, "/host", "request-transformer", json!({"replace": {"headers": ["host:rewritten.test"]}}))
        .await;
    gw.sync().await;

    let r = gw
        .get_with(
            "/rt?drop=1&old=o&rep=r&list=a&keep=k%20k",
            &[("X-Drop", "1"), ("X-Old", "o"), ("X-Rep", "r"), ("X-List", "one")],
        )
        .await;
    let echo = r.echo();
    assert_eq!(echo.header("x-drop"), None);
    assert_eq!(echo.header("x-old"), None);
    assert_eq!(echo.header("x-new"), Some("o"));
    assert_eq!(echo.header("x-rep"), Some("replaced"));
    assert_eq!(echo.header("x-added"), Some("yes"));
    assert_eq!(echo.header("x-list"), Some("one, two"), "appended as a second field: {:?}", echo.0);
    let query = echo.path().split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default();
    let mut args: Vec<&str> = query.split('&').collect();
    args.sort_unstable();
    assert_eq!(args, ["added=1", "keep=k%20k", "list=a", "list=b", "new=o", "rep=R"], "{query}");

    // JSON body: remove, rename, replace, add, append on top-level keys; values as strings.
    let json_ct = [("Content-Type", "application/json")];
    let body = br#"{"secret":"s","before":1,"kind":"k","tags":"t1"}"#;
    let echo = send_body(&gw, "POST", "/rt", &json_ct, body).await.echo();
    let sent: Value = serde_json::from_str(echo.body()).expect("a JSON body upstream");
    assert_eq!(sent, json!({"after": 1, "kind": "replaced", "extra": "value", "tags": ["t1", "t2"]}));
    assert_eq!(echo.header("content-length"), Some(echo.body().len().to_string().as_str()));
    // Form body.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let echo = send_body(&gw, "POST", "/rt", &form, b"secret=s&before=b&kind=k").await.echo();
    assert_eq!(echo.body(), "after=b&kind=replaced&extra=value&tags=t2");
    // A body that is not JSON is left as it came.
    let echo = send_body(&gw, "POST", "/rt", &json_ct, b"not json").await.echo();
    assert_eq!(echo.body(), "not json");

    // A method change; a form body then also fills the query string of a GET.
    let echo = send_body(&gw, "POST", "/to-get?q=1", &form, b"a=1&b=2").await.echo();
    assert_eq!(echo.method(), "GET");
    assert_eq!(echo.path(), "/to-get?q=1&a=1&b=2");
    // A body longer than goes with a head (one that streams unless a plugin reads it), over
    // HTTP/2: read for the plugin all the same.
    let pad = "x".repeat(20_000);
    let req = gw
        .client()
        .post(gw.proxy_tls_url("/to-get?q=1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("a=1&b=2&pad={pad}"));
    let echo = gw.send("POST /to-get over HTTP/2", req).await.echo();
    assert_eq!((echo.method(), echo.path()), ("GET", format!("/to-get?q=1&a=1&b=2&pad={pad}").as_str()));
    // Replacing `host` changes the upstream Host.
    assert_eq!(gw.get("/host").await.echo().header("host"), Some("rewritten.test"));
}

#[tokio::test]
async fn response_transformer_headers_and_json_bodies() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("resp-up").await;
    let rules = json!({
        "remove": {"headers": ["x-upstream"], "json": ["headers"]},
        "replace": {"headers": ["server:masked"], "json": ["method:verb"]},
        "add": {"headers": ["x-added:1"], "json": ["added:yes", "method:ignored"]},
        "append": {"headers": ["x-added:2"], "json": ["list:x"]}
    });
    route_with(&gw, &up, "/resp", "response-transformer", rules).await;
    route_with(&gw, &up, "/headers-only", "response-transformer", json!({"add": {"headers": ["x-only:1"]}})).await;
    gw.sync().await;

    let r = gw.get("/resp").await;
    r.assert_status(200);
    assert_eq!(r.header("x-upstream"), None);
    assert_eq!(r.header("server"), Some("masked"));
    assert_eq!(r.header_all("x-added"), ["1", "2"]);
    let body = r.json();
    assert_eq!(body["headers"], Value::Null, "removed: {body}");
    assert_eq!(body["method"], "verb");
    assert_eq!(body["added"], "yes");
    assert_eq!(body["list"], json!(["x"]));
    assert_eq!(body["path"], "/resp", "other keys are kept");

    let r = gw.get("/headers-only").await;
    r.echo();
    assert_eq!(r.header("x-only"), Some("1"));
}
