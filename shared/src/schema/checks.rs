//! Field rules and computed defaults that several bundled plugins share: the `anonymous`
//! consumer id of the auth plugins, `name:value` rule lists of the transformers, regex lists,
//! and Kong's random credential strings.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::field::Object;
use super::validate::display;
use crate::validate::is_uuid;

/// `anonymous` names a consumer by id; empty means "no fallback consumer".
pub(crate) fn anonymous(value: Option<&Value>, _: &Object) -> Result<(), String> {
    match value.and_then(Value::as_str) {
        Some(s) if s.is_empty() || is_uuid(s) => Ok(()),
        _ => Err("the anonymous user must be empty or a valid uuid".to_string()),
    }
}

/// Transformer rules that set something need `name:value`.
pub(crate) fn colon_entries(value: Option<&Value>, _: &Object) -> Result<(), String> {
    for entry in value.and_then(Value::as_array).into_iter().flatten() {
        let entry = display(entry);
        if !entry.contains(':') {
            return Err(format!("key '{entry}' has no value"));
        }
    }
    Ok(())
}

/// The first entry that does not compile as a (PCRE-like) regex, as Kong tests each entry
/// with `ngx.re.match` at validation time.
pub(crate) fn first_invalid_regex(items: &[Value]) -> Option<String> {
    items.iter().map(display).find(|rule| fancy_regex::Regex::new(rule).is_err())
}

/// Kong's `utils.random_string`: 24 random bytes in base64 (32 chars, no padding), with `/`
/// and `+` replaced by a digit and an upper-case letter so the result is URL-safe. The bytes
/// come from the operating system's CSPRNG: these strings are credentials (API keys, secrets,
/// client ids, tokens).
pub(crate) fn random_string() -> Value {
    Value::from(random_token())
}

/// [`random_string`] as text: also what data planes mint OAuth2 codes and tokens with.
pub fn random_token() -> String {
    let mut bytes = [0u8; 24];
    let mut spare = [0u8; 32];
    let rng = ring::rand::SystemRandom::new();
    // The system generator only fails if the OS has no entropy source at all, which would
    // make every TLS handshake fail as well; there is nothing sensible to fall back to.
    ring::rand::SecureRandom::fill(&rng, &mut bytes).expect("system random generator");
    ring::rand::SecureRandom::fill(&rng, &mut spare).expect("system random generator");
    let mut spare = spare.iter();
    let mut pick = |base: u8, span: u8| base + spare.next().map_or(0, |r| r % span);
    STANDARD
        .encode(bytes)
        .chars()
        .map(|ch| match ch {
            '/' => char::from(pick(b'0', 10)),
            '+' => char::from(pick(b'A', 26)),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn random_strings_are_32_url_safe_chars() {
        let a = random_string();
        let b = random_string();
        let s = a.as_str().unwrap_or_default();
        assert_eq!(s.len(), 32);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        assert_ne!(a, b);
    }

    #[test]
    fn anonymous_accepts_empty_or_uuid() {
        let t = Object::new();
        assert!(anonymous(Some(&json!("")), &t).is_ok());
        assert!(anonymous(Some(&json!("8E2B5A3E-1C0D-4F6A-9B7C-0D1E2F3A4B5C")), &t).is_ok());
        assert_eq!(
            anonymous(Some(&json!("bob")), &t),
            Err("the anonymous user must be empty or a valid uuid".to_string())
        );
    }

    #[test]
    fn regex_lists_report_the_first_bad_entry() {
        assert_eq!(first_invalid_regex(&[json!("^curl/"), json!("(")]), Some("(".to_string()));
        assert_eq!(first_invalid_regex(&[json!("*.example.com")]), Some("*.example.com".into()));
        assert_eq!(first_invalid_regex(&[json!("(?i)bot"), json!("a(?=b)")]), None);
    }
}
