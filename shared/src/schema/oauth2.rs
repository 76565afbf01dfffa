//! oauth2's config (priority 1004, no consumer): enabled grant flows, scopes, token
//! lifetimes and the provision key shared with the consent application.

use serde_json::Value;

use super::checks;
use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "oauth2",
    1004,
    Table::new(&[
        Field::new("scopes", Kind::Array).optional(),
        Field::new("mandatory_scope", Kind::Boolean)
            .required()
            .default(Fill::Bool(false))
            .check(mandatory_scope_needs_scopes),
        Field::new("provision_key", Kind::String).optional().unique().default(Fill::Computed(checks::random_string)),
        Field::new("token_expiration", Kind::Number).required().default(Fill::Int(7200)),
        Field::new("enable_authorization_code", Kind::Boolean).required().default(Fill::Bool(false)),
        Field::new("enable_implicit_grant", Kind::Boolean).required().default(Fill::Bool(false)),
        Field::new("enable_client_credentials", Kind::Boolean).required().default(Fill::Bool(false)),
        Field::new("enable_password_grant", Kind::Boolean).required().default(Fill::Bool(false)),
        Field::new("hide_credentials", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("accept_http_if_already_terminated", Kind::Boolean).optional().default(Fill::Bool(false)),
        Field::new("anonymous", Kind::String).default(Fill::Str("")).check(checks::anonymous),
        Field::new("global_credentials", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("auth_header_name", Kind::String).optional().default(Fill::Str("authorization")),
        // 14 days, the value Kong hard-coded before this became configurable.
        Field::new("refresh_token_ttl", Kind::Number).required().default(Fill::Int(1_209_600)),
    ])
    .no_consumer()
    .self_check(some_flow_enabled),
);

/// Kong only asks that `scopes` be present (even an empty list passes).
fn mandatory_scope_needs_scopes(value: Option<&Value>, conf: &Object) -> Result<(), String> {
    if value == Some(&Value::Bool(true)) && !conf.contains_key("scopes") {
        return Err("To set a mandatory scope you also need to create available scopes".into());
    }
    Ok(())
}

fn some_flow_enabled(conf: &Object) -> Result<(), String> {
    let flows =
        ["enable_authorization_code", "enable_implicit_grant", "enable_client_credentials", "enable_password_grant"];
    if flows.iter().any(|f| conf.get(*f) == Some(&Value::Bool(true))) {
        Ok(())
    } else {
        Err("You need to enable at least one OAuth flow".to_string())
    }
}
