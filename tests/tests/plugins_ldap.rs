//! ldap-auth (kong-0.14-plugins §3, §4.6) against a real directory: each test starts its own
//! OpenLDAP `slapd` on a free port of 127.0.0.1 (an mdb database in a temporary directory,
//! loaded with `slapadd`), then a standalone gateway whose route binds as
//! `uid=<user>,ou=users,dc=example,dc=com` with the password of the request.
//!
//! `slapd` is a Debian package (`slapd`, installed by `.ci/run`): when it is missing the tests
//! fail, saying so, rather than skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse_tests::proxy::{dead_port, Reply, Standalone, Upstream};
use gatehouse_tests::{free_port, id_of, json};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpStream;

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const SCHEMAS: &str = "/etc/ldap/schema";
const MODULES: &str = "/usr/lib/ldap";
/// Where the users live; the plugin binds as `uid=<user>,<BASE_DN>`.
const BASE_DN: &str = "ou=users,dc=example,dc=com";
/// How long slapd may take to accept connections.
const SLAPD_DEADLINE: Duration = Duration::from_secs(15);

// === a throwaway slapd ===

/// A running `slapd` serving `dc=example,dc=com` (users `alice`/`alicepw` and `bob`/`bobpw`
/// under `ou=users`) on `ldap://127.0.0.1:<port>/`; killed on `Drop`.
struct Slapd {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    dir: TempDir,
}

/// The directory's contents: the suffix, `ou=users` and two people.
const ENTRIES: &str = "\
dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=users,dc=example,dc=com
objectClass: organizationalUnit
ou: users

dn: uid=alice,ou=users,dc=example,dc=com
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: alicepw

dn: uid=bob,ou=users,dc=example,dc=com
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: bobpw
";

fn slapd_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include {SCHEMAS}/core.schema\n\
         include {SCHEMAS}/cosine.schema\n\
         include {SCHEMAS}/inetorgperson.schema\n\
         modulepath {MODULES}\n\
         moduleload back_mdb\n\
         pidfile {d}/slapd.pid\n\
         argsfile {d}/slapd.args\n\
         database mdb\n\
         maxsize 10485760\n\
         suffix \"dc=example,dc=com\"\n\
         rootdn \"cn=admin,dc=example,dc=com\"\n\
         rootpw secret\n\
         directory {d}/db\n"
    )
}

impl Slapd {
    /// Writes the configuration, loads [`ENTRIES`] with `slapadd`, starts `slapd` and waits
    /// until its port accepts TCP connections.
    async fn start() -> Slapd {
        for binary in [SLAPD, SLAPADD] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the ldap-auth tests need OpenLDAP's server \
                 (Debian/Ubuntu: `apt-get install slapd ldap-utils`, as .ci/run does)"
            );
        }
        let dir = tempfile::tempdir().expect("slapd dir");
        std::fs::create_dir(dir.path().join("db")).expect("slapd db dir");
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, slapd_conf(dir.path())).expect("write slapd.conf");
        let ldif = dir.path().join("entries.ldif");
        std::fs::write(&ldif, ENTRIES).expect("write entries.ldif");
        let out = Command::new(SLAPADD)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SLAPADD}: {e}"));
        assert!(
            out.status.success(),
            "{SLAPADD} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("slapd.log");
        let mut slapd = Slapd { port: 0, child: None, log, dir };
        // A port picked by `free_port` can be taken before slapd binds it: try again.
        let mut last = String::new();
        for _ in 0..3 {
            match slapd.try_spawn(&conf).await {
                Ok(()) => return slapd,
                Err(logs) => last = logs,
            }
        }
        panic!("{SLAPD} did not start; its output:\n{last}");
    }

    async fn try_spawn(&mut self, conf: &Path) -> Result<(), String> {
        self.port = free_port();
        let stderr = std::fs::File::create(&self.log).expect("slapd log");
        let child = Command::new(SLAPD)
            .args(["-d", "0", "-f"])
            .arg(conf)
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SLAPD}: {e}"));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                self.child = None;
                return Err(self.logs());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > SLAPD_DEADLINE {
                self.stop();
                return Err(format!("no connection on port {} within {SLAPD_DEADLINE:?}\n{}", self.port, self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        let conf = std::fs::read_to_string(self.dir.path().join("slapd.conf")).unwrap_or_default();
        format!("{}\n(slapd.conf:\n{conf})", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Kills slapd (the directory becomes unreachable).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

// === helpers ===

/// `<scheme> base64(<user>:<password>)`
fn credentials(scheme: &str, user: &str, password: &str) -> String {
    format!("{scheme} {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The plugin's configuration for `port`, with the fields of `extra` added or overriding.
fn ldap_config(port: u16, extra: Value) -> Value {
    let mut config = json!({
        "ldap_host": "127.0.0.1",
        "ldap_port": port,
        "base_dn": BASE_DN,
        "attribute": "uid",
        "cache_ttl": 2,
    });
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            config[k] = v;
        }
    }
    config
}

/// A route `path` to `up` guarded by ldap-auth with `config` (on the route); waits for the
/// data plane to serve it.
async fn guarded(gw: &Standalone, up: &Upstream, path: &str, config: Value) -> Value {
    let (_, route) = gw.expose(up, json!({}), json!({"paths": [path]})).await;
    let plugin = gw.post("/plugins", json!({"name": "ldap-auth", "route_id": id_of(&route), "config": config})).await;
    assert_eq!(plugin["route_id"], route["id"], "{plugin}");
    gw.sync().await;
    route
}

/// Asserts a gateway-generated `{"message": <message>}` reply with `status`.
#[track_caller]
fn assert_message(r: &Reply, status: u16, message: &str) {
    r.assert_status(status);
    r.assert_generated();
    assert_eq!(r.json(), json!({ "message": message }), "{}", r.what);
}

/// Asserts that the upstream saw an LDAP-authenticated request for `user`: no consumer.
#[track_caller]
fn assert_ldap_user(r: &Reply, user: &str) {
    let echo = r.echo();
    assert_eq!(echo.header("x-credential-username"), Some(user), "{}: {:?}", r.what, echo.0);
    for absent in ["x-consumer-id", "x-consumer-custom-id", "x-consumer-username", "x-anonymous-consumer"] {
        assert_eq!(
            echo.header(absent),
            None,
            "{}: LDAP authentication sets no consumer ({absent}): {:?}",
            r.what,
            echo.0
        );
    }
}

// === tests ===

#[tokio::test]
async fn valid_credentials_reach_the_upstream() {
    let ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/ldap", ldap_config(ldap.port, json!({}))).await;

    let alice = credentials("ldap", "alice", "alicepw");
    let r = gw.get_with("/ldap", &[("Authorization", alice.as_str())]).await;
    assert_ldap_user(&r, "alice");
    let echo = r.echo();
    assert_eq!(echo.header("authorization"), Some(alice.as_str()), "without hide_credentials the header is kept");

    // Consumer headers sent by the client are removed: LDAP authentication has no consumer.
    let r = gw
        .get_with(
            "/ldap",
            &[
                ("Authorization", alice.as_str()),
                ("X-Consumer-ID", "00000000-0000-4000-8000-000000000000"),
                ("X-Consumer-Username", "mallory"),
                ("X-Anonymous-Consumer", "true"),
                ("X-Credential-Username", "mallory"),
            ],
        )
        .await;
    assert_ldap_user(&r, "alice");

    // Another user, the scheme in another case, and Proxy-Authorization instead.
    let bob = credentials("LDAP", "bob", "bobpw");
    assert_ldap_user(&gw.get_with("/ldap", &[("Authorization", bob.as_str())]).await, "bob");
    let r = gw.get_with("/ldap", &[("Proxy-Authorization", alice.as_str())]).await;
    assert_ldap_user(&r, "alice");

    // Both headers are tried, Proxy-Authorization first: a refused or malformed one there does
    // not hide good credentials in Authorization.
    for first in [credentials("ldap", "bob", "wrong"), credentials("ldap", "bob", ""), "ldap garbage".to_owned()] {
        let r =
            gw.get_with("/ldap", &[("Proxy-Authorization", first.as_str()), ("Authorization", alice.as_str())]).await;
        assert_ldap_user(&r, "alice");
    }
}

#[tokio::test]
async fn wrong_credentials_are_403() {
    let ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/ldap", ldap_config(ldap.port, json!({}))).await;

    for (what, header) in [
        ("wrong password", credentials("ldap", "alice", "wrong")),
        ("another user's password", credentials("ldap", "alice", "bobpw")),
        ("unknown user", credentials("ldap", "carol", "alicepw")),
        // An empty password would be an unauthenticated bind, which LDAP servers accept.
        ("empty password", credentials("ldap", "alice", "")),
        ("no colon", format!("ldap {}", base64::engine::general_purpose::STANDARD.encode("alicepw"))),
        ("not base64", "ldap !!!not-base64!!!".to_owned()),
        ("another scheme", credentials("basic", "alice", "alicepw")),
    ] {
        let r = gw.get_with("/ldap", &[("Authorization", header.as_str())]).await;
        assert_message(&r, 403, "Invalid authentication credentials");
        assert!(r.header("www-authenticate").is_none(), "{what}: a 403 has no challenge: {:?}", r.headers);
    }
    assert_eq!(up.requests(), 0, "no rejected request reached the upstream");

    // The right password still works after the failures (outcomes are cached per password).
    let ok = credentials("ldap", "alice", "alicepw");
    assert_ldap_user(&gw.get_with("/ldap", &[("Authorization", ok.as_str())]).await, "alice");
}

#[tokio::test]
async fn missing_header_is_401_with_a_challenge() {
    let ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/ldap", ldap_config(ldap.port, json!({}))).await;

    let r = gw.get("/ldap").await;
    assert_message(&r, 401, "Unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("LDAP realm=\"kong\""), "{:?}", r.headers);
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn hide_credentials_removes_the_header() {
    let ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/hidden", ldap_config(ldap.port, json!({"hide_credentials": true}))).await;

    let alice = credentials("ldap", "alice", "alicepw");
    let r = gw.get_with("/hidden", &[("Authorization", alice.as_str())]).await;
    assert_ldap_user(&r, "alice");
    let echo = r.echo();
    assert_eq!(echo.header("authorization"), None, "hide_credentials: {:?}", echo.0);

    // Both headers go, whichever carried the credentials.
    let r = gw
        .get_with("/hidden", &[("Proxy-Authorization", alice.as_str()), ("Authorization", "Bearer something-else")])
        .await;
    assert_ldap_user(&r, "alice");
    let echo = r.echo();
    assert_eq!(echo.header("authorization"), None, "{:?}", echo.0);
    assert_eq!(echo.header("proxy-authorization"), None, "{:?}", echo.0);
}

#[tokio::test]
async fn anonymous_consumer_on_failure() {
    let ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    let anon = gw.post("/consumers", json!({"username": "anon", "custom_id": "anon-custom"})).await;
    let anon_id = id_of(&anon);
    guarded(&gw, &up, "/ldap", ldap_config(ldap.port, json!({ "anonymous": anon_id }))).await;

    let wrong = credentials("ldap", "alice", "wrong");
    for (what, headers) in [("wrong password", vec![("Authorization", wrong.as_str())]), ("no header", vec![])] {
        let r = gw.get_with("/ldap", &headers).await;
        let echo = r.echo();
        assert_eq!(echo.header("x-anonymous-consumer"), Some("true"), "{what}: {:?}", echo.0);
        assert_eq!(echo.header("x-consumer-id"), Some(anon_id.as_str()), "{what}: {:?}", echo.0);
        assert_eq!(echo.header("x-consumer-username"), Some("anon"), "{what}: {:?}", echo.0);
        assert_eq!(echo.header("x-consumer-custom-id"), Some("anon-custom"), "{what}: {:?}", echo.0);
        assert_eq!(echo.header("x-credential-username"), None, "{what}: {:?}", echo.0);
    }

    // The right password: the LDAP user, and none of the anonymous consumer's headers.
    let alice = credentials("ldap", "alice", "alicepw");
    assert_ldap_user(&gw.get_with("/ldap", &[("Authorization", alice.as_str())]).await, "alice");
}

#[tokio::test]
async fn unreachable_directory_is_500() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/ldap", ldap_config(dead_port(), json!({"timeout": 2000}))).await;

    let alice = credentials("ldap", "alice", "alicepw");
    let r = gw.get_with("/ldap", &[("Authorization", alice.as_str())]).await;
    assert_message(&r, 500, "An unexpected error occurred");
    assert_eq!(up.requests(), 0);
    // Without credentials nothing is asked of the directory: still the 401.
    assert_message(&gw.get("/ldap").await, 401, "Unauthorized");
}

#[tokio::test]
async fn header_type_basic() {
    let ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/basic", ldap_config(ldap.port, json!({"header_type": "basic"}))).await;

    for scheme in ["basic", "Basic", "BASIC"] {
        let h = credentials(scheme, "alice", "alicepw");
        assert_ldap_user(&gw.get_with("/basic", &[("Authorization", h.as_str())]).await, "alice");
    }
    let ldap_scheme = credentials("ldap", "alice", "alicepw");
    let r = gw.get_with("/basic", &[("Authorization", ldap_scheme.as_str())]).await;
    assert_message(&r, 403, "Invalid authentication credentials");
    let wrong = credentials("basic", "alice", "wrong");
    assert_message(
        &gw.get_with("/basic", &[("Authorization", wrong.as_str())]).await,
        403,
        "Invalid authentication credentials",
    );

    // The challenge names the configured scheme verbatim (only `ldap` is upper-cased).
    let r = gw.get("/basic").await;
    assert_message(&r, 401, "Unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("basic realm=\"kong\""), "{:?}", r.headers);
}

#[tokio::test]
async fn outcomes_are_cached_for_cache_ttl() {
    let mut ldap = Slapd::start().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ldap-up").await;
    guarded(&gw, &up, "/cached", ldap_config(ldap.port, json!({"cache_ttl": 5, "timeout": 2000}))).await;

    let alice = credentials("ldap", "alice", "alicepw");
    let wrong = credentials("ldap", "bob", "wrong");
    assert_ldap_user(&gw.get_with("/cached", &[("Authorization", alice.as_str())]).await, "alice");
    let r = gw.get_with("/cached", &[("Authorization", wrong.as_str())]).await;
    assert_message(&r, 403, "Invalid authentication credentials");
    let cached_at = Instant::now();

    // The directory goes away: both outcomes are still known for a while …
    ldap.stop();
    assert_ldap_user(&gw.get_with("/cached", &[("Authorization", alice.as_str())]).await, "alice");
    let r = gw.get_with("/cached", &[("Authorization", wrong.as_str())]).await;
    assert_message(&r, 403, "Invalid authentication credentials");
    assert!(
        cached_at.elapsed() < Duration::from_secs(5),
        "the requests took longer than cache_ttl: nothing was shown about the cache"
    );
    // … while credentials never seen need the directory.
    let unseen = credentials("ldap", "bob", "bobpw");
    assert_message(
        &gw.get_with("/cached", &[("Authorization", unseen.as_str())]).await,
        500,
        "An unexpected error occurred",
    );

    // Once cache_ttl has passed, the directory is asked again (and is not there).
    let started = Instant::now();
    loop {
        let r = gw.get_with("/cached", &[("Authorization", alice.as_str())]).await;
        if r.status == 500 {
            assert_message(&r, 500, "An unexpected error occurred");
            break;
        }
        assert_ldap_user(&r, "alice");
        assert!(started.elapsed() < Duration::from_secs(20), "the cached success outlived cache_ttl (5 s) by far");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(cached_at.elapsed() >= Duration::from_secs(4), "the cached success expired before cache_ttl");
}
