//! List queries: `size`, the opaque `offset` cursor, equality filters, and the response
//! envelope with an absolute `next` URL built from the request (null on the last page), so
//! that a client following `next` as-is works on every collection.

use axum::extract::{FromRequestParts, OriginalUri};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::request::Parts;
use http::{header, Uri};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::Scheme;
use crate::store::{Doc, Filter, Page};

pub const DEFAULT_SIZE: u32 = 100;
pub const MAX_SIZE: u32 = 1000;

/// The parsed query string of a list request plus what is needed to build `next`.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub size: u32,
    size_given: bool,
    pub offset: Option<String>,
    /// Every other parameter, in request order.
    pub params: Vec<(String, String)>,
    base: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let uri = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.clone(), |o| o.0.clone());
        let scheme = parts.extensions.get::<Scheme>().copied().unwrap_or(Scheme::Http);
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".to_string());
        ListQuery::parse(&uri, scheme, &host)
    }
}

impl ListQuery {
    fn parse(uri: &Uri, scheme: Scheme, host: &str) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            size: DEFAULT_SIZE,
            size_given: false,
            offset: None,
            params: Vec::new(),
            base: format!("{}://{}{}", scheme.as_str(), host, uri.path().trim_end_matches('/')),
        };
        for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "size" => {
                    let n: u64 = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        ApiError::bad_request(format!("size must be an integer between 1 and {MAX_SIZE}"))
                    })?;
                    q.size = n.min(u64::from(MAX_SIZE)) as u32;
                    q.size_given = true;
                }
                "offset" => q.offset = Some(v.into_owned()),
                _ => q.params.push((k.into_owned(), v.into_owned())),
            }
        }
        Ok(q)
    }

    /// The store page for this query; a cursor that does not decode is a 400.
    pub fn page(&self) -> Result<Page, ApiError> {
        let after = match &self.offset {
            None => None,
            Some(token) => Some(decode_offset(token)?),
        };
        // One extra row tells whether another page follows.
        Ok(Page { after, size: self.size + 1 })
    }

    /// Equality filters, refusing parameters not in `allowed` with the old DAO's 400. Fields
    /// whose name ends in `id` hold entity ids.
    pub fn filters(&self, allowed: &[&'static str]) -> Result<Vec<Filter>, ApiError> {
        self.filters_typed(allowed, |field| field.ends_with("id"))
    }

    /// Like [`ListQuery::filters`], with `is_id` telling which fields hold entity ids (their
    /// values must be UUIDs and compare lower-case): `client_id` or `authenticated_userid`
    /// are plain strings.
    pub fn filters_typed(&self, allowed: &[&'static str], is_id: fn(&str) -> bool) -> Result<Vec<Filter>, ApiError> {
        self.params
            .iter()
            .map(|(k, v)| match allowed.iter().find(|a| **a == k.as_str()) {
                Some(field) if is_id(field) => {
                    if !gatehouse_shared::validate::is_uuid(v) {
                        return Err(ApiError::field(
                            http::StatusCode::BAD_REQUEST,
                            k,
                            format!("{v} is not a valid uuid"),
                        ));
                    }
                    Ok(Filter { field, value: v.to_ascii_lowercase() })
                }
                Some(field) => Ok(Filter { field, value: v.clone() }),
                None => Err(ApiError::field(http::StatusCode::BAD_REQUEST, k, "unknown field")),
            })
            .collect()
    }

    /// The response body: `data`, then `offset` and `next` when another page follows.
    /// `rows` is what [`ListQuery::page`] fetched (up to `size + 1`).
    pub fn envelope(&self, mut rows: Vec<Doc>, render: impl Fn(Doc) -> Value, total: Option<i64>) -> Value {
        let more = rows.len() > self.size as usize;
        rows.truncate(self.size as usize);
        let last_id = rows.last().and_then(|d| d.get("id")).and_then(Value::as_str).map(str::to_owned);
        let data: Vec<Value> = rows.into_iter().map(render).collect();
        let mut body = Map::new();
        if let Some(t) = total {
            body.insert("total".into(), json!(t));
        }
        body.insert("data".into(), Value::Array(data));
        match last_id.filter(|_| more) {
            Some(id) => {
                let token = encode_offset(&id);
                body.insert("offset".into(), json!(token));
                body.insert("next".into(), json!(self.next_url(&token)));
            }
            None => {
                body.insert("next".into(), Value::Null);
            }
        }
        Value::Object(body)
    }

    fn next_url(&self, token: &str) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        ser.append_pair("offset", token);
        if self.size_given {
            ser.append_pair("size", &self.size.to_string());
        }
        for (k, v) in &self.params {
            ser.append_pair(k, v);
        }
        format!("{}?{}", self.base, ser.finish())
    }
}

/// Cursor tokens are unpadded base64 of a JSON array holding the last id, as Kong's are.
fn encode_offset(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!([id]).to_string())
}

fn decode_offset(token: &str) -> Result<String, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| ApiError::invalid_offset(token, "bad base64 encoding"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| ApiError::invalid_offset(token, "bad json encoding"))?;
    value
        .get(0)
        .and_then(Value::as_str)
        .filter(|id| gatehouse_shared::validate::is_uuid(id))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| ApiError::invalid_offset(token, "bad json encoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_bad_ones_are_refused() {
        let t = encode_offset("4e13f54a-bbf1-47a8-8777-255fed7116f2");
        assert_eq!(decode_offset(&t).unwrap(), "4e13f54a-bbf1-47a8-8777-255fed7116f2");
        assert!(matches!(decode_offset("!!"), Err(ApiError::Entity { code: 7, .. })));
        assert!(matches!(decode_offset("Zm9v"), Err(ApiError::Entity { code: 7, .. })));
        assert!(matches!(decode_offset(&encode_offset("not-a-uuid")), Err(ApiError::Entity { code: 7, .. })));
    }

    #[test]
    fn next_is_absolute_and_keeps_size_and_filters() {
        let uri: Uri = "/plugins/?size=2&name=key-auth".parse().unwrap();
        let q = ListQuery::parse(&uri, Scheme::Http, "127.0.0.1:8001").unwrap();
        let next = q.next_url("abc");
        assert_eq!(next, "http://127.0.0.1:8001/plugins?offset=abc&size=2&name=key-auth");
    }

    #[test]
    fn size_is_clamped_and_validated() {
        let uri: Uri = "/services?size=5000".parse().unwrap();
        assert_eq!(ListQuery::parse(&uri, Scheme::Http, "h").unwrap().size, 1000);
        let uri: Uri = "/services?size=-1".parse().unwrap();
        assert!(ListQuery::parse(&uri, Scheme::Http, "h").is_err());
    }
}
