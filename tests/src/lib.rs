//! End-to-end harness for Gatehouse's control plane.
//!
//! Every test starts its own `gatehouse-cp run` process on free ports, against a fresh
//! database (an SQLite file in a temporary directory, or a fresh Postgres database that
//! is dropped afterwards), talks to it over real HTTP and kills it on `Drop`. Nothing is
//! shared between tests: no global server, no fixed ports.
//!
//! What lives here:
//! - [`Backend`], [`Database`]: where the gateway keeps its data (and direct read access to
//!   the `changes` table for change-log tests);
//! - [`Gateway`]: the running process plus an HTTP client (`gw.get`, `gw.post_json`,
//!   `gw.post_form`, …) returning [`Resp`];
//! - [`cli`]: one-shot `gatehouse-cp <args>` runs (migrations, un-migrated start);
//! - [`Snapshot`]: the whole visible configuration, to assert that a rejected request
//!   stored nothing;
//! - [`both!`] / [`per_backend!`]: one test body, run once per backend;
//! - small value helpers ([`is_uuid`], [`now_secs`], [`self_signed`], …).
//!
//! The binary is expected at `<target>/debug/gatehouse-cp`: run `cargo build --bins` first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use sqlx::{Connection, Row};
use tempfile::TempDir;

pub use reqwest;
pub use serde_json::json;

/// How long a gateway may take to answer `GET /status` after being spawned.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The 27 plugins bundled with Kong 0.14.1.
pub const BUNDLED_PLUGINS: [&str; 27] = [
    "jwt",
    "acl",
    "cors",
    "oauth2",
    "tcp-log",
    "udp-log",
    "file-log",
    "http-log",
    "key-auth",
    "hmac-auth",
    "basic-auth",
    "ip-restriction",
    "request-transformer",
    "response-transformer",
    "request-size-limiting",
    "rate-limiting",
    "response-ratelimiting",
    "aws-lambda",
    "bot-detection",
    "correlation-id",
    "datadog",
    "galileo",
    "ldap-auth",
    "loggly",
    "statsd",
    "syslog",
    "request-termination",
];

/// The bundled plugins that have a runtime, and so are the only ones enabled: the Admin API
/// refuses the others (`plugin 'x' not enabled`) until they do something.
pub const ENABLED_PLUGINS: [&str; 27] = [
    "aws-lambda",
    "galileo",
    "jwt",
    "acl",
    "cors",
    "oauth2",
    "tcp-log",
    "udp-log",
    "file-log",
    "http-log",
    "key-auth",
    "hmac-auth",
    "basic-auth",
    "ip-restriction",
    "request-transformer",
    "response-transformer",
    "request-size-limiting",
    "rate-limiting",
    "response-ratelimiting",
    "bot-detection",
    "correlation-id",
    "datadog",
    "ldap-auth",
    "loggly",
    "statsd",
    "syslog",
    "request-termination",
];

/// Runs one async test body against both backends.
///
/// `both!(name, |gw| async move { ... })` expands to a module `name` with two tests,
/// `sqlite` and `postgres`, each starting its own [`Gateway`].
#[macro_export]
macro_rules! both {
    ($name:ident, |$gw:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $gw = $crate::Gateway::start($crate::Backend::Sqlite).await;
                $body.await
            }

            #[tokio::test]
            async fn postgres() {
                let $gw = $crate::Gateway::start($crate::Backend::Postgres).await;
                $body.await
            }
        }
    };
}

/// Like [`both!`], but hands the body a [`Backend`] so it can manage processes itself.
#[macro_export]
macro_rules! per_backend {
    ($name:ident, |$backend:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $backend = $crate::Backend::Sqlite;
                $body.await
            }

            #[tokio::test]
            async fn postgres() {
                let $backend = $crate::Backend::Postgres;
                $body.await
            }
        }
    };
}

// === Backend, Database ===

/// The store a gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test. Postgres databases are dropped on `Drop`.
pub struct Database {
    pub backend: Backend,
    /// The URL handed to the gateway as `GATEHOUSE_DATABASE_URL`.
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

/// One row of the `changes` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub seq: i64,
    pub entity: String,
    pub entity_id: String,
    pub op: String,
    pub doc: Option<String>,
}

impl Change {
    /// The `doc` column parsed as JSON (panics if it is not JSON).
    pub fn doc_json(&self) -> Option<Value> {
        self.doc
            .as_ref()
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("changes.doc is not JSON ({e}): {d}")))
    }
}

fn postgres_admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The admin URL with its database name replaced by `db`.
fn postgres_url_for(db: &str) -> String {
    let admin = postgres_admin_url();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base.as_str(),
    };
    format!("{server}/{db}{query}")
}

impl Database {
    /// Creates an empty database for `backend` (not migrated).
    pub async fn create(backend: Backend) -> Database {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("create temp dir for sqlite");
                let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
                Database { backend, url, pg_name: None, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let name = format!("gh_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("cannot connect to Postgres at {admin} ({e}); start it or set GATEHOUSE_TEST_POSTGRES")
                });
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                let _ = conn.close().await;
                Database { backend, url: postgres_url_for(&name), pg_name: Some(name), _dir: None }
            }
        }
    }

    /// A second handle on the same database that does not drop it (for a second
    /// gateway process on the same store).
    pub fn handle(&self) -> Database {
        Database { backend: self.backend, url: self.url.clone(), pg_name: None, _dir: None }
    }

    /// All rows of the `changes` table, ordered by (revision, seq).
    pub async fn changes(&self) -> Vec<Change> {
        const SQL: &str = "SELECT CAST(revision AS BIGINT), CAST(seq AS BIGINT), \
             CAST(entity AS TEXT), CAST(entity_id AS TEXT), CAST(op AS TEXT), CAST(doc AS TEXT) \
             FROM changes ORDER BY revision, seq";
        fn row<R: Row>(r: &R) -> Change
        where
            usize: sqlx::ColumnIndex<R>,
            for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        {
            Change {
                revision: r.try_get(0).expect("changes.revision"),
                seq: r.try_get(1).expect("changes.seq"),
                entity: r.try_get(2).expect("changes.entity"),
                entity_id: r.try_get(3).expect("changes.entity_id"),
                op: r.try_get(4).expect("changes.op"),
                doc: r.try_get(5).expect("changes.doc"),
            }
        }
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.expect("connect to the test database");
                let rows = sqlx::query(SQL).fetch_all(&mut c).await.expect("SELECT FROM changes");
                let _ = c.close().await;
                rows.iter().map(row).collect()
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.expect("open the test sqlite database");
                let rows = sqlx::query(SQL).fetch_all(&mut c).await.expect("SELECT FROM changes");
                let _ = c.close().await;
                rows.iter().map(row).collect()
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Best effort, on a thread of its own: we may be inside a runtime here.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

// === process helpers ===

/// Path of the `gatehouse-cp` binary next to this test executable.
///
/// # Panics
/// If the binary has not been built.
pub fn cp_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test exe has a parent").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps has a parent").to_path_buf();
    }
    let bin = dir.join(format!("gatehouse-cp{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --bins` before the end-to-end tests \
         (e.g. `cargo build --bins && cargo nextest run --workspace`)",
        bin.display()
    );
    bin
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The TCP ports process `pid` is listening on (IPv4 and IPv6, each once), read from its
/// open sockets in `/proc/<pid>/fd` and the kernel's socket tables in `/proc/net/tcp{,6}`.
pub fn listening_ports(pid: u32) -> std::collections::BTreeSet<u16> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"));
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_else(|e| panic!("read {table}: {e}"));
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st, queues, tr, retrnsmt, uid, timeout, inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9)) else { continue };
            if *state != "0A" || !inodes.contains(*inode) {
                continue;
            }
            let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            ports.insert(port.unwrap_or_else(|| panic!("bad local address {local} in {table}")));
        }
    }
    ports
}

/// `N` different ports that were free a moment ago: two calls of [`free_port`] can return
/// the same port, and one process cannot listen twice on it.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = [0; N];
    let mut found = 0;
    while found < N {
        let p = free_port();
        if !ports[..found].contains(&p) {
            ports[found] = p;
            found += 1;
        }
    }
    ports
}

/// Environment for one `gatehouse-cp` invocation.
fn cp_env(db: &Database, prefix: &Path, admin_port: u16, ssl_port: Option<u16>) -> Vec<(String, String)> {
    vec![
        ("GATEHOUSE_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin_port}")),
        ("GATEHOUSE_ADMIN_SSL_LISTEN".into(), ssl_port.map_or_else(|| "off".to_owned(), |p| format!("127.0.0.1:{p}"))),
        ("GATEHOUSE_CLUSTER_LISTEN".into(), "off".into()),
        ("GATEHOUSE_DATABASE_URL".into(), db.url.clone()),
        ("GATEHOUSE_PREFIX".into(), prefix.display().to_string()),
    ]
}

fn cp_command(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(cp_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Output of a finished CLI invocation.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `gatehouse-cp <args>` against `db` with the usual environment and waits for it
/// to exit (killing it after `deadline`, which yields `code: None, success: false`).
pub async fn cli(db: &Database, args: &[&str], deadline: Duration) -> CliOutput {
    let prefix = tempfile::tempdir().expect("prefix dir");
    let env = cp_env(db, prefix.path(), free_port(), None);
    let std_cmd = cp_command(&env);
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().expect("spawn gatehouse-cp");
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(Ok(out)) => CliOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for gatehouse-cp {args:?}: {e}"),
        Err(_) => CliOutput {
            success: false,
            code: None,
            stdout: String::new(),
            stderr: format!("gatehouse-cp {args:?} did not exit within {deadline:?}"),
        },
    }
}

/// Runs `gatehouse-cp migrations up` and panics unless it succeeds.
pub async fn migrate(db: &Database) {
    let out = cli(db, &["migrations", "up"], Duration::from_secs(60)).await;
    assert!(out.success, "`gatehouse-cp migrations up` failed: {out:?}");
}

// === Gateway ===

/// Options for starting a gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also listen for HTTPS on a free port (`GATEHOUSE_ADMIN_SSL_LISTEN`).
    pub admin_ssl: bool,
}

/// A running `gatehouse-cp run` process and a client for its Admin API.
pub struct Gateway {
    pub backend: Backend,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub port: u16,
    /// `https://127.0.0.1:<port>` when started with `admin_ssl`.
    pub https_base: Option<String>,
    client: reqwest::Client,
    child: Option<Child>,
    stderr_path: PathBuf,
    // Dropped after the child is killed (see `Drop`), database before the directory.
    pub db: Database,
    work: TempDir,
    opts: Options,
}

impl Gateway {
    /// A fresh database of `backend` (migrated for Postgres) and a gateway on it.
    pub async fn start(backend: Backend) -> Gateway {
        Gateway::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, opts: Options) -> Gateway {
        let db = Database::create(backend).await;
        if backend == Backend::Postgres {
            migrate(&db).await;
        }
        Gateway::start_on(db, opts).await
    }

    /// Starts a gateway on an existing (already migrated, for Postgres) database.
    pub async fn start_on(db: Database, opts: Options) -> Gateway {
        let work = tempfile::tempdir().expect("work dir");
        let prefix = work.path().join("prefix");
        std::fs::create_dir_all(&prefix).expect("create prefix dir");
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build().expect("http client");
        let mut gw = Gateway {
            backend: db.backend,
            base: String::new(),
            port: 0,
            https_base: None,
            client,
            child: None,
            stderr_path: work.path().join("cp.stderr.log"),
            db,
            work,
            opts,
        };
        gw.spawn().await;
        gw
    }

    async fn spawn(&mut self) {
        // A port picked by `free_port` can be taken by someone else before the child
        // binds it; then the child exits early and we try again on new ports.
        for attempt in 1..=3 {
            match self.try_spawn().await {
                Ok(()) => return,
                Err(logs) if attempt < 3 && logs.to_ascii_lowercase().contains("in use") => continue,
                Err(logs) => panic!("gatehouse-cp run failed to start; stderr:\n{logs}"),
            }
        }
    }

    async fn try_spawn(&mut self) -> Result<(), String> {
        let [port, ssl] = free_ports();
        let ssl_port = self.opts.admin_ssl.then_some(ssl);
        let prefix = self.work.path().join("prefix");
        let env = cp_env(&self.db, &prefix, port, ssl_port);
        let stdout = std::fs::File::create(self.work.path().join("cp.stdout.log")).expect("stdout log");
        let stderr = std::fs::File::create(&self.stderr_path).expect("stderr log");
        let child = cp_command(&env)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn gatehouse-cp run");
        self.child = Some(child);
        self.port = port;
        self.base = format!("http://127.0.0.1:{port}");
        self.https_base = ssl_port.map(|p| format!("https://127.0.0.1:{p}"));
        self.wait_ready().await
    }

    /// Polls `GET /status` until 200; `Err(stderr)` if the child exited first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let url = format!("{}/status", self.base);
        loop {
            if self.exited() {
                self.child = None;
                return Err(self.logs());
            }
            let attempt = self.client.get(&url).timeout(Duration::from_secs(2)).send().await;
            if attempt.is_ok_and(|r| r.status().as_u16() == 200) {
                // Make sure it was our process that answered.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.exited() {
                    self.child = None;
                    return Err(self.logs());
                }
                return Ok(());
            }
            if started.elapsed() > START_DEADLINE {
                panic!("gatehouse-cp did not answer 200 on {url} within {START_DEADLINE:?}; stderr:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// What the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts a new one on the same database (new port).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The `GATEHOUSE_PREFIX` directory of this gateway.
    pub fn prefix(&self) -> PathBuf {
        self.work.path().join("prefix")
    }

    // --- HTTP ---

    /// `path` relative to the Admin API (or an absolute URL, used verbatim).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// The underlying client, for unusual requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a prepared request and reads the whole response.
    pub async fn send(&self, what: String, req: reqwest::RequestBuilder) -> Resp {
        let r =
            req.send().await.unwrap_or_else(|e| panic!("{what}: request failed: {e}\nserver stderr:\n{}", self.logs()));
        Resp::read(what, r).await
    }

    pub async fn request(&self, method: Method, path: &str) -> Resp {
        let what = format!("{method} {path}");
        self.send(what, self.client.request(method, self.url(path))).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path).await
    }

    pub async fn options(&self, path: &str) -> Resp {
        self.request(Method::OPTIONS, path).await
    }

    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Resp {
        let what = format!("{method} {path} {body}");
        self.send(what, self.client.request(method, self.url(path)).json(body)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.json(Method::POST, path, body).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Resp {
        self.json(Method::PUT, path, body).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> Resp {
        self.json(Method::PATCH, path, body).await
    }

    /// `application/x-www-form-urlencoded` body from pairs (keys and values url-encoded).
    pub async fn form(&self, method: Method, path: &str, pairs: &[(&str, &str)]) -> Resp {
        let what = format!("{method} {path} (form) {pairs:?}");
        self.send(what, self.client.request(method, self.url(path)).form(pairs)).await
    }

    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Resp {
        self.form(Method::POST, path, pairs).await
    }

    pub async fn put_form(&self, path: &str, pairs: &[(&str, &str)]) -> Resp {
        self.form(Method::PUT, path, pairs).await
    }

    pub async fn patch_form(&self, path: &str, pairs: &[(&str, &str)]) -> Resp {
        self.form(Method::PATCH, path, pairs).await
    }

    /// A body sent verbatim with the given `Content-Type` (none if `None`).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let what = format!("{method} {path} (raw, content-type {content_type:?})");
        let mut req = self.client.request(method, self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(what, req).await
    }

    /// `application/x-www-form-urlencoded` body written by hand (e.g. `hosts[]=a&hosts[]=b`).
    pub async fn post_form_raw(&self, path: &str, body: &str) -> Resp {
        self.raw(Method::POST, path, Some("application/x-www-form-urlencoded"), body.to_owned()).await
    }

    /// `multipart/form-data` body with one text part per pair.
    pub async fn multipart(&self, method: Method, path: &str, pairs: &[(&str, &str)]) -> Resp {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in pairs {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        let what = format!("{method} {path} (multipart) {pairs:?}");
        self.send(what, self.client.request(method, self.url(path)).multipart(form)).await
    }

    /// Sends `method path` with a `body_len`-byte body of `fill` over a raw TCP connection
    /// (with `Content-Length`, or chunked), reading concurrently so that an early answer
    /// (e.g. 413 before the body is read) is seen even if the server then resets the
    /// connection. Returns the response status, or `None` if no status line arrived.
    pub async fn oversized(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        prefix: &str,
        body_len: usize,
        chunked: bool,
    ) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.expect("connect to the admin port");
        let (mut rd, mut wr) = stream.into_split();
        let length =
            if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {body_len}") };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: {content_type}\r\n{length}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let prefix = prefix.as_bytes().to_vec();
        let writer = async move {
            let _ = async {
                wr.write_all(head.as_bytes()).await?;
                let mut sent = 0usize;
                let chunk = vec![b'a'; 64 * 1024];
                while sent < body_len {
                    let mut piece = if sent == 0 { prefix.clone() } else { Vec::new() };
                    let room = (chunk.len()).min(body_len - sent).saturating_sub(piece.len());
                    piece.extend_from_slice(&chunk[..room]);
                    if chunked {
                        wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                        wr.write_all(&piece).await?;
                        wr.write_all(b"\r\n").await?;
                    } else {
                        wr.write_all(&piece).await?;
                    }
                    sent += piece.len().max(1);
                }
                if chunked {
                    wr.write_all(b"0\r\n\r\n").await?;
                }
                wr.flush().await
            }
            .await;
            std::future::pending::<()>().await;
        };
        let reader = async move {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                match rd.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&tmp[..n]);
                        if buf.windows(2).any(|w| w == b"\r\n") {
                            break;
                        }
                    }
                }
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok())
        };
        let run = async {
            tokio::select! {
                status = reader => status,
                () = writer => None,
            }
        };
        tokio::time::timeout(Duration::from_secs(60), run).await.unwrap_or(None)
    }

    // --- state ---

    /// `config_revision` from `GET /status`.
    pub async fn revision(&self) -> i64 {
        let body = self.get("/status").await.expect(200);
        body["config_revision"].as_i64().unwrap_or_else(|| panic!("/status has no integer config_revision: {body}"))
    }

    /// Rows of the `changes` table.
    pub async fn changes(&self) -> Vec<Change> {
        self.db.changes().await
    }

    /// Follows `next` from `path` until it is null; returns every page's body.
    pub async fn pages(&self, path: &str) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut url = self.url(path);
        loop {
            let body = self.get(&url).await.expect(200);
            let next = body.get("next").cloned().unwrap_or(Value::Null);
            pages.push(body);
            match next {
                Value::Null => return pages,
                Value::String(n) => {
                    assert!(
                        n.starts_with("http://") || n.starts_with("https://"),
                        "`next` must be an absolute URL, got {n:?} (from {url})"
                    );
                    url = n;
                }
                other => panic!("`next` must be a string or null, got {other} (from {url})"),
            }
            assert!(pages.len() < 10_000, "pagination of {path} does not end");
        }
    }

    /// Every item of a list, following `next`.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        for page in self.pages(path).await {
            let data = page["data"].as_array().unwrap_or_else(|| panic!("{path}: `data` is not an array: {page}"));
            items.extend(data.iter().cloned());
        }
        items
    }

    /// Everything the Admin API shows, plus the config revision.
    pub async fn snapshot(&self) -> Snapshot {
        let mut collections = BTreeMap::new();
        for path in ["/services", "/routes", "/consumers", "/plugins", "/upstreams", "/certificates", "/snis"] {
            let items = self.list_all(&format!("{path}?size=1000")).await;
            collections.insert(path.to_owned(), sorted_by_id(items));
        }
        let upstream_ids: Vec<String> =
            collections["/upstreams"].iter().filter_map(|u| u["id"].as_str().map(str::to_owned)).collect();
        for id in upstream_ids {
            let path = format!("/upstreams/{id}/targets/all");
            let items = self.list_all(&format!("{path}?size=1000")).await;
            collections.insert(path, sorted_by_id(items));
        }
        Snapshot { revision: self.revision().await, collections }
    }

    /// Asserts that nothing visible changed since `before` and the server still answers.
    pub async fn assert_unchanged(&self, before: &Snapshot) {
        let now = self.snapshot().await;
        assert_eq!(now.revision, before.revision, "config_revision moved after a rejected request");
        for (path, items) in &before.collections {
            assert_eq!(now.collections.get(path), Some(items), "{path} changed after a rejected request");
        }
        assert_eq!(now.collections.len(), before.collections.len(), "collections changed after a rejected request");
    }

    // --- entity shortcuts (each asserts 201) ---

    pub async fn create_service(&self, name: &str) -> Value {
        self.post_json("/services", &json!({"name": name, "host": format!("{name}.example.com")})).await.expect(201)
    }

    pub async fn create_route(&self, service_id: &str, paths: &[&str]) -> Value {
        self.post_json("/routes", &json!({"paths": paths, "service": {"id": service_id}})).await.expect(201)
    }

    pub async fn create_consumer(&self, username: &str) -> Value {
        self.post_json("/consumers", &json!({ "username": username })).await.expect(201)
    }

    pub async fn create_upstream(&self, name: &str) -> Value {
        self.post_json("/upstreams", &json!({ "name": name })).await.expect(201)
    }

    pub async fn create_target(&self, upstream: &str, target: &str, weight: u32) -> Value {
        self.post_json(&format!("/upstreams/{upstream}/targets"), &json!({"target": target, "weight": weight}))
            .await
            .expect(201)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The visible configuration at one moment (see [`Gateway::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub collections: BTreeMap<String, Vec<Value>>,
}

fn sorted_by_id(mut items: Vec<Value>) -> Vec<Value> {
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    items
}

// === Resp ===

/// A fully read response.
#[derive(Debug)]
pub struct Resp {
    /// `METHOD path` of the request, for failure messages.
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub body: Value,
    pub text: String,
}

impl Resp {
    async fn read(what: String, r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { what, status, headers, body, text }
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        self.assert_status(status);
        self.body
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "{}: expected {status}, got {} with body {}",
            truncate(&self.what),
            self.status,
            truncate(&self.text)
        );
    }

    /// Asserts a 4xx status (any), as for input the server must refuse.
    #[track_caller]
    pub fn assert_client_error(&self) {
        assert!(
            (400..500).contains(&self.status),
            "{}: expected a 4xx, got {} with body {}",
            truncate(&self.what),
            self.status,
            truncate(&self.text)
        );
    }

    /// A header value as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an N-layer error object (`code`, `name`, a string `message`, a `strategy`)
    /// with this HTTP status, and returns the body for further checks.
    #[track_caller]
    pub fn n_error(self, status: u16, code: i64, name: &str) -> Value {
        let what = self.what.clone();
        let body = self.expect(status);
        assert_eq!(body["code"], json!(code), "{what}: error code in {body}");
        assert_eq!(body["name"], json!(name), "{what}: error name in {body}");
        assert!(body["message"].is_string(), "{what}: no message in {body}");
        assert!(body["strategy"].is_string(), "{what}: no strategy in {body}");
        body
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 2000 {
        let mut end = 2000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s.to_owned()
    }
}

// === value helpers ===

/// A canonical (lower-case, hyphenated) UUID string.
pub fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 36 && uuid::Uuid::parse_str(s).is_ok() && s.chars().all(|c| !c.is_ascii_uppercase())
    })
}

/// A new random UUID string.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Asserts an N-layer timestamp: integer seconds, close to now.
#[track_caller]
pub fn assert_secs(v: &Value) {
    let t = v.as_i64().unwrap_or_else(|| panic!("timestamp {v} is not an integer"));
    assert!((now_secs() - t).abs() < 600, "timestamp {t} is not in seconds near now ({})", now_secs());
}

/// Asserts an O-layer timestamp: integer milliseconds, close to now.
#[track_caller]
pub fn assert_millis(v: &Value) {
    let t = v.as_i64().unwrap_or_else(|| panic!("timestamp {v} is not an integer"));
    assert!((now_ms() - t).abs() < 600_000, "timestamp {t} is not in milliseconds near now ({})", now_ms());
}

/// The keys of a JSON object, sorted.
#[track_caller]
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

/// Sorted list of strings, for comparing key sets.
pub fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Asserts that no value in the object tree is JSON `null` (O-layer output).
#[track_caller]
pub fn assert_no_nulls(v: &Value) {
    fn walk(v: &Value, path: &str) {
        match v {
            Value::Null => panic!("null at {path}"),
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, &format!("{path}.{k}"))),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            _ => {}
        }
    }
    walk(v, "$");
}

/// The `id`s of a list of entities.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap_or_else(|| panic!("no id in {i}")).to_owned()).collect()
}

/// The `data` array of a list body.
#[track_caller]
pub fn data(body: &Value) -> Vec<Value> {
    body["data"].as_array().unwrap_or_else(|| panic!("`data` is not an array: {body}")).clone()
}

/// A self-signed certificate for `names`: (cert PEM, key PEM).
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen certificate");
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

/// The `id` of an entity body, as a string.
#[track_caller]
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no string id in {v}")).to_owned()
}

pub mod cluster;
pub mod otlp;
pub mod proxy;
