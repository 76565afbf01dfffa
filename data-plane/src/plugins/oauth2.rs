//! oauth2 (kong-0.14-plugins §4.5): the `/oauth2/authorize` and `/oauth2/token` endpoints
//! (authorization code, implicit, client credentials, password and refresh grants) and
//! access-token validation for everything else.
//!
//! Codes and tokens are minted here but stored by the control plane (a data plane has no
//! database): [`ControlPlane::write`](super::control_plane::ControlPlane::write) commits them over the sync stream and
//! waits until this data plane serves them, and the change log carries them to every other
//! data plane.

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_shared::credential::random_token;
use gatehouse_shared::proto::Change;
use http::{HeaderName, Method};
use serde_json::{json, Map, Value};

use super::auth::{self, anonymous};
use super::control_plane::WriteError;
use super::{Access, BuildError, Credential, Plugin, Rejected, Reply, RequestCtx};
use crate::credentials::{OAuth2App, OAuth2Code, OAuth2Token};

pub struct OAuth2 {
    scopes: Option<Vec<String>>,
    mandatory_scope: bool,
    provision_key: String,
    token_expiration: i64,
    enable_authorization_code: bool,
    enable_implicit_grant: bool,
    enable_client_credentials: bool,
    enable_password_grant: bool,
    hide_credentials: bool,
    accept_http_if_already_terminated: bool,
    anonymous: Option<Arc<str>>,
    global_credentials: bool,
    auth_header_name: HeaderName,
    refresh_token_ttl: i64,
}

/// An OAuth2 error: `error` code and description.
type OAuthError = (&'static str, String);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn flag(config: &Value, key: &str) -> bool {
    config.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A parameter as text (numbers as their JSON text); empty when absent.
fn param(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Adds `params` to `uri`'s query (or fragment), keys sorted, spaces as `%20`.
fn with_params(uri: &str, params: &BTreeMap<&str, String>, fragment: bool) -> String {
    let (base, existing) = match uri.split_once(if fragment { '#' } else { '?' }) {
        Some((b, e)) => (b, e),
        None => (uri, ""),
    };
    let mut all: BTreeMap<String, String> = url::form_urlencoded::parse(existing.as_bytes()).into_owned().collect();
    for (k, v) in params {
        all.insert((*k).to_string(), v.clone());
    }
    let encoded: Vec<String> = all
        .iter()
        .map(|(k, v)| {
            let enc =
                |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
            format!("{}={}", enc(k), enc(v))
        })
        .collect();
    format!("{base}{}{}", if fragment { '#' } else { '?' }, encoded.join("&"))
}

fn no_store(r: Reply) -> Reply {
    r.header("cache-control", "no-store").header("pragma", "no-cache")
}

fn error_body(e: &OAuthError, state: Option<&str>) -> Value {
    let mut v = json!({"error": e.0, "error_description": e.1});
    if let Some(s) = state {
        v["state"] = json!(s);
    }
    v
}

impl OAuth2 {
    pub fn new(config: &Value) -> Result<OAuth2, BuildError> {
        let n = |k: &str, d: i64| config.get(k).and_then(Value::as_f64).map_or(d, |v| v as i64);
        let header = config.get("auth_header_name").and_then(Value::as_str).unwrap_or("authorization");
        Ok(OAuth2 {
            scopes: config
                .get("scopes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
            mandatory_scope: flag(config, "mandatory_scope"),
            provision_key: str_of(config, "provision_key").to_string(),
            token_expiration: n("token_expiration", 7200),
            enable_authorization_code: flag(config, "enable_authorization_code"),
            enable_implicit_grant: flag(config, "enable_implicit_grant"),
            enable_client_credentials: flag(config, "enable_client_credentials"),
            enable_password_grant: flag(config, "enable_password_grant"),
            hide_credentials: flag(config, "hide_credentials"),
            accept_http_if_already_terminated: flag(config, "accept_http_if_already_terminated"),
            anonymous: anonymous(config),
            global_credentials: flag(config, "global_credentials"),
            auth_header_name: HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                .map_err(|_| BuildError(format!("bad auth_header_name '{header}'")))?,
            refresh_token_ttl: n("refresh_token_ttl", 1_209_600),
        })
    }

    /// HTTPS, or plain HTTP behind a trusted TLS terminator when allowed.
    fn https(&self, ctx: &RequestCtx<'_>) -> Result<(), OAuthError> {
        if ctx.https {
            return Ok(());
        }
        if self.accept_http_if_already_terminated && ctx.trusted {
            let protos: Vec<_> = ctx.headers.get_all("x-forwarded-proto").iter().collect();
            if protos.len() > 1 {
                return Err(("invalid_request", "Only one X-Forwarded-Proto header allowed".into()));
            }
            if protos.first().is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https")) {
                return Ok(());
            }
        }
        Err(("access_denied", "You must use HTTPS".into()))
    }

    /// The query merged with the body (form, JSON, multipart).
    fn params(ctx: &RequestCtx<'_>) -> Map<String, Value> {
        let mut params: Map<String, Value> = match ctx.query.as_deref() {
            Some(q) => url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), json!(v))).collect(),
            None => Map::new(),
        };
        if let Some(Value::Object(body)) = super::body::parse(ctx) {
            params.extend(body);
        }
        params
    }

    /// The scope a token is granted: the requested items, each one the plugin allows, joined
    /// by single spaces. With no `scopes` configured nothing can be granted, whatever the
    /// client asks for (Kong grants an empty scope then): a client must not name its own.
    fn scope_check(&self, scope: Option<&Value>) -> Result<Option<String>, OAuthError> {
        match (scope, &self.scopes) {
            (Some(Value::Null) | None, _) if self.mandatory_scope => {
                Err(("invalid_scope", "You must specify a scope".into()))
            }
            (Some(Value::Null) | None, _) | (Some(_), None) => Ok(None),
            (Some(Value::String(s)), Some(allowed)) => {
                let mut granted = Vec::new();
                for item in s.split_ascii_whitespace() {
                    if !allowed.iter().any(|a| a == item) {
                        return Err(("invalid_scope", format!("\"{item}\" is an invalid scope")));
                    }
                    granted.push(item);
                }
                Ok(Some(granted.join(" ")))
            }
            (Some(_), Some(_)) => Err(("invalid_scope", "scope must be a string".into())),
        }
    }

    fn service_id(&self, ctx: &RequestCtx<'_>) -> Value {
        if self.global_credentials {
            Value::Null
        } else {
            json!(&**ctx.service_id)
        }
    }

    /// A token row (and its refresh token when the grant gives one).
    fn token(
        &self,
        ctx: &RequestCtx<'_>,
        client: &OAuth2App,
        userid: Option<&str>,
        scope: Option<&str>,
        refresh: bool,
    ) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        let mut t = json!({
            "id": id,
            "created_at": now_ms(),
            "credential_id": &*client.id,
            "token_type": "bearer",
            "expires_in": self.token_expiration,
            "access_token": random_token(),
            "service_id": self.service_id(ctx),
        });
        if refresh && self.token_expiration > 0 {
            t["refresh_token"] = json!(random_token());
        }
        if let Some(u) = userid {
            t["authenticated_userid"] = json!(u);
        }
        if let Some(s) = scope {
            t["scope"] = json!(s);
        }
        t
    }

    /// Commits through the control plane. `Ok(false)` when a code or refresh token being spent
    /// was already spent (by a concurrent request, maybe on another data plane).
    async fn store(
        ctx: &RequestCtx<'_>,
        inserts: &[(&str, &Value)],
        deletes: &[(&str, &str)],
    ) -> Result<bool, Rejected> {
        let mut changes: Vec<Change> = inserts
            .iter()
            .map(|(entity, doc)| Change {
                entity: (*entity).into(),
                id: str_of(doc, "id").into(),
                document: doc.to_string(),
                deleted: false,
            })
            .collect();
        changes.extend(deletes.iter().map(|(entity, id)| Change {
            entity: (*entity).into(),
            id: (*id).into(),
            document: String::new(),
            deleted: true,
        }));
        match ctx.control_plane.write(changes).await {
            Ok(_) => Ok(true),
            Err(WriteError::Spent) => Ok(false),
            Err(e) => {
                tracing::error!(error = %e, "oauth2: cannot store a code or token");
                Err(Reply::unexpected().build())
            }
        }
    }

    async fn authorize(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let params = Self::params(ctx);
        let state = param(&params, "state");
        let plain = |e: OAuthError| Err(no_store(Reply::object(400, &error_body(&e, state.as_deref()))).build());
        if let Err(e) = self.https(ctx) {
            return plain(e);
        }
        if param(&params, "provision_key").as_deref() != Some(self.provision_key.as_str()) {
            return plain(("invalid_provision_key", "Invalid provision_key".into()));
        }
        let Some(userid) = param(&params, "authenticated_userid").filter(|u| !u.trim().is_empty()) else {
            return plain(("invalid_authenticated_userid", "Missing authenticated_userid parameter".into()));
        };
        let mut error: Option<OAuthError> = None;
        let response_type = param(&params, "response_type").unwrap_or_default();
        let code_flow = response_type == "code" && self.enable_authorization_code;
        let implicit = response_type == "token" && self.enable_implicit_grant;
        if !code_flow && !implicit {
            error = Some(("unsupported_response_type", "Invalid response_type".into()));
        }
        let scope = match self.scope_check(params.get("scope")) {
            Ok(s) => s,
            Err(e) => {
                error = Some(e);
                None
            }
        };
        let creds = ctx.creds;
        let client = param(&params, "client_id").and_then(|c| creds.oauth2_clients.get(c.as_str()).cloned());
        let Some(client) = client else {
            return plain(("invalid_client", "Invalid client authentication".into()));
        };
        let uris: Vec<String> = client.redirect_uri.iter().map(|u| u.to_string()).collect();
        let first = uris.first().cloned().unwrap_or_default();
        let redirect = match param(&params, "redirect_uri") {
            Some(r) if uris.contains(&r) => r,
            Some(_) => {
                error = Some((
                    "invalid_request",
                    "Invalid redirect_uri that does not match with any redirect_uri created with the application"
                        .into(),
                ));
                first
            }
            None => first,
        };
        let mut out = BTreeMap::new();
        if let Some(s) = &state {
            out.insert("state", s.clone());
        }
        if let Some((code, description)) = error {
            out.insert("error", code.to_string());
            out.insert("error_description", description);
            let body = json!({"redirect_uri": with_params(&redirect, &out, false)});
            return Err(no_store(Reply::object(400, &body)).build());
        }
        let (uri, fragment) = if code_flow {
            let code = json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "created_at": now_ms(),
                "credential_id": &*client.id,
                "code": random_token(),
                "authenticated_userid": userid,
                "scope": scope,
                "service_id": self.service_id(ctx),
            });
            Self::store(ctx, &[("oauth2_authorization_codes", &code)], &[]).await?;
            out.insert("code", str_of(&code, "code").to_string());
            (redirect, false)
        } else {
            let token = self.token(ctx, &client, Some(&userid), scope.as_deref(), false);
            Self::store(ctx, &[("oauth2_tokens", &token)], &[]).await?;
            out.insert("access_token", str_of(&token, "access_token").to_string());
            if self.token_expiration > 0 {
                out.insert("expires_in", self.token_expiration.to_string());
            }
            out.insert("token_type", "bearer".into());
            (redirect, true)
        };
        let body = json!({"redirect_uri": with_params(&uri, &out, fragment)});
        Err(no_store(Reply::object(200, &body)).build())
    }

    async fn token_endpoint(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let params = Self::params(ctx);
        let state = param(&params, "state");
        let respond = |status: u16, e: OAuthError, basic: bool| {
            let mut r = no_store(Reply::object(status, &error_body(&e, state.as_deref())));
            if basic {
                r = r.header("www-authenticate", "Basic realm=\"OAuth2.0\"");
            }
            Err(r.build())
        };
        if let Err(e) = self.https(ctx) {
            return respond(400, e, false);
        }
        // Client authentication: both parameters, else Basic in the configured header. A header
        // that is there but unreadable still counts as the header's (Kong answers it with a
        // Basic challenge), and one parameter alone counts for nothing.
        let (mut client_id, mut secret) = (param(&params, "client_id"), param(&params, "client_secret"));
        let mut from_header = false;
        if client_id.is_none() || secret.is_none() {
            (client_id, secret) = (None, None);
            let header =
                ctx.headers.get(&self.auth_header_name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            if let Some(h) = header {
                from_header = true;
                if let Some((id, pw)) = auth::decode_user_pass(&h, auth::Scheme::Capitalised("basic"), false) {
                    (client_id, secret) = (Some(id), Some(pw));
                }
            }
        }
        let grant = param(&params, "grant_type").unwrap_or_default();
        let mut error: Option<OAuthError> = None;
        let grant_ok = matches!(grant.as_str(), "authorization_code" | "refresh_token")
            || (grant == "client_credentials" && self.enable_client_credentials)
            || (grant == "password" && self.enable_password_grant);
        if !grant_ok {
            error = Some(("unsupported_grant_type", "Invalid grant_type".into()));
        }
        let creds = ctx.creds;
        let client = client_id.as_ref().and_then(|c| creds.oauth2_clients.get(c.as_str()).cloned());
        let invalid_client = || ("invalid_client", "Invalid client authentication".to_string());
        match &client {
            None => error = Some(invalid_client()),
            Some(c) => {
                if let Some(r) = param(&params, "redirect_uri") {
                    if !c.redirect_uri.iter().any(|u| **u == *r) {
                        error = Some((
                            "invalid_request",
                            "Invalid redirect_uri that does not match with any redirect_uri created with the application"
                                .into(),
                        ));
                    }
                }
                if !auth::same_secret(c.client_secret.as_bytes(), secret.as_deref().unwrap_or_default().as_bytes()) {
                    error = Some(invalid_client());
                }
            }
        }
        if let Some(e) = error {
            let basic = from_header && e.0 == "invalid_client";
            return respond(if basic { 401 } else { 400 }, e, basic);
        }
        let Some(client) = client else { return respond(400, invalid_client(), false) };
        let client_db_id = &*client.id;
        let service_ok = |bound: &str| self.global_credentials || bound == &**ctx.service_id;
        let provision_ok = param(&params, "provision_key").as_deref() == Some(self.provision_key.as_str());
        let (token, deletes): (Value, Vec<(&str, String)>) = match grant.as_str() {
            "authorization_code" => {
                let code = param(&params, "code").and_then(|c| creds.oauth2_codes.get(c.as_str()).cloned());
                let fresh = |c: &OAuth2Code| now_ms().saturating_sub(c.created_at) < 300_000;
                let Some(code) =
                    code.filter(|c| service_ok(&c.service_id) && fresh(c) && *c.credential_id == *client_db_id)
                else {
                    return respond(400, ("invalid_request", "Invalid code".into()), false);
                };
                let (scope, userid) = (code.scope.as_deref(), code.authenticated_userid.as_deref());
                let token = self.token(ctx, &client, userid, scope, true);
                (token, vec![("oauth2_authorization_codes", code.id.to_string())])
            }
            "client_credentials" => {
                let userid = param(&params, "authenticated_userid");
                if userid.is_some() && !provision_ok {
                    return respond(400, ("invalid_provision_key", "Invalid provision_key".into()), false);
                }
                let scope = match self.scope_check(params.get("scope")) {
                    Ok(s) => s,
                    Err(e) => return respond(400, e, false),
                };
                (self.token(ctx, &client, userid.as_deref(), scope.as_deref(), false), Vec::new())
            }
            "password" => {
                if !provision_ok {
                    return respond(400, ("invalid_provision_key", "Invalid provision_key".into()), false);
                }
                let Some(userid) = param(&params, "authenticated_userid").filter(|u| !u.trim().is_empty()) else {
                    return respond(
                        400,
                        ("invalid_authenticated_userid", "Missing authenticated_userid parameter".into()),
                        false,
                    );
                };
                let scope = match self.scope_check(params.get("scope")) {
                    Ok(s) => s,
                    Err(e) => return respond(400, e, false),
                };
                (self.token(ctx, &client, Some(&userid), scope.as_deref(), true), Vec::new())
            }
            _ => {
                let old = param(&params, "refresh_token").and_then(|r| creds.oauth2_refresh.get(r.as_str()).cloned());
                let alive = |t: &OAuth2Token| {
                    self.refresh_token_ttl == 0
                        || now_ms().saturating_sub(t.created_at) < self.refresh_token_ttl.saturating_mul(1000)
                };
                let Some(old) = old.filter(|t| service_ok(&t.service_id) && alive(t)) else {
                    return respond(400, ("invalid_request", "Invalid refresh_token".into()), false);
                };
                if *old.credential_id != *client_db_id {
                    return respond(400, invalid_client(), false);
                }
                let (scope, userid) = (old.scope.as_deref(), old.authenticated_userid.as_deref());
                (self.token(ctx, &client, userid, scope, true), vec![("oauth2_tokens", old.id.to_string())])
            }
        };
        let deletes: Vec<(&str, &str)> = deletes.iter().map(|(e, id)| (*e, id.as_str())).collect();
        if !Self::store(ctx, &[("oauth2_tokens", &token)], &deletes).await? {
            let spent = if grant == "refresh_token" { "Invalid refresh_token" } else { "Invalid code" };
            return respond(400, ("invalid_request", spent.into()), false);
        }
        let mut body = json!({"access_token": token["access_token"], "token_type": "bearer"});
        // A token that never expires has no `expires_in` in the answer, as in Kong.
        if self.token_expiration > 0 {
            body["expires_in"] = json!(self.token_expiration);
        }
        if let Some(r) = token.get("refresh_token") {
            body["refresh_token"] = r.clone();
        }
        if let Some(s) = state {
            body["state"] = json!(s);
        }
        Err(no_store(Reply::object(200, &body)).build())
    }

    /// The access token of a protected request: the `access_token` parameter, else a
    /// `bearer`/`token` value in the configured header.
    fn validate(&self, ctx: &mut RequestCtx<'_>, with_body: bool) -> Result<(), Rejected> {
        let mut token = ctx.query_args("access_token").into_iter().next();
        let mut in_body = false;
        if token.is_none() && with_body {
            if let Some(Value::Object(b)) = super::body::parse(ctx) {
                token = b.get("access_token").and_then(Value::as_str).map(str::to_owned);
                in_body = token.is_some();
            }
        }
        let from_query = token.is_some() && !in_body;
        let mut from_header = false;
        if token.is_none() {
            if let Some(v) = ctx.headers.get(&self.auth_header_name).and_then(|v| v.to_str().ok()) {
                let parts: Vec<&str> = v.split_ascii_whitespace().collect();
                if let [kind, t] = parts.as_slice() {
                    if kind.eq_ignore_ascii_case("bearer") || kind.eq_ignore_ascii_case("token") {
                        token = Some((*t).to_string());
                        from_header = true;
                    }
                }
            }
        }
        let Some(token) = token else {
            let r = Reply::object(
                401,
                &json!({"error": "invalid_request", "error_description": "The access token is missing"}),
            )
            .header("www-authenticate", "Bearer realm=\"service\"");
            return auth::fail(ctx, self.anonymous.as_ref(), r);
        };
        let creds = ctx.creds;
        let row = creds.oauth2_tokens.get(token.as_str()).cloned().filter(|t| {
            let bound = &*t.service_id;
            let service_ok = if self.global_credentials {
                bound.is_empty() || bound == &**ctx.service_id
            } else {
                bound == &**ctx.service_id
            };
            // A token whose lifetime cannot be read is expired, never everlasting.
            let Some(expires_in) = t.expires_in else { return false };
            let age = now_ms().saturating_sub(t.created_at) as f64;
            service_ok && (expires_in <= 0.0 || age < expires_in * 1000.0)
        });
        let app = row.as_ref().and_then(|t| creds.oauth2_by_id.get(&*t.credential_id).cloned());
        let consumer = app.as_ref().and_then(|a| creds.owner(&**a).cloned());
        let (Some(row), Some(app), Some(consumer)) = (row, app, consumer) else {
            let description = "The access token is invalid or has expired";
            let r = Reply::object(401, &json!({"error": "invalid_token", "error_description": description})).header(
                "www-authenticate",
                &format!("Bearer realm=\"service\" error=\"invalid_token\" error_description=\"{description}\""),
            );
            return auth::fail(ctx, self.anonymous.as_ref(), r);
        };
        if self.hide_credentials {
            if from_header {
                ctx.headers.remove(&self.auth_header_name);
            } else if from_query {
                ctx.remove_query_arg("access_token");
            } else if in_body {
                super::body::remove_field(ctx, "access_token");
            }
        }
        for (name, field) in
            [("x-authenticated-scope", &row.scope), ("x-authenticated-userid", &row.authenticated_userid)]
        {
            match field.as_deref().and_then(|v| http::HeaderValue::from_str(v).ok()) {
                Some(v) => {
                    ctx.headers.insert(name, v);
                }
                None => {
                    ctx.headers.remove(name);
                }
            }
        }
        auth::authenticated(ctx, consumer, Credential::of(&*app), None);
        Ok(())
    }
}

impl Plugin for OAuth2 {
    fn name(&self) -> &'static str {
        "oauth2"
    }

    /// Its endpoints take their parameters from the body, and a token may come in it.
    fn reads_body(&self, _chunked: bool) -> bool {
        true
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        // Kong checks an earlier plugin's authentication first: then even the endpoints are
        // proxied rather than answered.
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        if ctx.method == Method::POST {
            // Kong matches nginx's `$uri`: decoded, with slashes merged.
            let uri = normalized_uri(ctx.path);
            if uri.contains("/oauth2/token") {
                return Access::Wait(Box::pin(self.token_endpoint(ctx)));
            }
            if uri.contains("/oauth2/authorize") {
                return Access::Wait(Box::pin(self.authorize(ctx)));
            }
        }
        let with_body = matches!(*ctx.method, Method::POST | Method::PUT | Method::PATCH);
        self.validate(ctx, with_body).into()
    }
}

/// A path as nginx's `$uri` holds it: percent-decoded, runs of `/` merged into one.
fn normalized_uri(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_match_the_decoded_merged_path() {
        assert_eq!(normalized_uri("/oauth2/%74oken"), "/oauth2/token");
        assert_eq!(normalized_uri("//oauth2//token"), "/oauth2/token");
    }

    #[test]
    fn redirect_parameters_merge_sorted_with_encoded_spaces() {
        let mut p = BTreeMap::new();
        p.insert("state", "a b".to_string());
        p.insert("code", "xyz".to_string());
        assert_eq!(with_params("http://app.com/cb?x=1", &p, false), "http://app.com/cb?code=xyz&state=a%20b&x=1");
        assert_eq!(with_params("http://app.com/cb", &p, true), "http://app.com/cb#code=xyz&state=a%20b");
    }
}
