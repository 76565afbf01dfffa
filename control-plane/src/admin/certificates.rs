//! `/certificates`, `/certificates/{sni or id}` and `/certificates/{c}/snis`, including the
//! `snis` pseudo-attribute that keeps a certificate's SNI rows equal to a list of names.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::entity::{check_key_pair, CERTIFICATE};
use gatehouse_shared::validate::is_uuid;
use gatehouse_shared::Violation;
use serde_json::{json, Map, Value};

use super::body::Input;
use super::crud::{self, Kind};
use super::error::{ApiError, ApiResult};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Routes;
use super::{snis, Admin};
use crate::store::{Doc, Filter, Op, Page, Table};

pub static KIND: Kind = Kind { schema: &CERTIFICATE, table: Table::Certificates, key: None };

pub fn router() -> Routes {
    Routes::new()
        .route("/certificates", get(list).post(create))
        .route("/certificates/{cert}", get(show).put(upsert).patch(update).delete(remove))
        .route("/certificates/{cert}/snis", get(list_snis).post(create_sni))
}

/// Finds a certificate by id, or by one of its SNI names.
async fn resolve(admin: &Admin, segment: &str) -> ApiResult<Option<Doc>> {
    if is_uuid(segment) {
        return Ok(admin.store.get(Table::Certificates, segment).await?);
    }
    let Some(sni) = admin.store.find(Table::Snis, "name", segment).await? else { return Ok(None) };
    let cert_id = sni.get("certificate").and_then(|c| c.get("id")).and_then(Value::as_str).unwrap_or_default();
    Ok(admin.store.get(Table::Certificates, cert_id).await?)
}

async fn fetch(admin: &Admin, segment: &str) -> ApiResult<Doc> {
    match resolve(admin, segment).await? {
        Some(doc) => Ok(doc),
        None if is_uuid(segment) => Err(ApiError::entity_not_found("id", segment)),
        None => Err(ApiError::message(http::StatusCode::NOT_FOUND, "SNI not found")),
    }
}

async fn sni_rows(admin: &Admin, cert_id: &str) -> ApiResult<Vec<Doc>> {
    let filter = [Filter { field: "certificate_id", value: cert_id.to_string() }];
    Ok(admin.store.list(Table::Snis, &filter, &Page { after: None, size: 100_000 }).await?)
}

/// The certificate as the API shows it: with `snis`, sorted names.
async fn render(admin: &Admin, mut doc: Doc) -> ApiResult<Value> {
    let mut names: Vec<String> = sni_rows(admin, &crud::id_of(&doc))
        .await?
        .iter()
        .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    names.sort();
    doc.insert("snis".into(), json!(names));
    Ok(Value::Object(doc))
}

/// Takes `snis` out of the fields: `Some(list)` when given as an array (or null = none),
/// `None` when absent or not an array (ignored, as Kong does).
fn take_snis(fields: &mut Map<String, Value>) -> ApiResult<Option<Vec<String>>> {
    match fields.remove("snis") {
        Some(Value::Array(items)) => {
            let mut seen = BTreeSet::new();
            let mut names = Vec::new();
            for item in items {
                let Value::String(name) = item else {
                    return Err(ApiError::schema(Violation::field("snis", "expected a string")));
                };
                if !seen.insert(name.clone()) {
                    return Err(ApiError::schema(Violation::field("snis", format!("{name} is duplicated"))));
                }
                names.push(name);
            }
            Ok(Some(names))
        }
        Some(Value::Null) => Ok(Some(Vec::new())),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(vec![s])),
        _ => Ok(None),
    }
}

fn check_pair(doc: &Doc) -> ApiResult<()> {
    let cert = doc.get("cert").and_then(Value::as_str).unwrap_or_default();
    let key = doc.get("key").and_then(Value::as_str).unwrap_or_default();
    check_key_pair(cert, key).map_err(ApiError::schema)
}

/// Ops that make `cert_id`'s SNIs equal to `names`; names owned by another certificate are a 400.
async fn sync_snis(admin: &Admin, cert_id: &str, names: &[String]) -> ApiResult<Vec<Op>> {
    let current = sni_rows(admin, cert_id).await?;
    let mut ops = Vec::new();
    for name in names {
        if current.iter().any(|s| s.get("name").and_then(Value::as_str) == Some(name)) {
            continue;
        }
        if let Some(other) = admin.store.find(Table::Snis, "name", name).await? {
            let owner = other.get("certificate").and_then(|c| c.get("id")).and_then(Value::as_str).unwrap_or_default();
            return Err(ApiError::schema(Violation::field(
                "snis",
                format!("{name} already associated with existing certificate '{owner}'"),
            )));
        }
        let sni = snis::new_doc(name, cert_id);
        ops.push(Op::Insert(Table::Snis, sni));
    }
    for sni in current {
        let name = sni.get("name").and_then(Value::as_str).unwrap_or_default();
        if !names.iter().any(|n| n == name) {
            ops.push(Op::Delete(Table::Snis, crud::id_of(&sni)));
        }
    }
    Ok(ops)
}

async fn commit(admin: &Admin, ops: Vec<Op>) -> ApiResult<()> {
    admin.store.commit(ops).await.map_err(|e| match e {
        crate::store::StoreError::Unique { column, .. } if column == "name" => {
            ApiError::schema(Violation::field("snis", "an SNI name is already associated with another certificate"))
        }
        crate::store::StoreError::Unique { .. } => ApiError::primary_key_violation("certificate"),
        other => other.into(),
    })?;
    Ok(())
}

async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    let mut rows = admin.store.list(Table::Certificates, &[], &q.page()?).await?;
    rows.truncate(q.size as usize + 1);
    let mut rendered = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Object(m) = render(&admin, row).await? else { continue };
        rendered.push(m);
    }
    Ok(ok(&q.envelope(rendered, Value::Object, None)))
}

async fn create(State(admin): State<Admin>, input: Input) -> ApiResult {
    let mut fields = crud::fields(&KIND, input)?;
    let names = take_snis(&mut fields)?.unwrap_or_default();
    let doc = crud::fresh(&KIND, crud::new_id(), fields)?;
    check_pair(&doc)?;
    let id = crud::id_of(&doc);
    let mut ops = vec![Op::Insert(Table::Certificates, doc.clone())];
    ops.extend(sync_snis(&admin, &id, &names).await?);
    commit(&admin, ops).await?;
    Ok(created(&render(&admin, doc).await?))
}

async fn show(State(admin): State<Admin>, Path(cert): Path<String>) -> ApiResult {
    let doc = fetch(&admin, &cert).await?;
    Ok(ok(&render(&admin, doc).await?))
}

async fn upsert(State(admin): State<Admin>, Path(cert): Path<String>, input: Input) -> ApiResult {
    crud::retry_put(|| upsert_once(&admin, &cert, input.clone())).await
}

async fn upsert_once(admin: &Admin, cert: &str, input: Input) -> ApiResult {
    let cert = cert.to_string();
    let admin = admin.clone();
    let existing = resolve(&admin, &cert).await?;
    let mut fields = crud::fields(&KIND, input)?;
    let mut names = take_snis(&mut fields)?;
    if !is_uuid(&cert) {
        // PUT /certificates/{name}: the URL's name is always one of the certificate's SNIs;
        // an `snis` list that leaves it out is refused, as the document says.
        match &mut names {
            Some(list) if !list.contains(&cert) => {
                let message = format!("schema violation (snis: must include the SNI in the URL, '{cert}')");
                return Err(ApiError::Entity {
                    status: http::StatusCode::BAD_REQUEST,
                    code: 2,
                    name: "schema violation",
                    message,
                    fields: Some(serde_json::json!({"snis": format!("must include the SNI in the URL, '{cert}'")})),
                });
            }
            Some(_) => {}
            None => names = Some(vec![cert.clone()]),
        }
    }
    let (doc, created_new) = match &existing {
        Some(stored) => (crud::replaced(&KIND, stored, fields)?, false),
        None => {
            let id = if is_uuid(&cert) { cert.to_ascii_lowercase() } else { crud::new_id() };
            (crud::fresh(&KIND, id, fields)?, true)
        }
    };
    check_pair(&doc)?;
    let id = crud::id_of(&doc);
    let mut ops = vec![if created_new {
        Op::Insert(Table::Certificates, doc.clone())
    } else {
        Op::Update(Table::Certificates, doc.clone())
    }];
    if let Some(names) = names {
        ops.extend(sync_snis(&admin, &id, &names).await?);
    }
    commit(&admin, ops).await?;
    Ok(put(created_new, &render(&admin, doc).await?))
}

async fn update(State(admin): State<Admin>, Path(cert): Path<String>, input: Input) -> ApiResult {
    let stored = fetch(&admin, &cert).await?;
    let mut fields = crud::fields(&KIND, input)?;
    let names = take_snis(&mut fields)?;
    let doc = crud::patched(&KIND, &stored, fields)?;
    check_pair(&doc)?;
    let id = crud::id_of(&doc);
    let mut ops = vec![Op::Update(Table::Certificates, doc.clone())];
    if let Some(names) = names {
        ops.extend(sync_snis(&admin, &id, &names).await?);
    }
    commit(&admin, ops).await?;
    Ok(ok(&render(&admin, doc).await?))
}

async fn remove(State(admin): State<Admin>, Path(cert): Path<String>) -> ApiResult {
    let Some(stored) = resolve(&admin, &cert).await? else { return Ok(no_content()) };
    let id = crud::id_of(&stored);
    admin
        .store
        .commit(vec![Op::DeleteWhere(Table::Snis, "certificate_id", id.clone()), Op::Delete(Table::Certificates, id)])
        .await?;
    Ok(no_content())
}

async fn list_snis(State(admin): State<Admin>, Path(cert): Path<String>, q: ListQuery) -> ApiResult {
    let doc = fetch(&admin, &cert).await?;
    let filter = [Filter { field: "certificate_id", value: crud::id_of(&doc) }];
    let rows = admin.store.list(Table::Snis, &filter, &q.page()?).await?;
    Ok(ok(&q.envelope(rows, Value::Object, None)))
}

async fn create_sni(State(admin): State<Admin>, Path(cert): Path<String>, input: Input) -> ApiResult {
    // A nested collection under a certificate that is not there: Kong's plain 404.
    let doc = resolve(&admin, &cert).await?.ok_or(ApiError::NotFound)?;
    snis::create_for(&admin, &crud::id_of(&doc), input).await
}
