//! key-auth's `keyauth_credentials`: one API key per row, unique across consumers.

use super::{CredentialSchema, CONSUMER_ID};
use crate::schema::checks::random_string;
use crate::schema::field::{Field, Fill, Kind, Table};

pub static KEYAUTH_CREDENTIALS: CredentialSchema = CredentialSchema::new(
    "keyauth_credentials",
    "consumer_id",
    "key",
    Table::new(&[CONSUMER_ID, Field::new("key", Kind::String).unique().default(Fill::Computed(random_string))]),
);
