//! The SNI entity: a server name mapped to a certificate.

use super::{Field, Kind, Schema};

pub static SNI: Schema = Schema {
    name: "snis",
    has_updated_at: false,
    fields: &[Field::new("name", Kind::Str).required(), Field::new("certificate", Kind::Foreign).required()],
    entity_check: None,
};
