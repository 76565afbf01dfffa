//! hmac-auth's `hmacauth_credentials`: a username (unique) and the shared HMAC secret.

use super::{CredentialSchema, CONSUMER_ID};
use crate::schema::checks::random_string;
use crate::schema::field::{Field, Fill, Kind, Table};

pub static HMACAUTH_CREDENTIALS: CredentialSchema = CredentialSchema::new(
    "hmacauth_credentials",
    "consumer_id",
    "username",
    Table::new(&[
        CONSUMER_ID,
        Field::new("username", Kind::String).required().unique(),
        Field::new("secret", Kind::String).default(Fill::Computed(random_string)),
    ]),
);
