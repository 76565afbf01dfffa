//! `/consumers` and `/consumers/{username or id}`.

use axum::extract::{Path, State};
use axum::routing::get;
use gatehouse_shared::entity::CONSUMER;
use serde_json::Value;

use super::body::Input;
use super::credentials;
use super::crud::{self, Kind};
use super::error::{ApiError, ApiResult};
use super::paginate::ListQuery;
use super::respond::{created, no_content, ok, put};
use super::Admin;
use super::Routes;
use crate::store::{Doc, Filter, Op, Table};

pub static KIND: Kind = Kind { schema: &CONSUMER, table: Table::Consumers, key: Some("username") };

pub fn router() -> Routes {
    Routes::new()
        .route("/consumers", get(list).post(create))
        .route("/consumers/{consumer}", get(show).put(upsert).patch(update).delete(remove))
}

/// A consumer as the Admin API document shows one: unset fields left out, not `null` (a
/// client written against the document expects `custom_id` absent).
pub(super) fn render(mut doc: Doc) -> Value {
    doc.retain(|_, v| !v.is_null());
    Value::Object(doc)
}

/// Lists consumers; `?custom_id=` filters (other parameters are ignored, as in Kong).
async fn list(State(admin): State<Admin>, q: ListQuery) -> ApiResult {
    let filters: Vec<Filter> = q
        .params
        .iter()
        .filter(|(k, _)| k == "custom_id")
        .map(|(_, v)| Filter { field: "custom_id", value: v.clone() })
        .collect();
    let rows = admin.store.list(Table::Consumers, &filters, &q.page()?).await?;
    Ok(ok(&q.envelope(rows, render, None)))
}

async fn create(State(admin): State<Admin>, input: Input) -> ApiResult {
    let doc = crud::fresh(&KIND, crud::new_id(), crud::fields(&KIND, input)?)?;
    write(&admin, Op::Insert(Table::Consumers, doc.clone()), &doc).await?;
    Ok(created(&render(doc)))
}

async fn write(admin: &Admin, op: Op, doc: &Doc) -> ApiResult<()> {
    admin.store.commit(vec![op]).await.map_err(|e| crud::write_error(doc, e))?;
    Ok(())
}

async fn show(State(admin): State<Admin>, Path(consumer): Path<String>) -> ApiResult {
    Ok(ok(&render(crud::fetch(&admin.store, &KIND, &consumer).await?)))
}

async fn upsert(State(admin): State<Admin>, Path(consumer): Path<String>, input: Input) -> ApiResult {
    crud::retry_put(|| upsert_once(&admin, &consumer, input.clone())).await
}

async fn upsert_once(admin: &Admin, consumer: &str, input: Input) -> ApiResult {
    let existing = crud::resolve(&admin.store, &KIND, consumer).await?;
    let mut fields = crud::fields(&KIND, input)?;
    crud::pin_key(&KIND, consumer, &mut fields)?;
    match existing {
        Some(stored) => {
            let doc = crud::replaced(&KIND, &stored, fields)?;
            write(admin, Op::Update(Table::Consumers, doc.clone()), &doc).await?;
            Ok(put(false, &render(doc)))
        }
        None => {
            let id = if gatehouse_shared::validate::is_uuid(consumer) {
                consumer.to_ascii_lowercase()
            } else {
                crud::new_id()
            };
            let doc = crud::fresh(&KIND, id, fields)?;
            write(admin, Op::Insert(Table::Consumers, doc.clone()), &doc).await?;
            Ok(put(true, &render(doc)))
        }
    }
}

async fn update(State(admin): State<Admin>, Path(consumer): Path<String>, input: Input) -> ApiResult {
    let stored = crud::resolve(&admin.store, &KIND, &consumer).await?.ok_or_else(|| {
        let key = if gatehouse_shared::validate::is_uuid(&consumer) { "id" } else { "username" };
        ApiError::entity_not_found(key, &consumer)
    })?;
    let doc = crud::patched(&KIND, &stored, crud::fields(&KIND, input)?)?;
    write(&admin, Op::Update(Table::Consumers, doc.clone()), &doc).await?;
    Ok(ok(&render(doc)))
}

/// Deletes the consumer, the plugin configurations that name it and its credentials (with
/// its oauth2 applications' tokens and codes), in one commit.
async fn remove(State(admin): State<Admin>, Path(consumer): Path<String>) -> ApiResult {
    let Some(stored) = crud::resolve(&admin.store, &KIND, &consumer).await? else {
        return Ok(no_content());
    };
    let id = crud::id_of(&stored);
    let mut ops = vec![Op::DeleteWhere(Table::Plugins, "consumer_id", id.clone())];
    ops.extend(credentials::consumer_cascade(&id));
    ops.push(Op::Delete(Table::Consumers, id));
    admin.store.commit(ops).await?;
    Ok(no_content())
}
