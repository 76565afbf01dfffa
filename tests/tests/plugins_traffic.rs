//! Traffic-control plugins end to end through `gatehouse-cp standalone` and a real upstream:
//! request-termination, ip-restriction, bot-detection, cors, correlation-id and rate-limiting
//! (kong-0.14-plugins §5, §6.3), each checked by what the client gets and what the upstream
//! received.

use gatehouse_tests::proxy::{Reply, Standalone, Upstream};
use gatehouse_tests::{id_of, json};
use serde_json::Value;

/// A gateway with one echo service and a route at `path` carrying `plugin` with `config`.
async fn guarded(path: &str, plugin: &str, config: Value) -> (Standalone, Upstream, Value) {
    guarded_with(&[], path, plugin, config).await
}

async fn guarded_with(env: &[(&str, &str)], path: &str, plugin: &str, config: Value) -> (Standalone, Upstream, Value) {
    let gw = Standalone::start_with_env(env).await;
    let up = Upstream::echo("traffic-up").await;
    let (_, route) = gw.expose(&up, json!({}), json!({"paths": [path], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": plugin, "route_id": id_of(&route), "config": config})).await;
    gw.sync().await;
    (gw, up, route)
}

#[track_caller]
fn assert_message(reply: &Reply, status: u16, message: &str) {
    reply.assert_status(status);
    reply.assert_generated();
    assert_eq!(reply.json(), json!({ "message": message }), "{}", reply.what);
}

// === request-termination ===

#[tokio::test]
async fn request_termination_answers_without_the_upstream() {
    let (gw, up, route) =
        guarded("/closed", "request-termination", json!({"status_code": 403, "message": "Closed"})).await;
    assert_message(&gw.get("/closed").await, 403, "Closed");

    let service = gw.admin_get(&format!("/routes/{}", id_of(&route))).await["service"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r2 = gw.post("/routes", json!({"service": {"id": service}, "paths": ["/body"], "strip_path": false})).await;
    gw.post(
        "/plugins",
        json!({"name": "request-termination", "route_id": id_of(&r2),
               "config": {"status_code": 418, "body": "<teapot/>", "content_type": "application/xml"}}),
    )
    .await;
    let r3 = gw.post("/routes", json!({"service": {"id": service}, "paths": ["/default"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "request-termination", "route_id": id_of(&r3)})).await;
    let r4 = gw.post("/routes", json!({"service": {"id": service}, "paths": ["/silent"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "request-termination", "route_id": id_of(&r4), "config": {"status_code": 410}}))
        .await;
    gw.sync().await;

    let body = gw.get("/body").await;
    body.assert_status(418);
    assert_eq!(body.text(), "<teapot/>");
    assert_eq!(body.header("content-type"), Some("application/xml"));
    assert_eq!(body.header("content-length"), Some("9"));
    assert_message(&gw.get("/default").await, 503, "Service unavailable");
    let silent = gw.get("/silent").await;
    silent.assert_status(410);
    assert_eq!(silent.text(), "", "no message and no default text: an empty body");
    assert_eq!(up.requests(), 0, "nothing reached the upstream");

    // Kong's checks on the configuration.
    for (config, error) in [
        (json!({"status_code": 99}), "status_code must be between 100 .. 599"),
        (json!({"message": "a", "body": "b"}), "message cannot be used with content_type or body"),
        (json!({"content_type": "text/plain"}), "content_type requires a body"),
    ] {
        let (status, got) = gw
            .admin_send(
                reqwest::Method::POST,
                "/plugins",
                Some(&json!({"name": "request-termination", "config": config})),
            )
            .await;
        assert_eq!((status, got), (400, json!({ "config": error })));
    }
}

// === ip-restriction ===

#[tokio::test]
async fn ip_restriction_blacklist_and_whitelist_v4_and_v6() {
    // 127.0.0.1 is trusted, so X-Real-IP stands for clients elsewhere, v4 and v6.
    let env = [("GATEHOUSE_TRUSTED_IPS", "127.0.0.1")];
    let (gw, up, route) =
        guarded_with(&env, "/deny", "ip-restriction", json!({"blacklist": ["10.0.0.0/8", "2001:db8::/32"]})).await;
    let service = gw.admin_get(&format!("/routes/{}", id_of(&route))).await["service"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let allow = gw.post("/routes", json!({"service": {"id": service}, "paths": ["/allow"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "ip-restriction", "route_id": id_of(&allow), "config": {"whitelist": ["192.168.0.0/16", "fd00::1"]}})).await;
    gw.sync().await;

    for ip in ["10.1.2.3", "2001:db8::5"] {
        assert_message(&gw.get_with("/deny", &[("X-Real-IP", ip)]).await, 403, "Your IP address is not allowed");
    }
    for ip in ["11.1.2.3", "2001:db9::5"] {
        gw.get_with("/deny", &[("X-Real-IP", ip)]).await.echo();
    }
    gw.get("/deny").await.echo();
    for ip in ["192.168.4.4", "fd00::1"] {
        gw.get_with("/allow", &[("X-Real-IP", ip)]).await.echo();
    }
    assert_message(&gw.get("/allow").await, 403, "Your IP address is not allowed");
    assert_message(&gw.get_with("/allow", &[("X-Real-IP", "fd00::2")]).await, 403, "Your IP address is not allowed");
    assert_eq!(up.requests(), 5);

    // Kong's checks on the configuration.
    let (status, got) = gw
        .admin_send(
            reqwest::Method::POST,
            "/plugins",
            Some(&json!({"name": "ip-restriction", "config": {"whitelist": ["1.2.3.400"]}})),
        )
        .await;
    assert_eq!((status, got), (400, json!({"config.whitelist": "cannot parse '1.2.3.400': Invalid octet: 400"})));
}

// === bot-detection ===

#[tokio::test]
async fn bot_detection_refuses_bots_and_honours_its_lists() {
    let (gw, up, _) =
        guarded("/bots", "bot-detection", json!({"whitelist": ["Twitterbot"], "blacklist": ["^EvilAgent"]})).await;
    for agent in ["Googlebot/2.1 (+http://www.google.com/bot.html)", "EvilAgent/1.0", "facebookexternalhit/1.1"] {
        let r = gw.get_with("/bots", &[("User-Agent", agent)]).await;
        r.assert_status(403);
        r.assert_generated();
        assert_eq!(r.text(), "", "{agent}: Kong's 403 without a message has an empty body");
    }
    for agent in ["curl/8.0", "Twitterbot/1.0", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"] {
        gw.get_with("/bots", &[("User-Agent", agent)]).await.echo();
    }
    gw.get("/bots").await.echo();
    let twice = gw.get_with("/bots", &[("User-Agent", "a"), ("User-Agent", "b")]).await;
    assert_message(&twice, 400, "Only one User-Agent header allowed");
    assert_eq!(up.requests(), 4);
}

// === cors ===

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let config = json!({"origins": ["http://a\\.test", "https://.*\\.b\\.test"], "methods": ["GET", "POST"],
                        "headers": ["X-One", "X-Two"], "exposed_headers": ["X-Exposed"], "max_age": 3600,
                        "credentials": true});
    let (gw, up, route) = guarded("/cors", "cors", config).await;

    let pre = gw
        .request("OPTIONS", "/cors", &[("Origin", "https://x.b.test"), ("Access-Control-Request-Method", "POST")])
        .await;
    pre.assert_status(204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("https://x.b.test"));
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(pre.header("access-control-allow-headers"), Some("X-One,X-Two"));
    assert_eq!(pre.header("access-control-max-age"), Some("3600"));
    assert_eq!(pre.header("vary"), Some("Origin"));
    assert_eq!(up.requests(), 0, "a preflight is answered by the gateway");

    let actual = gw.get_with("/cors", &[("Origin", "http://a.test")]).await;
    actual.echo();
    assert_eq!(actual.header("access-control-allow-origin"), Some("http://a.test"));
    assert_eq!(actual.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(actual.header("access-control-expose-headers"), Some("X-Exposed"));
    assert_eq!(actual.header("access-control-allow-methods"), None, "only preflights list methods");
    let stranger = gw.get_with("/cors", &[("Origin", "http://evil.test")]).await;
    stranger.echo();
    assert_eq!(stranger.header("access-control-allow-origin"), None);

    // No origins: `*`, which with credentials becomes the request's origin; preflight_continue
    // hands OPTIONS to the upstream untouched; the fields reach a later plugin's refusal too.
    let service = gw.admin_get(&format!("/routes/{}", id_of(&route))).await["service"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let open = gw.post("/routes", json!({"service": {"id": service}, "paths": ["/open"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "cors", "route_id": id_of(&open), "config": {"preflight_continue": true}}))
        .await;
    gw.post("/plugins", json!({"name": "key-auth", "route_id": id_of(&open)})).await;
    gw.sync().await;
    let refused = gw.get_with("/open", &[("Origin", "http://any.test")]).await;
    refused.assert_status(401);
    assert_eq!(refused.header("access-control-allow-origin"), Some("*"), "{:?}", refused.headers);
    let proxied = gw.request("OPTIONS", "/open?apikey=none", &[("Origin", "http://any.test")]).await;
    // key-auth runs on OPTIONS by default and refuses the unknown key; cors added nothing.
    proxied.assert_status(403);
    assert_eq!(proxied.header("access-control-allow-origin"), None);
}

// === correlation-id ===

#[tokio::test]
async fn correlation_id_generators_and_echo() {
    let (gw, _up, route) = guarded(
        "/cid",
        "correlation-id",
        json!({"header_name": "X-Request-Id", "generator": "uuid", "echo_downstream": true}),
    )
    .await;
    let r = gw.get("/cid").await;
    let sent = r.echo().header("x-request-id").map(str::to_owned).expect("the upstream got an id");
    assert!(uuid::Uuid::parse_str(&sent).is_ok(), "a UUID: {sent}");
    assert_eq!(r.header("x-request-id"), Some(sent.as_str()), "echoed downstream");
    let kept = gw.get_with("/cid", &[("X-Request-Id", "mine")]).await;
    assert_eq!(kept.echo().header("x-request-id"), Some("mine"), "an incoming id is kept");
    assert_eq!(kept.header("x-request-id"), Some("mine"));

    let service = gw.admin_get(&format!("/routes/{}", id_of(&route))).await["service"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let counted =
        gw.post("/routes", json!({"service": {"id": service}, "paths": ["/counted"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "correlation-id", "route_id": id_of(&counted)})).await;
    let tracked =
        gw.post("/routes", json!({"service": {"id": service}, "paths": ["/tracked"], "strip_path": false})).await;
    gw.post(
        "/plugins",
        json!({"name": "correlation-id", "route_id": id_of(&tracked), "config": {"generator": "tracker"}}),
    )
    .await;
    gw.sync().await;
    let a = gw.get("/counted").await;
    let id = a.echo().header("kong-request-id").map(str::to_owned).expect("Kong-Request-ID by default");
    assert_eq!(a.header("kong-request-id"), None, "no echo by default");
    let (prefix, n) = id.split_once('#').expect("uuid#counter");
    assert!(uuid::Uuid::parse_str(prefix).is_ok() && n.parse::<u64>().is_ok(), "{id}");
    let t = gw.get("/tracked").await.echo().header("kong-request-id").map(str::to_owned).expect("a tracker id");
    let parts: Vec<&str> = t.split('-').collect();
    assert_eq!(parts.len(), 6, "addr-port-pid-connection-requests-time: {t}");
    assert_eq!(parts[0], "127.0.0.1", "{t}");
    assert_eq!(parts[1], gw.proxy_port.to_string(), "{t}");
    assert_eq!(parts[2], gw.pid().to_string(), "{t}");
    assert!(parts[5].split_once('.').is_some_and(|(_, ms)| ms.len() == 3), "{t}");
}

// === rate-limiting ===

#[tokio::test]
async fn rate_limiting_local_counts_every_period_and_refuses_at_the_limit() {
    let (gw, up, route) = guarded("/limited", "rate-limiting", json!({"hour": 3, "day": 10, "policy": "local"})).await;
    for left in [2, 1, 0] {
        let r = gw.get("/limited").await;
        r.echo();
        assert_eq!(r.header("x-ratelimit-limit-hour"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-hour"), Some(left.to_string().as_str()));
        assert_eq!(r.header("x-ratelimit-limit-day"), Some("10"));
        assert_eq!(r.header("x-ratelimit-remaining-day"), Some((left + 7).to_string().as_str()));
    }
    let refused = gw.get("/limited").await;
    assert_message(&refused, 429, "API rate limit exceeded");
    assert_eq!(refused.header("x-ratelimit-remaining-hour"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-remaining-day"), Some("7"), "the other period is not charged");
    assert_eq!(up.requests(), 3);

    // A configuration change keeps what was counted.
    gw.post("/consumers", json!({"username": "unrelated"})).await;
    gw.sync().await;
    gw.get("/limited").await.assert_status(429);

    // hide_client_headers; counted per consumer with key-auth.
    let service = gw.admin_get(&format!("/routes/{}", id_of(&route))).await["service"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let per = gw.post("/routes", json!({"service": {"id": service}, "paths": ["/per"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "key-auth", "route_id": id_of(&per)})).await;
    gw.post(
        "/plugins",
        json!({"name": "rate-limiting", "route_id": id_of(&per),
                               "config": {"day": 1, "policy": "local", "hide_client_headers": true}}),
    )
    .await;
    for who in ["alice", "bob"] {
        let c = gw.post("/consumers", json!({"username": who})).await;
        gw.post(&format!("/consumers/{}/key-auth", id_of(&c)), json!({"key": format!("{who}-key")})).await;
    }
    gw.sync().await;
    for who in ["alice", "bob"] {
        let r = gw.get(&format!("/per?apikey={who}-key")).await;
        r.echo();
        assert_eq!(r.header("x-ratelimit-limit-day"), None, "hidden");
    }
    let r = gw.get("/per?apikey=alice-key").await;
    assert_message(&r, 429, "API rate limit exceeded");
    assert_eq!(r.header("x-ratelimit-remaining-day"), None);
}

/// Two gateways (two data planes with their own stores) count one global limit in the same
/// Redis: the key is Kong's, `ratelimit:<null route>:<null service>:<ip>:<window>:day`.
#[tokio::test]
async fn rate_limiting_redis_is_shared_between_data_planes() {
    let database = 1 + (std::process::id() % 15);
    let config = json!({"day": 4, "policy": "redis", "redis_host": "127.0.0.1", "redis_port": 6379,
                        "redis_database": database, "limit_by": "ip"});
    // A header the test owns makes the counter its own: X-Real-IP from a trusted peer.
    let client = format!("10.{}.{}.{}", database, std::process::id() % 250, fastrand_byte());
    let env = [("GATEHOUSE_TRUSTED_IPS", "127.0.0.1")];
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let gw = Standalone::start_with_env(&env).await;
        let up = Upstream::echo("redis-limited").await;
        gw.expose(&up, json!({}), json!({"paths": ["/shared"], "strip_path": false})).await;
        gw.post("/plugins", json!({"name": "rate-limiting", "config": config})).await;
        gw.sync().await;
        gateways.push((gw, up));
    }
    let headers = [("X-Real-IP", client.as_str())];
    let mut admitted = 0;
    for i in 0..8 {
        let (gw, _) = &gateways[i % 2];
        let r = gw.get_with("/shared", &headers).await;
        if r.status == 200 {
            admitted += 1;
        } else {
            assert_message(&r, 429, "API rate limit exceeded");
        }
        // The increment is sent after the answer, as in Kong: give it its round trip.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(admitted, 4, "both gateways counted against the one limit");

    // Redis down and fault_tolerant: requests pass without the fields; not tolerant: 500.
    let (gw, _) = &gateways[0];
    let dead = json!({"day": 1, "policy": "redis", "redis_host": "127.0.0.1",
                      "redis_port": gatehouse_tests::proxy::dead_port(), "redis_timeout": 200});
    let service = gw.admin_get("/services").await["data"][0]["id"].as_str().unwrap_or_default().to_owned();
    for (path, tolerant) in [("/tolerant", true), ("/strict", false)] {
        let r = gw.post("/routes", json!({"service": {"id": service}, "paths": [path], "strip_path": false})).await;
        let mut config = dead.clone();
        config["fault_tolerant"] = json!(tolerant);
        gw.post("/plugins", json!({"name": "rate-limiting", "route_id": id_of(&r), "config": config})).await;
    }
    gw.sync().await;
    let r = gw.get("/tolerant").await;
    r.echo();
    assert_eq!(r.header("x-ratelimit-limit-day"), None);
    assert_message(&gw.get("/strict").await, 500, "An unexpected error occurred");
}

/// Far from its limit a data plane decides on Redis's last answer plus its own increments
/// since, without a round trip; close to it, it asks Redis again. Two gateways sharing 60 a
/// day still admit exactly 60, and the counter in Redis says 60 admitted and counted.
#[tokio::test]
async fn rate_limiting_redis_far_from_the_limit_is_decided_without_waiting_and_stays_exact() {
    let database = 1 + ((std::process::id() + 7) % 15);
    let config = json!({"day": 60, "policy": "redis", "redis_host": "127.0.0.1", "redis_port": 6379,
                        "redis_database": database, "limit_by": "ip"});
    let client = format!("10.{}.{}.{}", database, (std::process::id() + 3) % 250, fastrand_byte());
    let env = [("GATEHOUSE_TRUSTED_IPS", "127.0.0.1")];
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let gw = Standalone::start_with_env(&env).await;
        let up = Upstream::echo("redis-far").await;
        gw.expose(&up, json!({}), json!({"paths": ["/far"], "strip_path": false})).await;
        gw.post("/plugins", json!({"name": "rate-limiting", "config": config})).await;
        gw.sync().await;
        gateways.push((gw, up));
    }
    let headers = [("X-Real-IP", client.as_str())];
    let mut admitted = 0;
    let mut refused_at = None;
    for i in 0..70 {
        let (gw, _) = &gateways[i % 2];
        let r = gw.get_with("/far", &headers).await;
        match r.status {
            200 => {
                admitted += 1;
                assert_eq!(r.header("x-ratelimit-limit-day"), Some("60"));
            }
            _ => {
                assert_message(&r, 429, "API rate limit exceeded");
                refused_at.get_or_insert(i);
            }
        }
        // The increment is sent after the answer, as in Kong: give it its round trip.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(admitted, 60, "exactly the limit across both gateways");
    assert_eq!(refused_at, Some(60), "nothing refused before the limit");
    let mut redis = std::net::TcpStream::connect("127.0.0.1:6379").expect("redis");
    use std::io::{Read, Write};
    let window = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) / 86_400
        * 86_400
        * 1000;
    let null = "00000000-0000-0000-0000-000000000000";
    let key = format!("ratelimit:{null}:{null}:{client}:{window}:day");
    let cmd = format!(
        "*2\r\n$6\r\nSELECT\r\n${}\r\n{database}\r\n*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n",
        database.to_string().len(),
        key.len()
    );
    redis.write_all(cmd.as_bytes()).expect("send");
    redis.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
    // Two replies: SELECT's `+OK`, then GET's bulk string (or nil): read until both are in.
    let mut answer = String::new();
    let mut buf = [0u8; 256];
    while !(answer.starts_with("+OK\r\n")
        && (answer[5..].matches("\r\n").count() >= 2 || answer[5..].starts_with("$-1\r\n")))
    {
        let n = redis.read(&mut buf).expect("read");
        assert!(n > 0, "Redis closed the connection: {answer:?}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.contains("\r\n60\r\n"), "Redis holds the admitted count under Kong's key {key}: {answer:?}");
}

fn fastrand_byte() -> u8 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) % 250) as u8
}

// === response-ratelimiting ===

#[tokio::test]
async fn response_ratelimiting_counts_what_the_upstream_reports() {
    let config = json!({"limits": {"video": {"hour": 3, "day": 10}, "image": {"hour": 100}}, "policy": "local"});
    let (gw, up, route) = guarded("/media", "response-ratelimiting", config).await;
    let uses = |n: u32| format!("X-Kong-Limit: video={n}, image=1");
    let r = gw.get_with("/media", &[("X-Echo-Response-Header", uses(2).as_str())]).await;
    let echo = r.echo();
    assert_eq!(echo.header("x-ratelimit-remaining-video"), Some("3"), "the upstream is told what is left");
    assert_eq!(r.header("x-ratelimit-limit-video-hour"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining-video-hour"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining-video-day"), Some("8"));
    assert_eq!(r.header("x-ratelimit-remaining-image-hour"), Some("99"));
    assert_eq!(r.header("x-kong-limit"), None, "the upstream's report is not passed on");

    // 2 of 3 used: one more is fine, then the limit is used up.
    gw.get_with("/media", &[("X-Echo-Response-Header", uses(1).as_str())]).await.echo();
    let refused = gw.get_with("/media", &[("X-Echo-Response-Header", uses(1).as_str())]).await;
    refused.assert_status(429);
    assert_eq!(refused.text(), "", "Kong's bodiless 429");
    // A request that uses none of it still passes.
    let free = gw.get_with("/media", &[("X-Echo-Response-Header", "X-Kong-Limit: image=1")]).await;
    free.echo();
    assert_eq!(up.requests(), 4);

    // block_on_first_violation refuses before the upstream.
    let service = gw.admin_get(&format!("/routes/{}", id_of(&route))).await["service"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let strict =
        gw.post("/routes", json!({"service": {"id": service}, "paths": ["/strict"], "strip_path": false})).await;
    gw.post(
        "/plugins",
        json!({"name": "response-ratelimiting", "route_id": id_of(&strict),
        "config": {"limits": {"video": {"hour": 1}}, "policy": "local", "block_on_first_violation": true}}),
    )
    .await;
    gw.sync().await;
    gw.get_with("/strict", &[("X-Echo-Response-Header", "X-Kong-Limit: video=1")]).await.echo();
    assert_message(&gw.get("/strict").await, 429, "API rate limit exceeded for 'video'");
    assert_eq!(up.requests(), 5);
}
