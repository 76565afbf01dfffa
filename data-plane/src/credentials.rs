//! Consumers and their credentials, indexed by what requests present (a key, a username, a
//! token), built when the configuration compiles so a lookup is one hash probe.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_shared::snapshot::{ConfigSet, Doc};
use http::HeaderValue;
use serde_json::Value;

/// The maps requests probe: foldhash rather than SipHash (the keys are the request's own, but
/// the seed is random per process, and a probe is on every authenticated request's path).
pub type Index<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
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
}

fn by(rows: &[Arc<Value>], field: &str) -> Index<String, Arc<Value>> {
    rows.iter().filter_map(|d| Some((d.get(field).and_then(Value::as_str)?.to_string(), d.clone()))).collect()
}

impl Credentials {
    pub fn compile(set: &ConfigSet) -> Credentials {
        let acls: Vec<Value> = set.table("acls").map(Doc::value).collect();
        let mut groups: HashMap<&str, Vec<(i64, String)>> = HashMap::new();
        for acl in &acls {
            let (Some(c), Some(g)) =
                (acl.get("consumer_id").and_then(Value::as_str), acl.get("group").and_then(Value::as_str))
            else {
                continue;
            };
            let at = acl.get("created_at").and_then(Value::as_i64).unwrap_or(0);
            groups.entry(c).or_default().push((at, g.to_string()));
        }
        let consumers = set
            .table("consumers")
            .filter_map(|doc| {
                let doc = doc.value();
                let id = doc.get("id").and_then(Value::as_str)?;
                let mut g = groups.remove(id).unwrap_or_default();
                g.sort();
                let consumer = Consumer::from_doc(doc, g.into_iter().map(|(_, g)| g).collect())?;
                Some((consumer.id.clone(), Arc::new(consumer)))
            })
            .collect();
        let (jwt, oauth2) = (set.parsed("jwt_secrets"), set.parsed("oauth2_credentials"));
        let tokens = set.parsed("oauth2_tokens");
        Credentials {
            consumers,
            keys: by(&set.parsed("keyauth_credentials"), "key"),
            basic: by(&set.parsed("basicauth_credentials"), "username"),
            hmac: by(&set.parsed("hmacauth_credentials"), "username"),
            jwt: by(&jwt, "key"),
            jwt_public_keys: jwt
                .iter()
                .filter_map(|d| {
                    let alg = d.get("algorithm").and_then(Value::as_str)?;
                    let pem = d.get("rsa_public_key").and_then(Value::as_str)?;
                    let key = public_key(alg, pem)?;
                    Some((d.get("id").and_then(Value::as_str)?.to_string(), key.into()))
                })
                .collect(),
            oauth2_clients: by(&oauth2, "client_id"),
            oauth2_by_id: by(&oauth2, "id"),
            oauth2_tokens: by(&tokens, "access_token"),
            oauth2_refresh: by(&tokens, "refresh_token"),
            oauth2_codes: by(&set.parsed("oauth2_authorization_codes"), "code"),
        }
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
    pub fn from_doc(doc: Value, groups: Vec<String>) -> Option<Consumer> {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).and_then(|v| HeaderValue::from_str(v).ok());
        let id = doc.get("id").and_then(Value::as_str)?;
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
