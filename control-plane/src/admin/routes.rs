//! `/routes`, `/routes/{id}`, `/services/{svc}/routes` and `/routes/{id}/service`.

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::entity::ROUTE;
use serde_json::{json, Value};

use super::body::Input;
use super::crud::{self, Kind};
use super::error::{ApiError, ApiResult};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Routes;
use super::{services, Admin};
use crate::store::{Doc, Filter, Op, Table};

pub static KIND: Kind = Kind { schema: &ROUTE, table: Table::Routes, key: None };

pub fn router() -> Routes {
    Routes::new()
        .route("/routes", get(list).post(create))
        .route("/routes/{route}", get(show).put(upsert).patch(update).delete(remove))
        .route(
            "/routes/{route}/service",
            get(show_service).put(put_service).patch(patch_service).delete(delete_service),
        )
        .route("/services/{svc}/routes", get(list_for_service).post(create_for_service))
}

/// The 400 for deleting a Service that Routes still use.
pub fn referenced() -> ApiError {
    ApiError::referenced_by("routes", "services")
}

async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    let rows = admin.store.list(Table::Routes, &[], &q.page()?).await?;
    Ok(ok(&q.envelope(rows, Value::Object, None)))
}

async fn list_for_service(State(admin): State<Admin>, Path(svc): Path<String>, q: ListQuery) -> ApiResult {
    let service = crud::fetch(&admin.store, &services::KIND, &svc).await?;
    let filter = [Filter { field: "service_id", value: crud::id_of(&service) }];
    let rows = admin.store.list(Table::Routes, &filter, &q.page()?).await?;
    Ok(ok(&q.envelope(rows, Value::Object, None)))
}

async fn create(State(admin): State<Admin>, input: Input) -> ApiResult {
    let doc = crud::fresh(&KIND, crud::new_id(), crud::fields(&KIND, input)?)?;
    insert(&admin, doc).await
}

async fn create_for_service(State(admin): State<Admin>, Path(svc): Path<String>, input: Input) -> ApiResult {
    let service = crud::fetch(&admin.store, &services::KIND, &svc).await?;
    let mut fields = crud::fields(&KIND, input)?;
    fields.insert("service".into(), json!({"id": crud::id_of(&service)}));
    let doc = crud::fresh(&KIND, crud::new_id(), fields)?;
    insert(&admin, doc).await
}

/// The referenced Service must exist: code 4 otherwise.
async fn check_service(admin: &Admin, doc: &Doc) -> ApiResult<()> {
    let id = doc.get("service").and_then(|s| s.get("id")).and_then(Value::as_str).unwrap_or_default();
    if admin.store.get(Table::Services, id).await?.is_none() {
        return Err(ApiError::foreign_key_missing("service", id, "services"));
    }
    Ok(())
}

async fn write(admin: &Admin, op: Op, doc: &Doc) -> ApiResult<()> {
    check_service(admin, doc).await?;
    match admin.store.commit(vec![op]).await {
        Ok(_) => Ok(()),
        Err(crate::store::StoreError::ForeignKey) => {
            let id = doc.get("service").and_then(|s| s.get("id")).and_then(Value::as_str).unwrap_or_default();
            Err(ApiError::foreign_key_missing("service", id, "services"))
        }
        Err(e) => Err(crud::write_error(doc, e)),
    }
}

async fn insert(admin: &Admin, doc: Doc) -> ApiResult {
    write(admin, Op::Insert(Table::Routes, doc.clone()), &doc).await?;
    Ok(created(&Value::Object(doc)))
}

async fn show(State(admin): State<Admin>, Path(route): Path<String>) -> ApiResult {
    Ok(ok(&Value::Object(crud::fetch(&admin.store, &KIND, &route).await?)))
}

async fn upsert(State(admin): State<Admin>, Path(route): Path<String>, input: Input) -> ApiResult {
    crud::retry_put(|| upsert_once(&admin, &route, input.clone())).await
}

async fn upsert_once(admin: &Admin, route: &str, input: Input) -> ApiResult {
    let existing = crud::resolve(&admin.store, &KIND, route).await?;
    let fields = crud::fields(&KIND, input)?;
    match existing {
        Some(stored) => {
            let doc = crud::replaced(&KIND, &stored, fields)?;
            write(admin, Op::Update(Table::Routes, doc.clone()), &doc).await?;
            Ok(put(false, &Value::Object(doc)))
        }
        None => {
            let doc = crud::fresh(&KIND, route.to_ascii_lowercase(), fields)?;
            write(admin, Op::Insert(Table::Routes, doc.clone()), &doc).await?;
            Ok(put(true, &Value::Object(doc)))
        }
    }
}

async fn update(State(admin): State<Admin>, Path(route): Path<String>, input: Input) -> ApiResult {
    let stored =
        crud::resolve(&admin.store, &KIND, &route).await?.ok_or_else(|| ApiError::entity_not_found("id", &route))?;
    let doc = crud::patched(&KIND, &stored, crud::fields(&KIND, input)?)?;
    write(&admin, Op::Update(Table::Routes, doc.clone()), &doc).await?;
    Ok(ok(&Value::Object(doc)))
}

async fn remove(State(admin): State<Admin>, Path(route): Path<String>) -> ApiResult {
    let Some(stored) = crud::resolve(&admin.store, &KIND, &route).await? else {
        return Ok(no_content());
    };
    let id = crud::id_of(&stored);
    admin
        .store
        .commit(vec![Op::DeleteWhere(Table::Plugins, "route_id", id.clone()), Op::Delete(Table::Routes, id)])
        .await?;
    Ok(no_content())
}

/// The Service a Route points at (404 when the route is missing).
async fn route_service(admin: &Admin, route: &str) -> ApiResult<(Doc, Option<Doc>)> {
    let stored = crud::fetch(&admin.store, &KIND, route).await?;
    let service_id =
        stored.get("service").and_then(|s| s.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
    let service = admin.store.get(Table::Services, &service_id).await?;
    Ok((stored, service))
}

async fn show_service(State(admin): State<Admin>, Path(route): Path<String>) -> ApiResult {
    let (_, service) = route_service(&admin, &route).await?;
    Ok(ok(&Value::Object(service.ok_or(ApiError::NotFound)?)))
}

async fn put_service(State(admin): State<Admin>, Path(route): Path<String>, input: Input) -> ApiResult {
    let (stored, service) = route_service(&admin, &route).await?;
    let service_id = stored.get("service").and_then(|s| s.get("id")).and_then(Value::as_str).unwrap_or_default();
    services::put_service(&admin, service_id, service, input).await
}

async fn patch_service(State(admin): State<Admin>, Path(route): Path<String>, input: Input) -> ApiResult {
    let (_, service) = route_service(&admin, &route).await?;
    let service = service.ok_or(ApiError::NotFound)?;
    services::patch_service(&admin, &service, input).await
}

async fn delete_service(State(admin): State<Admin>, Path(route): Path<String>) -> ApiResult {
    route_service(&admin, &route).await?;
    Err(ApiError::message(http::StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"))
}
