//! jwt's config (priority 1005, no consumer): where tokens are searched, which claim names
//! the credential, and which registered claims are verified.

use serde_json::Value;

use super::checks;
use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "jwt",
    1005,
    Table::new(&[
        Field::new("uri_param_names", Kind::Array).default(Fill::List(&["jwt"])),
        Field::new("cookie_names", Kind::Array).default(Fill::List(&[])),
        Field::new("key_claim_name", Kind::String).default(Fill::Str("iss")),
        Field::new("secret_is_base64", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("claims_to_verify", Kind::Array).one_of(&["exp", "nbf"]),
        Field::new("anonymous", Kind::String).default(Fill::Str("")).check(checks::anonymous),
        Field::new("run_on_preflight", Kind::Boolean).default(Fill::Bool(true)),
        Field::new("maximum_expiration", Kind::Number).default(Fill::Int(0)).check(non_negative),
    ])
    .no_consumer()
    .self_check(expiration_needs_exp),
);

fn non_negative(value: Option<&Value>, _: &Object) -> Result<(), String> {
    match value.and_then(Value::as_f64) {
        Some(n) if n < 0.0 => Err("should be 0 or greater".to_string()),
        _ => Ok(()),
    }
}

/// A maximum lifetime can only be enforced on tokens whose `exp` is verified.
fn expiration_needs_exp(conf: &Object) -> Result<(), String> {
    let maximum = conf.get("maximum_expiration").and_then(Value::as_f64).unwrap_or(0.0);
    if maximum <= 0.0 {
        return Ok(());
    }
    let verifies_exp =
        conf.get("claims_to_verify").and_then(Value::as_array).is_some_and(|claims| claims.iter().any(|c| c == "exp"));
    if verifies_exp {
        Ok(())
    } else {
        Err("claims_to_verify must contain 'exp' when specifying maximum_expiration".to_string())
    }
}
