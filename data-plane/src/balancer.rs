//! Ring balancers for Upstream entities (kong-0.14-core-behavior §5, §6).
//!
//! A [`Registry`] keeps one [`Balancer`] per upstream across configuration changes: when only
//! the targets change, the balancer rebuilds its wheel and keeps the health of addresses that
//! stay; when the upstream itself changes, it starts afresh (Kong clears health state then).
//! Everything the proxy touches per request — the wheel behind an `ArcSwap`, the cursor, each
//! address's packed health word — is read without a lock. Name resolution, wheel rebuilds and
//! active probes run on background tasks.

mod active;
pub mod dns;
pub mod hash;
pub mod health;
pub mod ring;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gatehouse_shared::snapshot::{ConfigSet, Doc};
use hickory_resolver::TokioResolver;
use http::HeaderValue;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use self::dns::Resolution;
use self::hash::HashPolicy;
use self::health::{Checks, Health, Report, Thresholds};
use self::ring::{Peer, Ring};

/// The entity that carries manual health commands (`POST .../healthy|unhealthy`).
pub const COMMANDS_TABLE: &str = "target_health";

/// A target after history replay.
#[derive(Debug, Clone, PartialEq)]
struct TargetSpec {
    target: Arc<str>,
    host: String,
    port: u16,
    weight: u32,
}

/// One target's health as reported to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub upstream_id: String,
    pub target: String,
    pub health: &'static str,
}

/// Health per (target, address), kept across wheel rebuilds.
type HealthMap = HashMap<(Arc<str>, SocketAddr), Arc<Health>>;

#[derive(Debug, Default)]
struct BalancerState {
    targets: Vec<TargetSpec>,
    health: HealthMap,
    /// Manual commands already applied (by entity id), so a recompile does not replay them.
    applied: HashSet<String>,
}

/// One upstream's balancer.
pub struct Balancer {
    pub id: Arc<str>,
    pub name: Arc<str>,
    /// The upstream's document, kept to tell whether a new revision changed it (a balancer
    /// whose upstream did not change keeps its wheel, health and probes).
    doc: Doc,
    pub hash: HashPolicy,
    pub checks: Checks,
    slots: usize,
    ring: ArcSwap<Ring>,
    cursor: AtomicUsize,
    state: Mutex<BalancerState>,
    tasks: Mutex<Vec<AbortHandle>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").field("name", &self.name).field("slots", &self.slots).finish()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; carry on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn host_header(host: &str, port: u16, https: bool) -> HeaderValue {
    let default = if https { 443 } else { 80 };
    let text = if port == default { host.to_string() } else { format!("{host}:{port}") };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

impl Balancer {
    fn new(row: Doc, changed: Arc<Notify>) -> Balancer {
        let doc = row.value();
        let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
        Balancer {
            id: s("id").into(),
            name: s("name").into(),
            hash: HashPolicy::parse(&doc),
            checks: Checks::parse(doc.get("healthchecks")),
            slots: doc.get("slots").and_then(Value::as_u64).map_or(10_000, |n| n.clamp(10, 65_536) as usize),
            ring: ArcSwap::default(),
            cursor: AtomicUsize::new(fastrand::usize(..65_536)),
            state: Mutex::default(),
            tasks: Mutex::default(),
            changed,
            doc: row,
        }
    }

    /// The wheel as it is now (one atomic load).
    pub fn ring(&self) -> arc_swap::Guard<Arc<Ring>> {
        self.ring.load()
    }

    /// The wheel position for a try: the hash plus the try number, or the next round-robin
    /// position.
    #[inline]
    pub fn position(&self, hash: Option<u32>, try_number: usize) -> usize {
        match hash {
            Some(h) => h as usize + try_number,
            None => self.cursor.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Records an observation of `peer` against `thresholds` (active or passive).
    pub fn report(&self, peer: &Peer, report: Report, thresholds: &Thresholds, began: std::time::Instant) {
        if peer.health.report(report, thresholds.limit(report), began) {
            let healthy = peer.health.available();
            tracing::info!(upstream = %self.name, target = %peer.target, address = %peer.addr, healthy, ?report, "target health changed");
            self.changed.notify_one();
        }
    }

    /// Passive observation of a proxied response status (kong-0.14-core-behavior §6.4).
    /// Passive observation of an answer to a request sent at `began`.
    pub fn observe_status(&self, peer: &Peer, status: u16, began: std::time::Instant) {
        if !self.checks.passive_enabled() {
            return;
        }
        let report = if status == 504 { Some(Report::Timeout) } else { self.checks.passive.classify(status) };
        if let Some(r) = report {
            self.report(peer, r, &self.checks.passive, began);
        }
    }

    /// Passive observation of a failed try (connection error or timeout).
    pub fn observe_failure(&self, peer: &Peer, timeout: bool, began: std::time::Instant) {
        if self.checks.passive_enabled() {
            let report = if timeout { Report::Timeout } else { Report::TcpFailure };
            self.report(peer, report, &self.checks.passive, began);
        }
    }

    /// The wheel for `targets` with the resolutions in `dns`, keeping the health of addresses
    /// that stay; nothing is changed until the result is applied.
    fn plan(&self, targets: &[TargetSpec], health: &HealthMap, dns: &HashMap<String, Resolution>) -> (Ring, HealthMap) {
        let mut entries = Vec::new();
        let mut keep = HashMap::new();
        for t in targets {
            let addresses: Vec<(IpAddr, u16, u32)> = match t.host.trim_start_matches('[').trim_end_matches(']').parse()
            {
                Ok(ip) => vec![(ip, t.port, t.weight)],
                Err(_) => match dns.get(&t.host).and_then(|r| r.addresses.as_ref()) {
                    Some(a) => {
                        a.iter().map(|a| (a.ip, a.port.unwrap_or(t.port), a.weight.unwrap_or(t.weight))).collect()
                    }
                    None => Vec::new(),
                },
            };
            for (ip, port, weight) in addresses {
                let addr = SocketAddr::new(ip, port);
                let key = (t.target.clone(), addr);
                let h = health.get(&key).cloned().unwrap_or_default();
                keep.insert(key, h.clone());
                let peer = Peer {
                    addr,
                    target: t.target.clone(),
                    hostname: t.host.as_str().into(),
                    host_headers: [host_header(&t.host, port, false), host_header(&t.host, port, true)],
                    pool_keys: [
                        format!("http://{addr}/{}", t.host).into(),
                        format!("https://{addr}/{}", t.host).into(),
                    ],
                    health: h,
                };
                entries.push((Arc::new(peer), weight));
            }
        }
        let previous = self.ring.load_full();
        (Ring::build(self.slots, entries, Some(&previous)), keep)
    }

    fn apply(&self, state: &mut BalancerState, targets: Vec<TargetSpec>, ring: Ring, health: HealthMap) {
        state.targets = targets;
        state.health = health;
        self.ring.store(Arc::new(ring));
        self.changed.notify_one();
    }

    /// Rebuilds the wheel in place (names resolved to other addresses).
    fn rebuild(&self, state: &mut BalancerState, dns: &HashMap<String, Resolution>) {
        let (ring, health) = self.plan(&state.targets, &state.health, dns);
        let targets = state.targets.clone();
        self.apply(state, targets, ring, health);
    }

    /// Starts the active probes on `runtime` (else on the caller's, if it runs on one).
    fn start_probes(self: &Arc<Self>, runtime: Option<&tokio::runtime::Handle>) {
        let mut tasks = lock(&self.tasks);
        let runtime = runtime.cloned().or_else(|| tokio::runtime::Handle::try_current().ok());
        for (side, interval) in [(true, self.checks.healthy_interval), (false, self.checks.unhealthy_interval)] {
            if let (Some(interval), Some(rt)) = (interval, &runtime) {
                tasks.push(rt.spawn(active::run(Arc::downgrade(self), side, interval)).abort_handle());
            }
        }
    }

    /// Sets every address of `target` healthy or unhealthy (counters zeroed).
    fn set_target(&self, target: &str, healthy: bool) -> bool {
        let ring = self.ring.load();
        let mut found = false;
        for p in ring.peers.iter().filter(|p| &*p.target == target) {
            found = true;
            if p.health.set(healthy) {
                tracing::info!(upstream = %self.name, target, address = %p.addr, healthy, "target health set by command");
            }
        }
        self.changed.notify_one();
        found
    }

    fn reports(&self, out: &mut Vec<TargetReport>) {
        let ring = self.ring.load();
        let state = lock(&self.state);
        for t in &state.targets {
            // Kong matches rows by address: for a name with several, the last one decides.
            let last = ring.peers.iter().rev().find(|p| p.target == t.target);
            let health = match last {
                None => "DNS_ERROR",
                Some(_) if !self.checks.enabled() => "HEALTHCHECKS_OFF",
                Some(p) if p.health.available() => "HEALTHY",
                Some(_) => "UNHEALTHY",
            };
            out.push(TargetReport { upstream_id: self.id.to_string(), target: t.target.to_string(), health });
        }
    }
}

/// Target history replay (§5.2): oldest first; weight > 0 adds or updates, 0 removes.
fn replay<'a>(mut rows: Vec<&'a Value>) -> Vec<TargetSpec> {
    let created = |d: &Value| d.get("created_at").and_then(Value::as_i64).unwrap_or(0);
    let id = |d: &'a Value| d.get("id").and_then(Value::as_str).unwrap_or_default();
    rows.sort_by(|a, b| created(a).cmp(&created(b)).then_with(|| id(a).cmp(id(b))));
    let mut out: Vec<TargetSpec> = Vec::new();
    for row in rows {
        let Some(target) = row.get("target").and_then(Value::as_str) else { continue };
        let weight = row.get("weight").and_then(Value::as_f64).unwrap_or(100.0).max(0.0) as u32;
        let existing = out.iter().position(|t| &*t.target == target);
        match (existing, weight) {
            (Some(i), 0) => {
                out.remove(i);
            }
            (Some(i), w) => out[i].weight = w,
            (None, 0) => {}
            (None, w) => {
                let Some((host, port)) = target.rsplit_once(':') else { continue };
                let Ok(port) = port.parse() else { continue };
                out.push(TargetSpec { target: target.into(), host: host.to_string(), port, weight: w });
            }
        }
    }
    out
}

fn is_ip(host: &str) -> bool {
    host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok()
}

/// Balancers computed for a configuration that is not in use yet.
#[derive(Default)]
pub struct Staged {
    pub by_name: HashMap<Arc<str>, Arc<Balancer>>,
    by_id: HashMap<Arc<str>, Arc<Balancer>>,
    wheels: Vec<(Arc<Balancer>, Vec<TargetSpec>, Ring, HealthMap)>,
    commands: Vec<(Arc<Balancer>, String, String, bool)>,
}

/// Every upstream's balancer, and the name cache they share.
pub struct Registry {
    balancers: Mutex<HashMap<Arc<str>, Arc<Balancer>>>,
    dns: Mutex<HashMap<String, Resolution>>,
    resolver: Option<TokioResolver>,
    /// Signalled when any target's health or addresses change.
    pub changed: Arc<Notify>,
    /// The runtime the registry was made on (the data plane's main one), where probes and
    /// lookups run whichever thread compiles a configuration: the sync client's thread stops
    /// for a full compile, and hickory keeps each name server's connection on the runtime
    /// that opened it.
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(None)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("balancers", &lock(&self.balancers).len()).finish()
    }
}

/// The hostnames of the targets in `set` that are in use (each upstream's history replayed):
/// a removed target's name is not looked up again, so an unresolvable one cannot hold up
/// every later revision for a lookup's timeout.
fn target_hosts(set: &ConfigSet) -> HashSet<String> {
    let targets: Vec<Value> = set.table("targets").map(Doc::value).collect();
    let mut by_upstream: HashMap<&str, Vec<&Value>> = HashMap::new();
    for t in &targets {
        by_upstream.entry(t.get("upstream_id").and_then(Value::as_str).unwrap_or_default()).or_default().push(t);
    }
    by_upstream.into_values().flat_map(replay).map(|t| t.host).filter(|h| !is_ip(h)).collect()
}

impl Registry {
    pub fn new(resolver: Option<TokioResolver>) -> Registry {
        Registry {
            balancers: Mutex::default(),
            dns: Mutex::default(),
            resolver,
            changed: Arc::new(Notify::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// A registry with the system's resolver.
    pub fn system() -> Registry {
        let resolver = match TokioResolver::builder_tokio() {
            Ok(b) => Some(b.build()),
            Err(e) => {
                tracing::warn!(error = %e, "no system DNS configuration: hostname targets will not resolve");
                None
            }
        };
        Registry::new(resolver)
    }

    /// Resolves the target names `set` needs that are not cached yet, so the configuration
    /// is ready to serve the moment it is swapped in.
    pub async fn prepare(&self, set: &ConfigSet) {
        let missing: Vec<String> = {
            let dns = lock(&self.dns);
            target_hosts(set).into_iter().filter(|h| !dns.contains_key(h)).collect()
        };
        if missing.is_empty() {
            return;
        }
        let (resolver, hosts) = (self.resolver.clone(), missing.clone());
        let lookups =
            async move { futures::future::join_all(hosts.iter().map(|h| dns::resolve(resolver.as_ref(), h))).await };
        // A lookup that did not finish (its runtime shutting down) is tried again next time.
        let resolved = match &self.runtime {
            Some(rt) => rt.spawn(lookups).await.unwrap_or_default(),
            None => lookups.await,
        };
        let mut dns = lock(&self.dns);
        for (h, r) in missing.into_iter().zip(resolved) {
            dns.insert(h, r);
        }
    }

    /// The balancers for `set`, by upstream name, staged: existing balancers are reused (their
    /// new wheels computed but not yet in use), new ones created, manual commands not applied
    /// yet collected. Nothing a request sees changes until [`Registry::commit`], so a
    /// configuration the data plane then refuses leaves the balancers as they were.
    pub fn stage(&self, set: &ConfigSet) -> Staged {
        let target_docs: Vec<Value> = set.table("targets").map(Doc::value).collect();
        let mut targets: HashMap<&str, Vec<&Value>> = HashMap::new();
        for t in &target_docs {
            if let Some(u) = t.get("upstream_id").and_then(Value::as_str) {
                targets.entry(u).or_default().push(t);
            }
        }
        let command_docs: Vec<Value> = set.table(COMMANDS_TABLE).map(Doc::value).collect();
        let mut commands: HashMap<&str, Vec<&Value>> = HashMap::new();
        for c in &command_docs {
            if let Some(u) = c.get("upstream_id").and_then(Value::as_str) {
                commands.entry(u).or_default().push(c);
            }
        }
        let dns = lock(&self.dns).clone();
        let current = lock(&self.balancers).clone();
        let mut staged = Staged::default();
        for (id, doc) in set.entries("upstreams") {
            let id: &str = id;
            let balancer = match current.get(id) {
                Some(b) if b.doc == *doc => b.clone(),
                _ => {
                    let b = Arc::new(Balancer::new(doc.clone(), self.changed.clone()));
                    b.start_probes(self.runtime.as_ref());
                    b
                }
            };
            let specs = replay(targets.remove(id).unwrap_or_default());
            let state = lock(&balancer.state);
            if state.targets != specs || balancer.ring.load().slots() == 0 {
                let (ring, health) = balancer.plan(&specs, &state.health, &dns);
                staged.wheels.push((balancer.clone(), specs, ring, health));
            }
            let mut cmds = commands.remove(id).unwrap_or_default();
            cmds.sort_by_key(|c| c.get("created_at").and_then(Value::as_i64).unwrap_or(0));
            for c in cmds {
                let cid = c.get("id").and_then(Value::as_str).unwrap_or_default();
                if !state.applied.contains(cid) {
                    let target = c.get("target").and_then(Value::as_str).unwrap_or_default().to_string();
                    let healthy = c.get("healthy").and_then(Value::as_bool).unwrap_or(true);
                    staged.commands.push((balancer.clone(), cid.to_string(), target, healthy));
                }
            }
            drop(state);
            staged.by_name.insert(balancer.name.clone(), balancer.clone());
            staged.by_id.insert(balancer.id.clone(), balancer);
        }
        staged
    }

    /// Puts a staged set of balancers in use.
    pub fn commit(&self, staged: Staged) {
        for (balancer, targets, ring, health) in staged.wheels {
            let mut state = lock(&balancer.state);
            balancer.apply(&mut state, targets, ring, health);
        }
        for (balancer, id, target, healthy) in staged.commands {
            if lock(&balancer.state).applied.insert(id) {
                balancer.set_target(&target, healthy);
            }
        }
        *lock(&self.balancers) = staged.by_id;
    }

    /// [`Registry::stage`] then [`Registry::commit`]: the balancers for `set`, by name (for
    /// tests and benchmarks; a data plane stages while it compiles the rest).
    pub fn compile(&self, set: &ConfigSet) -> HashMap<Arc<str>, Arc<Balancer>> {
        let staged = self.stage(set);
        let by_name = staged.by_name.clone();
        self.commit(staged);
        by_name
    }

    /// Every target's health, for the control plane.
    pub fn reports(&self) -> Vec<TargetReport> {
        let balancers: Vec<Arc<Balancer>> = lock(&self.balancers).values().cloned().collect();
        let mut out = Vec::new();
        for b in balancers {
            b.reports(&mut out);
        }
        out
    }

    /// Re-resolves names whose answers expired and rebuilds the wheels they feed; runs until
    /// the registry is dropped.
    pub async fn refresh_loop(registry: Weak<Registry>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(r) = registry.upgrade() else { return };
            r.refresh().await;
        }
    }

    async fn refresh(&self) {
        let now = Instant::now();
        let balancers: Vec<Arc<Balancer>> = lock(&self.balancers).values().cloned().collect();
        let used: HashSet<String> = balancers
            .iter()
            .flat_map(|b| lock(&b.state).targets.iter().map(|t| t.host.clone()).collect::<Vec<_>>())
            .filter(|h| !is_ip(h))
            .collect();
        let due: Vec<String> = {
            let mut dns = lock(&self.dns);
            dns.retain(|h, _| used.contains(h));
            used.into_iter().filter(|h| dns.get(h).is_none_or(|r| r.expires <= now)).collect()
        };
        if due.is_empty() {
            return;
        }
        let answers = futures::future::join_all(due.iter().map(|h| dns::resolve(self.resolver.as_ref(), h))).await;
        let mut changed_hosts = HashSet::new();
        let snapshot = {
            let mut dns = lock(&self.dns);
            for (h, r) in due.into_iter().zip(answers) {
                if dns.get(&h).map(|old| &old.addresses) != Some(&r.addresses) {
                    changed_hosts.insert(h.clone());
                }
                dns.insert(h, r);
            }
            dns.clone()
        };
        for b in balancers {
            let mut state = lock(&b.state);
            if state.targets.iter().any(|t| changed_hosts.contains(&t.host)) {
                tracing::info!(upstream = %b.name, "target addresses changed; rebuilding the wheel");
                b.rebuild(&mut state, &snapshot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_targets_in_use_are_looked_up() {
        let mut set = ConfigSet::new("e", 1);
        let rows = [
            json!({"id": "a", "upstream_id": "u", "created_at": 1, "target": "gone.invalid:80", "weight": 10}),
            json!({"id": "b", "upstream_id": "u", "created_at": 2, "target": "gone.invalid:80", "weight": 0}),
            json!({"id": "c", "upstream_id": "u", "created_at": 3, "target": "kept.invalid:80", "weight": 5}),
        ];
        for (i, r) in rows.into_iter().enumerate() {
            let changes = [gatehouse_shared::proto::Change {
                entity: "targets".into(),
                id: i.to_string(),
                document: r.to_string(),
                deleted: false,
            }];
            set.apply(&changes).unwrap();
        }
        assert_eq!(target_hosts(&set), HashSet::from(["kept.invalid".to_owned()]));
    }

    #[test]
    fn history_replay_keeps_the_newest_entry_and_drops_weight_zero() {
        let rows = [
            json!({"id": "a", "created_at": 1, "target": "10.0.0.1:80", "weight": 10}),
            json!({"id": "b", "created_at": 2, "target": "10.0.0.2:80", "weight": 10}),
            json!({"id": "c", "created_at": 3, "target": "10.0.0.1:80", "weight": 50}),
            json!({"id": "d", "created_at": 4, "target": "10.0.0.2:80", "weight": 0}),
            json!({"id": "e", "created_at": 5, "target": "10.0.0.3:80", "weight": 0}),
        ];
        let specs = replay(rows.iter().rev().collect());
        assert_eq!(specs.len(), 1);
        assert_eq!((&*specs[0].target, specs[0].weight), ("10.0.0.1:80", 50));
    }

    fn set(entities: &[(&str, Value)]) -> ConfigSet {
        let mut s = ConfigSet::new("e", 1);
        let changes: Vec<_> = entities
            .iter()
            .map(|(t, d)| gatehouse_shared::proto::Change {
                entity: (*t).into(),
                id: d["id"].as_str().unwrap().into(),
                document: d.to_string(),
                deleted: false,
            })
            .collect();
        s.apply(&changes).unwrap();
        s
    }

    #[test]
    fn health_survives_target_changes_but_not_upstream_changes() {
        let up = json!({"id": "u1", "name": "svc.v1", "slots": 10});
        let t1 = json!({"id": "t1", "upstream_id": "u1", "created_at": 1, "target": "10.0.0.1:80", "weight": 10});
        let t2 = json!({"id": "t2", "upstream_id": "u1", "created_at": 2, "target": "10.0.0.2:80", "weight": 10});
        let reg = Registry::default();
        let b = reg.compile(&set(&[("upstreams", up.clone()), ("targets", t1.clone())]))["svc.v1"].clone();
        b.ring().peers[0].health.set(false);
        let b2 = reg.compile(&set(&[("upstreams", up.clone()), ("targets", t1.clone()), ("targets", t2.clone())]))
            ["svc.v1"]
            .clone();
        assert!(Arc::ptr_eq(&b, &b2));
        let peer1 = b2.ring().peers.iter().find(|p| p.addr.port() == 80 && &*p.target == "10.0.0.1:80").cloned();
        assert!(!peer1.unwrap().health.available(), "health kept when only targets change");
        let mut up2 = up.clone();
        up2["slots"] = json!(20);
        let b3 = reg.compile(&set(&[("upstreams", up2), ("targets", t1), ("targets", t2)]))["svc.v1"].clone();
        assert!(!Arc::ptr_eq(&b, &b3));
        assert!(b3.ring().peers.iter().all(|p| p.health.available()), "a changed upstream starts healthy");
    }

    #[test]
    fn a_staged_configuration_changes_nothing_until_committed() {
        let up = json!({"id": "u1", "name": "svc.v1", "slots": 10});
        let t1 = json!({"id": "t1", "upstream_id": "u1", "created_at": 1, "target": "10.0.0.1:80", "weight": 10});
        let t2 = json!({"id": "t2", "upstream_id": "u1", "created_at": 2, "target": "10.0.0.2:80", "weight": 10});
        let reg = Registry::default();
        let b = reg.compile(&set(&[("upstreams", up.clone()), ("targets", t1.clone())]))["svc.v1"].clone();
        let staged = reg.stage(&set(&[("upstreams", up), ("targets", t1), ("targets", t2)]));
        assert_eq!(b.ring().peers.len(), 1, "staging leaves the wheel in use alone");
        drop(staged);
        assert_eq!(reg.reports().len(), 1);
    }

    #[test]
    fn commands_apply_once() {
        let up = json!({"id": "u1", "name": "svc.v1", "slots": 10,
            "healthchecks": {"active": {"unhealthy": {"interval": 5}}}});
        let t1 = json!({"id": "t1", "upstream_id": "u1", "created_at": 1, "target": "10.0.0.1:80", "weight": 10});
        let cmd = json!({"id": "c1", "upstream_id": "u1", "created_at": 5, "target": "10.0.0.1:80", "healthy": false});
        let reg = Registry::default();
        let all = set(&[("upstreams", up), ("targets", t1), (COMMANDS_TABLE, cmd)]);
        let b = reg.compile(&all)["svc.v1"].clone();
        assert_eq!(reg.reports()[0].health, "UNHEALTHY");
        b.ring().peers[0].health.set(true);
        reg.compile(&all);
        assert_eq!(reg.reports()[0].health, "HEALTHY", "an applied command is not replayed");
    }

    #[test]
    fn unresolved_names_report_dns_error() {
        let up = json!({"id": "u1", "name": "svc.v1", "slots": 10});
        let t1 =
            json!({"id": "t1", "upstream_id": "u1", "created_at": 1, "target": "nowhere.invalid:80", "weight": 10});
        let reg = Registry::default();
        reg.compile(&set(&[("upstreams", up), ("targets", t1)]));
        assert_eq!(reg.reports()[0].health, "DNS_ERROR");
    }
}
