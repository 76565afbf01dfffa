//! Heap held by a data plane's configuration at N Services + N Routes shaped as the Admin API
//! stores them: the change rows as they arrive, the `ConfigSet` of documents, the compiled
//! configuration. A measurement program (live heap bytes through a counting allocator):
//!
//! ```text
//! cargo run --release -p gatehouse-data-plane --example config_memory -- 10000 [WRITES]
//! ```
//!
//! With WRITES, it then applies that many single-entity deltas as `sync_bench` makes them
//! (alternately a Route PATCH and a new Service), each compiled incrementally and the previous
//! configuration dropped, and prints the live heap after them: what a data plane's RSS growth
//! over the same writes would be if the allocator handed back every freed page; and the time
//! each delta took to apply (median, p99), through the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gatehouse_data_plane::compiled::Compiled;
use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: a pointer this allocator returned, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let writes: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let start = LIVE.load(Ordering::Relaxed);
    let mut changes = Vec::with_capacity(2 * n);
    for i in 0..n {
        let sid = format!("6f3b1c2a-0000-4000-8000-{i:012}");
        let rid = format!("9a7d4e5f-0000-4000-9000-{i:012}");
        changes.push(Change {
            entity: "services".into(),
            id: sid.clone(),
            document: format!(
                r#"{{"id":"{sid}","name":"bench-svc-{i}","protocol":"http","host":"127.0.0.1","port":18080,"path":null,"retries":5,"connect_timeout":60000,"write_timeout":60000,"read_timeout":60000,"created_at":1765000000,"updated_at":1765000000}}"#
            ),
            deleted: false,
        });
        changes.push(Change {
            entity: "routes".into(),
            id: rid.clone(),
            document: format!(
                r#"{{"id":"{rid}","created_at":1765000000,"updated_at":1765000000,"protocols":["http","https"],"methods":null,"hosts":null,"paths":["/bench/{i}"],"regex_priority":0,"strip_path":true,"preserve_host":false,"service":{{"id":"{sid}"}}}}"#
            ),
            deleted: false,
        });
    }
    let rows = LIVE.load(Ordering::Relaxed) - start;
    let wire: usize = changes.iter().map(|c| c.document.len()).sum();
    let mut set = ConfigSet::new("bench", 1);
    let clock = std::time::Instant::now();
    // As a snapshot arrives: in chunks (of about 1 MiB, some 3,000 rows), each applied whole.
    for chunk in changes.chunks(3_000) {
        set.apply_snapshot(chunk).expect("valid config");
    }
    let stored_in = clock.elapsed();
    let with_set = LIVE.load(Ordering::Relaxed) - start;
    drop(changes);
    let set_only = LIVE.load(Ordering::Relaxed) - start;
    let mut services = ConfigSet::new("bench", 1);
    services.entities.insert("services".into(), set.entities["services"].clone());
    let before = LIVE.load(Ordering::Relaxed);
    let alone = Compiled::compile(Arc::new(services), &Default::default(), &Default::default()).expect("compiles");
    let services_compiled = LIVE.load(Ordering::Relaxed) - before;
    drop(alone);
    let clock = std::time::Instant::now();
    let compiled = Compiled::compile(Arc::new(set), &Default::default(), &Default::default()).expect("compiles");
    let compiled_in = clock.elapsed();
    let all = LIVE.load(Ordering::Relaxed) - start;
    println!("{n} services + {n} routes; documents as JSON text: {}", mib(wire));
    println!("change rows (as received):        {}", mib(rows));
    println!("ConfigSet of documents:           {}", mib(set_only));
    println!("compiled (router, services, ...): {}", mib(all - set_only));
    println!("  of which the services:          {}", mib(services_compiled));
    println!("total held:                       {}", mib(all));
    println!("(peak applying all rows at once, rows and set together: {})", mib(with_set));
    println!("time to store the documents {stored_in:.1?}, to compile them {compiled_in:.1?}");
    if writes > 0 {
        let compiled = apply_writes(compiled, n, writes);
        let after = LIVE.load(Ordering::Relaxed) - start;
        let growth = after as f64 / all as f64 - 1.0;
        println!("after {writes} writes:               {} ({:+.1}%)", mib(after), 100.0 * growth);
        drop(compiled);
    } else {
        drop(compiled);
    }
}

/// Applies `writes` deltas one at a time, as the sync client does: the set cloned and changed,
/// the configuration compiled incrementally from the current one, which is then dropped.
fn apply_writes(mut current: Compiled, n: usize, writes: usize) -> Compiled {
    let mut took = Vec::with_capacity(writes);
    for w in 0..writes {
        let change = if w % 2 == 0 {
            let i = (w / 2) % n;
            let sid = format!("6f3b1c2a-0000-4000-8000-{i:012}");
            let rid = format!("9a7d4e5f-0000-4000-9000-{i:012}");
            Change {
                entity: "routes".into(),
                id: rid.clone(),
                document: format!(
                    r#"{{"id":"{rid}","created_at":1765000000,"updated_at":1765000001,"protocols":["http","https"],"methods":null,"hosts":null,"paths":["/bench/{i}"],"regex_priority":0,"strip_path":true,"preserve_host":true,"service":{{"id":"{sid}"}}}}"#
                ),
                deleted: false,
            }
        } else {
            let sid = format!("6f3b1c2a-0000-4000-8001-{w:012}");
            Change {
                entity: "services".into(),
                id: sid.clone(),
                document: format!(
                    r#"{{"id":"{sid}","name":"bench-extra-{w}","protocol":"http","host":"example.com","port":80,"path":null,"retries":5,"connect_timeout":60000,"write_timeout":60000,"read_timeout":60000,"created_at":1765000001,"updated_at":1765000001}}"#
                ),
                deleted: false,
            }
        };
        let changes = [change];
        let clock = std::time::Instant::now();
        let mut next = (*current.set).clone();
        next.revision += 1;
        next.apply(&changes).expect("valid delta");
        let applied = current.apply(Arc::new(next), &changes, &Default::default(), &Default::default());
        took.push(clock.elapsed());
        // The predecessor is dropped off the clock (the sync client frees it after the swap).
        current = applied.expect("compiles");
    }
    took.sort();
    if let (Some(median), Some(p99)) = (took.get(writes / 2), took.get(writes * 99 / 100)) {
        println!("one-entity delta applied (set changed, compiled incrementally): median {median:.1?}, p99 {p99:.1?}");
    }
    current
}
