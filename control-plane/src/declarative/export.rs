//! The store's configuration as a declarative document: services with their routes and
//! plugins, consumers with their credentials and plugins, upstreams with their current
//! targets, certificates with their SNIs, and the remaining plugins at the top level. Ids are
//! kept (so a re-import changes nothing); store-stamped times are not.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::plan::DIGEST_PREFIX;
use super::{rows, DeclarativeError, Rows};
use crate::store::{Doc, Store, Table};

fn text<'a>(doc: &'a Doc, field: &str) -> &'a str {
    doc.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// An entity as a file holds it: no creation or update time, no nulls, none of `drop`.
fn entity(doc: &Doc, drop: &[&str]) -> Map<String, Value> {
    doc.iter()
        .filter(|(k, v)| {
            !v.is_null() && !matches!(k.as_str(), "created_at" | "updated_at") && !drop.contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn table(rows: &Rows, table: Table) -> impl Iterator<Item = &Doc> {
    rows.get(&table).into_iter().flat_map(BTreeMap::values)
}

/// The plugin as a file holds it, with the scope columns its place in the file implies
/// left out.
fn plugin(doc: &Doc, implied: &[&str]) -> Value {
    let mut p = entity(doc, implied);
    for column in ["service_id", "route_id", "consumer_id"] {
        if let Some(id) = p.remove(column) {
            p.insert(column.trim_end_matches("_id").to_string(), json!({"id": id}));
        }
    }
    Value::Object(p)
}

/// The columns set on a plugin row.
fn scope(doc: &Doc) -> (bool, bool, bool) {
    let set = |c: &str| doc.get(c).is_some_and(|v| !v.is_null());
    (set("service_id"), set("route_id"), set("consumer_id"))
}

/// The current targets of an upstream: the newest entry of each target, weight above 0.
fn current_targets(rows: &Rows, upstream: &str) -> Vec<Value> {
    let mut newest: BTreeMap<&str, &Doc> = BTreeMap::new();
    for t in table(rows, Table::Targets).filter(|t| text(t, "upstream_id") == upstream) {
        let at = |d: &Doc| d.get("created_at").and_then(Value::as_f64).unwrap_or(0.0);
        match newest.get(text(t, "target")) {
            Some(seen) if at(seen) > at(t) => {}
            _ => {
                newest.insert(text(t, "target"), t);
            }
        }
    }
    newest
        .into_values()
        .filter(|t| t.get("weight").and_then(Value::as_f64).unwrap_or(0.0) > 0.0)
        .map(|t| Value::Object(entity(t, &["upstream_id"])))
        .collect()
}

/// The whole configuration of `store`.
///
/// # Errors
/// A database failure.
pub async fn export(store: &Store) -> Result<Value, DeclarativeError> {
    let (_, rows) = rows(store).await?;
    Ok(document(&rows))
}

pub(super) fn document(rows: &Rows) -> Value {
    let plugins: Vec<&Doc> = table(rows, Table::Plugins).collect();
    let mut placed = std::collections::HashSet::new();

    let mut services = Vec::new();
    for s in table(rows, Table::Services) {
        let id = text(s, "id");
        let mut svc = entity(s, &[]);
        let mut routes = Vec::new();
        for r in table(rows, Table::Routes)
            .filter(|r| r.get("service").and_then(|v| v.get("id")).and_then(Value::as_str) == Some(id))
        {
            let rid = text(r, "id");
            let mut route = entity(r, &["service"]);
            let own: Vec<Value> = plugins
                .iter()
                .filter(|p| scope(p) == (false, true, false) && text(p, "route_id") == rid)
                .map(|p| {
                    placed.insert(text(p, "id").to_string());
                    plugin(p, &["route_id"])
                })
                .collect();
            if !own.is_empty() {
                route.insert("plugins".into(), Value::Array(own));
            }
            routes.push(Value::Object(route));
        }
        if !routes.is_empty() {
            svc.insert("routes".into(), Value::Array(routes));
        }
        let own: Vec<Value> = plugins
            .iter()
            .filter(|p| scope(p) == (true, false, false) && text(p, "service_id") == id)
            .map(|p| {
                placed.insert(text(p, "id").to_string());
                plugin(p, &["service_id"])
            })
            .collect();
        if !own.is_empty() {
            svc.insert("plugins".into(), Value::Array(own));
        }
        services.push(Value::Object(svc));
    }

    let mut consumers = Vec::new();
    for c in table(rows, Table::Consumers) {
        let id = text(c, "id");
        let mut consumer = entity(c, &[]);
        for (key, t, _) in super::plan::credential_kinds() {
            let creds: Vec<Value> = table(rows, t)
                .filter(|cred| text(cred, "consumer_id") == id)
                .map(|cred| {
                    let mut cred = entity(cred, &["consumer_id"]);
                    if t == Table::BasicauthCredentials {
                        if let Some(Value::String(digest)) = cred.get("password").cloned() {
                            cred.insert("password".into(), json!(format!("{DIGEST_PREFIX}{digest}")));
                        }
                    }
                    Value::Object(cred)
                })
                .collect();
            if !creds.is_empty() {
                consumer.insert(key.to_string(), Value::Array(creds));
            }
        }
        let own: Vec<Value> = plugins
            .iter()
            .filter(|p| scope(p) == (false, false, true) && text(p, "consumer_id") == id)
            .map(|p| {
                placed.insert(text(p, "id").to_string());
                plugin(p, &["consumer_id"])
            })
            .collect();
        if !own.is_empty() {
            consumer.insert("plugins".into(), Value::Array(own));
        }
        consumers.push(Value::Object(consumer));
    }

    let upstreams: Vec<Value> = table(rows, Table::Upstreams)
        .map(|u| {
            let mut up = entity(u, &[]);
            let targets = current_targets(rows, text(u, "id"));
            if !targets.is_empty() {
                up.insert("targets".into(), Value::Array(targets));
            }
            Value::Object(up)
        })
        .collect();

    let certificates: Vec<Value> = table(rows, Table::Certificates)
        .map(|c| {
            let mut cert = entity(c, &[]);
            // By name, so an export does not depend on the ids the names were given.
            let mut names: Vec<&str> = table(rows, Table::Snis)
                .filter(|s| {
                    s.get("certificate").and_then(|v| v.get("id")).and_then(Value::as_str) == Some(text(c, "id"))
                })
                .map(|s| text(s, "name"))
                .collect();
            names.sort_unstable();
            let snis: Vec<Value> = names.into_iter().map(|name| json!({ "name": name })).collect();
            if !snis.is_empty() {
                cert.insert("snis".into(), Value::Array(snis));
            }
            Value::Object(cert)
        })
        .collect();

    let rest: Vec<Value> = plugins.iter().filter(|p| !placed.contains(text(p, "id"))).map(|p| plugin(p, &[])).collect();

    let mut doc = Map::new();
    doc.insert("_format_version".into(), json!("1.1"));
    for (key, items) in [
        ("services", services),
        ("consumers", consumers),
        ("upstreams", upstreams),
        ("certificates", certificates),
        ("plugins", rest),
    ] {
        if !items.is_empty() {
            doc.insert(key.into(), Value::Array(items));
        }
    }
    Value::Object(doc)
}
