//! End-to-end harness for the proxy.
//!
//! [`Standalone`] runs `gatehouse-cp standalone` (the Admin API and a data plane in one
//! process, the data plane fed through the real sync session over an in-process link) on free ports,
//! configures it through the Admin API and talks to its proxy listeners. [`Upstream`] servers
//! are started by each test on `127.0.0.1:0`: an echo server that reports what it received
//! (plain or TLS), a slow one, a body sink, a body source, a dripping one, a WebSocket echo,
//! a listener that closes every connection it accepts (to count connection attempts) and
//! one whose connections never complete (connect timeouts). [`presented_certificate`]
//! inspects the certificate the proxy serves for an SNI; [`RssWatch`] samples its memory.
//!
//! Requests to the proxy go either through [`Standalone::request`] (a hand-written HTTP/1.1
//! request over a fresh TCP connection, so the request target and headers are exactly what
//! the test wrote) or through [`Standalone::client`] (reqwest: TLS, HTTP/2, streaming).
//! Both yield a [`Reply`].
//!
//! Nothing is shared between tests; processes and servers stop on `Drop`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response as WsResponse};
use tokio_tungstenite::tungstenite::Message;

use crate::{cp_binary, free_port};

/// How long the standalone process may take to answer on both status endpoints.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a data plane may take to apply the control plane's revision.
const SYNC_DEADLINE: Duration = Duration::from_secs(10);
/// Upper bound for one hand-written request/response exchange.
const RAW_DEADLINE: Duration = Duration::from_secs(30);

// === Standalone ===

/// A running `gatehouse-cp standalone` process: Admin API, proxy (plain and TLS) and the
/// data plane's status endpoint, each on a free port of 127.0.0.1.
pub struct Standalone {
    /// `http://127.0.0.1:<admin port>`
    pub admin: String,
    pub admin_port: u16,
    pub proxy_port: u16,
    pub proxy_tls_port: u16,
    pub status_port: u16,
    admin_client: reqwest::Client,
    proxy_client: reqwest::Client,
    child: Option<Child>,
    log: PathBuf,
    work: TempDir,
    extra_env: Vec<(String, String)>,
}

impl Standalone {
    /// Starts a standalone gateway on a fresh SQLite database and waits until both the
    /// Admin API and the data plane answer `GET /status` with 200.
    pub async fn start() -> Standalone {
        Standalone::start_with_env(&[]).await
    }

    /// [`Standalone::start`] with more `GATEHOUSE_*` settings (they win over the defaults).
    pub async fn start_with_env(extra: &[(&str, &str)]) -> Standalone {
        let work = tempfile::tempdir().expect("work dir");
        let log = work.path().join("standalone.stderr.log");
        let mut gw = Standalone {
            admin: String::new(),
            admin_port: 0,
            proxy_port: 0,
            proxy_tls_port: 0,
            status_port: 0,
            admin_client: {
                // A gateway started with an Admin API token is administered with it.
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some((_, token)) = extra.iter().find(|(k, _)| *k == "GATEHOUSE_ADMIN_TOKEN") {
                    let value = format!("Bearer {token}").parse().expect("token header");
                    headers.insert(reqwest::header::AUTHORIZATION, value);
                }
                reqwest::Client::builder()
                    .no_proxy()
                    .default_headers(headers)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .expect("admin client")
            },
            proxy_client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(120))
                .build()
                .expect("proxy client"),
            child: None,
            log,
            work,
            extra_env: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        // A port picked by `free_port` can be taken before the child binds it: try again.
        for attempt in 1..=3 {
            match gw.try_spawn().await {
                Ok(()) => return gw,
                Err(logs) if attempt < 3 && logs.to_ascii_lowercase().contains("in use") => continue,
                Err(logs) => panic!("gatehouse-cp standalone failed to start; stderr:\n{logs}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    async fn try_spawn(&mut self) -> Result<(), String> {
        let mut ports = Vec::new();
        while ports.len() < 4 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let (admin, proxy, tls, status) = (ports[0], ports[1], ports[2], ports[3]);
        self.admin_port = admin;
        self.proxy_port = proxy;
        self.proxy_tls_port = tls;
        self.status_port = status;
        self.admin = format!("http://127.0.0.1:{admin}");
        let env = [
            ("GATEHOUSE_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
            ("GATEHOUSE_ADMIN_SSL_LISTEN", "off".to_owned()),
            ("GATEHOUSE_PROXY_LISTEN", format!("127.0.0.1:{proxy}")),
            ("GATEHOUSE_PROXY_SSL_LISTEN", format!("127.0.0.1:{tls}")),
            ("GATEHOUSE_STATUS_LISTEN", format!("127.0.0.1:{status}")),
            ("GATEHOUSE_DATABASE_URL", format!("sqlite://{}", self.work.path().join("gh.db").display())),
            ("GATEHOUSE_PREFIX", self.work.path().join("prefix").display().to_string()),
            ("GATEHOUSE_PROXY_WORKERS", "2".to_owned()),
        ];
        let mut cmd = Command::new(cp_binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("GATEHOUSE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let stderr = std::fs::File::create(&self.log).expect("stderr log");
        let child = cmd
            .arg("standalone")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn gatehouse-cp standalone");
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let urls = [format!("{}/status", self.admin), format!("http://127.0.0.1:{}/status", self.status_port)];
        loop {
            if self.exited() {
                self.child = None;
                return Err(self.logs());
            }
            let mut ready = true;
            for url in &urls {
                let r = self.admin_client.get(url).timeout(Duration::from_secs(2)).send().await;
                ready &= r.is_ok_and(|r| r.status().as_u16() == 200);
            }
            if ready {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.exited() {
                    self.child = None;
                    return Err(self.logs());
                }
                return Ok(());
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "gatehouse-cp standalone did not answer 200 on {urls:?} within {START_DEADLINE:?}; stderr:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// What the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's directory: its SQLite file (`gh.db`) and prefix (`prefix/`, with the
    /// data plane's cache in `prefix/dp-cache`).
    pub fn dir(&self) -> &std::path::Path {
        self.work.path()
    }

    /// The process id (for reading `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the gateway is running")
    }

    /// Sends SIGTERM, as a process supervisor stopping the gateway does.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits up to `limit` for the process to exit; its exit status, or `None` if it is still
    /// running.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("the gateway was started");
        let until = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the data plane serves the control plane's current `config_revision`.
    pub async fn sync(&self) {
        let target = self.admin_get("/status").await["config_revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("Admin /status has no integer config_revision"));
        let url = format!("http://127.0.0.1:{}/status", self.status_port);
        let started = Instant::now();
        loop {
            let got = match self.admin_client.get(&url).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            let rev = got.as_ref().and_then(|v| v["config_revision"].as_i64()).unwrap_or(-1);
            if rev >= target {
                return;
            }
            assert!(
                started.elapsed() < SYNC_DEADLINE,
                "data plane stuck at revision {rev} (status {got:?}) waiting for {target}; stderr:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // --- Admin API ---

    /// Sends one Admin API request; returns (status, JSON body or `Null`).
    pub async fn admin_send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.admin_client.request(method.clone(), format!("{}{path}", self.admin));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("Admin {method} {path}: {e}\nstderr:\n{}", self.logs()));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let (status, body) = self.admin_send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "Admin GET {path}: {body}");
        body
    }

    /// POSTs JSON to the Admin API and returns the created entity (asserts 201).
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, got) = self.admin_send(reqwest::Method::POST, path, Some(&body)).await;
        assert_eq!(status, 201, "Admin POST {path} {body}: {got}");
        got
    }

    /// PATCHes JSON on the Admin API and returns the entity (asserts 200).
    pub async fn patch(&self, path: &str, body: Value) -> Value {
        let (status, got) = self.admin_send(reqwest::Method::PATCH, path, Some(&body)).await;
        assert_eq!(status, 200, "Admin PATCH {path} {body}: {got}");
        got
    }

    /// Deletes through the Admin API (asserts 204).
    pub async fn delete(&self, path: &str) {
        let (status, got) = self.admin_send(reqwest::Method::DELETE, path, None).await;
        assert_eq!(status, 204, "Admin DELETE {path}: {got}");
    }

    /// Creates a Service pointing at `up` (`http://127.0.0.1:<port>`), with the fields of
    /// `extra` (an object) added or overriding.
    pub async fn service_for(&self, up: &Upstream, extra: Value) -> Value {
        self.service_at(up.port(), extra).await
    }

    /// Creates a Service pointing at `127.0.0.1:<port>`, plus the fields of `extra`.
    pub async fn service_at(&self, port: u16, extra: Value) -> Value {
        let mut body = json!({"host": "127.0.0.1", "port": port});
        merge(&mut body, extra);
        self.post("/services", body).await
    }

    /// Creates a Route to `service` with the fields of `fields` (an object).
    pub async fn route(&self, service: &Value, fields: Value) -> Value {
        let mut body = json!({"service": {"id": crate::id_of(service)}});
        merge(&mut body, fields);
        self.post("/routes", body).await
    }

    /// A Service for `up` (plus `service_extra`) and one Route to it (`route_fields`).
    pub async fn expose(&self, up: &Upstream, service_extra: Value, route_fields: Value) -> (Value, Value) {
        let service = self.service_for(up, service_extra).await;
        let route = self.route(&service, route_fields).await;
        (service, route)
    }

    // --- proxy ---

    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.proxy_port))
    }

    pub fn proxy_tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.proxy_tls_port))
    }

    /// `http://127.0.0.1:<proxy port><path>`
    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy_port)
    }

    /// `https://127.0.0.1:<proxy TLS port><path>`
    pub fn proxy_tls_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.proxy_tls_port)
    }

    /// A reqwest client for the proxy: no redirects, any server certificate accepted,
    /// HTTP/2 offered through ALPN on TLS.
    pub fn client(&self) -> &reqwest::Client {
        &self.proxy_client
    }

    /// Sends a reqwest request (built on [`Standalone::client`]) and reads the whole reply.
    pub async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: request failed: {e:?}\nstderr:\n{}", self.logs()));
        Reply::read(what, r).await
    }

    /// `GET target` over a fresh plain connection, `Host: 127.0.0.1:<proxy port>`.
    pub async fn get(&self, target: &str) -> Reply {
        self.request("GET", target, &[]).await
    }

    /// `GET target` with extra headers (a `Host` among them replaces the default one).
    pub async fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", target, headers).await
    }

    /// A hand-written HTTP/1.1 request over a fresh TCP connection to the plain proxy port:
    /// `METHOD target HTTP/1.1`, `Host: 127.0.0.1:<port>` unless `headers` has a `Host`,
    /// then `headers` in order, no body.
    pub async fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.proxy_port));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.send_raw(head.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {target} {headers:?}: {e}\nstderr:\n{}", self.logs()))
    }

    /// Writes `bytes` verbatim on a fresh connection to the plain proxy port and reads one
    /// response. `Err` if the connection closed (or 30 s passed) before a complete response.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<Reply, String> {
        exchange(self.proxy_addr(), bytes).await
    }
}

/// Everything the peer sends until it closes the connection, as text.
///
/// # Panics
/// If the connection is not closed within 10 s, or fails.
pub async fn until_closed<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the peer closes the connection within 10 s")
        .expect("the connection reads to its end");
    String::from_utf8_lossy(&all).into_owned()
}

/// Writes `bytes` verbatim on a fresh TCP connection to `addr` and reads one response.
/// `Err` if the connection closed (or 30 s passed) before a complete response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Reply, String> {
    let what = String::from_utf8_lossy(bytes.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
    let run = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        // A server may answer and close before reading everything: ignore write errors.
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        read_response(&mut stream, &what).await
    };
    tokio::time::timeout(RAW_DEADLINE, run)
        .await
        .unwrap_or_else(|_| Err(format!("{what}: no complete response within {RAW_DEADLINE:?}")))
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Adds the fields of the object `extra` to the object `base`.
fn merge(base: &mut Value, extra: Value) {
    match extra {
        Value::Object(fields) => {
            let obj = base.as_object_mut().expect("merge into an object");
            for (k, v) in fields {
                obj.insert(k, v);
            }
        }
        Value::Null => {}
        other => panic!("expected a JSON object of extra fields, got {other}"),
    }
}

// === Reply ===

/// A fully read response from the proxy.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The request line (or a description), for failure messages.
    pub what: String,
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2.0`, …
    pub version: String,
    /// Header names in lower case, in order of arrival.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads a reqwest response completely.
    pub async fn read(what: &str, r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let version = format!("{:?}", r.version());
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = r.bytes().await.unwrap_or_else(|e| panic!("{what}: reading the body: {e:?}")).to_vec();
        Reply { what: what.to_owned(), status, version, headers, body }
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, showing the reply, if it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {} {}", self.what, self.status, self.text()))
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Reply {
        assert_eq!(
            self.status,
            status,
            "{}: expected status {status}, got {} with headers {:?} and body {}",
            self.what,
            self.status,
            self.headers,
            self.text()
        );
        self
    }

    /// Asserts a 200 from an echo upstream and returns what it reported.
    #[track_caller]
    pub fn echo(&self) -> Echo {
        self.assert_status(200);
        let v = self.json();
        assert!(v["path"].is_string(), "{}: not an echo upstream's answer: {v}", self.what);
        Echo(v)
    }

    /// Asserts `Server: gatehouse/<version>` (a response the gateway generated itself).
    #[track_caller]
    pub fn assert_generated(&self) {
        let server = self.header("server").unwrap_or_default();
        assert!(
            server.starts_with("gatehouse/"),
            "{}: a gateway-generated response must carry `Server: gatehouse/<version>`, got {server:?} (headers {:?})",
            self.what,
            self.headers
        );
    }
}

/// What an echo upstream reported about the request it received.
#[derive(Debug, Clone)]
pub struct Echo(pub Value);

impl Echo {
    /// Which echo server answered (its name).
    pub fn upstream(&self) -> &str {
        self.0["upstream"].as_str().unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or_default()
    }

    /// The raw request target (path and query) as the upstream received it.
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }

    /// A request header as the upstream received it (several values joined by `", "`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0["headers"][name.to_ascii_lowercase()].as_str()
    }

    /// The HTTP version of the request the upstream received (`HTTP/1.1`, …).
    pub fn version(&self) -> &str {
        self.0["version"].as_str().unwrap_or_default()
    }

    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().unwrap_or(u64::MAX)
    }

    /// The first 64 KiB of the body the upstream received, as text.
    pub fn body(&self) -> &str {
        self.0["body"].as_str().unwrap_or_default()
    }
}

/// Reads one HTTP/1.x response (framed by `Content-Length`, chunked, or EOF). The answer to
/// a HEAD request (`what` names the method) has no body, whatever its head says.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S, what: &str) -> Result<Reply, String> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if fill(s, &mut buf).await? == 0 {
            return Err(format!(
                "{what}: connection closed before a complete response head ({} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf)
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{what}: bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut rest = buf.split_off(head_end + 4);
    let body = if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if what.starts_with("HEAD ") {
        // Whatever came after the head: a body sent by mistake.
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        read_chunked(s, rest, what).await?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| format!("{what}: bad Content-Length {len:?}"))?;
        while rest.len() < len {
            if fill(s, &mut rest).await? == 0 {
                return Err(format!("{what}: body cut at {} of {len} bytes", rest.len()));
            }
        }
        rest.truncate(len);
        rest
    } else {
        while fill(s, &mut rest).await? != 0 {}
        rest
    };
    Ok(Reply { what: what.to_owned(), status, version, headers, body })
}

async fn read_chunked<S: AsyncRead + Unpin>(s: &mut S, mut buf: Vec<u8>, what: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            if fill(s, &mut buf).await? == 0 {
                return Err(format!("{what}: chunked body cut"));
            }
        };
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| format!("{what}: bad chunk size {size_text:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let start = line_end + 2;
        while buf.len() < start + size + 2 {
            if fill(s, &mut buf).await? == 0 {
                return Err(format!("{what}: chunk cut"));
            }
        }
        body.extend_from_slice(&buf[start..start + size]);
        pos = start + size + 2;
    }
}

async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut tmp = [0u8; 16 * 1024];
    match s.read(&mut tmp).await {
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(n)
        }
        // A reset after a complete response is an end of stream for our purposes.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// === upstream servers ===

/// What an upstream server observed.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// HTTP requests (or WebSocket handshakes) received.
    pub requests: AtomicUsize,
    /// Request body bytes received (sink, echo).
    pub body_bytes: AtomicU64,
    /// Wrapping sum of every request body byte received (sink).
    pub body_sum: AtomicU64,
    /// Request targets received, in order.
    pub paths: Mutex<Vec<String>>,
    /// TLS server names received, one per connection (TLS upstreams).
    pub snis: Mutex<Vec<Option<String>>>,
}

#[derive(Clone)]
enum Behaviour {
    /// Answers JSON describing the request.
    Echo,
    /// Like `Echo`, after sleeping this long (before sending response headers).
    Slow(Duration),
    /// Counts the request body as it streams in; answers `{"bytes", "sum"}`.
    Sink,
    /// Answers `n` bytes of [`pattern_chunk`] data, streamed in chunks.
    Source(u64),
    /// Sends `first`, pauses, then `rest`.
    Drip { first: Bytes, pause: Duration, rest: Bytes },
}

type Body = BoxBody<Bytes, Infallible>;

/// A server on `127.0.0.1:<ephemeral>` that a test started; stops on `Drop`.
pub struct Upstream {
    pub name: String,
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Answers every request with `200` and JSON
    /// `{"upstream": name, "method", "path" (raw target), "version", "headers": {lower-case name: value},
    /// "body_len", "body" (its first 64 KiB as text)}`,
    /// plus `Server: upstream-echo` and `X-Upstream: <name>`.
    pub async fn echo(name: &str) -> Upstream {
        Upstream::http(name, Behaviour::Echo).await
    }

    /// An echo server that sleeps `delay` before sending the response headers.
    pub async fn slow(name: &str, delay: Duration) -> Upstream {
        Upstream::http(name, Behaviour::Slow(delay)).await
    }

    /// Counts request body bytes as they arrive ([`Upstream::body_bytes`]) and answers
    /// `{"bytes": n, "sum": wrapping byte sum}` at the end.
    pub async fn sink(name: &str) -> Upstream {
        Upstream::http(name, Behaviour::Sink).await
    }

    /// Answers `len` bytes made of repeated [`pattern_chunk`]s, streamed (chunked).
    pub async fn source(name: &str, len: u64) -> Upstream {
        Upstream::http(name, Behaviour::Source(len)).await
    }

    /// Answers `first`, waits `pause`, then sends `rest` and ends the body.
    pub async fn drip(name: &str, first: &str, pause: Duration, rest: &str) -> Upstream {
        let b = Behaviour::Drip {
            first: Bytes::copy_from_slice(first.as_bytes()),
            pause,
            rest: Bytes::copy_from_slice(rest.as_bytes()),
        };
        Upstream::http(name, b).await
    }

    /// Accepts connections and closes each one at once without reading or answering;
    /// counts them ([`Upstream::connections`]).
    pub async fn closer(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("local_addr");
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        s.connections.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Upstream { name: name.to_owned(), addr, stats, task }
    }

    /// A listener whose accept queue is full and never drained: new connection attempts
    /// hang (their SYNs are dropped) until the connecting side times out.
    pub async fn blackhole(name: &str) -> Upstream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind upstream");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("local_addr");
        // Fill the queue: connect until a connection no longer completes.
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        assert!(fillers.len() < 16, "the accept queue of {addr} never filled up");
        let task = tokio::spawn(async move {
            let _keep = (listener, fillers);
            std::future::pending::<()>().await;
        });
        Upstream { name: name.to_owned(), addr, stats: Arc::new(Stats::default()), task }
    }

    /// A WebSocket server echoing every text and binary message; records each handshake's
    /// request target in [`Upstream::paths`].
    #[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
    pub async fn websocket_echo(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("local_addr");
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(&s);
                conns.spawn(async move {
                    let record = |req: &WsRequest, resp: WsResponse| {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        s.paths.lock().expect("paths lock").push(req.uri().to_string());
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if matches!(msg, Message::Close(_)) {
                            let _ = ws.close(None).await;
                            break;
                        }
                        let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                        if echo && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Upstream { name: name.to_owned(), addr, stats, task }
    }

    async fn http(name: &str, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Upstream::serve(listener, name, behaviour, None)
    }

    /// An echo server on a given address (e.g. `127.0.0.2:80`), if it can be bound.
    pub async fn echo_on(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Upstream::serve(listener, name, Behaviour::Echo, None))
    }

    /// An echo server speaking HTTPS with a self-signed certificate; records the SNI of
    /// each connection ([`Upstream::snis`]).
    pub async fn echo_tls(name: &str) -> Upstream {
        Upstream::tls(name, Behaviour::Echo).await
    }

    /// Like [`Upstream::source`], over HTTPS.
    pub async fn source_tls(name: &str, len: u64) -> Upstream {
        Upstream::tls(name, Behaviour::Source(len)).await
    }

    async fn tls(name: &str, behaviour: Behaviour) -> Upstream {
        let cert = TestCert::new("upstream.test");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            rcgen::KeyPair::from_pem(&cert.key_pem).expect("key").serialize_der(),
        )
        .expect("private key DER");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der.clone())], key)
            .expect("server certificate");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Upstream::serve(listener, name, behaviour, Some(acceptor))
    }

    fn serve(
        listener: TcpListener,
        name: &str,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let addr = listener.local_addr().expect("local_addr");
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        let label: Arc<str> = name.into();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, b, label, tls) = (Arc::clone(&s), behaviour.clone(), Arc::clone(&label), tls.clone());
                conns.spawn(async move {
                    let conn_stats = Arc::clone(&s);
                    let svc = service_fn(move |req| handle(req, b.clone(), Arc::clone(&s), Arc::clone(&label)));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else { return };
                            let sni = tls.get_ref().1.server_name().map(str::to_owned);
                            conn_stats.snis.lock().expect("snis lock").push(sni);
                            let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Upstream { name: name.to_owned(), addr, stats, task }
    }

    /// The SNI of each TLS connection accepted (`None`: the client sent none).
    pub fn snis(&self) -> Vec<Option<String>> {
        self.stats.snis.lock().expect("snis lock").clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    pub fn body_bytes(&self) -> u64 {
        self.stats.body_bytes.load(Ordering::SeqCst)
    }

    pub fn body_sum(&self) -> u64 {
        self.stats.body_sum.load(Ordering::SeqCst)
    }

    /// Request targets received so far.
    pub fn paths(&self) -> Vec<String> {
        self.stats.paths.lock().expect("paths lock").clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn handle(
    req: hyper::Request<Incoming>,
    behaviour: Behaviour,
    stats: Arc<Stats>,
    label: Arc<str>,
) -> Result<hyper::Response<Body>, Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let target = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned());
    stats.paths.lock().expect("paths lock").push(target.clone());
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    // `X-Echo-Response-Header: name: value` asks for that field on the answer (tests of
    // plugins that read the upstream's response fields).
    let extra: Vec<(String, String)> = req
        .headers()
        .get_all("x-echo-response-header")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
        .collect();
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), Value::String(v));
            }
        }
    }
    // Read (and count) the request body as it streams in.
    let mut body = req.into_body();
    let (mut len, mut sum) = (0u64, 0u64);
    // The first 64 KiB, for tests of what plugins made of a body.
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
            if kept.len() < 64 * 1024 {
                kept.extend_from_slice(&data[..data.len().min(64 * 1024 - kept.len())]);
            }
            stats.body_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
            if matches!(behaviour, Behaviour::Sink) {
                sum = data.iter().fold(sum, |acc, b| acc.wrapping_add(u64::from(*b)));
            }
        }
    }
    stats.body_sum.fetch_add(sum, Ordering::SeqCst);
    let mut response = hyper::Response::builder()
        .header("server", "upstream-echo")
        .header("x-upstream", label.as_ref())
        .header("date", "Thu, 01 Jan 2026 00:00:00 GMT");
    for (name, value) in &extra {
        response = response.header(name.as_str(), value.as_str());
    }
    let json_body = |v: Value| Full::new(Bytes::from(v.to_string())).boxed();
    let echo = json!({
        "upstream": &*label,
        "method": method,
        "path": target,
        "version": version,
        "headers": headers,
        "body_len": len,
        "body": String::from_utf8_lossy(&kept),
    });
    let resp = match behaviour {
        Behaviour::Echo => response.header("content-type", "application/json").body(json_body(echo)),
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            response.header("content-type", "application/json").body(json_body(echo))
        }
        Behaviour::Sink => {
            response.header("content-type", "application/json").body(json_body(json!({"bytes": len, "sum": sum})))
        }
        Behaviour::Source(total) => {
            let chunk = pattern_chunk();
            let stream = futures::stream::unfold(0u64, move |sent| {
                let chunk = chunk.clone();
                async move {
                    if sent >= total {
                        return None;
                    }
                    let n = (chunk.len() as u64).min(total - sent) as usize;
                    Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..n))), sent + n as u64))
                }
            });
            response.header("content-type", "application/octet-stream").body(BodyExt::boxed(StreamBody::new(stream)))
        }
        Behaviour::Drip { first, pause, rest } => {
            let parts = futures::stream::unfold(0u8, move |step| {
                let (first, rest) = (first.clone(), rest.clone());
                async move {
                    match step {
                        0 => Some((Ok::<_, Infallible>(Frame::data(first)), 1)),
                        1 => {
                            tokio::time::sleep(pause).await;
                            Some((Ok(Frame::data(rest)), 2))
                        }
                        _ => None,
                    }
                }
            });
            response.header("content-type", "text/plain").body(BodyExt::boxed(StreamBody::new(parts)))
        }
    };
    Ok(resp.expect("valid upstream response"))
}

/// 64 KiB of bytes `i % 251`: the unit of streamed test bodies.
pub fn pattern_chunk() -> Bytes {
    Bytes::from((0..64 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// Wrapping sum of the bytes of `n` bytes of repeated [`pattern_chunk`]s.
pub fn pattern_sum(n: u64) -> u64 {
    let chunk = pattern_chunk();
    let per_chunk: u64 = chunk.iter().map(|b| u64::from(*b)).sum();
    let full = n / chunk.len() as u64;
    let tail = (n % chunk.len() as u64) as usize;
    let tail_sum: u64 = chunk[..tail].iter().map(|b| u64::from(*b)).sum();
    per_chunk.wrapping_mul(full).wrapping_add(tail_sum)
}

/// A port on 127.0.0.1 with nothing listening (connections are refused).
pub fn dead_port() -> u16 {
    free_port()
}

// === TLS ===

/// A self-signed certificate for one DNS name.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate in DER, to compare with what a server presents.
    pub der: Vec<u8>,
}

impl TestCert {
    pub fn new(name: &str) -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen certificate");
        TestCert { cert_pem: ck.cert.pem(), key_pem: ck.key_pair.serialize_pem(), der: ck.cert.der().to_vec() }
    }
}

/// Accepts every server certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration (ring) that accepts any server certificate.
pub fn tls_client_config(alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr`, sending `sni` as the server name (none when `None`).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&str],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(alpn));
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).expect("a valid DNS name"),
        // rustls sends no SNI extension for an IP address.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(name, tcp).await
}

/// The DER of the leaf certificate `addr` presents for `sni` (none when `None`).
pub async fn presented_certificate(addr: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    let tls = tokio::time::timeout(Duration::from_secs(10), tls_connect(addr, sni, &[]))
        .await
        .unwrap_or_else(|_| panic!("TLS handshake with {addr} (SNI {sni:?}) timed out"))
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} (SNI {sni:?}): {e}"));
    let (_, conn) = tls.get_ref();
    let certs = conn.peer_certificates().unwrap_or_else(|| panic!("no certificate presented for SNI {sni:?}"));
    certs.first().expect("a leaf certificate").as_ref().to_vec()
}

// === process metrics ===

/// Resident set size of a process, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value");
    kb * 1024
}

/// Samples [`rss_bytes`] every 50 ms until dropped; [`RssWatch::peak`] is the highest seen.
pub struct RssWatch {
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let p = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kb) = status
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        p.fetch_max(kb * 1024, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssWatch { peak, task }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `cond` holds, polling every 10 ms; `false` if `within` passed first.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !cond() {
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
