//! loggly's config (priority 6): the Loggly syslog endpoint, customer token and tags, and
//! the same severity selection as syslog.

use super::field::{Field, Fill, Kind, Table};
use super::syslog::LEVELS;
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "loggly",
    6,
    Table::new(&[
        Field::new("host", Kind::String).default(Fill::Str("logs-01.loggly.com")),
        Field::new("port", Kind::Number).default(Fill::Int(514)),
        Field::new("key", Kind::String).required(),
        Field::new("tags", Kind::Array).default(Fill::List(&["kong"])),
        Field::new("log_level", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("successful_severity", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("client_errors_severity", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("server_errors_severity", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("timeout", Kind::Number).default(Fill::Int(10_000)),
    ]),
);
