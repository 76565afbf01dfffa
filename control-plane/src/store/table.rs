//! The entity tables and which document fields each keeps as a real column.

use serde_json::Value;

use super::Doc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Services,
    Routes,
    Consumers,
    Certificates,
    Snis,
    Plugins,
    Upstreams,
    Targets,
    /// Manual target health (`POST /upstreams/{u}/targets/{t}/healthy|unhealthy`), kept
    /// until superseded so data planes that connect later apply it too.
    TargetHealth,
}

/// A column and the path of the document field that fills it.
type Column = (&'static str, &'static [&'static str]);

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Services,
        Table::Routes,
        Table::Consumers,
        Table::Certificates,
        Table::Snis,
        Table::Plugins,
        Table::Upstreams,
        Table::Targets,
        Table::TargetHealth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Services => "services",
            Table::Routes => "routes",
            Table::Consumers => "consumers",
            Table::Certificates => "certificates",
            Table::Snis => "snis",
            Table::Plugins => "plugins",
            Table::Upstreams => "upstreams",
            Table::Targets => "targets",
            Table::TargetHealth => "target_health",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Columns besides `id`, `created_at` and `doc`.
    pub(super) fn columns(self) -> &'static [Column] {
        match self {
            Table::Services => &[("name", &["name"])],
            Table::Routes => &[("service_id", &["service", "id"])],
            Table::Consumers => &[("username", &["username"]), ("custom_id", &["custom_id"])],
            Table::Certificates => &[],
            Table::Snis => &[("name", &["name"]), ("certificate_id", &["certificate", "id"])],
            Table::Plugins => &[
                ("name", &["name"]),
                ("service_id", &["service_id"]),
                ("route_id", &["route_id"]),
                ("consumer_id", &["consumer_id"]),
            ],
            Table::Upstreams => &[("name", &["name"])],
            Table::Targets | Table::TargetHealth => &[("upstream_id", &["upstream_id"]), ("target", &["target"])],
        }
    }

    pub(super) fn has_column(self, name: &str) -> bool {
        self.columns().iter().any(|(c, _)| *c == name)
    }
}

/// A column's value read from the document: strings as they are, other scalars as text.
pub(super) fn column_value(doc: &Doc, path: &[&str]) -> Option<String> {
    let mut v = doc.get(*path.first()?)?;
    for key in &path[1..] {
        v = v.get(*key)?;
    }
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
