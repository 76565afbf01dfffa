//! The proxy's per-request metrics, under the names Kong's Prometheus plugin uses:
//! `kong_http_requests_total`, the three latency histograms, `kong_bandwidth_bytes` and
//! `kong_nginx_connections_total`.
//!
//! Recording must cost the request path next to nothing and share no cache line between
//! workers. So every worker thread keeps its own slots, one per (service, route) series it
//! has served, and only that thread ever writes them: an update is a plain load and store
//! (no locked instruction), and the scrape, the only reader on another thread, sums the
//! slots of every thread. A series is an index chosen when a configuration is compiled, so
//! the request path never hashes labels; a thread allocates its slot for a series the first
//! time it serves it (the one moment it takes a lock).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

/// Kong's default latency buckets, in milliseconds (its Prometheus plugin's
/// `DEFAULT_BUCKETS`); a last, unbounded one follows them.
pub const BUCKETS_MS: [u64; 17] = [1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000];

/// Distinct status codes a slot counts one by one; any further code is counted under its
/// class (`4xx`), which a route seeing more than this many codes is rare enough to afford.
const CODES: usize = 12;

/// Whether the proxy records request metrics (the `proxy_metrics` setting; on by default).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns request metrics on or off for the process, before the proxy serves.
pub fn enable(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Which (service, route) series a request is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series(u32);

impl Series {
    /// Requests no route matched (and those refused before routing): empty labels, as Kong's.
    pub const UNROUTED: Series = Series(0);
    /// Not counted: metrics are off.
    pub const OFF: Series = Series(u32::MAX);

    /// The series of a route of a service (the service's name, else its id, as Kong labels
    /// it), assigned once per distinct pair and kept for the life of the process.
    pub fn of(service: &Arc<str>, route: &Arc<str>) -> Series {
        if !ENABLED.load(Relaxed) {
            return Series::OFF;
        }
        let mut labels = LABELS.lock().unwrap_or_else(PoisonError::into_inner);
        let Labels { index, list, hasher } = &mut *labels;
        let (service_label, route_label): (&str, &str) = (service, route);
        let hash = |(s, r): (&str, &str)| std::hash::BuildHasher::hash_one(&*hasher, (s, r));
        let same = |i: &u32| list.get(*i as usize).is_some_and(|(s, r)| &**s == service_label && &**r == route_label);
        if let Some(i) = index.find(hash((service_label, route_label)), same) {
            return Series(*i);
        }
        let i = u32::try_from(list.len()).unwrap_or(u32::MAX - 1);
        // The service's own label, shared rather than copied per route.
        list.push((service.clone(), route.clone()));
        index.insert_unique(hash((service_label, route_label)), i, |i| {
            let (s, r) = &list[*i as usize];
            hash((s, r))
        });
        Series(i)
    }

    /// The series requests start in, before a route is found.
    pub fn unrouted() -> Series {
        if ENABLED.load(Relaxed) {
            Series::UNROUTED
        } else {
            Series::OFF
        }
    }
}

/// Every series' labels, kept for the life of the process as Kong's plugin keeps them (a
/// deleted route's counts stay on `/metrics`).
struct Labels {
    /// Each series' position in `list`, by the hash of its (service, route) labels: one flat
    /// table, looked up with borrowed strings (a map per service cost a table for each).
    index: hashbrown::HashTable<u32>,
    list: Vec<(Arc<str>, Arc<str>)>,
    hasher: foldhash::fast::RandomState,
}

static LABELS: LazyLock<Mutex<Labels>> = LazyLock::new(|| {
    let hasher = foldhash::fast::RandomState::default();
    let mut index = hashbrown::HashTable::new();
    index.insert_unique(std::hash::BuildHasher::hash_one(&hasher, ("", "")), 0, |_| 0);
    Mutex::new(Labels { index, list: vec![(Arc::from(""), Arc::from(""))], hasher })
});

/// Adds to a counter only its owning thread writes: no locked instruction needed.
#[inline]
fn bump(a: &AtomicU64, by: u64) {
    a.store(a.load(Relaxed).wrapping_add(by), Relaxed);
}

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last is the unbounded one.
    counts: [AtomicU64; BUCKETS_MS.len() + 1],
    sum: AtomicU64,
}

impl Histogram {
    #[inline]
    fn observe(&self, ms: u64) {
        let i = BUCKETS_MS.partition_point(|b| *b < ms);
        bump(&self.counts[i], 1);
        bump(&self.sum, ms);
    }
}

/// One thread's counts for one series.
#[derive(Default)]
struct Slot {
    /// (status code, count); code 0 marks a free entry.
    codes: [(AtomicU64, AtomicU64); CODES],
    /// Counts by class (index 1 to 5) of codes past the first [`CODES`].
    classes: [AtomicU64; 6],
    request: Histogram,
    upstream: Histogram,
    kong: Histogram,
    ingress: AtomicU64,
    egress: AtomicU64,
}

impl Slot {
    #[inline]
    fn count(&self, status: u16) {
        let code = u64::from(status);
        for (c, n) in &self.codes {
            match c.load(Relaxed) {
                0 => {
                    c.store(code, Relaxed);
                    bump(n, 1);
                    return;
                }
                seen if seen == code => {
                    bump(n, 1);
                    return;
                }
                _ => {}
            }
        }
        bump(&self.classes[usize::from(status / 100).min(5)], 1);
    }
}

/// A thread's connection counters, all monotonic so the scrape can merge them without the
/// threads agreeing on anything.
#[derive(Default)]
struct Connections {
    accepted: AtomicU64,
    closed: AtomicU64,
    requests: AtomicU64,
    finished: AtomicU64,
}

/// What one worker thread has recorded.
#[derive(Default)]
struct Shard {
    /// Slots by series, appended by the owning thread (under the lock) the first time it
    /// serves a series.
    slots: Mutex<Vec<(u32, Arc<Slot>)>>,
    connections: Connections,
}

/// Every thread's shard, for the scrape; a thread that ends leaves its counts here.
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

struct Local {
    shard: Arc<Shard>,
    /// This thread's slots by series index.
    slots: Vec<Option<Arc<Slot>>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> R {
    LOCAL.with_borrow_mut(|local| {
        let local = local.get_or_insert_with(|| {
            let shard = Arc::new(Shard::default());
            SHARDS.lock().unwrap_or_else(PoisonError::into_inner).push(shard.clone());
            Local { shard, slots: Vec::new() }
        });
        f(local)
    })
}

/// What one finished request contributes.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub series: Series,
    pub status: u16,
    /// From the first byte of the request to the last of the answer.
    pub request_ms: u64,
    /// From sending the request upstream to the answer's head; `None` without an upstream answer.
    pub upstream_ms: Option<u64>,
    /// Time spent in the gateway itself.
    pub kong_ms: u64,
    pub ingress: u64,
    pub egress: u64,
}

/// Records a finished request on this thread's slot for its series.
pub fn record(o: &Observation) {
    if o.series == Series::OFF {
        return;
    }
    with_local(|local| {
        let i = o.series.0 as usize;
        if local.slots.len() <= i {
            local.slots.resize(i + 1, None);
        }
        let slot = local.slots[i].get_or_insert_with(|| {
            let slot = Arc::new(Slot::default());
            local.shard.slots.lock().unwrap_or_else(PoisonError::into_inner).push((o.series.0, slot.clone()));
            slot
        });
        slot.count(o.status);
        slot.request.observe(o.request_ms);
        if let Some(ms) = o.upstream_ms {
            slot.upstream.observe(ms);
        }
        slot.kong.observe(o.kong_ms);
        bump(&slot.ingress, o.ingress);
        bump(&slot.egress, o.egress);
        bump(&local.shard.connections.finished, 1);
    });
}

/// Counts a request begun (Kong's `total`, and `writing` until it is recorded).
pub fn request_started() {
    if ENABLED.load(Relaxed) {
        with_local(|local| bump(&local.shard.connections.requests, 1));
    }
}

/// An accepted client connection, counted closed when dropped.
pub struct Connection(bool);

/// Counts a client connection accepted by this thread.
pub fn connection_accepted() -> Connection {
    let on = ENABLED.load(Relaxed);
    if on {
        with_local(|local| bump(&local.shard.connections.accepted, 1));
    }
    Connection(on)
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.0 {
            with_local(|local| bump(&local.shard.connections.closed, 1));
        }
    }
}

/// Milliseconds between two instants, as Kong reports latencies.
#[inline]
pub fn ms(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_millis() as u64
}

/// Merged counts of one series.
#[derive(Default)]
struct Totals {
    codes: std::collections::BTreeMap<String, u64>,
    request: ([u64; BUCKETS_MS.len() + 1], u64),
    upstream: ([u64; BUCKETS_MS.len() + 1], u64),
    kong: ([u64; BUCKETS_MS.len() + 1], u64),
    ingress: u64,
    egress: u64,
}

fn add(into: &mut ([u64; BUCKETS_MS.len() + 1], u64), h: &Histogram) {
    for (t, c) in into.0.iter_mut().zip(&h.counts) {
        *t += c.load(Relaxed);
    }
    into.1 += h.sum.load(Relaxed);
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escaped(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// Appends the request families in Prometheus text format (0.0.4), every thread's counts merged.
pub fn render(out: &mut String) {
    let shards: Vec<Arc<Shard>> = SHARDS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut totals: std::collections::BTreeMap<u32, Totals> = std::collections::BTreeMap::new();
    let (mut accepted, mut closed, mut requests, mut finished) = (0u64, 0u64, 0u64, 0u64);
    for shard in &shards {
        let c = &shard.connections;
        accepted += c.accepted.load(Relaxed);
        closed += c.closed.load(Relaxed);
        requests += c.requests.load(Relaxed);
        finished += c.finished.load(Relaxed);
        let slots = shard.slots.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (series, slot) in slots {
            let t = totals.entry(series).or_default();
            for (code, n) in &slot.codes {
                let code = code.load(Relaxed);
                if code != 0 {
                    *t.codes.entry(code.to_string()).or_default() += n.load(Relaxed);
                }
            }
            for (class, n) in slot.classes.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    *t.codes.entry(format!("{class}xx")).or_default() += n;
                }
            }
            add(&mut t.request, &slot.request);
            add(&mut t.upstream, &slot.upstream);
            add(&mut t.kong, &slot.kong);
            t.ingress += slot.ingress.load(Relaxed);
            t.egress += slot.egress.load(Relaxed);
        }
    }
    let names: Vec<(Arc<str>, Arc<str>)> = LABELS.lock().unwrap_or_else(PoisonError::into_inner).list.clone();
    let labels = |series: u32| {
        let (s, r) = names.get(series as usize).cloned().unwrap_or_default();
        format!("service=\"{}\",route=\"{}\"", escaped(&s), escaped(&r))
    };
    // Writing into a String cannot fail.
    let _ = writeln!(out, "# HELP kong_http_requests_total HTTP requests proxied, by service, route and status");
    let _ = writeln!(out, "# TYPE kong_http_requests_total counter");
    for (series, t) in &totals {
        let l = labels(*series);
        for (code, n) in &t.codes {
            let _ = writeln!(out, "kong_http_requests_total{{{l},code=\"{code}\"}} {n}");
        }
    }
    let families = [
        ("kong_request_latency_ms", "Time from the request's first byte to the answer's last, in ms"),
        ("kong_upstream_latency_ms", "Time from sending the request upstream to its answer's head, in ms"),
        ("kong_kong_latency_ms", "Time spent in the gateway itself, in ms"),
    ];
    for (k, (name, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (series, t) in &totals {
            let (counts, sum) = match k {
                0 => &t.request,
                1 => &t.upstream,
                _ => &t.kong,
            };
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let l = labels(*series);
            let mut cumulative = 0;
            for (i, n) in counts.iter().enumerate() {
                cumulative += n;
                match BUCKETS_MS.get(i) {
                    Some(le) => {
                        let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {cumulative}");
                    }
                    None => {
                        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {cumulative}");
                    }
                }
            }
            let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{l}}} {count}");
        }
    }
    let _ = writeln!(out, "# HELP kong_bandwidth_bytes Bytes of requests (ingress) and answers (egress)");
    let _ = writeln!(out, "# TYPE kong_bandwidth_bytes counter");
    for (series, t) in &totals {
        let l = labels(*series);
        let _ = writeln!(out, "kong_bandwidth_bytes{{{l},direction=\"ingress\"}} {}", t.ingress);
        let _ = writeln!(out, "kong_bandwidth_bytes{{{l},direction=\"egress\"}} {}", t.egress);
    }
    let active = accepted.saturating_sub(closed);
    let writing = requests.saturating_sub(finished).min(active);
    let _ = writeln!(
        out,
        "# HELP kong_nginx_connections_total Client connections by state (waiting includes those sending a head)"
    );
    let _ = writeln!(out, "# TYPE kong_nginx_connections_total gauge");
    for (state, n) in [
        ("accepted", accepted),
        ("active", active),
        ("handled", accepted),
        ("total", requests),
        ("waiting", active - writing),
        ("writing", writing),
    ] {
        let _ = writeln!(out, "kong_nginx_connections_total{{state=\"{state}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_a_latency_at_their_upper_bound() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 6000, 6001] {
            h.observe(ms);
        }
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts[0], 2, "0 and 1 ms are in le=1");
        assert_eq!(counts[1], 1, "2 ms is in le=2");
        assert_eq!(counts[BUCKETS_MS.len() - 1], 1, "6000 ms is in le=6000");
        assert_eq!(counts[BUCKETS_MS.len()], 1, "6001 ms is only in +Inf");
        assert_eq!(h.sum.load(Relaxed), 12_004);
    }

    #[test]
    fn codes_past_the_slot_s_room_are_counted_by_class() {
        let slot = Slot::default();
        for code in 200..200 + CODES as u16 + 2 {
            slot.count(code);
        }
        slot.count(200);
        assert_eq!(slot.codes[0].1.load(Relaxed), 2);
        assert_eq!(slot.classes[2].load(Relaxed), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escaped("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escaped("plain"), "plain");
    }

    /// A (service, route) pair keeps its series across configurations; another pair, even
    /// sharing one of the labels, gets its own.
    #[test]
    fn each_pair_of_labels_has_one_series() {
        let route: Arc<str> = Arc::from("pair-test-route");
        let first = Series::of(&Arc::from("pair-test-service"), &route);
        assert_eq!(first.0, Series::of(&Arc::from("pair-test-service"), &Arc::from("pair-test-route")).0);
        let other_service = Series::of(&Arc::from("pair-test-other"), &route);
        let other_route = Series::of(&Arc::from("pair-test-service"), &Arc::from("pair-test-route-2"));
        assert!(first.0 != other_service.0 && first.0 != other_route.0 && other_service.0 != other_route.0);
        assert!(first.0 != Series::UNROUTED.0 && first.0 != Series::OFF.0);
        assert_eq!(
            Series::of(&Arc::from(""), &Arc::from("")).0,
            Series::UNROUTED.0,
            "empty labels are the unrouted series"
        );
    }

    #[test]
    fn counts_from_several_threads_are_merged_at_the_scrape() {
        let series = Series::of(&Arc::from("merge-test-service"), &Arc::from("merge-test-route"));
        let observe = move || {
            record(&Observation {
                series,
                status: 201,
                request_ms: 3,
                upstream_ms: Some(2),
                kong_ms: 1,
                ingress: 10,
                egress: 20,
            })
        };
        let threads: Vec<_> = (0..3).map(|_| std::thread::spawn(observe)).collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut text = String::new();
        render(&mut text);
        let l = "service=\"merge-test-service\",route=\"merge-test-route\"";
        assert!(text.contains(&format!("kong_http_requests_total{{{l},code=\"201\"}} 3\n")), "{text}");
        assert!(text.contains(&format!("kong_request_latency_ms_bucket{{{l},le=\"2\"}} 0\n")), "{text}");
        assert!(text.contains(&format!("kong_request_latency_ms_bucket{{{l},le=\"5\"}} 3\n")), "{text}");
        assert!(text.contains(&format!("kong_request_latency_ms_sum{{{l}}} 9\n")), "{text}");
        assert!(text.contains(&format!("kong_bandwidth_bytes{{{l},direction=\"egress\"}} 60\n")), "{text}");
    }
}
