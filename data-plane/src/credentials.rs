//! Consumers and their credentials, indexed by what requests present (a key, a username, a
//! token), built when the configuration compiles so a lookup is one hash probe.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_shared::snapshot::{ConfigSet, Doc};
use http::HeaderValue;
use serde_json::Value;

/// The maps requests probe: persistent, so that a credential change makes a new set of
/// indexes sharing all but the changed entries with the current one (a token issued is not a
/// rebuild of every index); foldhash rather than SipHash (the keys are the request's own, but
/// the seed is random per process, and a probe is on every authenticated request's path).
pub type Index<K, V> = imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// A consumer's ACL groups: `(created_at, group, acl id)`, oldest first.
type Groups = Vec<(i64, String, String)>;

#[derive(Debug, Default, Clone)]
pub struct Credentials {
    pub consumers: Index<Arc<str>, Arc<Consumer>>,
    /// key-auth credentials by `key`.
    pub keys: Index<String, Arc<Value>>,
    /// basic-auth credentials by `username`.
    pub basic: Index<String, Arc<Value>>,
    /// hmac-auth credentials by `username`.
    pub hmac: Index<String, Arc<Value>>,
    /// jwt secrets by `key`.
    pub jwt: Index<String, Arc<Value>>,
    /// The parsed verification keys of RS256/RS512/ES256 jwt secrets, by credential id: the
    /// PEM is decoded once here, not on every request.
    pub jwt_public_keys: Index<String, Arc<[u8]>>,
    /// oauth2 applications by `client_id`.
    pub oauth2_clients: Index<String, Arc<Value>>,
    /// oauth2 applications by `id`.
    pub oauth2_by_id: Index<String, Arc<Value>>,
    /// oauth2 tokens by `access_token` and by `refresh_token`.
    pub oauth2_tokens: Index<String, Arc<Value>>,
    pub oauth2_refresh: Index<String, Arc<Value>>,
    /// oauth2 authorization codes by `code`.
    pub oauth2_codes: Index<String, Arc<Value>>,
    /// Each consumer's ACL groups, by consumer id (also for ids no consumer has yet).
    groups: Index<String, Groups>,
}

/// Which field of a credential table's rows each index is keyed by.
type Indexed = (&'static str, &'static str, fn(&mut Credentials) -> &mut Index<String, Arc<Value>>);

const INDEXED: [Indexed; 9] = [
    ("keyauth_credentials", "key", |c| &mut c.keys),
    ("basicauth_credentials", "username", |c| &mut c.basic),
    ("hmacauth_credentials", "username", |c| &mut c.hmac),
    ("jwt_secrets", "key", |c| &mut c.jwt),
    ("oauth2_credentials", "client_id", |c| &mut c.oauth2_clients),
    ("oauth2_credentials", "id", |c| &mut c.oauth2_by_id),
    ("oauth2_tokens", "access_token", |c| &mut c.oauth2_tokens),
    ("oauth2_tokens", "refresh_token", |c| &mut c.oauth2_refresh),
    ("oauth2_authorization_codes", "code", |c| &mut c.oauth2_codes),
];

fn text<'v>(doc: &'v Value, field: &str) -> Option<&'v str> {
    doc.get(field).and_then(Value::as_str)
}

/// A jwt secret's parsed verification key, for the algorithms that have one.
fn jwt_key(secret: &Value) -> Option<Arc<[u8]>> {
    public_key(text(secret, "algorithm")?, text(secret, "rsa_public_key")?).map(Arc::from)
}

fn by(rows: &[Arc<Value>], field: &str) -> Index<String, Arc<Value>> {
    rows.iter().filter_map(|d| Some((d.get(field).and_then(Value::as_str)?.to_string(), d.clone()))).collect()
}

impl Credentials {
    pub fn compile(set: &ConfigSet) -> Credentials {
        let mut groups: Index<String, Groups> = Index::default();
        for acl in set.table("acls").map(Doc::value) {
            let (Some(c), Some(g), Some(id)) = (text(&acl, "consumer_id"), text(&acl, "group"), text(&acl, "id"))
            else {
                continue;
            };
            let at = acl.get("created_at").and_then(Value::as_i64).unwrap_or(0);
            groups.entry(c.to_owned()).or_default().push((at, g.to_owned(), id.to_owned()));
        }
        for (_, g) in groups.iter_mut() {
            g.sort();
        }
        let consumers = set
            .table("consumers")
            .filter_map(|doc| {
                let doc = doc.value();
                let consumer = Consumer::from_doc(doc, &groups)?;
                Some((consumer.id.clone(), Arc::new(consumer)))
            })
            .collect();
        let mut creds = Credentials { consumers, groups, ..Credentials::default() };
        let mut parsed: HashMap<&str, Vec<Arc<Value>>> = HashMap::new();
        for (table, field, index) in INDEXED {
            let rows = parsed.entry(table).or_insert_with(|| set.table(table).map(|d| Arc::new(d.value())).collect());
            *index(&mut creds) = by(rows, field);
        }
        let jwt = parsed.get("jwt_secrets").map_or(&[][..], Vec::as_slice);
        creds.jwt_public_keys = jwt.iter().filter_map(|d| Some((text(d, "id")?.to_owned(), jwt_key(d)?))).collect();
        creds
    }

    /// The indexes of `new`, made from these (those of `old`) and the rows of each table a
    /// delta `touched` (`touched(table)`: its ids): what is untouched is shared, so a change
    /// costs what it touches, not what the configuration holds. Each indexed field is unique
    /// in its table (the control plane refuses a second row with it), which is what makes the
    /// result that of a full compile: one row per key, in whatever order rows changed.
    pub fn update<'t>(&self, old: &ConfigSet, new: &ConfigSet, touched: impl Fn(&str) -> Vec<&'t str>) -> Credentials {
        let mut c = self.clone();
        let parse = |set: &ConfigSet, table: &str, id: &str| set.get(table, id).map(Doc::value);
        for (table, field, index) in INDEXED {
            let ids = touched(table);
            let map = index(&mut c);
            // Every old entry goes before any new one comes: a revision may move a key from one
            // row to another. An entry is removed only if it is still this row's.
            for id in &ids {
                let Some(before) = parse(old, table, id) else { continue };
                let Some(key) = text(&before, field) else { continue };
                if map.get(key).is_some_and(|row| **row == before) {
                    map.remove(key);
                }
            }
            for id in &ids {
                let Some(row) = parse(new, table, id) else { continue };
                if let Some(key) = text(&row, field) {
                    map.insert(key.to_owned(), Arc::new(row));
                }
            }
        }
        for id in touched("jwt_secrets") {
            match parse(new, "jwt_secrets", id).as_ref().and_then(jwt_key) {
                Some(key) => c.jwt_public_keys.insert(id.to_owned(), key),
                None => c.jwt_public_keys.remove(id),
            };
        }
        // Consumers changed, and those whose groups changed.
        let mut consumers: Vec<String> = touched("consumers").into_iter().map(str::to_owned).collect();
        for id in touched("acls") {
            if let Some(before) = parse(old, "acls", id) {
                if let Some(owner) = text(&before, "consumer_id") {
                    if let Some(g) = c.groups.get_mut(owner) {
                        g.retain(|(_, _, acl)| acl != id);
                        if g.is_empty() {
                            c.groups.remove(owner);
                        }
                    }
                    consumers.push(owner.to_owned());
                }
            }
            if let Some(acl) = parse(new, "acls", id) {
                if let (Some(owner), Some(group)) = (text(&acl, "consumer_id"), text(&acl, "group")) {
                    let at = acl.get("created_at").and_then(Value::as_i64).unwrap_or(0);
                    let g = c.groups.entry(owner.to_owned()).or_default();
                    g.push((at, group.to_owned(), id.to_owned()));
                    g.sort();
                    consumers.push(owner.to_owned());
                }
            }
        }
        for id in consumers {
            match parse(new, "consumers", &id).and_then(|doc| Consumer::from_doc(doc, &c.groups)) {
                Some(consumer) => c.consumers.insert(consumer.id.clone(), Arc::new(consumer)),
                None => c.consumers.remove(id.as_str()),
            };
        }
        c
    }

    /// The consumer owning a credential row.
    pub fn owner(&self, credential: &Value) -> Option<&Arc<Consumer>> {
        self.consumers.get(credential.get("consumer_id").and_then(Value::as_str)?)
    }
}

/// A consumer as the auth plugins hand it on: the header values are built once, at compile.
#[derive(Debug)]
pub struct Consumer {
    pub id: Arc<str>,
    pub id_header: HeaderValue,
    pub username: Option<HeaderValue>,
    pub custom_id: Option<HeaderValue>,
    /// ACL groups, oldest first.
    pub groups: Vec<String>,
    /// `X-Consumer-Groups`: the groups joined with `, `.
    pub groups_header: Option<HeaderValue>,
    /// The consumer's document, as log records show it.
    pub doc: Arc<Value>,
}

impl Consumer {
    /// The consumer of `doc`, with its groups as `groups` holds them.
    fn from_doc(doc: Value, groups: &Index<String, Groups>) -> Option<Consumer> {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).and_then(|v| HeaderValue::from_str(v).ok());
        let id = doc.get("id").and_then(Value::as_str)?;
        let groups: Vec<String> = groups.get(id).into_iter().flatten().map(|(_, g, _)| g.clone()).collect();
        Some(Consumer {
            id: id.into(),
            id_header: HeaderValue::from_str(id).ok()?,
            username: s("username"),
            custom_id: s("custom_id"),
            groups_header: (!groups.is_empty()).then(|| HeaderValue::from_str(&groups.join(", ")).ok()).flatten(),
            groups,
            doc: Arc::new(doc),
        })
    }
}

/// The EC point of a PEM `PUBLIC KEY` (SPKI), for ES256.
fn ec_public_key(pem: &[u8]) -> Option<Vec<u8>> {
    let mut reader = pem;
    loop {
        if let rustls_pemfile::Item::SubjectPublicKeyInfo(spki) = rustls_pemfile::read_one(&mut reader).ok()?? {
            use x509_parser::prelude::FromDer;
            let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()).ok()?;
            return Some(info.subject_public_key.data.to_vec());
        }
    }
}

/// The verification key of an RS256/RS512/ES256 secret's PEM: the RSA key's DER, or the EC
/// point. Parsed when the configuration compiles (see `Credentials::jwt_public_keys`).
pub fn public_key(alg: &str, pem: &str) -> Option<Vec<u8>> {
    match alg {
        "RS256" | "RS512" => gatehouse_shared::credential::rsa_public_key_der(pem),
        "ES256" => ec_public_key(pem.as_bytes()),
        _ => None,
    }
}
