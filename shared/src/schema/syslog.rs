//! syslog's config (priority 4): which severity each class of response is logged at, and
//! the threshold below which nothing is logged.

use super::field::{Field, Fill, Kind, Table};
use super::PluginSchema;

/// Syslog severities, least to most severe. loggly uses the same set.
pub(super) const LEVELS: &[&str] = &["debug", "info", "notice", "warning", "err", "crit", "alert", "emerg"];

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "syslog",
    4,
    Table::new(&[
        Field::new("log_level", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("successful_severity", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("client_errors_severity", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
        Field::new("server_errors_severity", Kind::String).one_of(LEVELS).default(Fill::Str("info")),
    ]),
);
