//! Route matching and router rebuild cost at 100, 1,000 and 10,000 routes, and a one-route
//! delta's apply cost at 1,000 to 100,000.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gatehouse_data_plane::compiled::Compiled;
use gatehouse_data_plane::router::Request;
use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;

/// N services and N routes shaped like the bench harness's load: `/<prefix>/<i>` paths, some
/// with hosts, a few regexes.
fn config(n: usize) -> ConfigSet {
    let mut changes = Vec::with_capacity(2 * n);
    for i in 0..n {
        let sid = format!("00000000-0000-4000-8000-{i:012}");
        let rid = format!("00000000-0000-4000-9000-{i:012}");
        changes.push(Change {
            entity: "services".into(),
            id: sid.clone(),
            document: format!(r#"{{"id":"{sid}","host":"127.0.0.1","port":18080,"protocol":"http"}}"#),
            deleted: false,
        });
        let hosts = if i % 3 == 0 { format!(r#"["h{i}.example.com"]"#) } else { "null".into() };
        let path = if i % 100 == 99 { format!(r"/re/{i}/\\d+") } else { format!("/lc/{i}") };
        changes.push(Change {
            entity: "routes".into(),
            id: rid.clone(),
            document: format!(
                r#"{{"id":"{rid}","created_at":{i},"hosts":{hosts},"paths":["{path}"],"protocols":["http","https"],"service":{{"id":"{sid}"}}}}"#
            ),
            deleted: false,
        });
    }
    let mut set = ConfigSet::new("bench", 1);
    set.apply(&changes).expect("valid bench config");
    set
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [100usize, 1_000, 10_000] {
        let compiled = Compiled::compile(std::sync::Arc::new(config(n)), &Default::default(), &Default::default())
            .expect("compiles");
        let path = format!("/lc/{}/items", n / 2 + 1);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let req = Request { method: "GET", path: black_box(&path), host: "bench.local" };
                black_box(compiled.router.find(&req))
            })
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_rebuild");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let set = std::sync::Arc::new(config(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                black_box(Compiled::compile(set.clone(), &Default::default(), &Default::default()).expect("compiles"))
            })
        });
    }
    group.finish();
}

/// One route changed (its paths edited), applied as a data plane applies a delta: the set
/// copied and changed, then compiled incrementally from the current configuration.
fn delta(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta_apply");
    group.sample_size(20);
    for n in [1_000usize, 10_000, 100_000] {
        let set = config(n);
        let compiled = Compiled::compile(std::sync::Arc::new(set.clone()), &Default::default(), &Default::default())
            .expect("compiles");
        let rid = format!("00000000-0000-4000-9000-{:012}", n / 2);
        let sid = format!("00000000-0000-4000-8000-{:012}", n / 2);
        let mut round = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            // Dropped off the clock (a data plane frees a delta's predecessor after it has
            // acknowledged the delta).
            b.iter_with_large_drop(|| {
                round += 1;
                let changes = [Change {
                    entity: "routes".into(),
                    id: rid.clone(),
                    document: format!(
                        r#"{{"id":"{rid}","created_at":1,"paths":["/edited/{round}"],"service":{{"id":"{sid}"}}}}"#
                    ),
                    deleted: false,
                }];
                let mut next = set.clone();
                next.apply(&changes).expect("valid change");
                compiled
                    .apply(std::sync::Arc::new(next), &changes, &Default::default(), &Default::default())
                    .expect("compiles")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching, rebuild, delta);
criterion_main!(benches);
