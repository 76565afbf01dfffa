//! oauth2's entities: `oauth2_credentials` (the client applications of a consumer),
//! `oauth2_tokens` and `oauth2_authorization_codes` (issued for an application, optionally
//! bound to a service).

use serde_json::Value;

use super::{uuid, CredentialSchema, CONSUMER_ID};
use crate::schema::checks::random_string;
use crate::schema::coerce::is_url;
use crate::schema::field::{Field, Fill, Kind, Object, Table};
use crate::schema::validate::display;

pub static OAUTH2_CREDENTIALS: CredentialSchema = CredentialSchema::new(
    "oauth2_credentials",
    "consumer_id",
    "client_id",
    Table::new(&[
        CONSUMER_ID,
        Field::new("name", Kind::String).required(),
        Field::new("client_id", Kind::String).unique().default(Fill::Computed(random_string)),
        Field::new("client_secret", Kind::String).default(Fill::Computed(random_string)),
        Field::new("redirect_uri", Kind::Array).required().check(redirect_uris),
    ]),
);

const CREDENTIAL_ID: Field = Field::new("credential_id", Kind::String).required().check(uuid);
const SERVICE_ID: Field = Field::new("service_id", Kind::String).check(uuid);

pub static OAUTH2_TOKENS: CredentialSchema = CredentialSchema::new(
    "oauth2_tokens",
    "credential_id",
    "access_token",
    Table::new(&[
        CREDENTIAL_ID,
        SERVICE_ID,
        Field::new("token_type", Kind::String).required().default(Fill::Str("bearer")).one_of(&["bearer"]),
        Field::new("expires_in", Kind::Number).required(),
        Field::new("access_token", Kind::String).unique().default(Fill::Computed(random_string)),
        Field::new("refresh_token", Kind::String).unique(),
        Field::new("authenticated_userid", Kind::String),
        Field::new("scope", Kind::String),
    ]),
)
.finish(refresh_token_for_expiring);

pub static OAUTH2_AUTHORIZATION_CODES: CredentialSchema = CredentialSchema::new(
    "oauth2_authorization_codes",
    "credential_id",
    "code",
    Table::new(&[
        CREDENTIAL_ID,
        SERVICE_ID,
        Field::new("code", Kind::String).unique().default(Fill::Computed(random_string)),
        Field::new("authenticated_userid", Kind::String),
        Field::new("scope", Kind::String),
    ]),
);

/// At least one URI, each with a scheme and a host and without a fragment.
fn redirect_uris(value: Option<&Value>, _: &Object) -> Result<(), String> {
    let Some(Value::Array(uris)) = value else { return Ok(()) };
    if uris.is_empty() {
        return Err("at least one URI is required".to_string());
    }
    for uri in uris {
        let uri = display(uri);
        if !is_url(&uri) {
            return Err(format!("cannot parse '{uri}'"));
        }
        if uri.contains('#') {
            return Err(format!("fragment not allowed in '{uri}'"));
        }
    }
    Ok(())
}

/// A token created with a lifetime gets a refresh token unless one was given; a token that
/// never expires (`expires_in` 0) has none, as the token endpoint issues them.
fn refresh_token_for_expiring(stored: Option<&Object>, t: &mut Object) {
    let expires = t.get("expires_in").and_then(Value::as_f64).unwrap_or(0.0);
    if stored.is_none() && expires > 0.0 && !t.contains_key("refresh_token") {
        t.insert("refresh_token".to_string(), random_string());
    }
}
