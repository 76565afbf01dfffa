//! jwt (kong-0.14-plugins §4.4): a signed token from the query, a cookie or a Bearer header,
//! verified with the credential its key claim names (HS256/384/512, RS256/512, ES256).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use http::Method;
use ring::{hmac, signature};
use serde_json::{json, Value};

use super::auth::{self, anonymous};
use super::{Access, BuildError, Credential, Plugin, Rejected, Reply, RequestCtx};
use gatehouse_shared::snapshot::strings;

use crate::credentials::public_key;

pub struct Jwt {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    key_claim_name: String,
    secret_is_base64: bool,
    claims_to_verify: Vec<String>,
    anonymous: Option<Arc<str>>,
    run_on_preflight: bool,
    maximum_expiration: f64,
}

/// Base64 in either alphabet (`-_` or `+/`), padding optional, as Kong's decoder accepts.
fn b64url(s: &str) -> Option<Vec<u8>> {
    let normalized: String = s
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(normalized).ok()
}

/// Checks a signature with an HMAC secret, or with a key from [`public_key`](crate::credentials::public_key).
fn verify_parsed(alg: &str, key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let hs = |a| hmac::verify(&hmac::Key::new(a, key), message, sig).is_ok();
    let public = |a: &'static dyn signature::VerificationAlgorithm| {
        signature::UnparsedPublicKey::new(a, key).verify(message, sig).is_ok()
    };
    match alg {
        "HS256" => hs(hmac::HMAC_SHA256),
        "HS384" => hs(hmac::HMAC_SHA384),
        "HS512" => hs(hmac::HMAC_SHA512),
        "RS256" => public(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS512" => public(&signature::RSA_PKCS1_2048_8192_SHA512),
        "ES256" => public(&signature::ECDSA_P256_SHA256_FIXED),
        _ => false,
    }
}

/// Checks a signature with an HMAC secret or a PEM public key as stored.
fn verify(alg: &str, key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    if alg.starts_with("HS") {
        return verify_parsed(alg, key, message, sig);
    }
    let parsed = std::str::from_utf8(key).ok().and_then(|pem| public_key(alg, pem));
    parsed.is_some_and(|k| verify_parsed(alg, &k, message, sig))
}

/// Whole seconds, as nginx's `ngx.time()` that Kong compares claims with.
fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs() as f64)
}

impl Jwt {
    pub fn new(config: &Value) -> Result<Jwt, BuildError> {
        let mut uri_param_names = strings(config, "uri_param_names");
        if config.get("uri_param_names").is_none() {
            uri_param_names = vec!["jwt".into()];
        }
        Ok(Jwt {
            uri_param_names,
            cookie_names: strings(config, "cookie_names"),
            key_claim_name: config.get("key_claim_name").and_then(Value::as_str).unwrap_or("iss").to_string(),
            secret_is_base64: config.get("secret_is_base64").and_then(Value::as_bool).unwrap_or(false),
            claims_to_verify: strings(config, "claims_to_verify"),
            anonymous: anonymous(config),
            run_on_preflight: config.get("run_on_preflight").and_then(Value::as_bool).unwrap_or(true),
            maximum_expiration: config.get("maximum_expiration").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }

    /// The token, or the 401 message when it is missing or ambiguous.
    fn token(&self, ctx: &RequestCtx<'_>) -> Result<String, &'static str> {
        for name in &self.uri_param_names {
            let mut args = ctx.query_values(name);
            match (args.pop(), args.is_empty()) {
                (None, _) => {}
                (Some(Some(token)), true) => return Ok(token),
                // `?jwt` with no `=`: nginx gives `true`, which Kong cannot read as a token.
                (Some(None), true) => return Err("Unrecognizable token"),
                (Some(_), false) => return Err("Multiple tokens provided"),
            }
        }
        for name in &self.cookie_names {
            if let Some(v) = crate::balancer::hash::cookie_value(ctx.headers, name) {
                if !v.is_empty() {
                    return Ok(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        if let Some(value) = ctx.header("authorization") {
            let mut parts = value.split_whitespace();
            if parts.next().is_some_and(|s| s == "Bearer" || s == "bearer") {
                if let Some(t) = parts.next() {
                    return Ok(t.to_string());
                }
            }
        }
        Err("Unauthorized")
    }

    fn check(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let fail = |ctx: &mut RequestCtx<'_>, r: Reply| auth::fail(ctx, self.anonymous.as_ref(), r);
        let token = match self.token(ctx) {
            Ok(t) => t,
            Err(msg) => return fail(ctx, Reply::message(401, msg)),
        };
        let segments: Vec<&str> = token.split('.').collect();
        let [h64, c64, s64] = segments.as_slice() else {
            return fail(ctx, Reply::message(401, "Bad token; invalid JSON"));
        };
        let decode = |s: &str| b64url(s).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let (Some(header), Some(claims)) = (decode(h64), decode(c64)) else {
            return fail(ctx, Reply::message(401, "Bad token; invalid JSON"));
        };
        if header.get("typ").and_then(Value::as_str).is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
            return fail(ctx, Reply::message(401, "Bad token; invalid typ"));
        }
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default().to_string();
        if !gatehouse_shared::credential::JWT_ALGORITHMS.contains(&alg.as_str()) {
            return fail(ctx, Reply::message(401, "Bad token; invalid alg"));
        }
        if !claims.is_object() {
            return fail(ctx, Reply::message(401, "Bad token; invalid claims"));
        }
        let Some(signature) = b64url(s64) else {
            return fail(ctx, Reply::message(401, "Bad token; invalid signature"));
        };
        let claim = &self.key_claim_name;
        let key = claims.get(claim).or_else(|| header.get(claim)).and_then(Value::as_str).map(str::to_owned);
        let Some(key) = key else {
            return fail(ctx, Reply::message(401, &format!("No mandatory '{claim}' in claims")));
        };
        let creds = ctx.creds;
        let Some(cred) = creds.jwt.get(key.as_str()) else {
            return fail(ctx, Reply::message(403, &format!("No credentials found for given '{claim}'")));
        };
        if cred.algorithm.as_deref().unwrap_or("HS256") != alg {
            return fail(ctx, Reply::message(403, "Invalid algorithm"));
        }
        let message = format!("{h64}.{c64}");
        // Public keys were parsed when the configuration compiled; a secret stored as base64
        // (`secret_is_base64`) is decoded per request, as Kong does.
        let parsed =
            if alg.starts_with("HS") || self.secret_is_base64 { None } else { creds.jwt_public_keys.get(&cred.id) };
        let verified = match parsed {
            Some(key) => verify_parsed(&alg, key, message.as_bytes(), &signature),
            None => {
                let material = if alg.starts_with("HS") { &cred.secret } else { &cred.rsa_public_key };
                let mut key_bytes = material.as_bytes().to_vec();
                if self.secret_is_base64 {
                    key_bytes = b64url(&String::from_utf8_lossy(&key_bytes)).unwrap_or_default();
                }
                if key_bytes.is_empty() {
                    return fail(ctx, Reply::message(403, "Invalid key/secret"));
                }
                verify(&alg, &key_bytes, message.as_bytes(), &signature)
            }
        };
        if !verified {
            return fail(ctx, Reply::message(403, "Invalid signature"));
        }
        let mut errors = BTreeMap::new();
        let now = now();
        for c in &self.claims_to_verify {
            // A listed claim that is absent fails like one that is not a number: an operator
            // who requires `exp` must not be bypassed by a token that simply omits it.
            let Some(n) = claims.get(c.as_str()).and_then(Value::as_f64) else {
                errors.insert(c.clone(), "must be a number");
                continue;
            };
            match c.as_str() {
                "exp" if n <= now => {
                    errors.insert(c.clone(), "token expired");
                }
                "nbf" if n > now => {
                    errors.insert(c.clone(), "token not valid yet");
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            return fail(ctx, Reply::object(401, &json!(errors)));
        }
        if self.maximum_expiration > 0.0 {
            let exp = claims.get("exp").and_then(Value::as_f64);
            if exp.is_none_or(|e| e - now > self.maximum_expiration) {
                return fail(ctx, Reply::object(403, &json!({"exp": "exceeds maximum allowed expiration"})));
            }
        }
        let Some(consumer) = creds.owner(&**cred) else {
            return fail(ctx, Reply::message(403, &format!("Could not find consumer for '{claim}={key}'")));
        };
        auth::authenticated(ctx, consumer.clone(), Credential::of(&**cred), None);
        Ok(())
    }
}

impl Plugin for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if !self.run_on_preflight && ctx.method == Method::OPTIONS {
            return Access::Continue;
        }
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        self.check(ctx).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_round_trip() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        let sig = hmac::sign(&key, b"a.b");
        assert!(verify("HS256", b"secret", b"a.b", sig.as_ref()));
        assert!(!verify("HS256", b"other", b"a.b", sig.as_ref()));
        assert!(!verify("RS256", b"not a pem", b"a.b", sig.as_ref()));
    }
}
