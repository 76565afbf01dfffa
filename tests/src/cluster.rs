//! End-to-end harness for control plane ↔ data plane sync: control planes with their cluster
//! listener on, real `gatehouse-dp` processes, and a lightweight in-test sync client for
//! scenarios that need many data planes.
//!
//! Every process gets free ports and its own directory; processes are killed on `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_shared::proto::config_sync_client::ConfigSyncClient;
use gatehouse_shared::proto::control_plane_message::Message as CpMsg;
use gatehouse_shared::proto::data_plane_message::Message as DpMsg;
use gatehouse_shared::proto::{Ack, Change, ControlPlaneMessage, DataPlaneMessage, Hello, WriteRequest, WriteResult};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{cp_binary, free_ports, Database};

/// A shared cluster certificate, written by `gatehouse-cp gen-cert`.
pub struct ClusterCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: TempDir,
}

impl ClusterCert {
    pub fn generate() -> ClusterCert {
        let dir = tempfile::tempdir().expect("cert dir");
        let cert = dir.path().join("cluster.crt");
        let key = dir.path().join("cluster.key");
        let out = Command::new(cp_binary())
            .args(["gen-cert", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .output()
            .expect("run gatehouse-cp gen-cert");
        assert!(out.status.success(), "gen-cert failed: {}", String::from_utf8_lossy(&out.stderr));
        ClusterCert { cert, key, _dir: dir }
    }
}

fn dp_binary() -> PathBuf {
    let cp = cp_binary();
    let dp = cp.with_file_name("gatehouse-dp");
    assert!(dp.exists(), "{} is missing: run `cargo build --bins` first", dp.display());
    dp
}

fn clean_command(binary: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(binary);
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.stdin(Stdio::null());
    cmd
}

/// A child process with its stderr in a file, killed on drop.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn");
        Proc { child: Some(child), log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_http(client: &reqwest::Client, url: &str, proc: &mut Proc) {
    let started = Instant::now();
    loop {
        if proc.exited() {
            panic!("process exited early; stderr:\n{}", proc.logs());
        }
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{url} did not answer; stderr:\n{}", proc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("client")
}

/// A DB-less data plane (`gatehouse-dp run --declarative-config FILE`): no control plane,
/// the file is its whole configuration.
pub struct DbLess {
    proc: Proc,
    _dir: TempDir,
}

impl DbLess {
    /// Starts on `file` with the proxy and status listeners on the given ports, and waits
    /// until the status listener answers.
    pub async fn start(file: &Path, proxy: u16, status: u16) -> DbLess {
        let dir = tempfile::tempdir().expect("dp dir");
        let env = vec![
            ("GATEHOUSE_CACHE_DIR".to_string(), dir.path().join("cache").display().to_string()),
            ("GATEHOUSE_STATUS_LISTEN".into(), format!("127.0.0.1:{status}")),
            ("GATEHOUSE_PROXY_LISTEN".into(), format!("127.0.0.1:{proxy}")),
            ("GATEHOUSE_PROXY_SSL_LISTEN".into(), "off".into()),
        ];
        let mut cmd = clean_command(&dp_binary(), &env);
        cmd.arg("run").arg("--declarative-config").arg(file);
        let mut proc = Proc::spawn(cmd, dir.path().join("dp.log"));
        wait_http(&client(), &format!("http://127.0.0.1:{status}/status"), &mut proc).await;
        DbLess { proc, _dir: dir }
    }

    /// Sends SIGHUP: the data plane reads its file again.
    pub fn hup(&mut self) {
        let pid = self.proc.child.as_ref().map(Child::id).expect("running");
        let ok = Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill -HUP");
        assert!(ok.success(), "kill -HUP {pid} failed");
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.as_ref().map(Child::id).expect("running")
    }
}

/// A control plane with its Admin API and cluster listener on free ports.
pub struct ControlPlane {
    pub admin: String,
    pub admin_port: u16,
    pub cluster_port: u16,
    extra: Vec<(String, String)>,
    db_url: String,
    cert: (PathBuf, PathBuf),
    dir: TempDir,
    proc: Option<Proc>,
    http: reqwest::Client,
}

impl ControlPlane {
    /// Starts a control plane on `db` (migrated already for Postgres), with extra environment.
    pub async fn start(db: &Database, cert: &ClusterCert, extra: &[(&str, &str)]) -> ControlPlane {
        let [admin_port, cluster_port] = free_ports();
        let mut cp = ControlPlane {
            admin: String::new(),
            admin_port,
            cluster_port,
            extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            db_url: db.url.clone(),
            cert: (cert.cert.clone(), cert.key.clone()),
            dir: tempfile::tempdir().expect("cp dir"),
            proc: None,
            http: client(),
        };
        cp.admin = format!("http://127.0.0.1:{}", cp.admin_port);
        cp.spawn().await;
        cp
    }

    async fn spawn(&mut self) {
        let mut env = vec![
            ("GATEHOUSE_ADMIN_LISTEN".to_string(), format!("127.0.0.1:{}", self.admin_port)),
            ("GATEHOUSE_ADMIN_SSL_LISTEN".into(), "off".into()),
            ("GATEHOUSE_CLUSTER_LISTEN".into(), format!("127.0.0.1:{}", self.cluster_port)),
            ("GATEHOUSE_CLUSTER_CERT".into(), self.cert.0.display().to_string()),
            ("GATEHOUSE_CLUSTER_CERT_KEY".into(), self.cert.1.display().to_string()),
            ("GATEHOUSE_DATABASE_URL".into(), self.db_url.clone()),
            ("GATEHOUSE_PREFIX".into(), self.dir.path().join("prefix").display().to_string()),
        ];
        env.extend(self.extra.iter().cloned());
        let mut cmd = clean_command(&cp_binary(), &env);
        cmd.arg("run");
        let mut proc = Proc::spawn(cmd, self.dir.path().join("cp.log"));
        wait_http(&self.http, &format!("{}/status", self.admin), &mut proc).await;
        self.proc = Some(proc);
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts again on the same ports and database.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::logs).unwrap_or_default()
    }

    /// The process id, for reading its resource use under /proc.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.child.as_ref()).map(Child::id)
    }

    pub fn cluster_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster_port)
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.admin)).send().await.expect("GET").json().await.expect("JSON body")
    }

    /// POSTs a JSON body and returns the created entity (panics unless 201).
    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.admin)).json(body).send().await.expect("POST");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("JSON body");
        assert_eq!(status, 201, "POST {path}: {body}");
        body
    }

    pub async fn delete(&self, path: &str) {
        let r = self.http.delete(format!("{}{path}", self.admin)).send().await.expect("DELETE");
        assert_eq!(r.status().as_u16(), 204, "DELETE {path}");
    }

    pub async fn revision(&self) -> i64 {
        self.get("/status").await["config_revision"].as_i64().expect("config_revision")
    }

    pub async fn data_planes(&self) -> Vec<Value> {
        self.get("/clustering/data-planes").await["data"].as_array().cloned().unwrap_or_default()
    }

    /// Creates `n` services, returning the head revision afterwards.
    pub async fn create_services(&self, n: usize, prefix: &str) -> i64 {
        for i in 0..n {
            self.post("/services", &serde_json::json!({"name": format!("{prefix}-{i}"), "host": "example.com"})).await;
        }
        self.revision().await
    }
}

/// A `gatehouse-dp run` process.
pub struct DataPlane {
    pub status_url: String,
    /// The plain proxy listener, `http://127.0.0.1:port`.
    pub proxy_url: String,
    pub cache_dir: PathBuf,
    env: Vec<(String, String)>,
    dir: TempDir,
    proc: Option<Proc>,
    http: reqwest::Client,
}

impl DataPlane {
    /// Starts a data plane following `control_plane` (`host:port`) with the given certificate.
    pub async fn start(control_plane: &str, cert: &ClusterCert, extra: &[(&str, &str)]) -> DataPlane {
        let dir = tempfile::tempdir().expect("dp dir");
        let cache_dir = dir.path().join("cache");
        let [port, proxy_port] = free_ports();
        let mut env = vec![
            ("GATEHOUSE_CLUSTER_CONTROL_PLANE".to_string(), control_plane.to_string()),
            ("GATEHOUSE_CLUSTER_CERT".into(), cert.cert.display().to_string()),
            ("GATEHOUSE_CLUSTER_CERT_KEY".into(), cert.key.display().to_string()),
            ("GATEHOUSE_CACHE_DIR".into(), cache_dir.display().to_string()),
            ("GATEHOUSE_STATUS_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("GATEHOUSE_STATUS_INTERVAL_MS".into(), "500".into()),
            ("GATEHOUSE_PROXY_LISTEN".into(), format!("127.0.0.1:{proxy_port}")),
            ("GATEHOUSE_PROXY_SSL_LISTEN".into(), "off".into()),
            ("GATEHOUSE_BACKOFF_MIN_MS".into(), "100".into()),
            ("GATEHOUSE_BACKOFF_MAX_MS".into(), "500".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut dp = DataPlane {
            status_url: format!("http://127.0.0.1:{port}/status"),
            proxy_url: format!("http://127.0.0.1:{proxy_port}"),
            cache_dir,
            env,
            dir,
            proc: None,
            http: client(),
        };
        dp.spawn().await;
        dp
    }

    async fn spawn(&mut self) {
        let mut cmd = clean_command(&dp_binary(), &self.env);
        cmd.arg("run");
        let mut proc = Proc::spawn(cmd, self.dir.path().join(format!("dp-{}.log", fastrand_suffix())));
        wait_http(&self.http, &self.status_url, &mut proc).await;
        self.proc = Some(proc);
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts again with the same cache directory and identity, optionally pointing elsewhere.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Proc::logs).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.child.as_ref()).map(Child::id)
    }

    pub async fn status(&self) -> Value {
        self.http.get(&self.status_url).send().await.expect("status").json().await.expect("status JSON")
    }

    pub async fn revision(&self) -> i64 {
        self.status().await["config_revision"].as_i64().unwrap_or(-1)
    }

    /// Waits until the data plane serves `revision` (or later); panics after `within`.
    pub async fn wait_revision(&self, revision: i64, within: Duration) -> Value {
        let started = Instant::now();
        loop {
            let s = self.status().await;
            if s["config_revision"].as_i64().unwrap_or(-1) >= revision {
                return s;
            }
            assert!(
                started.elapsed() < within,
                "data plane stuck at {s} waiting for revision {revision}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the on-disk cache (`config.json`: a checksum line, then the configuration
    /// as JSON) holds `revision` or later, so a process killed now restarts from it.
    /// Waits until the disk cache holds `revision` (its image and delta log, as the status
    /// endpoint reports), so a restart would serve it.
    pub async fn wait_cached(&self, revision: i64, within: Duration) {
        let started = Instant::now();
        loop {
            let cached = self.status().await["config_cache_revision"].as_i64();
            if cached.is_some_and(|r| r >= revision) {
                return;
            }
            assert!(started.elapsed() < within, "the cache holds {cached:?}, not revision {revision}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_connected(&self, connected: bool, within: Duration) {
        let started = Instant::now();
        while self.status().await["control_plane_connected"].as_bool() != Some(connected) {
            assert!(started.elapsed() < within, "connected never became {connected}; logs:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn fastrand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// What an in-test sync client received on one connection.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub snapshot_chunks: usize,
    pub deltas: usize,
    pub up_to_date: usize,
    pub revision: i64,
    pub epoch: String,
}

/// A minimal data plane speaking the sync protocol directly: it acknowledges everything.
pub struct SyncClient {
    pub node_id: String,
    pub epoch: String,
    pub revision: i64,
    /// What its Hello says: the workspace's version and every bundled plugin, unless a test
    /// changes them.
    pub version: String,
    pub plugins: Vec<String>,
}

impl SyncClient {
    pub fn new() -> SyncClient {
        SyncClient {
            node_id: uuid::Uuid::new_v4().to_string(),
            epoch: String::new(),
            revision: 0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            plugins: gatehouse_shared::schema::enabled_names().iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Connects, says Hello with what it holds, and reads (acknowledging each batch) until it
    /// is at `target` or `within` passes. Returns what arrived on this connection.
    pub async fn sync_once(
        &mut self,
        addr: &str,
        cert: &ClusterCert,
        target: i64,
        within: Duration,
    ) -> Result<Received, String> {
        let (tx, mut inbound) = self.open(addr, cert).await?;
        let mut got = Received { revision: self.revision, epoch: self.epoch.clone(), ..Received::default() };
        let deadline = Instant::now() + within;
        while got.revision < target || (got.snapshot_chunks == 0 && got.deltas == 0 && got.up_to_date == 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, inbound.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => return Err("stream closed".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => break,
            };
            match &msg.message {
                Some(CpMsg::Snapshot(_)) => got.snapshot_chunks += 1,
                Some(CpMsg::Deltas(_)) => got.deltas += 1,
                Some(CpMsg::UpToDate(_)) => got.up_to_date += 1,
                _ => {}
            }
            if let Some((revision, epoch)) = position(msg) {
                got.revision = revision;
                got.epoch = epoch;
            }
            let ack = DataPlaneMessage { message: Some(DpMsg::Ack(Ack { revision: got.revision })) };
            let _ = tx.send(ack).await;
        }
        self.revision = got.revision;
        self.epoch = got.epoch.clone();
        Ok(got)
    }
}

/// Where a following in-test client stands: the revision it holds and on how many streams it
/// has been brought up to the control plane's head (a reconnection adds one).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Following {
    pub revision: i64,
    pub streams_in_sync: u32,
}

impl SyncClient {
    /// Stays connected, acknowledging everything, and publishes where it stands on `at` after
    /// each message; reconnects (saying what it holds) whenever the stream ends. Runs until
    /// the task is dropped or aborted.
    pub async fn follow(
        mut self,
        addr: String,
        cert: std::sync::Arc<ClusterCert>,
        at: tokio::sync::watch::Sender<Following>,
    ) {
        let mut streams_in_sync = 0;
        loop {
            let Ok((tx, mut inbound)) = self.open(&addr, &cert).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut counted = false;
            while let Ok(Some(msg)) = inbound.message().await {
                let Some((revision, epoch)) = position(msg) else { continue };
                self.revision = revision;
                self.epoch = epoch;
                let ack = DataPlaneMessage { message: Some(DpMsg::Ack(Ack { revision })) };
                if tx.send(ack).await.is_err() {
                    break;
                }
                if !counted {
                    counted = true;
                    streams_in_sync += 1;
                }
                at.send_replace(Following { revision, streams_in_sync });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The revision and epoch a message brings its receiver to: a snapshot's last chunk, a batch of
/// deltas, or word that it is up to date; `None` for anything else.
fn position(msg: ControlPlaneMessage) -> Option<(i64, String)> {
    match msg.message? {
        CpMsg::Snapshot(c) if c.last => Some((c.revision, c.epoch)),
        CpMsg::Deltas(d) => Some((d.revision, d.epoch)),
        CpMsg::UpToDate(u) => Some((u.revision, u.epoch)),
        _ => None,
    }
}

/// The data plane's half of an open sync stream.
type Stream = (mpsc::Sender<DataPlaneMessage>, tonic::Streaming<ControlPlaneMessage>);

impl SyncClient {
    /// Connects with the cluster certificate, opens the stream and says Hello with what this
    /// client holds.
    /// Opens a stream, says Hello and goes away at once, reading nothing: a data plane that
    /// dies as its snapshot starts.
    pub async fn hang_up_after_hello(&self, addr: &str, cert: &ClusterCert) -> Result<(), String> {
        let (tx, inbound) = self.open(addr, cert).await?;
        drop((tx, inbound));
        Ok(())
    }

    async fn open(&self, addr: &str, cert: &ClusterCert) -> Result<Stream, String> {
        let pem = std::fs::read(&cert.cert).map_err(|e| e.to_string())?;
        let key = std::fs::read(&cert.key).map_err(|e| e.to_string())?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pem))
            .identity(Identity::from_pem(&pem, key))
            .domain_name("gatehouse-cluster");
        let channel = Channel::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = ConfigSyncClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(8);
        let hello = Hello {
            node_id: self.node_id.clone(),
            hostname: "in-test".into(),
            version: self.version.clone(),
            plugins: self.plugins.clone(),
            epoch: self.epoch.clone(),
            revision: self.revision,
        };
        tx.send(DataPlaneMessage { message: Some(DpMsg::Hello(hello)) }).await.map_err(|e| e.to_string())?;
        let inbound = client.stream(ReceiverStream::new(rx)).await.map_err(|e| e.to_string())?.into_inner();
        Ok((tx, inbound))
    }

    /// Opens a stream, says Hello, sends one `WriteRequest` with `changes` and returns the
    /// control plane's `WriteResult`.
    pub async fn write(&self, addr: &str, cert: &ClusterCert, changes: Vec<Change>) -> Result<WriteResult, String> {
        let (tx, mut inbound) = self.open(addr, cert).await?;
        let write = WriteRequest { id: "w1".into(), changes };
        tx.send(DataPlaneMessage { message: Some(DpMsg::Write(write)) }).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, inbound.message()).await {
                Ok(Ok(Some(ControlPlaneMessage { message: Some(CpMsg::WriteResult(r)) }))) => return Ok(r),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Err("stream closed".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no WriteResult within 10 s".into()),
            }
        }
    }
}

impl Default for SyncClient {
    fn default() -> Self {
        SyncClient::new()
    }
}
