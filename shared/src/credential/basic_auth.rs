//! basic-auth's `basicauth_credentials`: a username (unique) and the password, stored as the
//! lower-case hex SHA-1 of `password ‖ consumer_id` and never in plain text.

use ring::digest::{digest as sha, SHA1_FOR_LEGACY_USE_ONLY};
use serde_json::Value;

use super::{CredentialSchema, CONSUMER_ID};
use crate::schema::field::{Field, Kind, Object, Table};

pub static BASICAUTH_CREDENTIALS: CredentialSchema = CredentialSchema::new(
    "basicauth_credentials",
    "consumer_id",
    "username",
    Table::new(&[
        CONSUMER_ID,
        Field::new("username", Kind::String).required().unique(),
        // Passwords may start or end with spaces: they are not trimmed.
        Field::new("password", Kind::String).keep_whitespace(),
    ]),
)
.finish(hash_password);

/// What basic-auth stores for `password`: hex SHA-1 of the password followed by the owning
/// consumer's id (an absent password counts as empty). The data plane compares the digest of
/// the presented password with it.
pub fn digest(password: &str, consumer_id: &str) -> String {
    let mut salted = Vec::with_capacity(password.len() + consumer_id.len());
    salted.extend_from_slice(password.as_bytes());
    salted.extend_from_slice(consumer_id.as_bytes());
    sha(&SHA1_FOR_LEGACY_USE_ONLY, &salted).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes the password unless it is the stored digest itself (an update that kept the
/// password sends the digest back). On create Kong hashes even an absent password.
fn hash_password(stored: Option<&Object>, t: &mut Object) {
    let given = t.get("password").and_then(Value::as_str);
    let kept = stored.and_then(|s| s.get("password")).and_then(Value::as_str);
    if given.is_some() && given == kept {
        return;
    }
    let consumer_id = t.get("consumer_id").and_then(Value::as_str).unwrap_or_default();
    let hashed = digest(given.unwrap_or_default(), consumer_id);
    t.insert("password".to_string(), Value::String(hashed));
}
