//! `/services`, `/services/{name or id}` and `/routes/{id}/service`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use gatehouse_shared::entity::{parse_url, SERVICE};
use serde_json::{Map, Value};

use super::body::Input;
use super::crud::{self, Kind};
use super::error::{ApiError, ApiResult};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Routes;
use super::{routes, Admin};
use crate::store::{Doc, Filter, Op, Table};

pub static KIND: Kind = Kind { schema: &SERVICE, table: Table::Services, key: Some("name") };

pub fn router() -> Routes {
    Routes::new()
        .route("/services", get(list).post(create))
        .route("/services/{svc}", get(show).put(upsert).patch(update).delete(remove))
}

/// The request's fields with the write-only `url` expanded into protocol/host/port/path.
fn fields(input: Input) -> ApiResult<Map<String, Value>> {
    let mut fields = crud::fields(&KIND, input)?;
    match fields.remove("url") {
        Some(Value::String(url)) => fields.extend(parse_url(&url).map_err(ApiError::schema)?),
        Some(Value::Null) | None => {}
        Some(_) => return Err(ApiError::schema(gatehouse_shared::Violation::field("url", "expected a string"))),
    }
    Ok(fields)
}

async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    let rows = admin.store.list(Table::Services, &[], &q.page()?).await?;
    Ok(ok(&q.envelope(rows, Value::Object, None)))
}

async fn create(State(admin): State<Admin>, input: Input) -> ApiResult {
    let doc = crud::fresh(&KIND, crud::new_id(), fields(input)?)?;
    insert(&admin, doc).await
}

async fn insert(admin: &Admin, doc: Doc) -> ApiResult {
    admin.store.commit(vec![Op::Insert(Table::Services, doc.clone())]).await.map_err(|e| crud::write_error(&doc, e))?;
    Ok(created(&Value::Object(doc)))
}

async fn show(State(admin): State<Admin>, Path(svc): Path<String>) -> ApiResult {
    Ok(ok(&Value::Object(crud::fetch(&admin.store, &KIND, &svc).await?)))
}

async fn upsert(State(admin): State<Admin>, Path(svc): Path<String>, input: Input) -> ApiResult {
    crud::retry_put(|| async {
        let existing = crud::resolve(&admin.store, &KIND, &svc).await?;
        put_service(&admin, &svc, existing, input.clone()).await
    })
    .await
}

/// PUT semantics shared with `/routes/{id}/service`: replace `existing`, or create it under
/// the URL's id or name.
pub(super) async fn put_service(admin: &Admin, segment: &str, existing: Option<Doc>, input: Input) -> ApiResult {
    let mut fields = fields(input)?;
    crud::pin_key(&KIND, segment, &mut fields)?;
    match existing {
        Some(stored) => {
            let doc = crud::replaced(&KIND, &stored, fields)?;
            save(admin, doc.clone()).await?;
            Ok(put(false, &Value::Object(doc)))
        }
        None => {
            let id = if gatehouse_shared::validate::is_uuid(segment) {
                segment.to_ascii_lowercase()
            } else {
                crud::new_id()
            };
            let doc = crud::fresh(&KIND, id, fields)?;
            admin
                .store
                .commit(vec![Op::Insert(Table::Services, doc.clone())])
                .await
                .map_err(|e| crud::write_error(&doc, e))?;
            Ok(put(true, &Value::Object(doc)))
        }
    }
}

async fn save(admin: &Admin, doc: Doc) -> ApiResult<()> {
    admin.store.commit(vec![Op::Update(Table::Services, doc.clone())]).await.map_err(|e| crud::write_error(&doc, e))?;
    Ok(())
}

async fn update(State(admin): State<Admin>, Path(svc): Path<String>, input: Input) -> ApiResult {
    let stored = crud::resolve(&admin.store, &KIND, &svc).await?.ok_or_else(|| not_found(&svc))?;
    patch_service(&admin, &stored, input).await
}

pub(super) async fn patch_service(admin: &Admin, stored: &Doc, input: Input) -> ApiResult {
    let doc = crud::patched(&KIND, stored, fields(input)?)?;
    save(admin, doc.clone()).await?;
    Ok(ok(&Value::Object(doc)))
}

pub(super) fn not_found(segment: &str) -> ApiError {
    if gatehouse_shared::validate::is_uuid(segment) {
        ApiError::entity_not_found("id", segment)
    } else {
        ApiError::entity_not_found("name", segment)
    }
}

async fn remove(State(admin): State<Admin>, Path(svc): Path<String>) -> ApiResult<Response> {
    let Some(stored) = crud::resolve(&admin.store, &KIND, &svc).await? else {
        return Ok(no_content());
    };
    let id = crud::id_of(&stored);
    let filter = [Filter { field: "service_id", value: id.clone() }];
    if admin.store.count(Table::Routes, &filter).await? > 0 {
        return Err(routes::referenced());
    }
    let mut ops = vec![Op::DeleteWhere(Table::Plugins, "service_id", id.clone())];
    ops.extend(super::credentials::service_cascade(&id));
    ops.push(Op::Delete(Table::Services, id));
    match admin.store.commit(ops).await {
        Ok(_) => Ok(no_content()),
        Err(crate::store::StoreError::ForeignKey) => Err(routes::referenced()),
        Err(e) => Err(e.into()),
    }
}
