//! Balancer pick cost: hash input + wheel position + health check of the chosen peer, for
//! round robin and each hash mode, over a 3-target upstream with the default 10,000 slots.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse_data_plane::balancer::hash::HashInput;
use gatehouse_data_plane::balancer::Registry;
use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;
use http::{HeaderMap, HeaderValue};

fn upstream(hash: &str) -> ConfigSet {
    let mut changes = vec![Change {
        entity: "upstreams".into(),
        id: "u1".into(),
        document: format!(r#"{{"id":"u1","name":"bench.v1","slots":10000,{hash}}}"#),
        deleted: false,
    }];
    for i in 1..=3 {
        changes.push(Change {
            entity: "targets".into(),
            id: format!("t{i}"),
            document: format!(
                r#"{{"id":"t{i}","upstream_id":"u1","created_at":{i},"target":"10.0.0.{i}:8000","weight":{}}}"#,
                i * 100
            ),
            deleted: false,
        });
    }
    let mut set = ConfigSet::new("bench", 1);
    set.apply(&changes).expect("applies");
    set
}

fn bench(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("user-12345"));
    headers.insert("cookie", HeaderValue::from_static("theme=dark; sid=2f1c1f9e-8a59-4b55-a0a5-3a2a6a0b7c11"));
    let ip: IpAddr = [192, 168, 10, 77].into();
    let modes = [
        ("round_robin", r#""hash_on":"none""#),
        ("hash_ip", r#""hash_on":"ip""#),
        ("hash_header", r#""hash_on":"header","hash_on_header":"x-user""#),
        ("hash_cookie", r#""hash_on":"cookie","hash_on_cookie":"sid""#),
        ("hash_consumer", r#""hash_on":"consumer""#),
    ];
    let mut group = c.benchmark_group("balancer_pick");
    for (name, hash) in modes {
        let registry = Registry::default();
        let balancers = registry.compile(&upstream(hash));
        let b = balancers.get("bench.v1").expect("balancer").clone();
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let input = HashInput {
                    headers: &headers,
                    client_ip: ip,
                    consumer: Some("4e3ad2e4-0bc4-4638-8e34-c84a417ba39b"),
                };
                let hashed = if b.hash.is_none() { None } else { b.hash.hash(black_box(&input)).hash };
                let ring = b.ring();
                black_box(ring.pick(b.position(hashed, 0)).map(|p| p.addr))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
