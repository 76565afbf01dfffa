//! What the authentication plugins share (kong-0.14-plugins §3): the consumer headers, the
//! `anonymous` fallback and OR-chaining, constant-time secret comparison.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{Consumer, Credential, Rejected, Reply, RequestCtx};

// Header names made once: a `&str` name is parsed and checked again on every insert and remove.
pub const X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub const X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
pub const X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub const X_CREDENTIAL_USERNAME: HeaderName = HeaderName::from_static("x-credential-username");
pub const X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// The `anonymous` setting: a consumer id, or empty for none.
pub fn anonymous(config: &Value) -> Option<Arc<str>> {
    config.get("anonymous").and_then(Value::as_str).filter(|s| !s.is_empty()).map(Into::into)
}

/// OR-chaining: with `anonymous` set, a request another auth plugin already authenticated
/// is left alone.
pub fn already_authenticated(ctx: &RequestCtx<'_>, anonymous: Option<&Arc<str>>) -> bool {
    anonymous.is_some() && ctx.credential.is_some()
}

/// Sets or removes a header.
fn put(ctx: &mut RequestCtx<'_>, name: HeaderName, value: Option<&HeaderValue>) {
    match value {
        Some(v) => {
            ctx.headers.insert(name, v.clone());
        }
        None => {
            ctx.headers.remove(&name);
        }
    }
}

/// Records a successful authentication and sets the X-Consumer-* headers (removing those the
/// consumer has no value for, and any client-sent X-Anonymous-Consumer).
pub fn authenticated(
    ctx: &mut RequestCtx<'_>,
    consumer: Arc<Consumer>,
    credential: Credential,
    credential_username: Option<&str>,
) {
    put(ctx, X_CONSUMER_ID, Some(&consumer.id_header));
    put(ctx, X_CONSUMER_CUSTOM_ID, consumer.custom_id.as_ref());
    put(ctx, X_CONSUMER_USERNAME, consumer.username.as_ref());
    match credential_username.and_then(|u| HeaderValue::from_str(u).ok()) {
        Some(v) => {
            ctx.headers.insert(X_CREDENTIAL_USERNAME, v);
        }
        None => {
            ctx.headers.remove(&X_CREDENTIAL_USERNAME);
        }
    }
    ctx.headers.remove(&X_ANONYMOUS_CONSUMER);
    ctx.consumer = Some(consumer);
    ctx.credential = Some(credential);
}

/// A failed authentication: the anonymous consumer when configured, else `reject`.
///
/// # Errors
/// `reject` without `anonymous`; a 500 when the anonymous consumer does not exist.
pub fn fail(ctx: &mut RequestCtx<'_>, anonymous: Option<&Arc<str>>, reject: Reply) -> Result<(), Rejected> {
    let Some(id) = anonymous else { return Err(reject.build()) };
    let Some(consumer) = ctx.creds.consumers.get(id).cloned() else {
        tracing::error!(anonymous = %id, "anonymous consumer not found");
        return Err(Reply::unexpected().build());
    };
    put(ctx, X_CONSUMER_ID, Some(&consumer.id_header));
    put(ctx, X_CONSUMER_CUSTOM_ID, consumer.custom_id.as_ref());
    put(ctx, X_CONSUMER_USERNAME, consumer.username.as_ref());
    ctx.headers.insert(X_ANONYMOUS_CONSUMER, HeaderValue::from_static("true"));
    ctx.consumer = Some(consumer);
    Ok(())
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

/// How the scheme word of an Authorization value is matched.
#[derive(Clone, Copy)]
pub enum Scheme<'a> {
    /// Kong's `[Bb]asic`: the name with its first letter in either case, the rest lower-case.
    Capitalised(&'a str),
    /// ldap-auth's `header_type`, compared in lower case.
    AnyCase(&'a str),
}

impl Scheme<'_> {
    fn matches(self, word: &str) -> bool {
        match self {
            Scheme::AnyCase(name) => word.eq_ignore_ascii_case(name),
            Scheme::Capitalised(name) => {
                let mut chars = word.chars();
                let first = chars.next().map(|c| c.to_ascii_lowercase());
                first.is_some() && first == name.chars().next() && chars.as_str() == &name[1..]
            }
        }
    }
}

/// `user:password` from `<scheme> <base64>`, splitting at the first colon (basic-auth) or the
/// last (ldap-auth).
pub fn decode_user_pass(value: &str, scheme: Scheme<'_>, split_last: bool) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = value.trim_start();
    let (word, rest) = value.split_at(value.find(char::is_whitespace)?);
    if !scheme.matches(word) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = if split_last { text.rsplit_once(':')? } else { text.split_once(':')? };
    (!user.is_empty()).then(|| (user.to_string(), pass.to_string()))
}
