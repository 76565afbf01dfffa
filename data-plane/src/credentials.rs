//! Consumers and their credentials, indexed by what requests present (a key, a username, a
//! token), built when the configuration compiles so a lookup is one hash probe. Each row is
//! decoded once, from its document's text, into the typed struct of its table: what the auth
//! plugins read is a field, not a lookup in a JSON tree, and a row costs its fields alone.

use std::sync::Arc;

use gatehouse_shared::snapshot::{ConfigSet, Doc};
use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::row;

/// The maps requests probe: persistent, so that a credential change makes a new set of
/// indexes sharing all but the changed entries with the current one (a token issued is not a
/// rebuild of every index); foldhash rather than SipHash (the keys are the request's own, but
/// the seed is random per process, and a probe is on every authenticated request's path).
pub type Index<K, V> = imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// A consumer's ACL groups: `(created_at, group, acl id)`, oldest first.
type Groups = Vec<(i64, String, String)>;

/// `redirect_uri`: a list, or one address (as rows written before the list form keep it).
fn uris<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Box<str>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Uris {
        One(Box<str>),
        Many(Vec<serde_json::Value>),
    }
    Ok(match Option::<Uris>::deserialize(d).unwrap_or(None) {
        None => Vec::new(),
        Some(Uris::One(u)) => vec![u],
        Some(Uris::Many(list)) => list
            .into_iter()
            .filter_map(|v| if let serde_json::Value::String(s) = v { Some(s.into()) } else { None })
            .collect(),
    })
}

/// What every credential row has: its id and its consumer's, as the log record and the
/// rate-limiting plugins name the credential a request was authenticated with.
pub trait Row: DeserializeOwned + PartialEq {
    /// The table its rows come from.
    const TABLE: &'static str;
    fn id(&self) -> &Arc<str>;
    fn consumer_id(&self) -> Option<&Arc<str>>;
}

macro_rules! row {
    ($ty:ident, $table:literal) => {
        impl Row for $ty {
            const TABLE: &'static str = $table;
            fn id(&self) -> &Arc<str> {
                &self.id
            }
            fn consumer_id(&self) -> Option<&Arc<str>> {
                self.consumer_id.as_ref()
            }
        }
    };
}

/// A key-auth credential.
#[derive(Debug, PartialEq, Deserialize)]
pub struct KeyAuth {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub key: Box<str>,
}
row!(KeyAuth, "keyauth_credentials");

/// A basic-auth credential: `password` is the stored digest.
#[derive(Debug, PartialEq, Deserialize)]
pub struct BasicAuth {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub username: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub password: Box<str>,
}
row!(BasicAuth, "basicauth_credentials");

/// An hmac-auth credential.
#[derive(Debug, PartialEq, Deserialize)]
pub struct HmacAuth {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub username: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub secret: Box<str>,
}
row!(HmacAuth, "hmacauth_credentials");

/// A jwt secret. `algorithm` is `None` when stored as `null` (read as HS256).
#[derive(Debug, PartialEq, Deserialize)]
pub struct JwtSecret {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub key: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub secret: Box<str>,
    #[serde(default, deserialize_with = "row::string")]
    pub algorithm: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub rsa_public_key: Box<str>,
}
row!(JwtSecret, "jwt_secrets");

/// An oauth2 application.
#[derive(Debug, PartialEq, Deserialize)]
pub struct OAuth2App {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub client_id: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub client_secret: Box<str>,
    #[serde(default, deserialize_with = "uris")]
    pub redirect_uri: Vec<Box<str>>,
}
row!(OAuth2App, "oauth2_credentials");

/// An oauth2 access token (and its refresh token). `expires_in` is `None` when it cannot be
/// read: such a token is expired, never everlasting. `created_at` is in milliseconds.
#[derive(Debug, PartialEq, Deserialize)]
pub struct OAuth2Token {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub credential_id: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub service_id: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub access_token: Box<str>,
    #[serde(default, deserialize_with = "row::string")]
    pub refresh_token: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::number")]
    pub expires_in: Option<f64>,
    #[serde(default, deserialize_with = "row::whole")]
    pub created_at: i64,
    #[serde(default, deserialize_with = "row::string")]
    pub scope: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::string")]
    pub authenticated_userid: Option<Box<str>>,
}
row!(OAuth2Token, "oauth2_tokens");

/// An oauth2 authorization code. `created_at` is in milliseconds.
#[derive(Debug, PartialEq, Deserialize)]
pub struct OAuth2Code {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::shared")]
    pub consumer_id: Option<Arc<str>>,
    #[serde(default, deserialize_with = "row::text")]
    pub credential_id: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub service_id: Box<str>,
    #[serde(default, deserialize_with = "row::text")]
    pub code: Box<str>,
    #[serde(default, deserialize_with = "row::whole")]
    pub created_at: i64,
    #[serde(default, deserialize_with = "row::string")]
    pub scope: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::string")]
    pub authenticated_userid: Option<Box<str>>,
}
row!(OAuth2Code, "oauth2_authorization_codes");

/// An ACL row, read only to build the groups of its consumer.
#[derive(Deserialize)]
struct Acl {
    id: Box<str>,
    consumer_id: Box<str>,
    group: Box<str>,
    #[serde(default, deserialize_with = "row::whole")]
    created_at: i64,
}

/// A row of `table` decoded; a row that does not decode (which the control plane's checks
/// keep from being stored) is left out of the indexes, and said so.
fn decode<T: DeserializeOwned>(table: &str, doc: &Doc) -> Option<T> {
    match doc.decode() {
        Ok(row) => Some(row),
        Err(e) => {
            tracing::warn!(table, error = %e, "a row that cannot be read is left out");
            None
        }
    }
}

/// One index of a table: its rows by one field (an empty or absent field indexes nothing).
struct Indexed<T> {
    key: fn(&T) -> Option<&str>,
    index: fn(&mut Credentials) -> &mut Index<Box<str>, Arc<T>>,
}

impl<T: Row> Indexed<T> {
    fn fill(&self, creds: &mut Credentials, rows: &[Arc<T>]) {
        *(self.index)(creds) = rows.iter().filter_map(|row| Some((Box::from((self.key)(row)?), row.clone()))).collect();
    }

    /// Every old entry goes before any new one comes: a revision may move a key from one row
    /// to another. An entry is removed only if it is still this row's.
    fn update(&self, creds: &mut Credentials, old: &[T], new: &[Arc<T>]) {
        let map = (self.index)(creds);
        for before in old {
            let Some(key) = (self.key)(before) else { continue };
            if map.get(key).is_some_and(|row| **row == *before) {
                map.remove(key);
            }
        }
        for row in new {
            if let Some(key) = (self.key)(row) {
                map.insert(Box::from(key), row.clone());
            }
        }
    }
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Each table's indexes.
struct Tables {
    keys: Indexed<KeyAuth>,
    basic: Indexed<BasicAuth>,
    hmac: Indexed<HmacAuth>,
    jwt: Indexed<JwtSecret>,
    clients: [Indexed<OAuth2App>; 2],
    tokens: [Indexed<OAuth2Token>; 2],
    codes: Indexed<OAuth2Code>,
}

const TABLES: Tables = Tables {
    keys: Indexed { key: |r| nonempty(&r.key), index: |c| &mut c.keys },
    basic: Indexed { key: |r| nonempty(&r.username), index: |c| &mut c.basic },
    hmac: Indexed { key: |r| nonempty(&r.username), index: |c| &mut c.hmac },
    jwt: Indexed { key: |r| nonempty(&r.key), index: |c| &mut c.jwt },
    clients: [
        Indexed { key: |r| nonempty(&r.client_id), index: |c| &mut c.oauth2_clients },
        Indexed { key: |r| Some(&r.id), index: |c| &mut c.oauth2_by_id },
    ],
    tokens: [
        Indexed { key: |r| nonempty(&r.access_token), index: |c| &mut c.oauth2_tokens },
        Indexed { key: |r| r.refresh_token.as_deref().and_then(nonempty), index: |c| &mut c.oauth2_refresh },
    ],
    codes: Indexed { key: |r| nonempty(&r.code), index: |c| &mut c.oauth2_codes },
};

#[derive(Debug, Default, Clone)]
pub struct Credentials {
    pub consumers: Index<Arc<str>, Arc<Consumer>>,
    /// key-auth credentials by `key`.
    pub keys: Index<Box<str>, Arc<KeyAuth>>,
    /// basic-auth credentials by `username`.
    pub basic: Index<Box<str>, Arc<BasicAuth>>,
    /// hmac-auth credentials by `username`.
    pub hmac: Index<Box<str>, Arc<HmacAuth>>,
    /// jwt secrets by `key`.
    pub jwt: Index<Box<str>, Arc<JwtSecret>>,
    /// The parsed verification keys of RS256/RS512/ES256 jwt secrets, by credential id: the
    /// PEM is decoded once here, not on every request.
    pub jwt_public_keys: Index<Arc<str>, Arc<[u8]>>,
    /// oauth2 applications by `client_id`.
    pub oauth2_clients: Index<Box<str>, Arc<OAuth2App>>,
    /// oauth2 applications by `id`.
    pub oauth2_by_id: Index<Box<str>, Arc<OAuth2App>>,
    /// oauth2 tokens by `access_token` and by `refresh_token`.
    pub oauth2_tokens: Index<Box<str>, Arc<OAuth2Token>>,
    pub oauth2_refresh: Index<Box<str>, Arc<OAuth2Token>>,
    /// oauth2 authorization codes by `code`.
    pub oauth2_codes: Index<Box<str>, Arc<OAuth2Code>>,
    /// Each consumer's ACL groups, by consumer id (also for ids no consumer has yet).
    groups: Index<Box<str>, Groups>,
}

/// A jwt secret's parsed verification key, for the algorithms that have one.
fn jwt_key(secret: &JwtSecret) -> Option<Arc<[u8]>> {
    public_key(secret.algorithm.as_deref()?, &secret.rsa_public_key).map(Arc::from)
}

/// Every row of a table, decoded.
fn rows<T: Row>(set: &ConfigSet) -> Vec<Arc<T>> {
    set.table(T::TABLE).filter_map(|doc| decode(T::TABLE, doc)).map(Arc::new).collect()
}

/// The rows of `table` a delta touched, as they were (`old`) and as they are (`new`).
fn touched_in<'t, T: DeserializeOwned>(
    table: &str,
    old: &ConfigSet,
    new: &ConfigSet,
    touched: &impl Fn(&str) -> Vec<&'t str>,
) -> (Vec<T>, Vec<T>) {
    let ids = touched(table);
    let of = |set: &ConfigSet, id: &str| set.get(table, id).and_then(|doc| decode::<T>(table, doc));
    (ids.iter().filter_map(|id| of(old, id)).collect(), ids.iter().filter_map(|id| of(new, id)).collect())
}

/// The rows of a credential table a delta touched, as they were and as they are.
fn touched_rows<'t, T: Row>(
    old: &ConfigSet,
    new: &ConfigSet,
    touched: &impl Fn(&str) -> Vec<&'t str>,
) -> (Vec<T>, Vec<Arc<T>>) {
    let (before, after) = touched_in(T::TABLE, old, new, touched);
    (before, after.into_iter().map(Arc::new).collect())
}

impl Credentials {
    pub fn compile(set: &ConfigSet) -> Credentials {
        let mut groups: Index<Box<str>, Groups> = Index::default();
        for acl in set.table("acls").filter_map(|doc| decode::<Acl>("acls", doc)) {
            groups.entry(acl.consumer_id).or_default().push((acl.created_at, acl.group.into(), acl.id.into()));
        }
        for (_, g) in groups.iter_mut() {
            g.sort();
        }
        let consumers = set
            .table("consumers")
            .filter_map(|doc| {
                let consumer = Consumer::new(decode("consumers", doc)?, &groups)?;
                Some((consumer.id.clone(), Arc::new(consumer)))
            })
            .collect();
        let mut c = Credentials { consumers, groups, ..Credentials::default() };
        let t = &TABLES;
        t.keys.fill(&mut c, &rows(set));
        t.basic.fill(&mut c, &rows(set));
        t.hmac.fill(&mut c, &rows(set));
        let jwt = rows(set);
        t.jwt.fill(&mut c, &jwt);
        c.jwt_public_keys = jwt.iter().filter_map(|s| Some((s.id.clone(), jwt_key(s)?))).collect();
        let clients = rows(set);
        t.clients.iter().for_each(|i| i.fill(&mut c, &clients));
        let tokens = rows(set);
        t.tokens.iter().for_each(|i| i.fill(&mut c, &tokens));
        t.codes.fill(&mut c, &rows(set));
        c
    }

    /// The indexes of `new`, made from these (those of `old`) and the rows of each table a
    /// delta `touched` (`touched(table)`: its ids): what is untouched is shared, so a change
    /// costs what it touches, not what the configuration holds. Each indexed field is unique
    /// in its table (the control plane refuses a second row with it), which is what makes the
    /// result that of a full compile: one row per key, in whatever order rows changed.
    pub fn update<'t>(&self, old: &ConfigSet, new: &ConfigSet, touched: impl Fn(&str) -> Vec<&'t str>) -> Credentials {
        let mut c = self.clone();
        let t = &TABLES;
        let (before, after) = touched_rows(old, new, &touched);
        t.keys.update(&mut c, &before, &after);
        let (before, after) = touched_rows(old, new, &touched);
        t.basic.update(&mut c, &before, &after);
        let (before, after) = touched_rows(old, new, &touched);
        t.hmac.update(&mut c, &before, &after);
        let (before, after) = touched_rows::<JwtSecret>(old, new, &touched);
        t.jwt.update(&mut c, &before, &after);
        for id in touched(JwtSecret::TABLE) {
            c.jwt_public_keys.remove(id);
        }
        for secret in &after {
            if let Some(key) = jwt_key(secret) {
                c.jwt_public_keys.insert(secret.id.clone(), key);
            }
        }
        let (before, after) = touched_rows(old, new, &touched);
        t.clients.iter().for_each(|i| i.update(&mut c, &before, &after));
        let (before, after) = touched_rows(old, new, &touched);
        t.tokens.iter().for_each(|i| i.update(&mut c, &before, &after));
        let (before, after) = touched_rows(old, new, &touched);
        t.codes.update(&mut c, &before, &after);

        // Consumers changed, and those whose groups changed.
        let mut consumers: Vec<Box<str>> = touched("consumers").into_iter().map(Box::from).collect();
        let (before, after) = touched_in::<Acl>("acls", old, new, &touched);
        for acl in before {
            if let Some(g) = c.groups.get_mut(&acl.consumer_id) {
                g.retain(|(_, _, id)| **id != *acl.id);
                if g.is_empty() {
                    c.groups.remove(&acl.consumer_id);
                }
            }
            consumers.push(acl.consumer_id);
        }
        for acl in after {
            let g = c.groups.entry(acl.consumer_id.clone()).or_default();
            g.push((acl.created_at, acl.group.into(), acl.id.into()));
            g.sort();
            consumers.push(acl.consumer_id);
        }
        for id in consumers {
            let row = new.get("consumers", &id).and_then(|doc| decode("consumers", doc));
            match row.and_then(|row| Consumer::new(row, &c.groups)) {
                Some(consumer) => c.consumers.insert(consumer.id.clone(), Arc::new(consumer)),
                None => c.consumers.remove(&*id),
            };
        }
        c
    }

    /// The consumer owning a credential row.
    pub fn owner(&self, credential: &impl Row) -> Option<&Arc<Consumer>> {
        self.consumers.get(credential.consumer_id()?)
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
    /// The stored row, as log records show it.
    pub row: ConsumerRow,
}

/// A consumer's row: what log records show of the consumer a request was authenticated as
/// (its fields that are set; `created_at` as stored).
#[derive(Debug, Deserialize, Serialize)]
pub struct ConsumerRow {
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "row::signed", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, deserialize_with = "row::string", skip_serializing_if = "Option::is_none")]
    pub username: Option<Box<str>>,
    #[serde(default, deserialize_with = "row::string", skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<Box<str>>,
}

impl Consumer {
    /// The consumer of `row`, with its groups as `groups` holds them.
    fn new(row: ConsumerRow, groups: &Index<Box<str>, Groups>) -> Option<Consumer> {
        let header = |v: &Option<Box<str>>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        let groups: Vec<String> = groups.get(&*row.id).into_iter().flatten().map(|(_, g, _)| g.clone()).collect();
        Some(Consumer {
            id: row.id.clone(),
            id_header: HeaderValue::from_str(&row.id).ok()?,
            username: header(&row.username),
            custom_id: header(&row.custom_id),
            groups_header: (!groups.is_empty()).then(|| HeaderValue::from_str(&groups.join(", ")).ok()).flatten(),
            groups,
            row,
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

#[cfg(test)]
mod tests {
    use gatehouse_shared::proto::Change;
    use serde_json::json;

    use super::*;

    fn changes(rows: &[(&str, serde_json::Value)]) -> Vec<Change> {
        rows.iter()
            .map(|(table, doc)| Change {
                entity: (*table).into(),
                id: doc["id"].as_str().unwrap_or_default().into(),
                document: doc.to_string(),
                deleted: false,
            })
            .collect()
    }

    fn set(rows: &[(&str, serde_json::Value)]) -> ConfigSet {
        let mut set = ConfigSet::new("e", 1);
        set.apply(&changes(rows)).unwrap();
        set
    }

    /// Rows are read field by field: a `null` or mistyped field is absent, and a row whose
    /// indexed field is empty is not found by an empty key.
    #[test]
    fn rows_decode_into_their_fields_and_odd_fields_read_as_absent() {
        let c = Credentials::compile(&set(&[
            ("consumers", json!({"id": "c1", "username": "alice", "custom_id": null, "created_at": 1})),
            ("keyauth_credentials", json!({"id": "k1", "consumer_id": "c1", "key": "secret"})),
            ("keyauth_credentials", json!({"id": "k2", "consumer_id": "c1", "key": 5})),
            ("jwt_secrets", json!({"id": "j1", "consumer_id": "c1", "key": "iss", "secret": "s", "algorithm": null})),
            (
                "oauth2_credentials",
                json!({"id": "o1", "consumer_id": "c1", "client_id": "cid", "client_secret": "cs",
                       "redirect_uri": "https://a.test/cb"}),
            ),
            (
                "oauth2_tokens",
                json!({"id": "t1", "credential_id": "o1", "access_token": "at", "refresh_token": null,
                       "expires_in": 7200, "created_at": 1_500_000_000_000_i64, "scope": "email"}),
            ),
        ]));
        assert_eq!(&*c.keys["secret"].id, "k1");
        assert!(!c.keys.contains_key(""), "a key of the wrong type indexes nothing");
        assert_eq!(c.owner(&*c.keys["secret"]).map(|c| &*c.id), Some("c1"));
        assert_eq!(c.jwt["iss"].algorithm, None);
        assert_eq!(&*c.jwt["iss"].secret, "s");
        assert_eq!(c.oauth2_clients["cid"].redirect_uri, vec![Box::from("https://a.test/cb")]);
        let token = &c.oauth2_tokens["at"];
        assert_eq!(
            (token.created_at, token.expires_in, token.scope.as_deref()),
            (1_500_000_000_000, Some(7200.0), Some("email"))
        );
        assert!(c.oauth2_refresh.is_empty());
        // A time that is not a whole number reads as 0: the token is as old as can be, never
        // everlasting.
        let odd = Credentials::compile(&set(&[(
            "oauth2_tokens",
            json!({"id": "t2", "credential_id": "o1", "access_token": "x", "created_at": 1e19, "expires_in": 10}),
        )]));
        assert_eq!(odd.oauth2_tokens["x"].created_at, 0);
        let consumer = &c.consumers["c1"];
        assert_eq!(consumer.username.as_ref().map(HeaderValue::as_bytes), Some(&b"alice"[..]));
        assert_eq!(
            serde_json::to_value(&consumer.row).unwrap(),
            json!({"id": "c1", "created_at": 1, "username": "alice"}),
            "the log record's consumer leaves out what is not set"
        );
    }

    /// A credential moved to another consumer: the index finds the new owner, and the ACL
    /// groups follow an ACL row that changes hands.
    #[test]
    fn an_update_reads_the_changed_rows_again() {
        let old = set(&[
            ("consumers", json!({"id": "c1"})),
            ("consumers", json!({"id": "c2"})),
            ("keyauth_credentials", json!({"id": "k1", "consumer_id": "c1", "key": "secret"})),
            ("acls", json!({"id": "a1", "consumer_id": "c1", "group": "admin", "created_at": 1})),
        ]);
        let before = Credentials::compile(&old);
        assert_eq!(before.consumers["c1"].groups, ["admin"]);
        let mut new = old.clone();
        let moved = [
            ("keyauth_credentials", json!({"id": "k1", "consumer_id": "c2", "key": "secret"})),
            ("acls", json!({"id": "a1", "consumer_id": "c2", "group": "admin", "created_at": 1})),
        ];
        new.apply(&changes(&moved)).unwrap();
        let after = before.update(&old, &new, |table| match table {
            "keyauth_credentials" => vec!["k1"],
            "acls" => vec!["a1"],
            _ => Vec::new(),
        });
        assert_eq!(after.owner(&*after.keys["secret"]).map(|c| &*c.id), Some("c2"));
        assert!(after.consumers["c1"].groups.is_empty());
        assert_eq!(after.consumers["c2"].groups, ["admin"]);
        assert_eq!(format!("{:?}", after.keys), format!("{:?}", Credentials::compile(&new).keys));
    }
}
