//! A declarative document turned into the rows it stands for, by replaying its entities as
//! Admin API requests against a scratch store (see the module documentation).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::{rows, DeclarativeError, Rows};
use crate::admin::{Admin, Node};
use crate::store::{Store, Table};

/// The rows a file describes, ids settled.
#[derive(Debug, Default)]
pub struct Target {
    pub rows: Rows,
}

impl Target {
    pub fn len(&self) -> usize {
        self.rows.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The namespace of Gatehouse's name-based ids.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6761_7465_686f_7573_6564_6563_6c61_7265);

fn v5(key: &str) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, key.as_bytes()).to_string()
}

/// The prefix marking a basic-auth password as the stored digest (as `export` writes it)
/// rather than a password to hash.
pub const DIGEST_PREFIX: &str = "sha1:";

/// One Admin API request of the replay, and where its entity is in the file.
struct Step {
    path: String,
    method: Method,
    uri: String,
    body: Value,
}

/// Natural keys of stored entities, to their ids.
#[derive(Default)]
struct Known(HashMap<(Table, String), String>);

fn text(doc: &Map<String, Value>, field: &str) -> Option<String> {
    doc.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// The natural key of a row, when its kind has one.
fn natural_key(table: Table, doc: &Map<String, Value>) -> Option<String> {
    let id = |f: &str| text(doc, f).unwrap_or_default();
    match table {
        Table::Services | Table::Upstreams => text(doc, "name"),
        Table::Consumers => text(doc, "username")
            .map(|u| format!("username:{u}"))
            .or_else(|| text(doc, "custom_id").map(|c| format!("custom_id:{c}"))),
        Table::KeyauthCredentials | Table::JwtSecrets => text(doc, "key"),
        Table::BasicauthCredentials | Table::HmacauthCredentials => text(doc, "username"),
        Table::Oauth2Credentials => text(doc, "client_id"),
        Table::Acls => text(doc, "group").map(|g| format!("{}:{g}", id("consumer_id"))),
        Table::Targets => text(doc, "target").map(|t| format!("{}:{t}", id("upstream_id"))),
        Table::Snis => text(doc, "name"),
        Table::Plugins => {
            text(doc, "name").map(|n| format!("{n}:{}:{}:{}", id("service_id"), id("route_id"), id("consumer_id")))
        }
        _ => None,
    }
}

impl Known {
    fn from_rows(rows: &Rows) -> Known {
        let mut known = Known::default();
        for (table, docs) in rows {
            for (id, doc) in docs {
                if let Some(key) = natural_key(*table, doc) {
                    known.0.insert((*table, key), id.clone());
                }
            }
        }
        known
    }

    /// The id of an entity: the file's, else the stored one with the same natural key, else
    /// one derived from the key (or, without one, from `content`).
    fn id(&self, table: Table, given: Option<&Value>, key: Option<String>, content: &str) -> Result<String, String> {
        match given {
            Some(Value::String(id)) if gatehouse_shared::validate::is_uuid(id) => return Ok(id.to_ascii_lowercase()),
            Some(Value::Null) | None => {}
            Some(other) => return Err(format!("id: {other} is not a valid uuid")),
        }
        Ok(match key {
            Some(key) => {
                self.0.get(&(table, key.clone())).cloned().unwrap_or_else(|| v5(&format!("{}:{key}", table.name())))
            }
            None => v5(&format!("{}:{content}", table.name())),
        })
    }
}

/// The entities of the file, as the replay will send them.
struct Walk<'k> {
    known: &'k Known,
    steps: Vec<Step>,
    /// Names and ids of the file's services, routes and consumers, for plugin references.
    services: HashMap<String, String>,
    routes: HashMap<String, String>,
    consumers: HashMap<String, String>,
    /// Basic-auth credentials given as stored digests, by id.
    digests: HashMap<String, String>,
    /// Each entity written so far (its URI, and its id for a POST), to where the file gives it.
    written: HashMap<String, String>,
}

/// Entities of one list in the file, each with its path there (`services[3].routes[0]`).
type Listed<'a> = Vec<(String, &'a Map<String, Value>)>;

fn list<'a>(parent: &'a Map<String, Value>, key: &str, path: &str) -> Result<Listed<'a>, DeclarativeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let here = format!("{path}{key}[{i}]");
                match item {
                    Value::Object(m) => Ok((here, m)),
                    _ => Err(DeclarativeError::Entity { path: here, message: "expected a mapping".into() }),
                }
            })
            .collect(),
        Some(_) => Err(DeclarativeError::Entity { path: format!("{path}{key}"), message: "expected a list".into() }),
    }
}

fn without(doc: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    doc.iter().filter(|(k, _)| !keys.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A reference to another entity: an id or name as a string, or `{"id": …}` / `{"name": …}`.
fn reference(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m
            .get("id")
            .or_else(|| m.get("name"))
            .or_else(|| m.get("username"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Credentials nested in a consumer, for the export.
pub(super) fn credential_kinds() -> [(&'static str, Table, &'static str); 6] {
    CREDENTIALS
}

/// Credentials nested in a consumer: the file's key, the table, the Admin API endpoint.
const CREDENTIALS: [(&str, Table, &str); 6] = [
    ("keyauth_credentials", Table::KeyauthCredentials, "key-auth"),
    ("basicauth_credentials", Table::BasicauthCredentials, "basic-auth"),
    ("hmacauth_credentials", Table::HmacauthCredentials, "hmac-auth"),
    ("jwt_secrets", Table::JwtSecrets, "jwt"),
    ("acls", Table::Acls, "acls"),
    ("oauth2_credentials", Table::Oauth2Credentials, "oauth2"),
];

impl Walk<'_> {
    fn err(path: &str, message: impl Into<String>) -> DeclarativeError {
        DeclarativeError::Entity { path: path.to_string(), message: message.into() }
    }

    fn id(
        &self,
        path: &str,
        table: Table,
        e: &Map<String, Value>,
        key: Option<String>,
        content: &Map<String, Value>,
    ) -> Result<String, DeclarativeError> {
        let content = serde_json::to_string(content).unwrap_or_default();
        self.known.id(table, e.get("id"), key, &content).map_err(|m| Self::err(path, m))
    }

    /// Adds an entity's write. One entity given twice (the same name, natural key or id) would
    /// be written twice, the second silently replacing the first: refused, with its place.
    fn push(
        &mut self,
        path: String,
        method: Method,
        uri: String,
        body: Map<String, Value>,
    ) -> Result<(), DeclarativeError> {
        let entity = match body.get("id").and_then(Value::as_str) {
            Some(id) => format!("{uri} {id}"),
            None => uri.clone(),
        };
        if let Some(first) = self.written.insert(entity, path.clone()) {
            return Err(Self::err(&path, format!("the same entity as {first} (one name, key or id given twice)")));
        }
        self.steps.push(Step { path, method, uri, body: Value::Object(body) });
        Ok(())
    }

    fn document(&mut self, doc: &Map<String, Value>) -> Result<(), DeclarativeError> {
        for (path, s) in list(doc, "services", "")? {
            self.service(&path, s)?;
        }
        for (path, c) in list(doc, "consumers", "")? {
            self.consumer(&path, c)?;
        }
        for (path, u) in list(doc, "upstreams", "")? {
            self.upstream(&path, u)?;
        }
        for (path, c) in list(doc, "certificates", "")? {
            self.certificate(&path, c)?;
        }
        // Plugins last: whatever they name is known by then.
        for (path, p) in list(doc, "plugins", "")? {
            self.plugin(&path, p, None)?;
        }
        Ok(())
    }

    fn service(&mut self, path: &str, s: &Map<String, Value>) -> Result<(), DeclarativeError> {
        let body = without(s, &["id", "routes", "plugins"]);
        let id = self.id(path, Table::Services, s, text(s, "name"), &body)?;
        if let Some(name) = text(s, "name") {
            self.services.insert(name, id.clone());
        }
        self.services.insert(id.clone(), id.clone());
        self.push(path.to_string(), Method::PUT, format!("/services/{id}"), body)?;
        for (rpath, r) in list(s, "routes", &format!("{path}."))? {
            if r.get("service").is_some() {
                return Err(Self::err(&rpath, "a route nested in a service names no service of its own"));
            }
            // Kong 0.14's routes have no name; a file written for a later Kong names them, and
            // the name then settles the route's id (so the same file imports the same route
            // again) and lets a top-level plugin refer to it, without being stored.
            let name = match r.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) if !n.is_empty() => Some(n.clone()),
                Some(other) => return Err(Self::err(&rpath, format!("name: {other} is not a route name"))),
            };
            let mut body = without(r, &["id", "plugins", "name"]);
            let content = body.clone();
            body.insert("service".into(), json!({"id": id}));
            let key = name.as_ref().map(|n| format!("name:{n}"));
            let mut keyed = content.clone();
            keyed.insert("service".into(), json!(id));
            let rid = self.id(&rpath, Table::Routes, r, key, &keyed)?;
            if let Some(n) = name {
                if self.routes.insert(n.clone(), rid.clone()).is_some() {
                    return Err(Self::err(&rpath, format!("name: route '{n}' is named twice")));
                }
            }
            self.routes.insert(rid.clone(), rid.clone());
            self.push(rpath.clone(), Method::PUT, format!("/routes/{rid}"), body)?;
            for (ppath, p) in list(r, "plugins", &format!("{rpath}."))? {
                self.plugin(&ppath, p, Some(("route_id", rid.clone())))?;
            }
        }
        for (ppath, p) in list(s, "plugins", &format!("{path}."))? {
            self.plugin(&ppath, p, Some(("service_id", id.clone())))?;
        }
        Ok(())
    }

    fn consumer(&mut self, path: &str, c: &Map<String, Value>) -> Result<(), DeclarativeError> {
        let nested: Vec<&str> = CREDENTIALS.iter().map(|(k, _, _)| *k).chain(["id", "plugins"]).collect();
        let body = without(c, &nested);
        let key = natural_key(Table::Consumers, c);
        let id = self.id(path, Table::Consumers, c, key, &body)?;
        for field in ["username", "custom_id"] {
            if let Some(v) = text(c, field) {
                self.consumers.insert(v, id.clone());
            }
        }
        self.consumers.insert(id.clone(), id.clone());
        self.push(path.to_string(), Method::PUT, format!("/consumers/{id}"), body)?;
        for (key, table, endpoint) in CREDENTIALS {
            for (cpath, cred) in list(c, key, &format!("{path}."))? {
                if cred.get("consumer_id").or_else(|| cred.get("consumer")).is_some() {
                    return Err(Self::err(&cpath, "a credential nested in a consumer names no consumer of its own"));
                }
                let mut body = without(cred, &["id"]);
                body.insert("consumer_id".into(), json!(id));
                let natural = natural_key(table, &body);
                let cid = self.id(&cpath, table, cred, natural, &body)?;
                if table == Table::BasicauthCredentials {
                    if let Some(digest) =
                        text(&body, "password").and_then(|p| p.strip_prefix(DIGEST_PREFIX).map(str::to_owned))
                    {
                        self.digests.insert(cid.clone(), digest);
                        body.insert("password".into(), json!("digest-replaced-after-validation"));
                    }
                }
                body.remove("consumer_id");
                body.insert("id".into(), json!(cid));
                self.push(cpath, Method::POST, format!("/consumers/{id}/{endpoint}"), body)?;
            }
        }
        for (ppath, p) in list(c, "plugins", &format!("{path}."))? {
            self.plugin(&ppath, p, Some(("consumer_id", id.clone())))?;
        }
        Ok(())
    }

    fn upstream(&mut self, path: &str, u: &Map<String, Value>) -> Result<(), DeclarativeError> {
        let mut body = without(u, &["id", "targets"]);
        let id = self.id(path, Table::Upstreams, u, text(u, "name"), &body)?;
        body.insert("id".into(), json!(id));
        self.push(path.to_string(), Method::POST, "/upstreams".into(), body)?;
        for (tpath, t) in list(u, "targets", &format!("{path}."))? {
            let mut body = without(t, &["id", "upstream_id", "upstream"]);
            let mut keyed = body.clone();
            keyed.insert("upstream_id".into(), json!(id));
            let tid = self.id(&tpath, Table::Targets, t, natural_key(Table::Targets, &keyed), &keyed)?;
            body.insert("id".into(), json!(tid));
            self.push(tpath, Method::POST, format!("/upstreams/{id}/targets"), body)?;
        }
        Ok(())
    }

    fn certificate(&mut self, path: &str, c: &Map<String, Value>) -> Result<(), DeclarativeError> {
        let mut body = without(c, &["id", "snis"]);
        let content = json!({"cert": c.get("cert"), "key": c.get("key")});
        let id = self.id(path, Table::Certificates, c, None, content.as_object().unwrap_or(&Map::new()))?;
        // SNIs as names (Kong 0.14) or as `{name: …}` (Kong 1.x files).
        let mut names = Vec::new();
        for (i, sni) in c.get("snis").and_then(Value::as_array).into_iter().flatten().enumerate() {
            match sni.as_str().map(str::to_owned).or_else(|| sni.get("name").and_then(Value::as_str).map(str::to_owned))
            {
                Some(n) => names.push(json!(n)),
                None => return Err(Self::err(&format!("{path}.snis[{i}]"), "expected a name")),
            }
        }
        body.insert("snis".into(), Value::Array(names));
        self.push(path.to_string(), Method::PUT, format!("/certificates/{id}"), body)?;
        Ok(())
    }

    /// A plugin, nested (`scope` is its parent's column and id) or top-level (naming its
    /// service, route and consumer, if any, by id or name).
    fn plugin(
        &mut self,
        path: &str,
        p: &Map<String, Value>,
        scope: Option<(&str, String)>,
    ) -> Result<(), DeclarativeError> {
        let mut body = without(p, &["id", "service", "route", "consumer", "service_id", "route_id", "consumer_id"]);
        for (column, short, names) in [
            ("service_id", "service", &self.services),
            ("route_id", "route", &self.routes),
            ("consumer_id", "consumer", &self.consumers),
        ] {
            let given = p.get(column).or_else(|| p.get(short)).filter(|v| !v.is_null());
            let Some(given) = given else { continue };
            if scope.as_ref().is_some_and(|(c, _)| *c == column) {
                return Err(Self::err(path, format!("a plugin nested in its {short} names no {short} of its own")));
            }
            let name = reference(given).ok_or_else(|| Self::err(path, format!("{short}: expected an id or a name")))?;
            let id = names.get(&name).ok_or_else(|| Self::err(path, format!("{short} '{name}' is not in the file")))?;
            body.insert(column.into(), json!(id));
        }
        if let Some((column, id)) = scope {
            body.insert(column.into(), json!(id));
        }
        let key = natural_key(Table::Plugins, &body);
        let id = self.id(path, Table::Plugins, p, key, &body)?;
        body.insert("id".into(), json!(id));
        self.push(path.to_string(), Method::POST, "/plugins".into(), body)?;
        Ok(())
    }
}

/// A scratch store in a temporary directory, gone with it.
async fn scratch() -> Result<(tempfile::TempDir, Store), DeclarativeError> {
    let dir =
        tempfile::tempdir().map_err(|e| DeclarativeError::Format(format!("cannot create a scratch directory: {e}")))?;
    let url = format!("sqlite://{}", dir.path().join("declarative.db").display());
    let store = Store::connect(&url).await?;
    store.migrate_up().await?;
    Ok((dir, store))
}

/// Turns a parsed document into the rows it describes, each entity validated by the Admin
/// API. `store`, when given, lends ids to entities the file gives none (by natural key).
/// `progress` is told how many of how many entities are done.
///
/// # Errors
/// An entity the Admin API refuses (with its place in the file), a reference to an entity
/// the file does not hold, or a scratch-store failure.
pub async fn plan(
    store: Option<&Store>,
    doc: &Value,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
) -> Result<Target, DeclarativeError> {
    let stored = match store {
        Some(s) => rows(s).await?.1,
        None => Rows::new(),
    };
    let known = Known::from_rows(&stored);
    let mut walk = Walk {
        known: &known,
        steps: Vec::new(),
        services: HashMap::new(),
        routes: HashMap::new(),
        consumers: HashMap::new(),
        digests: HashMap::new(),
        written: HashMap::new(),
    };
    let Value::Object(top) = doc else { return Err(DeclarativeError::Format("the document must be a mapping".into())) };
    walk.document(top)?;

    let (_dir, scratch) = scratch().await?;
    let api = crate::admin::router(Admin { store: scratch.clone(), node: Arc::new(Node::default()) });
    let total = walk.steps.len();
    for (i, step) in walk.steps.iter().enumerate() {
        let req = Request::builder()
            .method(step.method.clone())
            .uri(&step.uri)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(step.body.to_string()))
            .map_err(|e| DeclarativeError::Entity { path: step.path.clone(), message: e.to_string() })?;
        let resp = api.clone().oneshot(req).await.unwrap_or_else(|never| match never {});
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let said = String::from_utf8_lossy(&body).trim().to_string();
            return Err(DeclarativeError::Entity {
                path: step.path.clone(),
                message: format!("{} {said}", status.as_u16()),
            });
        }
        if let Some(report) = progress {
            report(i + 1, total);
        }
    }
    let (_, mut rows) = rows(&scratch).await?;
    // The digests a file gave for basic-auth passwords replace what validation hashed.
    if let Some(creds) = rows.get_mut(&Table::BasicauthCredentials) {
        for (id, doc) in creds.iter_mut() {
            if let Some(digest) = walk.digests.get(id) {
                doc.insert("password".into(), json!(digest));
            }
        }
    }
    // SNIs get their ids from the certificate endpoint: settle them by name.
    if let Some(snis) = rows.remove(&Table::Snis) {
        let mut settled = BTreeMap::new();
        for (_, mut doc) in snis {
            let name = text(&doc, "name").unwrap_or_default();
            let id = known.id(Table::Snis, None, Some(name), "").unwrap_or_default();
            doc.insert("id".into(), json!(id));
            settled.insert(id, doc);
        }
        rows.insert(Table::Snis, settled);
    }
    scratch.close().await;
    Ok(Target { rows })
}
