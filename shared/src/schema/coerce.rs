//! Type checking with Kong's string coercions. Plugin configs arrive from JSON or from form
//! bodies where every scalar is a string, and Kong coerces both the same way, so a number may
//! be `10` or `"10"` and an array `["a","b"]` or `"a,b"`.
//!
//! Only the value's shape is decided here; messages and ordering belong to `validate.rs`.

use serde_json::Value;

use super::field::Kind;

/// Checks `value` against `kind`, rewriting string input into the typed value Kong stores.
/// Returns false on a type mismatch (the value is then left in an unspecified state, as the
/// field is reported and nothing else looks at it).
pub(crate) fn coerce(kind: Kind, value: &mut Value, trim: bool) -> bool {
    if let Value::String(raw) = value {
        let text = if trim { lua_trim(raw) } else { raw.as_str() };
        let typed = match kind {
            Kind::String => Value::from(text),
            Kind::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return false,
            },
            Kind::Array => split_list(text),
            Kind::Number => match parse_number(text) {
                Some(n) => n,
                None => return false,
            },
            Kind::Timestamp => match parse_number(text) {
                Some(n) if n.as_f64().is_some_and(|f| f > 0.0) => n,
                _ => return false,
            },
            Kind::Url if is_url(text) => Value::from(text),
            Kind::Url | Kind::Table => return false,
        };
        *value = typed;
        return true;
    }
    match kind {
        Kind::String | Kind::Url => false,
        Kind::Boolean => value.is_boolean(),
        Kind::Array => value.is_array(),
        Kind::Table => value.is_object(),
        Kind::Number => normalise_number(value),
        Kind::Timestamp => value.as_f64().is_some_and(|f| f > 0.0) && normalise_number(value),
    }
}

/// Lua's `%s` class, which is what Kong's strip removes (ASCII only, includes `\v`).
fn is_lua_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

pub(crate) fn lua_trim(s: &str) -> &str {
    s.trim_matches(is_lua_space)
}

/// Kong's comma list: blank → `[]`; `\,` keeps a comma inside an item; items are trimmed.
/// Penlight's split drops one trailing empty piece and then re-adds it when the input ends
/// with a comma, so `"a,"` is `["a",""]` but `","` is `[""]`.
pub(crate) fn split_list(s: &str) -> Value {
    if lua_trim(s).is_empty() {
        return Value::Array(Vec::new());
    }
    let escaped = s.replace("\\,", "\0");
    let mut parts: Vec<&str> = escaped.split(',').collect();
    if parts.last() == Some(&"") {
        parts.pop();
    }
    if parts.len() == 1 && parts[0].is_empty() {
        parts.clear();
    }
    if escaped.ends_with(',') {
        parts.push("");
    }
    parts.into_iter().map(|p| Value::from(lua_trim(p).replace('\0', ","))).collect()
}

/// Lua's `tonumber` on a trimmed string: decimal (with exponent) or `0x` hex, optional sign;
/// `inf`/`nan` are not numbers. Integral results are stored as JSON integers, as cjson prints
/// them.
pub(crate) fn parse_number(s: &str) -> Option<Value> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // Precision loss past 2^53 matches Lua's doubles.
        hex.bytes().fold(0f64, |acc, b| acc * 16.0 + f64::from(hex_digit(b)))
    } else {
        let allowed = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
        let signed_twice = body.starts_with(['+', '-']);
        if signed_twice || !body.bytes().all(allowed) || !body.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    let n = if negative { -magnitude } else { magnitude };
    n.is_finite().then(|| number_value(n))
}

fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// 2^53: beyond it an f64 no longer holds every integer, so such values stay floats.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn number_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        // Exact: |n| ≤ 2^53 is integral and fits in i64.
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// True for JSON numbers; `10.0` becomes `10` so stored configs print as Kong prints them.
fn normalise_number(value: &mut Value) -> bool {
    let Value::Number(n) = value else {
        return false;
    };
    if n.is_f64() {
        if let Some(f) = n.as_f64() {
            *value = number_value(f);
        }
    }
    true
}

/// LuaSocket's `url.parse` as Kong uses it: a scheme (`^[A-Za-z0-9][A-Za-z0-9+.-]*:`), then
/// `//authority`, whose host (after dropping `userinfo@` and `:port`) must be non-empty.
/// The path may be missing (it defaults to `/`).
pub(crate) fn is_url(s: &str) -> bool {
    let without_fragment = s.split_once('#').map_or(s, |(before, _)| before);
    let Some((scheme, rest)) = without_fragment.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return false;
    }
    let Some(after_slashes) = rest.strip_prefix("//") else {
        return false;
    };
    let authority = after_slashes.split('/').next().unwrap_or_default();
    let host_port = authority.split_once('@').map_or(authority, |(_, host)| host);
    let host = match host_port.rfind(':') {
        Some(i) if !host_port[i + 1..].contains(']') => &host_port[..i],
        _ => host_port,
    };
    !host.is_empty()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_follow_penlight_split() {
        assert_eq!(split_list("a, b ,c"), json!(["a", "b", "c"]));
        assert_eq!(split_list("  "), json!([]));
        assert_eq!(split_list("a\\,b,c"), json!(["a,b", "c"]));
        assert_eq!(split_list("a,"), json!(["a", ""]));
        assert_eq!(split_list(","), json!([""]));
        assert_eq!(split_list("a,,b"), json!(["a", "", "b"]));
    }

    #[test]
    fn numbers_follow_lua_tonumber() {
        assert_eq!(parse_number("10"), Some(json!(10)));
        assert_eq!(parse_number("-2.5"), Some(json!(-2.5)));
        assert_eq!(parse_number("1e3"), Some(json!(1000)));
        assert_eq!(parse_number("0x10"), Some(json!(16)));
        assert_eq!(parse_number(".5"), Some(json!(0.5)));
        for bad in ["", "abc", "inf", "nan", "1,5", "-", "0x", "e5", "10 apples", "+-5"] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn float_json_numbers_that_are_integral_become_integers() {
        let mut v = json!(10.0);
        assert!(coerce(Kind::Number, &mut v, true));
        assert_eq!(v, json!(10));
    }

    #[test]
    fn urls_need_scheme_and_host() {
        assert!(is_url("http://example.com"));
        assert!(is_url("https://user:pass@example.com:8443/path?q=1"));
        assert!(is_url("udp://[::1]:9000"));
        assert!(!is_url("example.com"));
        assert!(!is_url("http:/example.com"));
        assert!(!is_url("http://"));
        assert!(!is_url("http://:80/x"));
    }

    #[test]
    fn trimming_can_be_refused() {
        let mut v = json!("  secret ");
        assert!(coerce(Kind::String, &mut v, false));
        assert_eq!(v, json!("  secret "));
        assert!(coerce(Kind::String, &mut v, true));
        assert_eq!(v, json!("secret"));
    }
}
