//! Configuration schemas of the 27 bundled plugins, validated the way Kong 0.14's old DAO
//! validates a plugin's `config`: string coercion, defaults, Kong's exact error messages and
//! each plugin's cross-field `self_check`. Also the `/plugins/schema/{name}` rendering.
//!
//! The control plane calls [`PluginSchema::validate_create`] / [`PluginSchema::validate_update`]
//! before storing a plugin row and maps [`ConfigError`] to a 400 body; entity-level rules
//! (`no_consumer` against `consumer_id`, uniqueness, foreign keys) stay with the caller, which
//! reads [`PluginSchema::no_consumer`]. What each plugin does with its config is the data
//! plane's business.

pub(crate) mod checks;
pub(crate) mod coerce;
pub(crate) mod field;
mod render;
pub(crate) mod validate;

mod acl;
mod aws_lambda;
mod basic_auth;
mod bot_detection;
mod correlation_id;
mod cors;
mod datadog;
mod file_log;
mod galileo;
mod hmac_auth;
mod http_log;
mod ip_restriction;
mod jwt;
mod key_auth;
mod ldap_auth;
mod loggly;
mod oauth2;
mod rate_limiting;
mod request_size_limiting;
mod request_termination;
mod request_transformer;
mod response_ratelimiting;
mod response_transformer;
mod statsd;
mod syslog;
mod tcp_log;
mod udp_log;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

use field::{Object, Table};
use validate::Errors;

/// Field errors keyed by dotted path (`config.minute`), one message each.
pub type FieldErrors = BTreeMap<String, String>;

/// Why a plugin config was refused; both variants become a 400.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// 400 with the flat map as body, e.g. {"config.minute":"minute is not a number"}
    #[error("invalid plugin config")]
    Fields(FieldErrors),
    /// 400 with body {"config": "<message>"} (self_check failures)
    #[error("{0}")]
    SelfCheck(String),
}

/// One bundled plugin: its name, run-order priority and config schema.
#[derive(Debug)]
pub struct PluginSchema {
    name: &'static str,
    priority: u32,
    config: Table,
}

/// Every bundled plugin, in the order of the Admin API doc's `/plugins/enabled` example (with
/// request-termination, bundled in Kong 0.14.1 but missing from the example, last), which is
/// also the order [`plugin_names`] reports.
static PLUGINS: [&PluginSchema; 27] = [
    &jwt::PLUGIN,
    &acl::PLUGIN,
    &cors::PLUGIN,
    &oauth2::PLUGIN,
    &tcp_log::PLUGIN,
    &udp_log::PLUGIN,
    &file_log::PLUGIN,
    &http_log::PLUGIN,
    &key_auth::PLUGIN,
    &hmac_auth::PLUGIN,
    &basic_auth::PLUGIN,
    &ip_restriction::PLUGIN,
    &request_transformer::PLUGIN,
    &response_transformer::PLUGIN,
    &request_size_limiting::PLUGIN,
    &rate_limiting::PLUGIN,
    &response_ratelimiting::PLUGIN,
    &aws_lambda::PLUGIN,
    &bot_detection::PLUGIN,
    &correlation_id::PLUGIN,
    &datadog::PLUGIN,
    &galileo::PLUGIN,
    &ldap_auth::PLUGIN,
    &loggly::PLUGIN,
    &statsd::PLUGIN,
    &syslog::PLUGIN,
    &request_termination::PLUGIN,
];

/// The 27 bundled plugin names, in the order of the admin-api doc's /plugins/enabled example list.
pub fn plugin_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| PLUGINS.iter().map(|p| p.name).collect())
}

/// None for unknown names.
pub fn plugin(name: &str) -> Option<&'static PluginSchema> {
    PLUGINS.iter().copied().find(|p| p.name == name)
}

/// The bundled plugins that have a runtime on the data plane, and so the only ones the Admin
/// API accepts: nothing is accepted that does nothing. A plugin joins this list in the
/// commit that makes it run (the data plane's tests check that it builds exactly these).
const ENABLED: &[&str] = &[
    "jwt",
    "acl",
    "cors",
    "oauth2",
    "tcp-log",
    "udp-log",
    "file-log",
    "http-log",
    "key-auth",
    "hmac-auth",
    "basic-auth",
    "ip-restriction",
    "request-transformer",
    "response-transformer",
    "request-size-limiting",
    "aws-lambda",
    "rate-limiting",
    "response-ratelimiting",
    "bot-detection",
    "correlation-id",
    "datadog",
    "ldap-auth",
    "loggly",
    "statsd",
    "syslog",
    "request-termination",
    "galileo",
];

/// The enabled plugin names, in the order of [`plugin_names`]: what `/plugins/enabled`,
/// `available_on_server` and a data plane's `bundled` set list.
pub fn enabled_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| plugin_names().iter().copied().filter(|n| ENABLED.contains(n)).collect())
}

/// The schema of an enabled plugin; None for an unknown one or one without a runtime.
pub fn enabled_plugin(name: &str) -> Option<&'static PluginSchema> {
    plugin(name).filter(|p| ENABLED.contains(&p.name))
}

impl PluginSchema {
    pub(crate) const fn new(name: &'static str, priority: u32, config: Table) -> Self {
        PluginSchema { name, priority, config }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Plugins run highest priority first in every phase (Kong's `PRIORITY`).
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// True for plugins that must not be bound to a consumer (auth plugins, cors,
    /// bot-detection, acl): they run before a consumer is known, so such a row never applies.
    pub fn no_consumer(&self) -> bool {
        self.config.no_consumer
    }

    /// Create / full replacement: `config` is the raw input (None or JSON null = absent).
    /// Returns the complete stored config with defaults.
    ///
    /// # Errors
    /// [`ConfigError::Fields`] for field errors (including a non-object `config`),
    /// [`ConfigError::SelfCheck`] when only the plugin's cross-field check failed.
    pub fn validate_create(&self, config: Option<&Value>) -> Result<Value, ConfigError> {
        let mut table = match config {
            None | Some(Value::Null) => Object::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(not_a_table()),
        };
        let mut errors = Errors::default();
        let self_check = validate::check_table(&self.config, &mut table, "config", &mut errors);
        let errors = errors.into_map();
        if !errors.is_empty() {
            return Err(ConfigError::Fields(errors));
        }
        match self_check {
            Some(message) => Err(ConfigError::SelfCheck(message)),
            None => Ok(Value::Object(table)),
        }
    }

    /// PATCH: deep-merge `patch` (objects merged recursively, arrays and scalars replaced, a
    /// null in the patch removes the key) into `stored`, then validate the whole merged config
    /// like create (so defaults refill removed keys).
    ///
    /// # Errors
    /// As [`PluginSchema::validate_create`], for the merged config.
    pub fn validate_update(&self, stored: &Value, patch: Option<&Value>) -> Result<Value, ConfigError> {
        let mut merged = stored.as_object().cloned().unwrap_or_default();
        match patch {
            None | Some(Value::Null) => {}
            Some(Value::Object(patch)) => validate::merge(&mut merged, patch),
            Some(_) => return Err(not_a_table()),
        }
        self.validate_create(Some(&Value::Object(merged)))
    }

    /// Body of GET /plugins/schema/{name}: Kong's schema table serialised, functions shown as
    /// the string "function" (top-level keys only when present; a static default is shown as
    /// its value, a computed default as "function"; nested schemas under "schema").
    pub fn render(&self) -> Value {
        render::render_table(&self.config)
    }
}

fn not_a_table() -> ConfigError {
    let mut errors = FieldErrors::new();
    errors.insert("config".to_string(), "config is not a table".to_string());
    ConfigError::Fields(errors)
}
