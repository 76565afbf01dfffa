//! What a one-credential or one-plugin delta costs a data plane holding N consumers, each with
//! a key-auth credential and an ACL group, beside N Services + N Routes: the time
//! `Compiled::apply` takes for a key issued, a key revoked, a group granted, and a plugin
//! added and removed on one route and globally, against a full compile of the same
//! configuration and a rebuild of every credential index (what each credential delta cost
//! before the indexes followed deltas). A measurement program:
//!
//! ```text
//! cargo run --release -p gatehouse-data-plane --example credential_delta -- 10000
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_data_plane::compiled::Compiled;
use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;

fn row(entity: &str, id: String, document: String) -> Change {
    Change { entity: entity.into(), id, document, deleted: false }
}

fn configuration(n: usize) -> Vec<Change> {
    let mut changes = Vec::with_capacity(5 * n);
    for i in 0..n {
        let (sid, rid, cid) = (format!("svc-{i:08}"), format!("route-{i:08}"), format!("consumer-{i:08}"));
        changes.push(row(
            "services",
            sid.clone(),
            format!(
                r#"{{"id":"{sid}","name":"svc-{i}","protocol":"http","host":"127.0.0.1","port":18080,"retries":5}}"#
            ),
        ));
        changes.push(row(
            "routes",
            rid.clone(),
            format!(r#"{{"id":"{rid}","protocols":["http"],"paths":["/p/{i}"],"strip_path":true,"service":{{"id":"{sid}"}}}}"#),
        ));
        changes.push(row("consumers", cid.clone(), format!(r#"{{"id":"{cid}","username":"user-{i}"}}"#)));
        changes.push(row(
            "keyauth_credentials",
            format!("key-{i:08}"),
            format!(r#"{{"id":"key-{i:08}","consumer_id":"{cid}","key":"secret-{i}"}}"#),
        ));
        changes.push(row(
            "acls",
            format!("acl-{i:08}"),
            format!(r#"{{"id":"acl-{i:08}","consumer_id":"{cid}","group":"g{}","created_at":1}}"#, i % 7),
        ));
    }
    changes
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds = 200;
    let plugins: HashSet<String> = ["correlation-id".to_string()].into();
    let registry = Default::default();
    let mut set = ConfigSet::new("bench", 1);
    set.apply(&configuration(n)).expect("valid config");
    let began = Instant::now();
    let mut current = Compiled::compile(Arc::new(set.clone()), &plugins, &registry).expect("compiles");
    let full = began.elapsed();
    // What every credential delta cost before indexes followed deltas: all of them rebuilt.
    let began = Instant::now();
    let rebuilt = gatehouse_data_plane::credentials::Credentials::compile(&set);
    let rebuild = began.elapsed();
    drop(rebuilt);
    let mut timings: Vec<(&str, Vec<Duration>)> = [
        "key issued",
        "key revoked",
        "group granted",
        "route plugin added",
        "route plugin removed",
        "global plugin added",
        "global plugin removed",
    ]
    .into_iter()
    .map(|what| (what, Vec::new()))
    .collect();
    let plugin = |id: String, scope: String| {
        row(
            "plugins",
            id.clone(),
            format!(
                r#"{{"id":"{id}","name":"correlation-id","enabled":true,{scope}"config":{{"header_name":"X-Id","generator":"uuid","echo_downstream":false}}}}"#
            ),
        )
    };
    let gone = |entity: &str, id: String| Change { entity: entity.into(), id, document: String::new(), deleted: true };
    for r in 0..rounds {
        let consumer = format!("consumer-{:08}", r * 37 % n);
        let deltas = [
            row(
                "keyauth_credentials",
                format!("new-{r}"),
                format!(r#"{{"id":"new-{r}","consumer_id":"{consumer}","key":"new-{r}"}}"#),
            ),
            gone("keyauth_credentials", format!("new-{r}")),
            row(
                "acls",
                format!("new-acl-{r}"),
                format!(r#"{{"id":"new-acl-{r}","consumer_id":"{consumer}","group":"extra","created_at":2}}"#),
            ),
            plugin(format!("route-plugin-{r}"), format!(r#""route_id":"route-{:08}","#, r * 37 % n)),
            gone("plugins", format!("route-plugin-{r}")),
            plugin(format!("global-plugin-{r}"), String::new()),
            gone("plugins", format!("global-plugin-{r}")),
        ];
        for (i, delta) in deltas.into_iter().enumerate() {
            let delta = [delta];
            set.revision += 1;
            set.apply(&delta).expect("valid delta");
            let next = Arc::new(set.clone());
            let began = Instant::now();
            let applied = current.apply(next, &delta, &plugins, &registry).expect("applies");
            timings[i].1.push(began.elapsed());
            current = applied;
        }
    }
    println!("{n} consumers (a key-auth credential and an ACL each) + {n} services + {n} routes");
    println!("full compile: {full:?}; the credential indexes alone, rebuilt: {rebuild:?}");
    for (what, mut t) in timings {
        t.sort();
        println!("{what:>21}: median {:?}, p99 {:?} ({rounds} deltas)", percentile(&t, 0.5), percentile(&t, 0.99));
    }
}
