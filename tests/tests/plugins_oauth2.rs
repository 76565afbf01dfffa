//! oauth2 (kong-0.14-plugins §3, §4.5): the `/oauth2/authorize` and `/oauth2/token`
//! endpoints (every grant), protected requests with the tokens they issue, and the
//! `/oauth2_tokens` Admin API.
//!
//! The endpoints are called on the proxy's TLS listener (the plugin refuses plain HTTP);
//! protected requests go to the plain listener. Codes and tokens are minted on the data plane
//! and committed by the control plane (`Live::write`) before the endpoint answers, so what a
//! client was handed works at once on the data plane that handed it out; the last test checks
//! that they reach a second data plane of a Postgres cluster through the change log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse_tests::cluster::{ClusterCert, ControlPlane, DataPlane};
use gatehouse_tests::proxy::{exchange, Reply, Standalone, Upstream};
use gatehouse_tests::{free_ports, id_of, json, migrate, Backend, Database};
use serde_json::Value;

/// The application's only redirect URI.
const REDIRECT: &str = "http://app.test/cb";
const PROVISION_KEY: &str = "provision123";
/// Deadline for a token to reach another data plane.
const WITHIN: Duration = Duration::from_secs(10);
const MISSING: &str = "The access token is missing";
const INVALID_TOKEN: &str = "The access token is invalid or has expired";

// === helpers: values ===

/// Kong's random tokens: 32 characters, letters and digits.
fn is_token(v: &str) -> bool {
    v.len() == 32 && v.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Decodes `%XX` escapes (and `+` as a space).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a redirect URI at `sep` (`?` or `#`): (what precedes it, its decoded parameters).
#[track_caller]
fn split_redirect(uri: &str, sep: char) -> (String, BTreeMap<String, String>) {
    let (base, params) = uri.split_once(sep).unwrap_or_else(|| panic!("no `{sep}` in the redirect URI {uri:?}"));
    let params = params
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (base.to_owned(), params)
}

/// The `redirect_uri` of an authorize reply (asserting `status` and the no-cache headers).
#[track_caller]
fn redirect_of(r: &Reply, status: u16) -> String {
    r.assert_status(status);
    assert_no_store(r);
    let body = r.json();
    let obj = body.as_object().unwrap_or_else(|| panic!("{}: not a JSON object: {body}", r.what));
    assert_eq!(obj.len(), 1, "{}: only `redirect_uri` is expected: {body}", r.what);
    body["redirect_uri"].as_str().unwrap_or_else(|| panic!("{}: no redirect_uri string: {body}", r.what)).to_owned()
}

/// The two headers both endpoints send with every answer.
#[track_caller]
fn assert_no_store(r: &Reply) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}: {:?}", r.what, r.headers);
    assert_eq!(r.header("pragma"), Some("no-cache"), "{}: {:?}", r.what, r.headers);
}

/// Asserts an endpoint's error: `status`, exactly `{"error", "error_description"}`, no-cache.
#[track_caller]
fn assert_endpoint_error(r: &Reply, status: u16, error: &str, description: &str) {
    r.assert_status(status);
    r.assert_generated();
    assert_no_store(r);
    assert_eq!(r.json(), json!({"error": error, "error_description": description}), "{}", r.what);
}

/// Asserts a successful token reply; returns (access token, refresh token if any).
#[track_caller]
fn token_reply(r: &Reply, with_refresh: bool) -> (String, Option<String>) {
    r.assert_status(200);
    assert_no_store(r);
    let body = r.json();
    let access = body["access_token"].as_str().unwrap_or_else(|| panic!("{}: no access_token: {body}", r.what));
    assert!(is_token(access), "{}: access_token is not a 32-character token: {body}", r.what);
    assert_eq!(body["token_type"], "bearer", "{}: {body}", r.what);
    assert_eq!(body["expires_in"], 7200, "{}: {body}", r.what);
    let refresh = body.get("refresh_token").map(|v| {
        let t = v.as_str().unwrap_or_else(|| panic!("{}: refresh_token is not a string: {body}", r.what));
        assert!(is_token(t), "{}: refresh_token is not a 32-character token: {body}", r.what);
        assert_ne!(t, access, "{}: {body}", r.what);
        t.to_owned()
    });
    assert_eq!(refresh.is_some(), with_refresh, "{}: refresh_token expected: {with_refresh}; got {body}", r.what);
    let mut keys: Vec<&str> = body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    let mut expected = vec!["access_token", "expires_in", "token_type"];
    if with_refresh {
        expected.push("refresh_token");
    }
    expected.sort_unstable();
    assert_eq!(keys, expected, "{}: {body}", r.what);
    (access.to_owned(), refresh)
}

/// Asserts the 401 of a protected request without a usable token.
#[track_caller]
fn assert_unauthorized(r: &Reply, error: &str, description: &str) {
    r.assert_status(401);
    r.assert_generated();
    assert_eq!(r.json(), json!({"error": error, "error_description": description}), "{}", r.what);
    let challenge = if error == "invalid_token" {
        format!("Bearer realm=\"service\" error=\"invalid_token\" error_description=\"{description}\"")
    } else {
        "Bearer realm=\"service\"".to_owned()
    };
    assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()), "{}: {:?}", r.what, r.headers);
}

/// The plugin's configuration: every flow, scopes `email` and `profile`, plus `extra`.
fn plugin_config(extra: Value) -> Value {
    let mut config = json!({
        "scopes": ["email", "profile"],
        "enable_authorization_code": true,
        "enable_client_credentials": true,
        "enable_password_grant": true,
        "enable_implicit_grant": true,
        "provision_key": PROVISION_KEY,
    });
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            config[k] = v;
        }
    }
    config
}

// === a standalone gateway with one oauth2-protected service ===

/// A standalone gateway: a Service (`/oauth`) protected by oauth2 and one application.
struct OAuth {
    gw: Standalone,
    up: Upstream,
    service: Value,
    consumer: Value,
    app: Value,
    client_id: String,
    client_secret: String,
}

impl OAuth {
    /// The setup, with `extra` added to the plugin's configuration.
    async fn start(extra: Value) -> OAuth {
        let gw = Standalone::start().await;
        let up = Upstream::echo("oauth-up").await;
        let (service, _) = gw.expose(&up, json!({"name": "oauth-svc"}), json!({"paths": ["/oauth"]})).await;
        let plugin = gw
            .post("/plugins", json!({"name": "oauth2", "service_id": id_of(&service), "config": plugin_config(extra)}))
            .await;
        assert_eq!(plugin["config"]["provision_key"], PROVISION_KEY, "{plugin}");
        let consumer = gw.post("/consumers", json!({"username": "oauth-owner"})).await;
        let app = gw
            .post(
                &format!("/consumers/{}/oauth2", id_of(&consumer)),
                json!({"name": "app", "redirect_uri": [REDIRECT]}),
            )
            .await;
        let field = |k: &str| app[k].as_str().unwrap_or_else(|| panic!("no {k} in the application {app}")).to_owned();
        let (client_id, client_secret) = (field("client_id"), field("client_secret"));
        assert_eq!(app["consumer_id"], consumer["id"], "{app}");
        assert_eq!(app["redirect_uri"], json!([REDIRECT]), "{app}");
        assert_eq!(app["name"], "app", "{app}");
        gw.sync().await;
        OAuth { gw, up, service, consumer, app, client_id, client_secret }
    }

    /// `POST https://…/oauth/oauth2/<endpoint>` with the form `params`.
    async fn endpoint(&self, endpoint: &str, params: &[(&str, &str)]) -> Reply {
        let url = self.gw.proxy_tls_url(&format!("/oauth/oauth2/{endpoint}"));
        self.gw.send(&format!("POST {url} {params:?}"), self.gw.client().post(&url).form(params)).await
    }

    async fn authorize(&self, params: &[(&str, &str)]) -> Reply {
        self.endpoint("authorize", params).await
    }

    async fn token(&self, params: &[(&str, &str)]) -> Reply {
        self.endpoint("token", params).await
    }

    /// `params` plus the application's `client_id` and `client_secret`.
    fn with_client<'a>(&'a self, params: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = vec![("client_id", self.client_id.as_str()), ("client_secret", self.client_secret.as_str())];
        all.extend_from_slice(params);
        all
    }

    /// `params` plus the application's `client_id` and the provision key.
    fn with_provision<'a>(&'a self, params: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = vec![("client_id", self.client_id.as_str()), ("provision_key", PROVISION_KEY)];
        all.extend_from_slice(params);
        all
    }

    /// A client_credentials token.
    async fn client_credentials(&self) -> String {
        let r = self.token(&self.with_client(&[("grant_type", "client_credentials")])).await;
        token_reply(&r, false).0
    }

    /// `GET <path>` on the plain proxy listener with `Authorization: Bearer <token>`.
    async fn bearer(&self, path: &str, token: &str) -> Reply {
        let header = format!("Bearer {token}");
        self.gw.get_with(path, &[("Authorization", header.as_str())]).await
    }

    /// Asserts the upstream saw a request authenticated as the application's consumer.
    #[track_caller]
    fn assert_consumer(&self, r: &Reply, userid: Option<&str>, scope: Option<&str>) {
        let echo = r.echo();
        let consumer_id = id_of(&self.consumer);
        assert_eq!(echo.header("x-consumer-id"), Some(consumer_id.as_str()), "{}: {:?}", r.what, echo.0);
        assert_eq!(echo.header("x-consumer-username"), Some("oauth-owner"), "{}: {:?}", r.what, echo.0);
        assert_eq!(echo.header("x-authenticated-userid"), userid, "{}: {:?}", r.what, echo.0);
        assert_eq!(echo.header("x-authenticated-scope"), scope, "{}: {:?}", r.what, echo.0);
        assert_eq!(echo.header("x-anonymous-consumer"), None, "{}: {:?}", r.what, echo.0);
    }

    /// The authorization code flow up to the code (asserting the redirect it comes in).
    async fn code(&self, userid: &str, scope: &str, state: &str) -> String {
        let r = self
            .authorize(&self.with_provision(&[
                ("response_type", "code"),
                ("scope", scope),
                ("authenticated_userid", userid),
                ("state", state),
            ]))
            .await;
        let uri = redirect_of(&r, 200);
        let (base, params) = split_redirect(&uri, '?');
        assert_eq!(base, REDIRECT, "{uri}");
        let code = params.get("code").unwrap_or_else(|| panic!("no code in {uri}")).clone();
        assert!(is_token(&code), "the code is not a 32-character token: {uri}");
        assert_eq!(params.get("state").map(String::as_str), Some(state), "{uri}");
        assert_eq!(params.len(), 2, "only code and state: {uri}");
        code
    }
}

// === grants ===

#[tokio::test]
async fn authorization_code_flow() {
    let o = OAuth::start(json!({})).await;
    let code = o.code("user1", "email", "xyz").await;

    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())])).await;
    let (token, refresh) = token_reply(&r, true);
    assert!(refresh.is_some());

    let r = o.bearer("/oauth", &token).await;
    o.assert_consumer(&r, Some("user1"), Some("email"));
    assert_eq!(r.echo().path(), "/", "the route's path is stripped");
    // The scheme is case-insensitive, and `token` works like `bearer`.
    for scheme in ["bearer", "BEARER", "token"] {
        let header = format!("{scheme} {token}");
        let r = o.gw.get_with("/oauth", &[("Authorization", header.as_str())]).await;
        o.assert_consumer(&r, Some("user1"), Some("email"));
    }

    // A code is good for one token only.
    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())])).await;
    assert_endpoint_error(&r, 400, "invalid_request", "Invalid code");
    // With `state`, the error echoes it.
    let r = o
        .token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("state", "wot")]))
        .await;
    r.assert_status(400);
    assert_eq!(r.json(), json!({"error": "invalid_request", "error_description": "Invalid code", "state": "wot"}));
    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", "not-a-code")])).await;
    assert_endpoint_error(&r, 400, "invalid_request", "Invalid code");

    // Two scopes, and the redirect_uri given explicitly.
    let r = o
        .authorize(&o.with_provision(&[
            ("response_type", "code"),
            ("scope", "email profile"),
            ("authenticated_userid", "user2"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    let (_, params) = split_redirect(&redirect_of(&r, 200), '?');
    let code = params.get("code").expect("a code").clone();
    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())])).await;
    let (token, _) = token_reply(&r, true);
    o.assert_consumer(&o.bearer("/oauth", &token).await, Some("user2"), Some("email profile"));
}

#[tokio::test]
async fn client_credentials_grant() {
    let o = OAuth::start(json!({})).await;
    let token = o.client_credentials().await;

    // No userid or scope: the headers are absent, even when the client sends them.
    let header = format!("Bearer {token}");
    let r =
        o.gw.get_with(
            "/oauth/things",
            &[
                ("Authorization", header.as_str()),
                ("X-Authenticated-Userid", "mallory"),
                ("X-Authenticated-Scope", "admin"),
                ("X-Consumer-ID", "00000000-0000-4000-8000-000000000000"),
            ],
        )
        .await;
    o.assert_consumer(&r, None, None);
    let echo = r.echo();
    assert_eq!(echo.path(), "/things");
    assert_eq!(echo.header("authorization"), Some(header.as_str()), "without hide_credentials the header is kept");
    assert_eq!(echo.header("x-credential-username"), None, "{:?}", echo.0);

    // From the query string too, passed on as it is.
    let r = o.gw.get(&format!("/oauth?access_token={token}&keep=1")).await;
    o.assert_consumer(&r, None, None);
    assert_eq!(r.echo().path(), format!("/?access_token={token}&keep=1"));

    // A scope, and client authentication through the Basic header.
    let basic =
        o.gw.client()
            .post(o.gw.proxy_tls_url("/oauth/oauth2/token"))
            .basic_auth(&o.client_id, Some(&o.client_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "profile")]);
    let r = o.gw.send("client_credentials with Basic", basic).await;
    let (scoped, _) = token_reply(&r, false);
    assert_ne!(scoped, token);
    o.assert_consumer(&o.bearer("/oauth", &scoped).await, None, Some("profile"));

    // An authenticated_userid needs the provision key.
    let r = o.token(&o.with_client(&[("grant_type", "client_credentials"), ("authenticated_userid", "user3")])).await;
    assert_endpoint_error(&r, 400, "invalid_provision_key", "Invalid provision_key");
    let r = o
        .token(&o.with_client(&[
            ("grant_type", "client_credentials"),
            ("authenticated_userid", "user3"),
            ("provision_key", PROVISION_KEY),
        ]))
        .await;
    let (with_user, _) = token_reply(&r, false);
    o.assert_consumer(&o.bearer("/oauth", &with_user).await, Some("user3"), None);
}

#[tokio::test]
async fn password_grant() {
    let o = OAuth::start(json!({})).await;
    let r = o
        .token(&o.with_client(&[
            ("grant_type", "password"),
            ("provision_key", PROVISION_KEY),
            ("authenticated_userid", "user4"),
            ("scope", "email profile"),
        ]))
        .await;
    let (token, refresh) = token_reply(&r, true);
    assert!(refresh.is_some());
    o.assert_consumer(&o.bearer("/oauth", &token).await, Some("user4"), Some("email profile"));

    let r = o
        .token(&o.with_client(&[
            ("grant_type", "password"),
            ("provision_key", "wrong-key"),
            ("authenticated_userid", "user4"),
        ]))
        .await;
    assert_endpoint_error(&r, 400, "invalid_provision_key", "Invalid provision_key");
    let r = o.token(&o.with_client(&[("grant_type", "password"), ("authenticated_userid", "user4")])).await;
    assert_endpoint_error(&r, 400, "invalid_provision_key", "Invalid provision_key");
    let r = o.token(&o.with_client(&[("grant_type", "password"), ("provision_key", PROVISION_KEY)])).await;
    assert_endpoint_error(&r, 400, "invalid_authenticated_userid", "Missing authenticated_userid parameter");
    let r = o
        .token(&o.with_client(&[
            ("grant_type", "password"),
            ("provision_key", PROVISION_KEY),
            ("authenticated_userid", "user4"),
            ("scope", "admin"),
        ]))
        .await;
    assert_endpoint_error(&r, 400, "invalid_scope", "\"admin\" is an invalid scope");
}

#[tokio::test]
async fn refresh_token_grant() {
    let o = OAuth::start(json!({})).await;
    let code = o.code("user5", "profile", "s").await;
    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())])).await;
    let (old_token, old_refresh) = token_reply(&r, true);
    let old_refresh = old_refresh.expect("a refresh token");
    o.assert_consumer(&o.bearer("/oauth", &old_token).await, Some("user5"), Some("profile"));

    let r = o.token(&o.with_client(&[("grant_type", "refresh_token"), ("refresh_token", old_refresh.as_str())])).await;
    let (new_token, new_refresh) = token_reply(&r, true);
    let new_refresh = new_refresh.expect("a new refresh token");
    assert_ne!(new_token, old_token);
    assert_ne!(new_refresh, old_refresh);
    // Same userid and scope as the token it replaces.
    o.assert_consumer(&o.bearer("/oauth", &new_token).await, Some("user5"), Some("profile"));

    // The old token row is gone: its refresh token and its access token no longer work.
    let r = o.token(&o.with_client(&[("grant_type", "refresh_token"), ("refresh_token", old_refresh.as_str())])).await;
    assert_endpoint_error(&r, 400, "invalid_request", "Invalid refresh_token");
    assert_unauthorized(&o.bearer("/oauth", &old_token).await, "invalid_token", INVALID_TOKEN);

    // The new refresh token works once, too.
    let r = o.token(&o.with_client(&[("grant_type", "refresh_token"), ("refresh_token", new_refresh.as_str())])).await;
    let (third, _) = token_reply(&r, true);
    o.assert_consumer(&o.bearer("/oauth", &third).await, Some("user5"), Some("profile"));

    // An access token is not a refresh token.
    let r = o.token(&o.with_client(&[("grant_type", "refresh_token"), ("refresh_token", third.as_str())])).await;
    assert_endpoint_error(&r, 400, "invalid_request", "Invalid refresh_token");
}

#[tokio::test]
async fn implicit_grant_puts_the_token_in_the_fragment() {
    let o = OAuth::start(json!({})).await;
    let r = o
        .authorize(&o.with_provision(&[
            ("response_type", "token"),
            ("scope", "email"),
            ("authenticated_userid", "user6"),
            ("state", "st"),
        ]))
        .await;
    let uri = redirect_of(&r, 200);
    assert!(!uri.contains('?'), "the implicit grant puts nothing in the query: {uri}");
    let (base, params) = split_redirect(&uri, '#');
    assert_eq!(base, REDIRECT, "{uri}");
    let token = params.get("access_token").unwrap_or_else(|| panic!("no access_token in {uri}")).clone();
    assert!(is_token(&token), "{uri}");
    let expected: BTreeMap<String, String> =
        [("access_token", token.as_str()), ("expires_in", "7200"), ("state", "st"), ("token_type", "bearer")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(params, expected, "no refresh token with the implicit grant: {uri}");
    o.assert_consumer(&o.bearer("/oauth", &token).await, Some("user6"), Some("email"));
}

// === errors ===

#[tokio::test]
async fn endpoints_require_https() {
    let o = OAuth::start(json!({})).await;
    for endpoint in ["token", "authorize"] {
        let url = o.gw.proxy_url(&format!("/oauth/oauth2/{endpoint}"));
        let params = o.with_client(&[
            ("grant_type", "client_credentials"),
            ("response_type", "code"),
            ("provision_key", PROVISION_KEY),
            ("authenticated_userid", "user1"),
        ]);
        let r = o.gw.send(&format!("POST {url}"), o.gw.client().post(&url).form(&params)).await;
        assert_endpoint_error(&r, 400, "access_denied", "You must use HTTPS");
        // X-Forwarded-Proto counts for nothing without accept_http_if_already_terminated.
        let req = o.gw.client().post(&url).header("X-Forwarded-Proto", "https").form(&params);
        let r = o.gw.send(&format!("POST {url} (X-Forwarded-Proto: https)"), req).await;
        assert_endpoint_error(&r, 400, "access_denied", "You must use HTTPS");
    }
    assert_eq!(o.up.requests(), 0, "the endpoints are never proxied");
}

#[tokio::test]
async fn protected_requests_without_a_valid_token_are_401() {
    let o = OAuth::start(json!({})).await;
    assert_unauthorized(&o.gw.get("/oauth").await, "invalid_request", MISSING);
    // A header that is not `bearer <token>` is no token at all.
    for header in ["Basic dXNlcjpwdw==", "Bearer", "Bearer a b"] {
        let r = o.gw.get_with("/oauth", &[("Authorization", header)]).await;
        assert_unauthorized(&r, "invalid_request", MISSING);
    }
    // A GET to the authorize endpoint is an ordinary protected request.
    assert_unauthorized(&o.gw.get("/oauth/oauth2/authorize").await, "invalid_request", MISSING);

    assert_unauthorized(&o.bearer("/oauth", "unknowntoken0000000000000000000").await, "invalid_token", INVALID_TOKEN);
    let r = o.gw.get("/oauth?access_token=unknowntoken0000000000000000000").await;
    assert_unauthorized(&r, "invalid_token", INVALID_TOKEN);
    // A code is not a token.
    let code = o.code("user1", "email", "s").await;
    assert_unauthorized(&o.bearer("/oauth", &code).await, "invalid_token", INVALID_TOKEN);
    assert_eq!(o.up.requests(), 0);
}

#[tokio::test]
async fn authorize_errors() {
    let o = OAuth::start(json!({})).await;
    let base = [("response_type", "code"), ("authenticated_userid", "user1"), ("state", "s1")];

    // Invalid scope: reported on the redirect URI, with the state.
    let r = o.authorize(&o.with_provision(&[&base[..], &[("scope", "email admin")][..]].concat())).await;
    let uri = redirect_of(&r, 400);
    assert!(uri.contains("%20") && !uri.contains('+'), "spaces are encoded as %20: {uri}");
    let (base_uri, params) = split_redirect(&uri, '?');
    assert_eq!(base_uri, REDIRECT, "{uri}");
    let expected: BTreeMap<String, String> =
        [("error", "invalid_scope"), ("error_description", "\"admin\" is an invalid scope"), ("state", "s1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(params, expected, "{uri}");

    // Unsupported response type: on the redirect URI too.
    let r = o
        .authorize(&o.with_provision(&[("response_type", "bogus"), ("authenticated_userid", "user1"), ("state", "s2")]))
        .await;
    let (_, params) = split_redirect(&redirect_of(&r, 400), '?');
    assert_eq!(params.get("error").map(String::as_str), Some("unsupported_response_type"), "{params:?}");
    assert_eq!(params.get("error_description").map(String::as_str), Some("Invalid response_type"), "{params:?}");

    // A redirect_uri the application does not have: the error goes to its own URI.
    let r = o.authorize(&o.with_provision(&[&base[..], &[("redirect_uri", "http://evil.test/cb")][..]].concat())).await;
    let (to, params) = split_redirect(&redirect_of(&r, 400), '?');
    assert_eq!(to, REDIRECT);
    assert_eq!(params.get("error").map(String::as_str), Some("invalid_request"), "{params:?}");

    // No redirect URI known (unknown client, provision key, userid): the error object itself.
    let unknown = [
        ("client_id", "no-such-client"),
        ("provision_key", PROVISION_KEY),
        ("response_type", "code"),
        ("authenticated_userid", "u"),
    ];
    let r = o.authorize(&unknown).await;
    assert_endpoint_error(&r, 400, "invalid_client", "Invalid client authentication");
    let r = o
        .authorize(&[
            ("client_id", o.client_id.as_str()),
            ("provision_key", "nope"),
            ("response_type", "code"),
            ("authenticated_userid", "u"),
        ])
        .await;
    assert_endpoint_error(&r, 400, "invalid_provision_key", "Invalid provision_key");
    let r = o.authorize(&o.with_provision(&[("response_type", "code")])).await;
    assert_endpoint_error(&r, 400, "invalid_authenticated_userid", "Missing authenticated_userid parameter");
    assert_eq!(o.up.requests(), 0);
}

#[tokio::test]
async fn token_endpoint_client_errors() {
    let o = OAuth::start(json!({})).await;

    // Unknown client, through the parameters: 400.
    let r =
        o.token(&[("grant_type", "client_credentials"), ("client_id", "no-such-client"), ("client_secret", "x")]).await;
    assert_endpoint_error(&r, 400, "invalid_client", "Invalid client authentication");
    assert!(r.header("www-authenticate").is_none(), "{:?}", r.headers);
    // Wrong secret, through the parameters: 400.
    let r = o
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", o.client_id.as_str()),
            ("client_secret", "wrong-secret"),
        ])
        .await;
    assert_endpoint_error(&r, 400, "invalid_client", "Invalid client authentication");
    assert!(r.header("www-authenticate").is_none(), "{:?}", r.headers);

    // Wrong secret, through the Basic header: 401 with a Basic challenge.
    let url = o.gw.proxy_tls_url("/oauth/oauth2/token");
    for (id, secret) in [(o.client_id.as_str(), "wrong-secret"), ("no-such-client", "x")] {
        let req = o.gw.client().post(&url).basic_auth(id, Some(secret)).form(&[("grant_type", "client_credentials")]);
        let r = o.gw.send(&format!("POST {url} with Basic {id}:{secret}"), req).await;
        assert_endpoint_error(&r, 401, "invalid_client", "Invalid client authentication");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"OAuth2.0\""), "{:?}", r.headers);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:wrong", o.client_id));
    let req =
        o.gw.client()
            .post(&url)
            .header("Authorization", format!("basic {encoded}"))
            .form(&[("grant_type", "client_credentials"), ("state", "st")]);
    let r = o.gw.send("lower-case basic scheme", req).await;
    r.assert_status(401);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_client", "error_description": "Invalid client authentication", "state": "st"})
    );

    // A grant type the plugin does not know.
    let r = o.token(&o.with_client(&[("grant_type", "magic")])).await;
    assert_endpoint_error(&r, 400, "unsupported_grant_type", "Invalid grant_type");
    // A redirect_uri that is not the application's.
    let r =
        o.token(&o.with_client(&[("grant_type", "client_credentials"), ("redirect_uri", "http://evil.test/cb")])).await;
    assert_endpoint_error(
        &r,
        400,
        "invalid_request",
        "Invalid redirect_uri that does not match with any redirect_uri created with the application",
    );
    // An invalid scope.
    let r = o.token(&o.with_client(&[("grant_type", "client_credentials"), ("scope", "admin")])).await;
    assert_endpoint_error(&r, 400, "invalid_scope", "\"admin\" is an invalid scope");
    assert_eq!(o.up.requests(), 0);
}

#[tokio::test]
async fn disabled_grants_are_unsupported() {
    let o = OAuth::start(json!({
        "enable_client_credentials": false,
        "enable_password_grant": false,
        "enable_implicit_grant": false,
    }))
    .await;
    let r = o.token(&o.with_client(&[("grant_type", "client_credentials")])).await;
    assert_endpoint_error(&r, 400, "unsupported_grant_type", "Invalid grant_type");
    let r = o
        .token(&o.with_client(&[
            ("grant_type", "password"),
            ("provision_key", PROVISION_KEY),
            ("authenticated_userid", "u"),
        ]))
        .await;
    assert_endpoint_error(&r, 400, "unsupported_grant_type", "Invalid grant_type");
    let r = o.authorize(&o.with_provision(&[("response_type", "token"), ("authenticated_userid", "u")])).await;
    let (_, params) = split_redirect(&redirect_of(&r, 400), '?');
    assert_eq!(params.get("error").map(String::as_str), Some("unsupported_response_type"), "{params:?}");
    // The authorization code flow is still on.
    let code = o.code("u", "email", "s").await;
    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())])).await;
    token_reply(&r, true);
}

#[tokio::test]
async fn hide_credentials_strips_the_token() {
    let o = OAuth::start(json!({"hide_credentials": true})).await;
    let token = o.client_credentials().await;

    let r = o.gw.get(&format!("/oauth/data?access_token={token}&keep=1")).await;
    o.assert_consumer(&r, None, None);
    let echo = r.echo();
    assert!(!echo.path().contains("access_token"), "the token reached the upstream: {}", echo.path());
    assert!(!echo.path().contains(&token), "the token reached the upstream: {}", echo.path());
    assert_eq!(echo.path(), "/data?keep=1");

    let r = o.bearer("/oauth/data", &token).await;
    o.assert_consumer(&r, None, None);
    let echo = r.echo();
    assert_eq!(echo.header("authorization"), None, "the Authorization header reached the upstream: {:?}", echo.0);
}

// === Admin API ===

#[tokio::test]
async fn issued_tokens_are_listed_on_the_admin_api() {
    let o = OAuth::start(json!({})).await;
    let code = o.code("user7", "email", "s").await;
    let r = o.token(&o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())])).await;
    let (token, refresh) = token_reply(&r, true);
    let client_token = o.client_credentials().await;

    let listed = o.gw.admin_get("/oauth2_tokens").await;
    let rows = listed["data"].as_array().unwrap_or_else(|| panic!("no data array: {listed}"));
    let row = rows
        .iter()
        .find(|t| t["access_token"] == token.as_str())
        .unwrap_or_else(|| panic!("the issued token is not listed: {listed}"));
    assert_eq!(row["credential_id"], o.app["id"], "{row}");
    assert_eq!(row["service_id"], o.service["id"], "{row}");
    assert_eq!(row["token_type"], "bearer", "{row}");
    assert_eq!(row["expires_in"], 7200, "{row}");
    assert_eq!(row["authenticated_userid"], "user7", "{row}");
    assert_eq!(row["scope"], "email", "{row}");
    assert_eq!(row["refresh_token"], json!(refresh), "{row}");
    assert!(row["id"].is_string() && row["created_at"].is_number(), "{row}");
    assert!(rows.iter().any(|t| t["access_token"] == client_token.as_str()), "the client_credentials token: {listed}");
    assert_eq!(rows.len(), 2, "the code became a token; nothing else is listed: {listed}");
    assert_eq!(listed["total"], 2, "{listed}");

    // One token, by access token and by id.
    let by_token = o.gw.admin_get(&format!("/oauth2_tokens/{token}")).await;
    assert_eq!(&by_token, row);
    let by_id = o.gw.admin_get(&format!("/oauth2_tokens/{}", id_of(row))).await;
    assert_eq!(&by_id, row);

    // Revoked through the Admin API: the token stops working.
    o.gw.delete(&format!("/oauth2_tokens/{}", id_of(row))).await;
    o.gw.sync().await;
    assert_unauthorized(&o.bearer("/oauth", &token).await, "invalid_token", INVALID_TOKEN);
    o.assert_consumer(&o.bearer("/oauth", &client_token).await, None, None);
    let listed = o.gw.admin_get("/oauth2_tokens").await;
    assert_eq!(listed["total"], 1, "{listed}");
}

/// Checks that must not pass for want of their input: with no `scopes` configured a client
/// cannot grant itself one; a token whose lifetime is not a whole number still expires; an
/// earlier plugin's authentication is honoured before the endpoints are answered.
#[tokio::test]
async fn no_scope_without_configured_scopes_and_every_token_expires() {
    let o = OAuth::start(json!({"scopes": null})).await;
    let r = o.token(&o.with_client(&[("grant_type", "client_credentials"), ("scope", "admin")])).await;
    let (token, _) = token_reply(&r, false);
    o.assert_consumer(&o.bearer("/oauth", &token).await, None, None);
    let listed = o.gw.admin_get(&format!("/oauth2_tokens/{token}")).await;
    assert!(listed.get("scope").is_none_or(Value::is_null), "no scope was granted: {listed}");

    // Whitespace in the header is any run of blanks, as Kong splits it.
    let r = o.gw.get_with("/oauth", &[("Authorization", format!("Bearer \t {token}").as_str())]).await;
    o.assert_consumer(&r, None, None);

    // An already expired token with a fractional lifetime, created on the Admin API.
    let created =
        o.gw.post(
            "/oauth2_tokens",
            json!({"credential_id": id_of(&o.app), "service_id": id_of(&o.service), "expires_in": 0.5,
                   "access_token": "fractional-lifetime-token"}),
        )
        .await;
    assert_eq!(created["expires_in"], json!(0.5), "{created}");
    o.gw.sync().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_unauthorized(&o.bearer("/oauth", "fractional-lifetime-token").await, "invalid_token", INVALID_TOKEN);
}

#[tokio::test]
async fn scopes_are_split_on_any_whitespace() {
    let o = OAuth::start(json!({})).await;
    let r = o.token(&o.with_client(&[("grant_type", "client_credentials"), ("scope", "email\tprofile")])).await;
    let (token, _) = token_reply(&r, false);
    o.assert_consumer(&o.bearer("/oauth", &token).await, None, Some("email profile"));
    // A token endpoint path as nginx's $uri sees it: decoded, slashes merged.
    let url = o.gw.proxy_tls_url("/oauth//oauth2/%74oken");
    let req = o.gw.client().post(&url).form(&o.with_client(&[("grant_type", "client_credentials")]));
    let r = o.gw.send(&format!("POST {url}"), req).await;
    token_reply(&r, false);
}

// === cluster ===

/// A data plane of the cluster, with a plain and a TLS proxy listener on known ports.
struct Node {
    dp: DataPlane,
    plain: SocketAddr,
    tls: u16,
}

async fn postgres() -> Database {
    let db = Database::create(Backend::Postgres).await;
    migrate(&db).await;
    db
}

async fn data_plane(cp: &ControlPlane, cert: &ClusterCert, extra: &[(&str, &str)]) -> Node {
    let [plain, tls] = free_ports();
    let listen = format!("127.0.0.1:{plain}");
    let tls_listen = format!("127.0.0.1:{tls}");
    let mut env =
        vec![("GATEHOUSE_PROXY_LISTEN", listen.as_str()), ("GATEHOUSE_PROXY_SSL_LISTEN", tls_listen.as_str())];
    env.extend_from_slice(extra);
    // Later entries override the harness's own GATEHOUSE_PROXY_LISTEN / _SSL_LISTEN.
    let dp = DataPlane::start(&cp.cluster_addr(), cert, &env).await;
    Node { dp, plain: SocketAddr::from(([127, 0, 0, 1], plain)), tls }
}

/// `GET path` with `headers` over a fresh connection to the plain proxy at `addr`.
async fn get_at(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", addr.port());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    exchange(addr, head.as_bytes()).await.unwrap_or_else(|e| panic!("GET {path} {headers:?} via {addr}: {e}"))
}

fn proxy_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("proxy client")
}

/// POSTs the form `params` to `url` (a data plane's proxy), plus `headers`.
async fn post_form(url: &str, headers: &[(&str, &str)], params: &[(&str, &str)]) -> Reply {
    let mut req = proxy_client().post(url).form(params);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    Reply::read(&format!("POST {url} {headers:?} {params:?}"), r).await
}

/// Polls `GET /oauth` with the bearer `token` on `node` until it is accepted (every refusal
/// must be the invalid-token 401); returns the accepted reply.
async fn wait_accepted(node: &Node, token: &str, what: &str) -> Reply {
    let header = format!("Bearer {token}");
    let started = Instant::now();
    loop {
        let r = get_at(node.plain, "/oauth", &[("Authorization", header.as_str())]).await;
        if r.status == 200 {
            return r;
        }
        assert_unauthorized(&r, "invalid_token", INVALID_TOKEN);
        assert!(started.elapsed() < WITHIN, "{what}: not accepted within {WITHIN:?}; logs:\n{}", node.dp.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tokens_reach_every_data_plane() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let dp1 = data_plane(&cp, &cert, &[]).await;
    // Data plane 2 also believes X-Forwarded-Proto from 127.0.0.1 (a TLS terminator there).
    let dp2 = data_plane(&cp, &cert, &[("GATEHOUSE_TRUSTED_IPS", "127.0.0.1/32")]).await;
    let up = Upstream::echo("cluster-up").await;

    let svc = cp.post("/services", &json!({"name": "oauth-svc", "host": "127.0.0.1", "port": up.port()})).await;
    cp.post("/routes", &json!({"service": {"id": id_of(&svc)}, "paths": ["/oauth"]})).await;
    let config = plugin_config(json!({"accept_http_if_already_terminated": true}));
    cp.post("/plugins", &json!({"name": "oauth2", "service_id": id_of(&svc), "config": config})).await;
    let consumer = cp.post("/consumers", &json!({"username": "oauth-owner"})).await;
    let app = cp
        .post(&format!("/consumers/{}/oauth2", id_of(&consumer)), &json!({"name": "app", "redirect_uri": [REDIRECT]}))
        .await;
    let client_id = app["client_id"].as_str().unwrap_or_else(|| panic!("no client_id: {app}")).to_owned();
    let secret = app["client_secret"].as_str().unwrap_or_else(|| panic!("no client_secret: {app}")).to_owned();
    let head = cp.revision().await;
    dp1.dp.wait_revision(head, WITHIN).await;
    dp2.dp.wait_revision(head, WITHIN).await;
    let consumer_id = id_of(&consumer);

    // A client_credentials token minted by data plane 1 (over its TLS listener) …
    let url1 = format!("https://127.0.0.1:{}/oauth/oauth2/token", dp1.tls);
    let form =
        [("grant_type", "client_credentials"), ("client_id", client_id.as_str()), ("client_secret", secret.as_str())];
    let r = post_form(&url1, &[], &form).await;
    let (token, _) = token_reply(&r, false);
    // … works there at once …
    let header = format!("Bearer {token}");
    let r = get_at(dp1.plain, "/oauth", &[("Authorization", header.as_str())]).await;
    assert_eq!(r.echo().header("x-consumer-id"), Some(consumer_id.as_str()), "data plane 1: {:?}", r.echo().0);
    // … and on data plane 2 shortly.
    let r = wait_accepted(&dp2, &token, "data plane 1's token on data plane 2").await;
    assert_eq!(r.echo().header("x-consumer-id"), Some(consumer_id.as_str()), "data plane 2: {:?}", r.echo().0);

    // Data plane 2 over plain HTTP: refused unless a trusted terminator says it was HTTPS.
    let url2 = format!("http://127.0.0.1:{}/oauth/oauth2/authorize", dp2.plain.port());
    let authorize = [
        ("client_id", client_id.as_str()),
        ("provision_key", PROVISION_KEY),
        ("response_type", "code"),
        ("authenticated_userid", "user1"),
        ("scope", "email"),
    ];
    let r = post_form(&url2, &[], &authorize).await;
    assert_endpoint_error(&r, 400, "access_denied", "You must use HTTPS");
    let r = post_form(&url2, &[("X-Forwarded-Proto", "https")], &authorize).await;
    let (_, params) = split_redirect(&redirect_of(&r, 200), '?');
    let code = params.get("code").unwrap_or_else(|| panic!("no code: {params:?}")).clone();

    // The code minted on data plane 2 is exchanged on data plane 1 once it arrives there.
    let exchange_form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("code", code.as_str()),
    ];
    let started = Instant::now();
    let r = loop {
        let r = post_form(&url1, &[], &exchange_form).await;
        if r.status == 200 {
            break r;
        }
        assert_endpoint_error(&r, 400, "invalid_request", "Invalid code");
        assert!(started.elapsed() < WITHIN, "data plane 2's code never reached data plane 1; logs:\n{}", dp1.dp.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (user_token, _) = token_reply(&r, true);
    let header = format!("Bearer {user_token}");
    let r = get_at(dp1.plain, "/oauth", &[("Authorization", header.as_str())]).await;
    assert_eq!(r.echo().header("x-authenticated-userid"), Some("user1"), "{:?}", r.echo().0);
    let r = wait_accepted(&dp2, &user_token, "the exchanged token on data plane 2").await;
    assert_eq!(r.echo().header("x-authenticated-scope"), Some("email"), "{:?}", r.echo().0);

    // The code was spent cluster-wide: its deletion came with the token data plane 2 just
    // accepted (one write), so data plane 2 refuses it.
    let url2_token = format!("http://127.0.0.1:{}/oauth/oauth2/token", dp2.plain.port());
    let r = post_form(&url2_token, &[("X-Forwarded-Proto", "https")], &exchange_form).await;
    assert_endpoint_error(&r, 400, "invalid_request", "Invalid code");

    // Both tokens are listed by the control plane.
    let listed = cp.get("/oauth2_tokens").await;
    let rows = listed["data"].as_array().unwrap_or_else(|| panic!("no data array: {listed}"));
    for t in [&token, &user_token] {
        assert!(rows.iter().any(|row| row["access_token"] == t.as_str()), "{t} is not listed: {listed}");
    }
}

/// A code is spent once even when two exchanges race: the control plane commits one token
/// and the other request gets Kong's `Invalid code`.
#[tokio::test]
async fn a_code_exchanged_twice_at_once_gives_one_token() {
    let o = OAuth::start(json!({})).await;
    for round in 0..3 {
        let code = o.code(&format!("racer{round}"), "email", "s").await;
        let params = o.with_client(&[("grant_type", "authorization_code"), ("code", code.as_str())]);
        let (a, b) = tokio::join!(o.token(&params), o.token(&params));
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "round {round}: {} / {}", a.text(), b.text());
        let loser = if a.status == 400 { &a } else { &b };
        assert_eq!(loser.json()["error_description"], "Invalid code", "{}", loser.text());
    }
}
