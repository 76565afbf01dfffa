//! ldap-auth's config (priority 1002, no consumer): the LDAP server to bind against and how
//! the bind DN is built. There is no credential entity; the server is the source of truth.

use super::checks;
use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "ldap-auth",
    1002,
    Table::new(&[
        Field::new("ldap_host", Kind::String).required(),
        Field::new("ldap_port", Kind::Number).required(),
        Field::new("start_tls", Kind::Boolean).required().default(Fill::Bool(false)),
        Field::new("verify_ldap_host", Kind::Boolean).required().default(Fill::Bool(false)),
        Field::new("base_dn", Kind::String).required(),
        Field::new("attribute", Kind::String).required(),
        Field::new("cache_ttl", Kind::Number).required().default(Fill::Int(60)),
        Field::new("hide_credentials", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("timeout", Kind::Number).default(Fill::Int(10_000)),
        Field::new("keepalive", Kind::Number).default(Fill::Int(60_000)),
        Field::new("anonymous", Kind::String).default(Fill::Str("")).check(checks::anonymous),
        Field::new("header_type", Kind::String).default(Fill::Str("ldap")),
    ])
    .no_consumer(),
);
