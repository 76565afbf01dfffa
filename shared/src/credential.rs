//! The credential entities of the bundled auth plugins, as Kong 0.14's old DAO defines them:
//! key-auth keys, basic-auth and hmac-auth users, jwt secrets, acl groups, oauth2 applications
//! and the oauth2 tokens and authorization codes issued for them.
//!
//! Each entity is validated by the same engine as plugin configs (`schema::validate`): nulls
//! dropped, defaults filled (random 32-character strings for keys, secrets, client ids, tokens
//! and codes), form strings coerced, Kong's field messages, unknown fields refused, then the
//! entity's own check (jwt's RSA key). Rules that need the store — uniqueness, an acl group
//! per consumer, the referenced consumer/credential/service — are the control plane's.
//!
//! The entity names ([`CredentialSchema::name`], also the table names) and the field names are
//! what the change log carries and data planes read. Both planes share
//! [`basic_auth_digest`] and [`rsa_public_key_der`], so what the control plane stores is what
//! the data plane checks.

mod acl;
mod basic_auth;
mod hmac_auth;
mod jwt;
mod key_auth;
mod oauth2;
mod pem;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::schema::field::{Field, Kind, Object, Table};
use crate::schema::validate::{check_table, Errors};
use crate::upstream::OldError;
use crate::validate::is_uuid;

pub use crate::schema::checks::random_token;
pub use acl::ACLS;
pub use basic_auth::{digest as basic_auth_digest, BASICAUTH_CREDENTIALS};
pub use hmac_auth::HMACAUTH_CREDENTIALS;
pub use jwt::{JWT_ALGORITHMS, JWT_SECRETS};
pub use key_auth::KEYAUTH_CREDENTIALS;
pub use oauth2::{OAUTH2_AUTHORIZATION_CODES, OAUTH2_CREDENTIALS, OAUTH2_TOKENS};
pub use pem::rsa_public_key_der;

/// Every credential entity, parents (consumer-owned) before the oauth2 children.
pub static ALL: [&CredentialSchema; 8] = [
    &KEYAUTH_CREDENTIALS,
    &BASICAUTH_CREDENTIALS,
    &HMACAUTH_CREDENTIALS,
    &JWT_SECRETS,
    &ACLS,
    &OAUTH2_CREDENTIALS,
    &OAUTH2_TOKENS,
    &OAUTH2_AUTHORIZATION_CODES,
];

/// The credential entity stored in table `name`.
pub fn schema(name: &str) -> Option<&'static CredentialSchema> {
    ALL.iter().copied().find(|s| s.name == name)
}

/// Fields holding entity ids: UUIDs, stored lower-case like every id.
const ID_FIELDS: [&str; 3] = ["consumer_id", "credential_id", "service_id"];

/// Runs once the fields are valid, with the row being replaced or patched (`None` on create):
/// derived values such as basic-auth's password digest.
type Finish = fn(Option<&Object>, &mut Object);

/// One credential entity: its table, owner column, natural key and field schema.
#[derive(Debug)]
pub struct CredentialSchema {
    name: &'static str,
    parent: &'static str,
    key: Option<&'static str>,
    fields: Table,
    finish: Option<Finish>,
}

impl CredentialSchema {
    pub(crate) const fn new(name: &'static str, parent: &'static str, key: &'static str, fields: Table) -> Self {
        CredentialSchema { name, parent, key: Some(key), fields, finish: None }
    }

    pub(crate) const fn finish(mut self, f: Finish) -> Self {
        self.finish = Some(f);
        self
    }

    /// Entity and table name (`keyauth_credentials`, `oauth2_tokens`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The owner column: `consumer_id`, or `credential_id` for oauth2 tokens and codes.
    pub fn parent(&self) -> &'static str {
        self.parent
    }

    /// The field a credential can be addressed by instead of its id (`key`, `username`,
    /// `group`, `client_id`, `access_token`, `code`).
    pub fn key(&self) -> Option<&'static str> {
        self.key
    }

    /// The entity's fields besides `id` and `created_at`, in schema order.
    pub fn field_names(&self) -> impl Iterator<Item = &'static str> {
        self.fields.fields.iter().map(|f| f.name)
    }

    /// Fields Kong declares unique (each has a unique index in the store).
    pub fn unique_fields(&self) -> impl Iterator<Item = &'static str> {
        self.fields.fields.iter().filter(|f| f.unique).map(|f| f.name)
    }

    /// Whether `field` holds an entity id (a UUID).
    pub fn is_id_field(field: &str) -> bool {
        field == "id" || ID_FIELDS.contains(&field)
    }

    /// Validates a whole entity: a create (`stored` is `None`) or a full replacement of
    /// `stored`. `input` holds the request's fields without `id` and `created_at`. Returns the
    /// fields to store, in schema order, defaults filled.
    ///
    /// # Errors
    /// [`OldError::Fields`] for field errors (type, enum, required, unknown field, a field's own
    /// rule), else [`OldError::Message`] when the entity check fails.
    pub fn validate(
        &self,
        stored: Option<&Map<String, Value>>,
        mut input: Map<String, Value>,
    ) -> Result<Object, OldError> {
        for generated in ["id", "created_at"] {
            input.shift_remove(generated);
        }
        let mut errors = Errors::default();
        let self_check = check_table(&self.fields, &mut input, "", &mut errors);
        let errors = errors.into_map();
        if !errors.is_empty() {
            return Err(OldError::Fields(errors));
        }
        if let Some(message) = self_check {
            return Err(OldError::Message(message));
        }
        for field in ID_FIELDS {
            if let Some(Value::String(id)) = input.get_mut(field) {
                id.make_ascii_lowercase();
            }
        }
        if let Some(finish) = self.finish {
            finish(stored, &mut input);
        }
        let mut out = Object::new();
        for field in self.fields.fields {
            if let Some(value) = input.shift_remove(field.name) {
                out.insert(field.name.to_string(), value);
            }
        }
        Ok(out)
    }

    /// A partial update: `patch` replaces the stored fields it names (a `null` removes one),
    /// then the result is validated like a whole entity, so removed fields take their defaults
    /// again.
    ///
    /// # Errors
    /// As [`CredentialSchema::validate`].
    pub fn validate_patch(&self, stored: &Map<String, Value>, patch: Map<String, Value>) -> Result<Object, OldError> {
        let mut merged: Object = stored
            .iter()
            .filter(|(k, _)| *k != "id" && *k != "created_at")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in patch {
            if value.is_null() {
                merged.shift_remove(&key);
            } else {
                merged.insert(key, value);
            }
        }
        self.validate(Some(stored), merged)
    }
}

/// The owner column of a consumer's credential.
pub(crate) const CONSUMER_ID: Field = Field::new("consumer_id", Kind::String).required().check(uuid);

/// An id-typed field (Kong's `type = "id"`): a UUID when present.
pub(crate) fn uuid(value: Option<&Value>, _: &Object) -> Result<(), String> {
    match value {
        Some(Value::String(s)) if !is_uuid(s) => Err(format!("{s} is not a valid uuid")),
        _ => Ok(()),
    }
}
