//! hmac-auth (kong-0.14-plugins §4.3): an HMAC signature over chosen headers and the request
//! line, with a clock-skew window and optional body digest.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;

use ring::hmac;
use serde_json::Value;

use super::auth::{self, anonymous};
use super::{Access, BuildError, Credential, Plugin, Rejected, Reply, RequestCtx};
use crate::credentials::HmacAuth as HmacCredential;
use gatehouse_shared::snapshot::strings;

const CANNOT_VERIFY: &str = "HMAC signature cannot be verified";
const NO_DATE: &str =
    "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";
const MISMATCH: &str = "HMAC signature does not match";

pub struct HmacAuth {
    hide_credentials: bool,
    clock_skew: Duration,
    anonymous: Option<Arc<str>>,
    validate_request_body: bool,
    enforce_headers: Vec<String>,
    algorithms: Vec<String>,
}

/// The parameters of an `hmac …` authorization value.
#[derive(Debug, Default, PartialEq)]
struct Params {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: String,
}

/// Kong's grammar for the value, exactly: fixed parameter names in a fixed order, each value
/// quoted and greedy, anywhere in the header (the match is not anchored). A value that does
/// not match has no parameters, and is refused as unverifiable.
static GRAMMAR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r#"(?-u:\s)*[Hh]mac(?-u:\s)*username="(.+)",(?-u:\s)*algorithm="(.+)",(?-u:\s)*headers="(.+)",(?-u:\s)*signature="(.+)""#,
    )
    .unwrap_or_else(|e| unreachable!("the hmac grammar is a valid regex: {e}"))
});

fn parse(value: &str) -> Option<Params> {
    let m = GRAMMAR.captures(value)?;
    let group = |i| m.get(i).map_or("", |g| g.as_str());
    Some(Params {
        username: group(1).to_owned(),
        algorithm: group(2).to_owned(),
        // Kong splits on single spaces, keeping empty names.
        headers: group(3).split(' ').map(str::to_owned).collect(),
        signature: group(4).to_owned(),
    })
}

fn algorithm(name: &str) -> Option<hmac::Algorithm> {
    Some(match name {
        "hmac-sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => hmac::HMAC_SHA256,
        "hmac-sha384" => hmac::HMAC_SHA384,
        "hmac-sha512" => hmac::HMAC_SHA512,
        _ => return None,
    })
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2.0",
        _ => "1.1",
    }
}

impl HmacAuth {
    pub fn new(config: &Value) -> Result<HmacAuth, BuildError> {
        let mut algorithms = strings(config, "algorithms");
        if algorithms.is_empty() {
            algorithms = ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"].map(str::to_owned).to_vec();
        }
        let skew = config.get("clock_skew").and_then(Value::as_f64).unwrap_or(300.0).max(0.0);
        Ok(HmacAuth {
            hide_credentials: config.get("hide_credentials").and_then(Value::as_bool).unwrap_or(false),
            clock_skew: Duration::from_secs_f64(skew),
            anonymous: anonymous(config),
            validate_request_body: config.get("validate_request_body").and_then(Value::as_bool).unwrap_or(false),
            enforce_headers: strings(config, "enforce_headers"),
            algorithms,
        })
    }

    fn date_ok(&self, ctx: &RequestCtx<'_>) -> bool {
        let now = SystemTime::now();
        ["x-date", "date"].iter().any(|h| {
            ctx.header(h).and_then(|d| httpdate::parse_http_date(d).ok()).is_some_and(|t| {
                let diff = now.duration_since(t).or_else(|_| t.duration_since(now)).unwrap_or_default();
                diff <= self.clock_skew
            })
        })
    }

    fn signing_string(ctx: &RequestCtx<'_>, headers: &[String], request_line: &str) -> String {
        let mut lines = Vec::with_capacity(headers.len());
        for name in headers {
            if name.eq_ignore_ascii_case("request-line") {
                lines.push(request_line.to_string());
            } else {
                let value = ctx.headers.get(name.as_str()).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                lines.push(format!("{name}:{}", value.map(|v| format!(" {v}")).unwrap_or_default()));
            }
        }
        lines.join("\n")
    }

    /// Steps 2–6 of the reference; the body digest (step 7) is checked by the caller.
    fn verify(&self, ctx: &mut RequestCtx<'_>) -> Result<Option<(Arc<HmacCredential>, String)>, Rejected> {
        if !ctx.headers.contains_key("authorization") && !ctx.headers.contains_key("proxy-authorization") {
            auth::fail(ctx, self.anonymous.as_ref(), Reply::message(401, "Unauthorized"))?;
            return Ok(None);
        }
        if !self.date_ok(ctx) {
            auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, NO_DATE))?;
            return Ok(None);
        }
        let mut params = None;
        for header in ["proxy-authorization", "authorization"] {
            let parsed = ctx.header(header).and_then(parse);
            if ctx.headers.contains_key(header) && self.hide_credentials {
                ctx.headers.remove(header);
            }
            if parsed.is_some() {
                params = parsed;
                break;
            }
        }
        let creds = ctx.creds;
        let checked = params.filter(|p| {
            self.enforce_headers.iter().all(|h| p.headers.contains(h)) && self.algorithms.contains(&p.algorithm)
        });
        let Some((p, cred)) = checked.and_then(|p| creds.hmac.get(p.username.as_str()).map(|c| (p, c.clone()))) else {
            auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, CANNOT_VERIFY))?;
            return Ok(None);
        };
        let (Some(alg), Ok(signature)) =
            (algorithm(&p.algorithm), base64::engine::general_purpose::STANDARD.decode(&p.signature))
        else {
            auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, MISMATCH))?;
            return Ok(None);
        };
        let key = hmac::Key::new(alg, cred.secret.as_bytes());
        let v = version(ctx.version);
        let line = format!("{} {} HTTP/{v}", ctx.method, ctx.target);
        let mut ok = hmac::verify(&key, Self::signing_string(ctx, &p.headers, &line).as_bytes(), &signature).is_ok();
        if !ok {
            // Kong's compatibility retry: the decoded path without the query.
            let decoded = percent_encoding::percent_decode_str(ctx.path).decode_utf8_lossy().into_owned();
            let line = format!("{} {decoded} HTTP/{v}", ctx.method);
            ok = hmac::verify(&key, Self::signing_string(ctx, &p.headers, &line).as_bytes(), &signature).is_ok();
        }
        if !ok {
            auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, MISMATCH))?;
            return Ok(None);
        }
        Ok(Some((cred, p.username)))
    }

    fn finish(&self, ctx: &mut RequestCtx<'_>, cred: Arc<HmacCredential>, username: &str) -> Result<(), Rejected> {
        let Some(consumer) = ctx.creds.owner(&*cred).cloned() else { return Err(Reply::unexpected().build()) };
        auth::authenticated(ctx, consumer, Credential::of(&*cred), Some(username));
        Ok(())
    }

    fn with_body(&self, ctx: &mut RequestCtx<'_>, cred: Arc<HmacCredential>, username: &str) -> Result<(), Rejected> {
        // A body too large to hold cannot be checked against its digest: refused.
        let Some(body) = ctx.read_body() else {
            return auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, MISMATCH));
        };
        let digest = ctx.header("digest").map(str::to_owned);
        let ok = match digest {
            None => body.is_empty(),
            Some(d) => {
                let sum = ring::digest::digest(&ring::digest::SHA256, &body);
                let expected = format!("SHA-256={}", base64::engine::general_purpose::STANDARD.encode(sum.as_ref()));
                auth::same_secret(d.as_bytes(), expected.as_bytes())
            }
        };
        if !ok {
            return auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, MISMATCH));
        }
        self.finish(ctx, cred, username)
    }
}

impl Plugin for HmacAuth {
    fn name(&self) -> &'static str {
        "hmac-auth"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn reads_body(&self, _chunked: bool) -> bool {
        self.validate_request_body
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        match self.verify(ctx) {
            Err(r) => Access::Respond(r),
            Ok(None) => Access::Continue,
            Ok(Some((cred, username))) if self.validate_request_body => self.with_body(ctx, cred, &username).into(),
            Ok(Some((cred, username))) => self.finish(ctx, cred, &username).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_authorization_value() {
        let p = parse(r#"hmac username="bob", algorithm="hmac-sha256", headers="date request-line", signature="c2ln""#)
            .unwrap();
        assert_eq!(p.username, "bob");
        assert_eq!(p.headers, ["date", "request-line"]);
        assert_eq!(p.signature, "c2ln");
        assert!(parse("Basic Ym9iOnB3").is_none());
        // Parameters out of Kong's order, or misspelt, do not parse.
        assert!(parse(r#"hmac algorithm="hmac-sha256", username="bob", headers="date", signature="c2ln""#).is_none());
        assert!(
            parse(r#"hmac username="bob", algorithm="hmac-sha256", headers="date", wrong_signature="c2ln""#).is_none()
        );
        assert!(parse(r#"HMAC username="bob", algorithm="hmac-sha256", headers="date", signature="c2ln""#).is_none());
    }
}
