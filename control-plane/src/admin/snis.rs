//! `/snis` and `/snis/{name or id}`.

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::entity::SNI;
use serde_json::{json, Value};

use super::body::Input;
use super::crud::{self, Kind};
use super::error::{ApiError, ApiResult};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Admin;
use super::Routes;
use crate::store::{Doc, Op, Table};

pub static KIND: Kind = Kind { schema: &SNI, table: Table::Snis, key: Some("name") };

pub fn router() -> Routes {
    Routes::new()
        .route("/snis", get(list).post(create))
        .route("/snis/{sni}", get(show).put(upsert).patch(update).delete(remove))
        .route("/snis/{sni}/certificate", axum::routing::any(|| async { ApiError::NotFound }))
}

/// A new SNI row for `name` on `cert_id` (used by the certificates' `snis` attribute).
pub fn new_doc(name: &str, cert_id: &str) -> Doc {
    let mut doc = Doc::new();
    doc.insert("id".into(), json!(crud::new_id()));
    doc.insert("created_at".into(), json!(crud::now_s()));
    doc.insert("name".into(), json!(name));
    doc.insert("certificate".into(), json!({"id": cert_id}));
    doc
}

async fn write(admin: &Admin, op: Op, doc: &Doc) -> ApiResult<()> {
    let cert_id = doc.get("certificate").and_then(|c| c.get("id")).and_then(Value::as_str).unwrap_or_default();
    let missing = || ApiError::foreign_key_missing("certificate", cert_id, "certificates");
    if admin.store.get(Table::Certificates, cert_id).await?.is_none() {
        return Err(missing());
    }
    match admin.store.commit(vec![op]).await {
        Ok(_) => Ok(()),
        Err(crate::store::StoreError::ForeignKey) => Err(missing()),
        Err(e) => Err(crud::write_error(doc, e)),
    }
}

async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    let rows = admin.store.list(Table::Snis, &[], &q.page()?).await?;
    Ok(ok(&q.envelope(rows, Value::Object, None)))
}

async fn create(State(admin): State<Admin>, input: Input) -> ApiResult {
    let doc = crud::fresh(&KIND, crud::new_id(), crud::fields(&KIND, input)?)?;
    write(&admin, Op::Insert(Table::Snis, doc.clone()), &doc).await?;
    Ok(created(&Value::Object(doc)))
}

/// `POST /certificates/{c}/snis`: the certificate comes from the URL.
pub(super) async fn create_for(admin: &Admin, cert_id: &str, input: Input) -> ApiResult {
    let mut fields = crud::fields(&KIND, input)?;
    fields.insert("certificate".into(), json!({ "id": cert_id }));
    let doc = crud::fresh(&KIND, crud::new_id(), fields)?;
    write(admin, Op::Insert(Table::Snis, doc.clone()), &doc).await?;
    Ok(created(&Value::Object(doc)))
}

async fn show(State(admin): State<Admin>, Path(sni): Path<String>) -> ApiResult {
    Ok(ok(&Value::Object(crud::fetch(&admin.store, &KIND, &sni).await?)))
}

async fn upsert(State(admin): State<Admin>, Path(sni): Path<String>, input: Input) -> ApiResult {
    crud::retry_put(|| upsert_once(&admin, &sni, input.clone())).await
}

async fn upsert_once(admin: &Admin, sni: &str, input: Input) -> ApiResult {
    let existing = crud::resolve(&admin.store, &KIND, sni).await?;
    let mut fields = crud::fields(&KIND, input)?;
    crud::pin_key(&KIND, sni, &mut fields)?;
    match existing {
        Some(stored) => {
            let doc = crud::replaced(&KIND, &stored, fields)?;
            write(admin, Op::Update(Table::Snis, doc.clone()), &doc).await?;
            Ok(put(false, &Value::Object(doc)))
        }
        None => {
            let id = if gatehouse_shared::validate::is_uuid(sni) { sni.to_ascii_lowercase() } else { crud::new_id() };
            let doc = crud::fresh(&KIND, id, fields)?;
            write(admin, Op::Insert(Table::Snis, doc.clone()), &doc).await?;
            Ok(put(true, &Value::Object(doc)))
        }
    }
}

async fn update(State(admin): State<Admin>, Path(sni): Path<String>, input: Input) -> ApiResult {
    let stored = crud::resolve(&admin.store, &KIND, &sni).await?.ok_or_else(|| {
        let key = if gatehouse_shared::validate::is_uuid(&sni) { "id" } else { "name" };
        ApiError::entity_not_found(key, &sni)
    })?;
    let doc = crud::patched(&KIND, &stored, crud::fields(&KIND, input)?)?;
    write(&admin, Op::Update(Table::Snis, doc.clone()), &doc).await?;
    Ok(ok(&Value::Object(doc)))
}

async fn remove(State(admin): State<Admin>, Path(sni): Path<String>) -> ApiResult {
    if let Some(stored) = crud::resolve(&admin.store, &KIND, &sni).await? {
        admin.store.commit(vec![Op::Delete(Table::Snis, crud::id_of(&stored))]).await?;
    }
    Ok(no_content())
}
