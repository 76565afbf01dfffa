//! The credential endpoints of the auth plugins (old DAO), one implementation driven by a
//! per-kind descriptor ([`Kind`]):
//!
//! * `GET/POST/PUT /consumers/{c}/<p>` and `GET/PATCH/DELETE /consumers/{c}/<p>/{id or key}`
//!   for key-auth, basic-auth, hmac-auth, jwt, acls and oauth2 (the credential must belong to
//!   the consumer in the URL, else 404);
//! * `GET /<plural>` over every consumer, with field filters (`?consumer_id=`, `?key=`, …), and
//!   `GET /<plural>/{id or key}/consumer`, the owning consumer;
//! * `/oauth2_tokens` and `/oauth2_tokens/{access_token or id}`, tokens owned by an oauth2
//!   application rather than a consumer.
//!
//! Field rules (types, defaults, random keys, the basic-auth digest, jwt's RSA key, redirect
//! URIs) are the entity schemas of `gatehouse_shared::credential`; what needs the store is
//! here: resolving owners, unique columns (409), one acl group per consumer (400), referenced
//! rows (404), and cascades.

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::credential::{self, CredentialSchema};
use gatehouse_shared::validate::is_uuid;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::body::{coerce_old_layer, Input};
use super::error::{ApiError, ApiResult};
use super::oldlayer::{already_exists, empty_body, now_ms, render, take_id};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Admin;
use super::Routes;
use crate::store::{Doc, Filter, Op, Page, StoreError, Table};

/// One kind of credential and how the Admin API exposes it.
#[derive(Debug)]
pub struct Kind {
    /// Fields, defaults and rules; also the table/entity name, owner column and natural key.
    pub schema: &'static CredentialSchema,
    pub table: Table,
    /// The segment under `/consumers/{c}/`; `None` for oauth2 tokens, which have no consumer
    /// and are managed through their collection instead.
    pub nested: Option<&'static str>,
    /// The collection over all owners: `/key-auths`, `/oauth2_tokens`.
    pub plural: &'static str,
    /// Whether `/<plural>/{x}/consumer` also finds `x` by its natural key (acls: by id only).
    pub owner_by_key: bool,
    /// Rows a credential refers to besides its owner in the URL, checked before each write.
    pub refs: &'static [Ref],
    /// A field unique per owner, with the 400 message for a duplicate (an acl group).
    pub unique_per_owner: Option<(&'static str, &'static str)>,
    /// Tables whose rows name this credential in a column, deleted with it.
    pub children: &'static [(Table, &'static str)],
}

/// A referenced row: `column` holds the id of a row of `table`.
#[derive(Debug)]
pub struct Ref {
    column: &'static str,
    table: Table,
    missing: Missing,
}

/// How a write naming a missing row is refused (both 404).
#[derive(Debug, Clone, Copy)]
enum Missing {
    /// `{"<column>":"does not exist with value '<id>'"}`, the old DAO's foreign-key error.
    Field,
    /// `{"message":"no such Service (id=<id>)"}`, oauth2's own check of `service_id`.
    Service,
}

/// A consumer's credential with no rule beyond its schema.
const fn owned(schema: &'static CredentialSchema, table: Table, nested: &'static str, plural: &'static str) -> Kind {
    Kind {
        schema,
        table,
        nested: Some(nested),
        plural,
        owner_by_key: true,
        refs: &[],
        unique_per_owner: None,
        children: &[],
    }
}

pub static KEY_AUTH: Kind = owned(&credential::KEYAUTH_CREDENTIALS, Table::KeyauthCredentials, "key-auth", "key-auths");

pub static BASIC_AUTH: Kind =
    owned(&credential::BASICAUTH_CREDENTIALS, Table::BasicauthCredentials, "basic-auth", "basic-auths");

pub static HMAC_AUTH: Kind =
    owned(&credential::HMACAUTH_CREDENTIALS, Table::HmacauthCredentials, "hmac-auth", "hmac-auths");

pub static JWT: Kind = owned(&credential::JWT_SECRETS, Table::JwtSecrets, "jwt", "jwts");

pub static ACLS: Kind = Kind {
    owner_by_key: false,
    unique_per_owner: Some(("group", "ACL group already exist for this consumer")),
    ..owned(&credential::ACLS, Table::Acls, "acls", "acls")
};

pub static OAUTH2: Kind = Kind {
    children: &[(Table::Oauth2Tokens, "credential_id"), (Table::Oauth2AuthorizationCodes, "credential_id")],
    ..owned(&credential::OAUTH2_CREDENTIALS, Table::Oauth2Credentials, "oauth2", "oauth2")
};

pub static OAUTH2_TOKENS: Kind = Kind {
    schema: &credential::OAUTH2_TOKENS,
    table: Table::Oauth2Tokens,
    nested: None,
    plural: "oauth2_tokens",
    owner_by_key: true,
    refs: &[
        Ref { column: "credential_id", table: Table::Oauth2Credentials, missing: Missing::Field },
        Ref { column: "service_id", table: Table::Services, missing: Missing::Service },
    ],
    unique_per_owner: None,
    children: &[],
};

/// The kinds a consumer owns.
pub static CONSUMER_KINDS: [&Kind; 6] = [&KEY_AUTH, &BASIC_AUTH, &HMAC_AUTH, &JWT, &ACLS, &OAUTH2];

pub fn router() -> Routes {
    let mut router = Routes::new();
    for kind in CONSUMER_KINDS {
        router = router.merge(consumer_routes(kind));
    }
    router.merge(token_routes(&OAUTH2_TOKENS))
}

fn consumer_routes(kind: &'static Kind) -> Routes {
    let segment = kind.nested.unwrap_or_default();
    let collection = get(move |State(admin): State<Admin>, Path(c): Path<String>, q: ListQuery| async move {
        let consumer = consumer_id(&admin, &c).await?;
        list(&admin, kind, &q, Some(&consumer)).await
    })
    .post(move |State(admin): State<Admin>, Path(c): Path<String>, input: Input| async move {
        let consumer = consumer_id(&admin, &c).await?;
        create(&admin, kind, Some(&consumer), input).await
    })
    .put(move |State(admin): State<Admin>, Path(c): Path<String>, input: Input| async move {
        let consumer = consumer_id(&admin, &c).await?;
        upsert(&admin, kind, Some(&consumer), input).await
    });
    let item = get(move |State(admin): State<Admin>, Path((c, x)): Path<(String, String)>| async move {
        let consumer = consumer_id(&admin, &c).await?;
        Ok::<_, ApiError>(ok(&render(find(&admin, kind, &x, Some(&consumer), true).await?)))
    })
    .patch(move |State(admin): State<Admin>, Path((c, x)): Path<(String, String)>, input: Input| async move {
        let consumer = consumer_id(&admin, &c).await?;
        let stored = find(&admin, kind, &x, Some(&consumer), true).await?;
        update(&admin, kind, stored, Some(&consumer), input).await
    })
    .delete(move |State(admin): State<Admin>, Path((c, x)): Path<(String, String)>| async move {
        let consumer = consumer_id(&admin, &c).await?;
        remove(&admin, kind, find(&admin, kind, &x, Some(&consumer), true).await?).await
    });
    let all = get(move |State(admin): State<Admin>, q: ListQuery| async move { list(&admin, kind, &q, None).await });
    let owner = get(move |State(admin): State<Admin>, Path(x): Path<String>| async move {
        let stored = find(&admin, kind, &x, None, kind.owner_by_key).await?;
        let id = stored.get("consumer_id").and_then(Value::as_str).unwrap_or_default();
        let consumer = admin.store.get(Table::Consumers, id).await?.ok_or(ApiError::NotFound)?;
        Ok::<_, ApiError>(ok(&super::consumers::render(consumer)))
    });
    Routes::new()
        .route(&format!("/consumers/{{consumer}}/{segment}"), collection)
        .route(&format!("/consumers/{{consumer}}/{segment}/{{credential}}"), item)
        .route(&format!("/{}", kind.plural), all)
        .route(&format!("/{}/{{credential}}/consumer", kind.plural), owner)
}

/// A collection with full CRUD of its own (`/oauth2_tokens`).
fn token_routes(kind: &'static Kind) -> Routes {
    let collection =
        get(move |State(admin): State<Admin>, q: ListQuery| async move { list(&admin, kind, &q, None).await })
            .post(
                move |State(admin): State<Admin>, input: Input| async move { create(&admin, kind, None, input).await },
            )
            .put(
                move |State(admin): State<Admin>, input: Input| async move { upsert(&admin, kind, None, input).await },
            );
    let item = get(move |State(admin): State<Admin>, Path(x): Path<String>| async move {
        Ok::<_, ApiError>(ok(&render(find(&admin, kind, &x, None, true).await?)))
    })
    .patch(move |State(admin): State<Admin>, Path(x): Path<String>, input: Input| async move {
        let stored = find(&admin, kind, &x, None, true).await?;
        update(&admin, kind, stored, None, input).await
    })
    .delete(move |State(admin): State<Admin>, Path(x): Path<String>| async move {
        remove(&admin, kind, find(&admin, kind, &x, None, true).await?).await
    });
    Routes::new()
        .route(&format!("/{}", kind.plural), collection)
        .route(&format!("/{}/{{credential}}", kind.plural), item)
}

/// The ops that delete every credential of a consumer (and its oauth2 applications' tokens
/// and codes); run them in the same commit as the consumer's own deletion, before it.
pub fn consumer_cascade(consumer_id: &str) -> Vec<Op> {
    let mut ops: Vec<Op> = OAUTH2
        .children
        .iter()
        .map(|(table, column)| Op::DeleteWhereParent {
            table: *table,
            column,
            parent: OAUTH2.table,
            parent_column: "consumer_id",
            value: consumer_id.to_string(),
        })
        .collect();
    ops.extend(CONSUMER_KINDS.iter().map(|k| Op::DeleteWhere(k.table, "consumer_id", consumer_id.to_string())));
    ops
}

/// The ops that delete the oauth2 tokens and codes bound to a service, for its deletion.
pub fn service_cascade(service_id: &str) -> Vec<Op> {
    [Table::Oauth2Tokens, Table::Oauth2AuthorizationCodes]
        .into_iter()
        .map(|table| Op::DeleteWhere(table, "service_id", service_id.to_string()))
        .collect()
}

/// The consumer in a nested URL (by id when the segment is a UUID, falling back to the
/// username), as its id; 404 when there is none.
async fn consumer_id(admin: &Admin, segment: &str) -> ApiResult<String> {
    let mut doc = None;
    if is_uuid(segment) {
        doc = admin.store.get(Table::Consumers, segment).await?;
    }
    if doc.is_none() {
        doc = admin.store.find(Table::Consumers, "username", segment).await?;
    }
    doc.map(|d| id_of(&d)).ok_or(ApiError::NotFound)
}

fn id_of(doc: &Doc) -> String {
    str_of(doc, "id").to_string()
}

fn str_of<'a>(doc: &'a Doc, field: &str) -> &'a str {
    doc.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// A credential by id (a UUID segment) or else by natural key, within `owner`'s credentials
/// when given; 404 when there is none.
async fn find(admin: &Admin, kind: &Kind, segment: &str, owner: Option<&str>, by_key: bool) -> ApiResult<Doc> {
    let scope: Vec<Filter> =
        owner.map(|id| Filter { field: kind.schema.parent(), value: id.to_string() }).into_iter().collect();
    let first = |field: &'static str, value: String| {
        let mut filters = scope.clone();
        filters.push(Filter { field, value });
        async move { admin.store.list(kind.table, &filters, &Page { after: None, size: 1 }).await }
    };
    if is_uuid(segment) {
        if let Some(doc) = first("id", segment.to_ascii_lowercase()).await?.into_iter().next() {
            return Ok(doc);
        }
    }
    match kind.schema.key().filter(|_| by_key) {
        Some(key) => first(key, segment.to_string()).await?.into_iter().next().ok_or(ApiError::NotFound),
        None => Err(ApiError::NotFound),
    }
}

/// A page of credentials: query parameters filter on the entity's fields; `owner` pins the
/// owner column (nested lists).
async fn list(admin: &Admin, kind: &Kind, q: &ListQuery, owner: Option<&str>) -> ApiResult {
    let allowed: Vec<&'static str> = std::iter::once("id").chain(kind.schema.field_names()).collect();
    let mut filters = q.filters_typed(&allowed, CredentialSchema::is_id_field)?;
    if let Some(id) = owner {
        filters.push(Filter { field: kind.schema.parent(), value: id.to_string() });
    }
    let rows = admin.store.list(kind.table, &filters, &q.page()?).await?;
    let total = admin.store.count(kind.table, &filters).await?;
    Ok(ok(&q.envelope(rows, render, Some(total))))
}

/// The request's fields: form values coerced, `created_at` dropped (the store sets it) and
/// the client's `id` taken out (honoured when it is a UUID). A nested URL's owner wins over
/// any owner in the body.
fn prepare(kind: &Kind, mut input: Input, owner: Option<&str>) -> ApiResult<(Option<String>, Map<String, Value>)> {
    coerce_old_layer(&mut input);
    input.map.remove("created_at");
    let id = take_id(&mut input.map)?;
    if let Some(owner) = owner {
        input.map.insert(kind.schema.parent().to_string(), json!(owner));
    }
    Ok((id, input.map))
}

fn assemble(id: String, created_at: i64, fields: Map<String, Value>) -> Doc {
    let mut doc = Doc::new();
    doc.insert("id".into(), json!(id));
    doc.insert("created_at".into(), json!(created_at));
    doc.extend(fields);
    doc
}

async fn create(admin: &Admin, kind: &Kind, owner: Option<&str>, input: Input) -> ApiResult {
    let (id, fields) = prepare(kind, input, owner)?;
    let doc = insert(admin, kind, id, fields).await?;
    Ok(created(&render(doc)))
}

async fn insert(admin: &Admin, kind: &Kind, id: Option<String>, fields: Map<String, Value>) -> ApiResult<Doc> {
    let valid = kind.schema.validate(None, fields)?;
    let doc = assemble(id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()), now_ms(), valid);
    write(admin, kind, vec![Op::Insert(kind.table, doc.clone())], &doc).await?;
    Ok(doc)
}

/// PUT on a collection: with an `id`, a full replacement of that credential (404 when it
/// does not exist or belongs to someone else), else a create.
async fn upsert(admin: &Admin, kind: &Kind, owner: Option<&str>, input: Input) -> ApiResult {
    let (id, fields) = prepare(kind, input, owner)?;
    let Some(id) = id else {
        let doc = insert(admin, kind, None, fields).await?;
        return Ok(put(true, &render(doc)));
    };
    let stored = admin.store.get(kind.table, &id).await?.ok_or(ApiError::NotFound)?;
    if owner.is_some_and(|o| str_of(&stored, kind.schema.parent()) != o) {
        return Err(ApiError::NotFound);
    }
    let valid = kind.schema.validate(Some(&stored), fields)?;
    let doc = assemble(id, created_of(&stored), valid);
    write(admin, kind, vec![Op::Update(kind.table, doc.clone())], &doc).await?;
    Ok(put(false, &render(doc)))
}

fn created_of(doc: &Doc) -> i64 {
    doc.get("created_at").and_then(Value::as_i64).unwrap_or_else(now_ms)
}

/// PATCH: the given fields replace the stored ones (null removes one), the result is
/// validated whole.
async fn update(admin: &Admin, kind: &Kind, stored: Doc, owner: Option<&str>, mut input: Input) -> ApiResult {
    coerce_old_layer(&mut input);
    input.map.remove("created_at");
    input.map.remove("id");
    if input.is_empty() {
        return Err(empty_body());
    }
    if let Some(owner) = owner {
        input.map.insert(kind.schema.parent().to_string(), json!(owner));
    }
    let valid = kind.schema.validate_patch(&stored, input.map)?;
    let doc = assemble(id_of(&stored), created_of(&stored), valid);
    write(admin, kind, vec![Op::Update(kind.table, doc.clone())], &doc).await?;
    Ok(ok(&render(doc)))
}

/// Deletes the credential and the rows that name it (an oauth2 application's tokens and
/// codes) in one commit.
async fn remove(admin: &Admin, kind: &Kind, stored: Doc) -> ApiResult {
    let id = id_of(&stored);
    let mut ops: Vec<Op> =
        kind.children.iter().map(|(table, column)| Op::DeleteWhere(*table, column, id.clone())).collect();
    ops.push(Op::Delete(kind.table, id));
    admin.store.commit(ops).await?;
    Ok(no_content())
}

/// Checks what needs the store, then commits; constraint errors become Kong's bodies.
async fn write(admin: &Admin, kind: &Kind, ops: Vec<Op>, doc: &Doc) -> ApiResult<()> {
    check_refs(admin, kind, doc).await?;
    check_unique_per_owner(admin, kind, doc).await?;
    match admin.store.commit(ops).await {
        Ok(_) => Ok(()),
        Err(StoreError::Unique { column, .. }) => Err(conflict(kind, &column, doc)),
        // The owner or a referenced row went away since it was checked.
        Err(StoreError::ForeignKey) => {
            let parent = kind.schema.parent();
            Err(does_not_exist(parent, str_of(doc, parent)))
        }
        Err(e) => Err(e.into()),
    }
}

fn does_not_exist(column: &str, id: &str) -> ApiError {
    ApiError::field(StatusCode::NOT_FOUND, column, format!("does not exist with value '{id}'"))
}

async fn check_refs(admin: &Admin, kind: &Kind, doc: &Doc) -> ApiResult<()> {
    for r in kind.refs {
        let Some(id) = doc.get(r.column).and_then(Value::as_str) else { continue };
        if admin.store.get(r.table, id).await?.is_none() {
            return Err(match r.missing {
                Missing::Field => does_not_exist(r.column, id),
                Missing::Service => ApiError::message(StatusCode::NOT_FOUND, format!("no such Service (id={id})")),
            });
        }
    }
    Ok(())
}

/// An acl group may appear once per consumer (the row being updated aside).
async fn check_unique_per_owner(admin: &Admin, kind: &Kind, doc: &Doc) -> ApiResult<()> {
    let Some((field, message)) = kind.unique_per_owner else { return Ok(()) };
    let parent = kind.schema.parent();
    let filters = [
        Filter { field: parent, value: str_of(doc, parent).to_string() },
        Filter { field, value: str_of(doc, field).to_string() },
    ];
    let rows = admin.store.list(kind.table, &filters, &Page { after: None, size: 2 }).await?;
    if rows.iter().any(|r| str_of(r, "id") != str_of(doc, "id")) {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, field, message));
    }
    Ok(())
}

/// A unique index refused the write: 409 on the column, or the acl group message when the
/// per-consumer index fired (a concurrent duplicate that passed the check above).
fn conflict(kind: &Kind, column: &str, doc: &Doc) -> ApiError {
    if column == "id" {
        return already_exists("id", str_of(doc, "id"));
    }
    if let Some((field, message)) = kind.unique_per_owner {
        if !kind.schema.unique_fields().any(|f| f == column) {
            return ApiError::field(StatusCode::BAD_REQUEST, field, message);
        }
    }
    let value = match doc.get(column) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    already_exists(column, &value)
}
