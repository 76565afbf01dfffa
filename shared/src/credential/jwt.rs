//! jwt's `jwt_secrets`: the key tokens name (unique), the HMAC secret, the algorithm and, for
//! the RSA algorithms, the PEM public key that verifies signatures.

use serde_json::Value;

use super::{rsa_public_key_der, CredentialSchema, CONSUMER_ID};
use crate::schema::checks::random_string;
use crate::schema::field::{Field, Fill, Kind, Object, Table};

/// The algorithms a jwt secret may use.
pub const JWT_ALGORITHMS: [&str; 6] = ["HS256", "HS384", "HS512", "RS256", "RS512", "ES256"];

pub static JWT_SECRETS: CredentialSchema = CredentialSchema::new(
    "jwt_secrets",
    "consumer_id",
    "key",
    Table::new(&[
        CONSUMER_ID,
        Field::new("key", Kind::String).unique().default(Fill::Computed(random_string)),
        Field::new("secret", Kind::String).default(Fill::Computed(random_string)),
        Field::new("rsa_public_key", Kind::String),
        Field::new("algorithm", Kind::String).default(Fill::Str("HS256")).one_of(&JWT_ALGORITHMS),
    ])
    .self_check(rsa_key_present_and_valid),
);

/// RS256/RS512 verify with the public key, so it must be there and parse. ES256 keys are
/// not checked at creation (as in Kong).
fn rsa_key_present_and_valid(t: &Object) -> Result<(), String> {
    if !matches!(t.get("algorithm").and_then(Value::as_str), Some("RS256" | "RS512")) {
        return Ok(());
    }
    match t.get("rsa_public_key").and_then(Value::as_str) {
        None => Err("no mandatory 'rsa_public_key'".to_string()),
        Some(pem) if rsa_public_key_der(pem).is_none() => Err("'rsa_public_key' format is invalid".to_string()),
        Some(_) => Ok(()),
    }
}
