//! Expiry of OAuth2 authorization codes and tokens, which Kong leaves to database TTLs: codes
//! live 300 s; a token with an expiry lives until its refresh token's `refresh_token_ttl` (of
//! the oauth2 plugin on the token's service, else the global one) has passed too. Tokens that
//! never expire, or whose plugin keeps refresh tokens forever (ttl 0), stay. The deletions go
//! through the change log, so data planes drop them as well. Every control-plane replica may
//! sweep: deleting a row another replica already deleted is a no-op.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::store::{now_ms, Doc, Op, Page, Store, StoreError, Table};

const CODE_TTL_MS: i64 = 300_000;
const DEFAULT_REFRESH_TTL_S: i64 = 1_209_600;
/// Deletions per commit.
const BATCH: usize = 500;

/// Sweeps every `every` until `stop` fires.
pub async fn run(store: Store, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        match sweep(&store, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired OAuth2 codes and tokens removed"),
            Err(e) => tracing::warn!(error = %e, "OAuth2 expiry sweep failed"),
        }
        if let Err(e) = store.expire_counters(now_ms()).await {
            tracing::warn!(error = %e, "rate-limit counter sweep failed");
        }
    }
}

fn num(doc: &Doc, key: &str) -> i64 {
    doc.get(key).and_then(Value::as_f64).map_or(0, |n| n as i64)
}

fn text<'a>(doc: &'a Doc, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Deletes what expired by `now` (ms); returns how many rows went.
///
/// # Errors
/// Store failures.
pub async fn sweep(store: &Store, now: i64) -> Result<usize, StoreError> {
    let all = Page { after: None, size: u32::MAX / 2 };
    let mut doomed: Vec<Op> = store
        .list(Table::Oauth2AuthorizationCodes, &[], &all)
        .await?
        .iter()
        .filter(|c| num(c, "created_at") + CODE_TTL_MS < now)
        .map(|c| Op::Delete(Table::Oauth2AuthorizationCodes, text(c, "id").to_string()))
        .collect();
    // refresh_token_ttl by service id ("" for the global plugin).
    let mut ttl: HashMap<String, i64> = HashMap::new();
    for p in store.list(Table::Plugins, &[], &all).await? {
        if text(&p, "name") != "oauth2" || !text(&p, "route_id").is_empty() {
            continue;
        }
        let config = p.get("config").and_then(Value::as_object);
        let seconds = config.and_then(|c| c.get("refresh_token_ttl")).and_then(Value::as_f64);
        ttl.insert(text(&p, "service_id").to_string(), seconds.map_or(DEFAULT_REFRESH_TTL_S, |s| s as i64));
    }
    for t in store.list(Table::Oauth2Tokens, &[], &all).await? {
        let expires_in = num(&t, "expires_in");
        if expires_in <= 0 {
            continue;
        }
        let refresh = ttl.get(text(&t, "service_id")).or_else(|| ttl.get("")).copied().unwrap_or(DEFAULT_REFRESH_TTL_S);
        if refresh <= 0 {
            continue;
        }
        if num(&t, "created_at") + (expires_in.max(refresh)) * 1000 < now {
            doomed.push(Op::Delete(Table::Oauth2Tokens, text(&t, "id").to_string()));
        }
    }
    let n = doomed.len();
    while !doomed.is_empty() {
        let rest = doomed.split_off(doomed.len().min(BATCH));
        store.commit(doomed).await?;
        doomed = rest;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(v: Value) -> Doc {
        v.as_object().cloned().unwrap()
    }

    #[tokio::test]
    async fn expired_codes_and_tokens_go_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        store.migrate_up().await.unwrap();
        let now = 10_000_000_000i64;
        let consumer = json!({"id": "00000000-0000-4000-8000-000000000001", "created_at": 1, "username": "u"});
        let app = json!({"id": "00000000-0000-4000-8000-000000000002", "created_at": 1, "name": "app",
            "consumer_id": consumer["id"], "client_id": "cid", "client_secret": "s", "redirect_uri": ["http://a/b"]});
        let code = |id: &str, age_ms: i64| {
            doc(json!({"id": id, "created_at": now - age_ms, "credential_id": app["id"], "code": id}))
        };
        let token = |id: &str, age_s: i64, expires_in: i64| {
            doc(json!({"id": id, "created_at": now - age_s * 1000, "credential_id": app["id"], "access_token": id,
                "token_type": "bearer", "expires_in": expires_in}))
        };
        store
            .commit(vec![
                Op::Insert(Table::Consumers, doc(consumer.clone())),
                Op::Insert(Table::Oauth2Credentials, doc(app.clone())),
                Op::Insert(Table::Oauth2AuthorizationCodes, code("00000000-0000-4000-8000-0000000000c1", 301_000)),
                Op::Insert(Table::Oauth2AuthorizationCodes, code("00000000-0000-4000-8000-0000000000c2", 10_000)),
                // Past the default 14-day refresh window, within it, and never expiring.
                Op::Insert(Table::Oauth2Tokens, token("00000000-0000-4000-8000-0000000000a1", 1_300_000, 7200)),
                Op::Insert(Table::Oauth2Tokens, token("00000000-0000-4000-8000-0000000000a2", 8000, 7200)),
                Op::Insert(Table::Oauth2Tokens, token("00000000-0000-4000-8000-0000000000a3", 9_000_000, 0)),
            ])
            .await
            .unwrap();
        assert_eq!(sweep(&store, now).await.unwrap(), 2);
        let all = Page { after: None, size: 100 };
        let ids = |rows: Vec<Doc>| rows.iter().map(|r| text(r, "id").to_string()).collect::<Vec<_>>();
        let codes = ids(store.list(Table::Oauth2AuthorizationCodes, &[], &all).await.unwrap());
        assert_eq!(codes, ["00000000-0000-4000-8000-0000000000c2"]);
        let mut tokens = ids(store.list(Table::Oauth2Tokens, &[], &all).await.unwrap());
        tokens.sort();
        assert_eq!(tokens, ["00000000-0000-4000-8000-0000000000a2", "00000000-0000-4000-8000-0000000000a3"]);
        assert_eq!(sweep(&store, now).await.unwrap(), 0, "nothing more to do");
    }
}
