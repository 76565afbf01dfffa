//! acl's `acls`: the groups a consumer belongs to. A group appears once per consumer; the
//! control plane enforces that, as it needs the consumer's other rows.

use super::{CredentialSchema, CONSUMER_ID};
use crate::schema::field::{Field, Kind, Table};

pub static ACLS: CredentialSchema = CredentialSchema::new(
    "acls",
    "consumer_id",
    "group",
    Table::new(&[CONSUMER_ID, Field::new("group", Kind::String).required()]),
);
