//! The entity tables and which document fields each keeps as a real column.

use serde_json::Value;

use super::Doc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    // Credentials of the auth plugins: the table names are the entity names of
    // `gatehouse_shared::credential`.
    KeyauthCredentials,
    BasicauthCredentials,
    HmacauthCredentials,
    JwtSecrets,
    Acls,
    Oauth2Credentials,
    Oauth2Tokens,
    Oauth2AuthorizationCodes,
}

/// A column and the path of the document field that fills it.
type Column = (&'static str, &'static [&'static str]);

impl Table {
    pub const ALL: [Table; 17] = [
        Table::Services,
        Table::Routes,
        Table::Consumers,
        Table::Certificates,
        Table::Snis,
        Table::Plugins,
        Table::Upstreams,
        Table::Targets,
        Table::TargetHealth,
        Table::KeyauthCredentials,
        Table::BasicauthCredentials,
        Table::HmacauthCredentials,
        Table::JwtSecrets,
        Table::Acls,
        Table::Oauth2Credentials,
        Table::Oauth2Tokens,
        Table::Oauth2AuthorizationCodes,
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
            Table::KeyauthCredentials => "keyauth_credentials",
            Table::BasicauthCredentials => "basicauth_credentials",
            Table::HmacauthCredentials => "hmacauth_credentials",
            Table::JwtSecrets => "jwt_secrets",
            Table::Acls => "acls",
            Table::Oauth2Credentials => "oauth2_credentials",
            Table::Oauth2Tokens => "oauth2_tokens",
            Table::Oauth2AuthorizationCodes => "oauth2_authorization_codes",
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
            Table::KeyauthCredentials | Table::JwtSecrets => &[("consumer_id", &["consumer_id"]), ("key", &["key"])],
            Table::BasicauthCredentials | Table::HmacauthCredentials => {
                &[("consumer_id", &["consumer_id"]), ("username", &["username"])]
            }
            Table::Acls => &[("consumer_id", &["consumer_id"]), ("group", &["group"])],
            Table::Oauth2Credentials => &[("consumer_id", &["consumer_id"]), ("client_id", &["client_id"])],
            Table::Oauth2Tokens => &[
                ("credential_id", &["credential_id"]),
                ("service_id", &["service_id"]),
                ("access_token", &["access_token"]),
                ("refresh_token", &["refresh_token"]),
            ],
            Table::Oauth2AuthorizationCodes => {
                &[("credential_id", &["credential_id"]), ("service_id", &["service_id"]), ("code", &["code"])]
            }
        }
    }

    pub(super) fn has_column(self, name: &str) -> bool {
        self.columns().iter().any(|(c, _)| *c == name)
    }
}

/// A column name quoted for SQL: some are keywords (`key`, `group`). Lower-case names mean
/// the same quoted or not on both backends.
pub(super) fn quoted(column: &str) -> String {
    format!("\"{column}\"")
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
