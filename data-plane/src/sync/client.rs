//! The sync client loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_shared::proto::config_sync_client::ConfigSyncClient;
use gatehouse_shared::proto::control_plane_message::Message as In;
use gatehouse_shared::proto::data_plane_message::Message as Out;
use gatehouse_shared::proto::{Ack, Change, DataPlaneMessage, Hello, Nack, Status, TargetHealth, WriteRequest};
use gatehouse_shared::snapshot::{ApplyError, ConfigSet};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

use super::disk_cache::{Delta, DiskCache};
use crate::compiled::{CompileError, Compiled};
use crate::config::{Config, Mtls};
use crate::live::Live;
use crate::plugins::control_plane::WriteError;

/// Who this data plane is, as it introduces itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub hostname: String,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("cannot read TLS material {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("cluster mTLS needs cluster_cert and cluster_cert_key")]
    MissingCert,
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Rpc(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
    #[error("a batch did not follow the applied revision")]
    OutOfOrder,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, SyncError> {
    std::fs::read(path).map_err(|e| SyncError::Tls(path.display().to_string(), e))
}

/// Runs the sync stream's connection task on the data plane's main runtime: HTTP/2 pings are
/// then answered while the sync client's own thread is busy with a full compile (at 100,000
/// routes, seconds), and the control plane does not take the stream for dead.
#[derive(Clone)]
struct OnRuntime(tokio::runtime::Handle);

impl<F: std::future::Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for OnRuntime {
    fn execute(&self, task: F) {
        self.0.spawn(task);
    }
}

/// A channel to the control plane: over the in-process link when there is one, else over
/// TCP to `control_plane`, with mTLS unless it is off. The connection is opened on `main`, so
/// its socket is registered with that runtime's reactor: opened from the sync thread, the
/// socket's readiness would be polled there, and a compile would stall the connection task
/// on `main` all the same.
async fn connect(config: &Config, main: &tokio::runtime::Handle) -> Result<Channel, SyncError> {
    let connecting = match &config.link {
        Some(link) => {
            let link = link.clone();
            let pipe = tower::service_fn(move |_: http::Uri| {
                let link = link.clone();
                async move { link.connect().await.map(hyper_util::rt::TokioIo::new) }
            });
            let endpoint = tuned(Endpoint::from_static("http://in-process"), main);
            main.spawn(async move { endpoint.connect_with_connector(pipe).await })
        }
        None => {
            let endpoint = endpoint(config, main)?;
            main.spawn(async move { endpoint.connect().await })
        }
    };
    // The main runtime shutting down: the data plane is stopping.
    Ok(connecting.await.map_err(|_| SyncError::Closed)??)
}

fn tuned(ep: Endpoint, main: &tokio::runtime::Handle) -> Endpoint {
    ep.executor(OnRuntime(main.clone()))
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
}

fn endpoint(config: &Config, main: &tokio::runtime::Handle) -> Result<Endpoint, SyncError> {
    let scheme = if config.mtls == Mtls::Off { "http" } else { "https" };
    let mut ep = tuned(
        Channel::from_shared(format!("{scheme}://{}", config.control_plane)).map_err(|_| SyncError::Closed)?,
        main,
    )
    .tcp_nodelay(true);
    if config.mtls != Mtls::Off {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else { return Err(SyncError::MissingCert) };
        let cert = read(cert)?;
        let root = match (config.mtls, &config.ca) {
            (Mtls::Pki, Some(ca)) => read(ca)?,
            _ => cert.clone(),
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root))
            .identity(TlsIdentity::from_pem(cert, read(key)?))
            .domain_name(config.server_name.clone());
        ep = ep.tls_config(tls)?;
    }
    Ok(ep)
}

/// State kept across reconnections.
struct Follower {
    config: Config,
    identity: Identity,
    plugins: HashSet<String>,
    live: Arc<Live>,
    persist: Persist,
    /// The data plane's main runtime (see [`spawn`]).
    main: tokio::runtime::Handle,
}

/// Runs [`run`] on a thread of its own, on a single-threaded runtime, and returns a handle
/// (on the caller's runtime) that completes once it has stopped and its runtime is gone (the
/// cache writer, on the caller's runtime, may still be finishing a write).
///
/// Everything a configuration is made of (the decoded rows, the documents, the compiled
/// routes) is then allocated from one heap, so a delta's new nodes fill the holes the nodes it
/// replaces leave. With the snapshot compiled on one thread and the deltas on another, each
/// write's nodes took fresh pages while the holes stayed empty: a data plane at 10,000
/// Services + Routes grew about 3 MiB over 1,000 writes, of which 0.3 MiB was configuration.
/// What must not wait for a compile stays on the caller's runtime: the stream's connection
/// (HTTP/2 pings), the cache writer, health probes and DNS lookups (the balancer registry's).
///
/// # Errors
/// The thread or its runtime could not be started.
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn(
    config: Config,
    identity: Identity,
    live: Arc<Live>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let main = tokio::runtime::Handle::current();
    let (started, starting) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    let (done, stopped) = oneshot::channel::<()>();
    let caller = main.clone();
    std::thread::Builder::new().name("config-sync".into()).spawn(move || {
        let mut started = Some(started);
        let mut pause = Duration::from_secs(1);
        loop {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    match started.take() {
                        Some(started) => drop(started.send(Err(e))),
                        None => tracing::error!(error = %e, "cannot restart the configuration sync"),
                    }
                    return;
                }
            };
            if let Some(started) = started.take() {
                let _ = started.send(Ok(()));
            }
            let (config, identity, following, stop) =
                (config.clone(), identity.clone(), live.clone(), shutdown.clone());
            let main = main.clone();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                runtime.block_on(async {
                    tokio::spawn(crate::memory::trim());
                    run(config, identity, following, stop, main).await;
                });
                // What the runtime still holds goes before the caller hears that sync stopped.
                drop(runtime);
            }));
            // A panic outside a compile (those are refusals, see `guarded`) would otherwise end
            // the thread silently and leave the data plane on its last configuration for good:
            // the sync starts again, from the configuration being served, after a pause that
            // doubles (to a minute) while the panics repeat. The status shows it disconnected
            // meanwhile.
            match ran {
                Ok(()) => break,
                Err(panic) if !*shutdown.borrow() => {
                    live.set_connected(false);
                    tracing::error!(
                        panic = panic_message(panic.as_ref()),
                        pause_ms = pause.as_millis() as u64,
                        "the configuration sync stopped on a panic; it starts again after the pause \
                         (the current configuration keeps serving)"
                    );
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(60));
                }
                Err(_) => break,
            }
        }
        let _ = done.send(());
    })?;
    // Blocks the caller only while the thread builds its runtime, once, at start-up.
    starting.recv().map_err(|_| std::io::Error::other("the sync thread ended before it started"))??;
    Ok(caller.spawn(async move {
        let _ = stopped.await;
    }))
}

/// Runs until `shutdown` fires: connect, follow, reconnect with backoff, on the current-thread
/// runtime of the thread [`spawn`] starts. `main` is the data plane's main runtime, for the
/// work that must not wait for a compile.
async fn run(
    config: Config,
    identity: Identity,
    live: Arc<Live>,
    mut shutdown: watch::Receiver<bool>,
    main: tokio::runtime::Handle,
) {
    let cache = DiskCache::new(config.cache_dir.clone());
    let persist = Persist::start(cache, live.clone(), &main);
    let plugins = config.plugins.iter().cloned().collect();
    let mut follower = Follower { config, identity, plugins, live, persist, main };
    let mut backoff = follower.config.backoff_min;
    loop {
        let started = std::time::Instant::now();
        tokio::select! {
            r = follower.session() => match r {
                Err(SyncError::Rpc(s)) if s.code() == tonic::Code::FailedPrecondition => {
                    tracing::error!(
                        reason = s.message(),
                        control_plane = %follower.config.control_plane,
                        "the control plane refuses to serve this data plane",
                    );
                    follower.live.set_refused(Some(s.message().to_owned()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, control_plane = %follower.config.control_plane, "sync stream ended");
                }
                Ok(()) => {}
            },
            _ = shutdown.changed() => return,
        }
        follower.live.set_connected(false);
        if started.elapsed() > Duration::from_secs(30) {
            backoff = follower.config.backoff_min;
        }
        // Full jitter: a fleet reconnecting after a control-plane restart spreads out.
        let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(follower.config.backoff_max);
    }
}

/// How long a health change waits for others before it is reported.
const HEALTH_REPORT_DELAY: Duration = Duration::from_millis(50);

/// At most one cache write per this interval: a burst of revisions costs one write.
const PERSIST_EVERY: Duration = Duration::from_millis(250);

/// A new generation is started once the logged deltas would pass half the image (and this
/// floor, so a small configuration is not rewritten for every delta): a restart never replays
/// more than about half an image's worth of deltas.
const LOG_SHARE: u64 = 2;
const LOG_FLOOR: u64 = 1024 * 1024;
/// Applied revisions waiting for the writer; past this many (a stalled disk) they are
/// dropped, the writer finds the gap and writes a new image, and memory stays bounded.
const MAX_QUEUED: usize = 1024;

/// The sync task's side of the cache writer.
struct Persist {
    /// The newest applied configuration.
    latest: watch::Sender<Option<Arc<ConfigSet>>>,
    /// What each applied revision was, in order: a delta, or `None` for a snapshot.
    applied: mpsc::Sender<Option<Delta>>,
}

impl Persist {
    /// The writer runs on `main`, beside the stream's connection: a compile on the sync
    /// thread does not hold it up.
    fn start(cache: DiskCache, live: Arc<Live>, main: &tokio::runtime::Handle) -> Persist {
        let (latest, latest_rx) = watch::channel(None);
        let (applied, applied_rx) = mpsc::channel(MAX_QUEUED);
        main.spawn(persist_loop(cache, latest_rx, applied_rx, live));
        Persist { latest, applied }
    }

    /// `set` was installed: from a snapshot (`delta` is `None`) or by applying `delta`.
    fn applied(&self, set: Arc<ConfigSet>, delta: Option<Delta>) {
        // Queued before the configuration is published, so the writer, having seen a
        // configuration, has been handed every revision up to it (or finds a gap).
        let _ = self.applied.try_send(delta);
        let _ = self.latest.send(Some(set));
    }
}

/// Writes applied configurations to disk off the sync task, on the blocking pool. A burst of
/// deltas that follow what is on disk is appended in one write; otherwise (the first write of
/// the process, a snapshot, a gap, deltas that would reach half the image) a new generation is
/// written from the newest configuration. The revision on disk after each write is published
/// for the status endpoint.
async fn persist_loop(
    cache: DiskCache,
    mut latest: watch::Receiver<Option<Arc<ConfigSet>>>,
    mut applied: mpsc::Receiver<Option<Delta>>,
    live: Arc<Live>,
) {
    // The epoch and revision on disk, once this process has written a generation.
    let mut on_disk: Option<(String, i64)> = None;
    let (mut image_bytes, mut logged_bytes) = (0u64, 0u64);
    while latest.changed().await.is_ok() {
        tokio::time::sleep(PERSIST_EVERY).await;
        let mut follows = on_disk.clone();
        let mut deltas = Vec::new();
        while let Ok(next) = applied.try_recv() {
            match next {
                Some(d) if follows.as_ref().is_some_and(|(e, r)| *e == d.epoch && *r == d.from) => {
                    follows = Some((d.epoch.clone(), d.revision));
                    deltas.push(d);
                }
                _ => follows = None,
            }
        }
        let Some(newest) = latest.borrow_and_update().clone() else { continue };
        let logged: u64 = deltas.iter().map(Delta::size).sum();
        let caught_up = follows.as_ref().is_some_and(|(e, r)| *e == newest.epoch && *r >= newest.revision);
        let full = follows.is_none()
            || (deltas.is_empty() && !caught_up)
            || (logged_bytes + logged) > (image_bytes / LOG_SHARE).max(LOG_FLOOR);
        if !full && deltas.is_empty() {
            continue;
        }
        let cache = cache.clone();
        let written = if full { (newest.epoch.clone(), newest.revision) } else { follows.clone().unwrap_or_default() };
        let write = tokio::task::spawn_blocking(move || {
            if full {
                cache.store(&newest).map(|n| (true, n))
            } else {
                cache.append(&deltas).map(|n| (false, n))
            }
        });
        match write.await {
            Ok(Ok((true, n))) => (image_bytes, logged_bytes) = (n, 0),
            Ok(Ok((false, n))) => logged_bytes += n,
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the configuration cache"),
                    Err(e) => tracing::warn!(error = %e, "cache writer failed"),
                    Ok(Ok(_)) => {}
                }
                // What is on disk is unknown: the next write starts a new generation.
                on_disk = None;
                continue;
            }
        }
        live.set_cached_revision(written.1);
        on_disk = Some(written);
    }
}

impl Follower {
    async fn session(&mut self) -> Result<(), SyncError> {
        let channel = connect(&self.config, &self.main).await?;
        let mut client = ConfigSyncClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        // Only the epoch and revision are kept: an `Arc` held here for the session pinned the
        // configuration it started with, every node the session's deltas replaced included.
        let (epoch, revision) = {
            let current = self.live.load();
            (current.set.epoch.clone(), current.set.revision)
        };
        let hello = Hello {
            node_id: self.identity.node_id.clone(),
            hostname: self.identity.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            plugins: self.config.plugins.clone(),
            epoch,
            revision,
        };
        send(&tx, Out::Hello(hello)).await?;
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        self.live.set_connected(true);
        self.live.counters.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(control_plane = %self.config.control_plane, revision, "connected");
        let mut ticker = tokio::time::interval(self.config.status_interval);
        self.live.control_plane.shared_counts.reconnected();
        let mut flush = tokio::time::interval(crate::plugins::limits::cluster::FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let health_changed = self.live.balancers.changed.clone();
        let live = self.live.clone();
        let mut writes = live.control_plane.writes.rx.lock().await;
        let mut pending: HashMap<String, oneshot::Sender<Result<i64, WriteError>>> = HashMap::new();
        // The snapshot being received: each chunk is applied as it arrives, so its decoded
        // rows are freed before the next is decoded. Holding every row until the last chunk
        // held 10 MiB of them at 10,000 Services + Routes, and left their holes among the
        // documents. The first refusal is kept, and the later chunks are dropped unread.
        let mut snapshot: Option<Result<ConfigSet, ApplyError>> = None;
        // After a NACK, batches that do not follow our revision are expected until the
        // control plane resends from it.
        let mut refused = false;
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let Some(msg) = msg? else { return Err(SyncError::Closed) };
                    // Served again: whatever refused it before no longer does.
                    if self.live.refused().is_some() {
                        self.live.set_refused(None);
                    }
                    match msg.message {
                        Some(In::Deltas(d)) => {
                            let current = self.live.load();
                            if d.epoch != current.set.epoch || d.from_revision != current.set.revision {
                                if refused { continue; }
                                return Err(SyncError::OutOfOrder);
                            }
                            let mut next = (*current.set).clone();
                            next.revision = d.revision;
                            let result = next.apply(&d.changes).map_err(|e| {
                                let (entity, id) = e.entity();
                                CompileError { entity: entity.into(), id: id.into(), reason: e.to_string() }
                            });
                            let counter = &self.live.counters.deltas;
                            let span = crate::trace::sync_apply(d.revision, &d.traceparent);
                            let delta = Some((current.as_ref(), d.changes.as_slice()));
                            let installing = self.install(d.revision, result.map(|()| next), &tx, delta, counter);
                            refused = !tracing::Instrument::instrument(installing, span).await?;
                        }
                        Some(In::Snapshot(chunk)) => {
                            let building = snapshot
                                .take()
                                .unwrap_or_else(|| Ok(ConfigSet::new(chunk.epoch.clone(), chunk.revision)))
                                .and_then(|mut set| set.apply_snapshot(&chunk.entities).map(|()| set));
                            if !chunk.last {
                                snapshot = Some(building);
                                continue;
                            }
                            drop(chunk.entities);
                            let result = building
                                .map(|mut set| {
                                    set.epoch = chunk.epoch;
                                    set.revision = chunk.revision;
                                    set
                                })
                                .map_err(|e| {
                                    let (entity, id) = e.entity();
                                    CompileError { entity: entity.into(), id: id.into(), reason: e.to_string() }
                                });
                            let counter = &self.live.counters.snapshots;
                            refused = !self.install(chunk.revision, result, &tx, None, counter).await?;
                        }
                        Some(In::WriteResult(r)) => {
                            if let Some(done) = pending.remove(&r.id) {
                                let _ = done.send(match (r.error.is_empty(), r.spent) {
                                    (true, _) => Ok(r.revision),
                                    (false, true) => Err(WriteError::Spent),
                                    (false, false) => Err(WriteError::Failed(r.error)),
                                });
                            }
                        }
                        Some(In::CounterTotals(t)) => self.live.control_plane.shared_counts.settle(&t),
                        Some(In::UpToDate(u)) => {
                            tracing::debug!(revision = u.revision, "configuration is up to date");
                        }
                        None => {}
                    }
                }
                _ = ticker.tick() => send(&tx, Out::Status(self.status())).await?,
                _ = flush.tick() => {
                    if let Some(batch) = self.live.control_plane.shared_counts.drain(crate::plugins::log::unix_ms(std::time::Instant::now()) as i64) {
                        send(&tx, Out::Counters(batch)).await?;
                    }
                }
                Some(w) = writes.recv() => {
                    // The request gave up waiting (it answered 500): do not commit behind its back.
                    if w.done.is_closed() {
                        continue;
                    }
                    let id = uuid::Uuid::new_v4().to_string();
                    pending.insert(id.clone(), w.done);
                    send(&tx, Out::Write(WriteRequest { id, changes: w.changes })).await?;
                }
                _ = health_changed.notified() => {
                    // Let a burst of changes (a whole round of probes) settle into one report.
                    tokio::time::sleep(HEALTH_REPORT_DELAY).await;
                    send(&tx, Out::Status(self.status())).await?;
                }
            }
        }
    }

    /// The applied revision and every target's health.
    fn status(&self) -> Status {
        let targets = self
            .live
            .balancers
            .reports()
            .into_iter()
            .map(|t| TargetHealth { upstream_id: t.upstream_id, target: t.target, health: t.health.to_string() })
            .collect();
        Status { applied_revision: self.live.load().revision(), targets }
    }

    /// Compiles and swaps in `next`, ACKing it; or NACKs and keeps the current one. Returns
    /// whether it was installed. `applied` counts it just before it becomes visible, so a
    /// status showing a revision also counts how it got there.
    async fn install(
        &self,
        attempted: i64,
        next: Result<ConfigSet, CompileError>,
        tx: &mpsc::Sender<DataPlaneMessage>,
        delta: Option<(&Compiled, &[Change])>,
        applied: &std::sync::atomic::AtomicU64,
    ) -> Result<bool, SyncError> {
        let compiled = match next {
            Ok(set) => {
                let targets = ["upstreams", "targets"];
                if delta.is_none_or(|(_, changes)| changes.iter().any(|c| targets.contains(&c.entity.as_str()))) {
                    self.live.balancers.prepare(&set).await;
                }
                let set = Arc::new(set);
                // The compile runs here, on the sync thread, beside what the stream decoded: one
                // heap holds every configuration, and nothing else waits on this runtime.
                guarded(|| match delta {
                    Some((current, changes)) => current.apply(set, changes, &self.plugins, &self.live.balancers),
                    None => Compiled::compile(set, &self.plugins, &self.live.balancers),
                })
            }
            Err(e) => Err(e),
        };
        match compiled {
            Ok(compiled) => {
                let set = compiled.set.clone();
                let revision = set.revision;
                applied.fetch_add(1, Ordering::Relaxed);
                match delta {
                    // A delta's predecessor is freed on this thread, where its successor was
                    // allocated: here, or (the last `Arc` being the caller's `current`) when
                    // the caller's arm ends; on a proxy worker if a request still holds it.
                    Some(_) => drop(self.live.swap(compiled)),
                    None => self.live.store(compiled),
                }
                let logged =
                    delta.map(|(current, changes)| Delta::new(&set.epoch, current.revision(), revision, changes));
                self.persist.applied(set, logged);
                send(tx, Out::Ack(Ack { revision })).await?;
                tracing::debug!(revision, "applied");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refusing configuration");
                self.live.counters.nacks.fetch_add(1, Ordering::Relaxed);
                let nack = Nack { revision: attempted, entity: e.entity, entity_id: e.id, reason: e.reason };
                send(tx, Out::Nack(nack)).await?;
                Ok(false)
            }
        }
    }
}

/// Runs a compile so that a panic in it (a bug this configuration reaches) is a refusal with
/// the reason, as an invalid row is: the data plane keeps serving the configuration it has,
/// the control plane shows the NACK, and the next revision that compiles is applied. Left to
/// unwind, the panic would end the sync thread and leave the data plane behind for good.
fn guarded(compile: impl FnOnce() -> Result<Compiled, CompileError>) -> Result<Compiled, CompileError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(compile)).unwrap_or_else(|panic| {
        Err(CompileError {
            entity: String::new(),
            id: String::new(),
            reason: format!("internal error while compiling: {}", panic_message(panic.as_ref())),
        })
    })
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s,
        _ => "(no message)",
    }
}

async fn send(tx: &mpsc::Sender<DataPlaneMessage>, message: Out) -> Result<(), SyncError> {
    tx.send(DataPlaneMessage { message: Some(message) }).await.map_err(|_| SyncError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compile that panics is a refusal carrying the panic's message, not the end of the
    /// sync thread; one that does not is passed through.
    #[test]
    fn a_panicking_compile_is_refused_with_its_message() {
        let refused = guarded(|| panic!("index {} out of range", 7)).expect_err("refused");
        assert_eq!(refused.reason, "internal error while compiling: index 7 out of range");
        let refused = guarded(|| panic!("boom")).expect_err("refused");
        assert_eq!(refused.reason, "internal error while compiling: boom");
        let compiled = guarded(|| Ok(Compiled::default())).expect("compiles");
        assert_eq!(compiled.set.revision, 0);
    }
}
