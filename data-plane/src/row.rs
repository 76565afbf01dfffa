//! Reading the control plane's stored rows into typed structs, straight from their text: no
//! `serde_json::Value` tree is built (one allocation per key and per value, nine times the
//! text), and only the fields the data plane uses are kept.
//!
//! The control plane checks every field's type before it stores a row, so a field of the
//! wrong type is a row from elsewhere (an older cache, a hand-written declarative file): such a
//! field reads as absent, as it always has, rather than failing the whole configuration. A
//! credential or consumer row without a string `id` is left out (and logged).

use serde::Deserializer;

/// The visitor methods for a null or a scalar where a field expects a list or an object: the
/// field reads as its default (empty, absent), as a mistyped field always has.
macro_rules! scalars_read_as_default {
    () => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

/// What a field holds, read without building a `Value`: the scalars the rows' fields are,
/// and `Other` for what no field here reads (skipped, not kept).
enum Field {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(Box<str>),
    Other,
}

struct FieldVisitor;

impl<'de> serde::de::Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field, E> {
        Ok(Field::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field, E> {
        Ok(Field::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field, E> {
        Ok(if v >= 0 { Field::Unsigned(v as u64) } else { Field::Signed(v) })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field, E> {
        Ok(Field::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Text(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Field, E> {
        Ok(Field::Text(v.into()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

fn field<'de, D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
    d.deserialize_any(FieldVisitor)
}

/// A string field.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<str>>, D::Error> {
    Ok(match field(d)? {
        Field::Text(s) => Some(s),
        _ => None,
    })
}

/// A string field read as empty when absent.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Box<str>, D::Error> {
    Ok(string(d)?.unwrap_or_default())
}

/// A whole number that is not negative.
pub fn unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match field(d)? {
        Field::Unsigned(n) => Some(n),
        _ => None,
    })
}

/// A whole number.
pub fn signed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match field(d)? {
        Field::Unsigned(n) => i64::try_from(n).ok(),
        Field::Signed(n) => Some(n),
        _ => None,
    })
}

/// Any number.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match field(d)? {
        Field::Unsigned(n) => Some(n as f64),
        Field::Signed(n) => Some(n as f64),
        Field::Float(n) => Some(n),
        _ => None,
    })
}

/// A whole number (oauth2's millisecond times), `0` when absent or not one: a time that
/// cannot be read makes a token or code as old as can be, never everlasting.
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(signed(d)?.unwrap_or(0))
}

/// A string field shared as an `Arc` (ids other rows refer to).
pub fn shared<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::sync::Arc<str>>, D::Error> {
    Ok(string(d)?.map(std::sync::Arc::from))
}

/// A boolean field.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match field(d)? {
        Field::Bool(b) => Some(b),
        _ => None,
    })
}

/// A list of strings (its other members skipped); absent or not a list reads as empty.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Box<str>>, D::Error> {
    struct Strings;
    impl<'de> serde::de::Visitor<'de> for Strings {
        type Value = Vec<Box<str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(64));
            while let Some(item) = seq.next_element_seed(Seed)? {
                if let Field::Text(s) = item {
                    list.push(s);
                }
            }
            Ok(list)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Strings)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
        scalars_read_as_default!();
    }
    d.deserialize_any(Strings)
}

/// A foreign key field, `{"id": ...}`: `None` when absent, `null` or not a reference.
pub fn foreign<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<str>>, D::Error> {
    struct Reference;
    impl<'de> serde::de::Visitor<'de> for Reference {
        type Value = Option<Box<str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a reference")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut id = None;
            while let Some(key) = map.next_key::<Box<str>>()? {
                match (&*key, map.next_value_seed(Seed)?) {
                    ("id", Field::Text(s)) => id = Some(s),
                    ("id", _) => id = None,
                    _ => {}
                }
            }
            Ok(id)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Reference)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        scalars_read_as_default!();
    }
    d.deserialize_any(Reference)
}

/// Reads one member as a [`Field`].
struct Seed;

impl<'de> serde::de::DeserializeSeed<'de> for Seed {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        field(d)
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_shared::snapshot::Doc;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(default, deserialize_with = "string")]
        name: Option<Box<str>>,
        #[serde(default, deserialize_with = "strings")]
        hosts: Vec<Box<str>>,
        #[serde(default, deserialize_with = "foreign")]
        service: Option<Box<str>>,
        #[serde(default, deserialize_with = "unsigned")]
        port: Option<u64>,
        #[serde(default, deserialize_with = "signed")]
        priority: Option<i64>,
        #[serde(default, deserialize_with = "boolean")]
        strip: Option<bool>,
        #[serde(default, deserialize_with = "whole")]
        at: i64,
    }

    fn sample(text: &str) -> Sample {
        Doc::parse(text).unwrap().decode().unwrap()
    }

    /// Each field reads what it expects, and anything else (another type, a nested value,
    /// `null`) as absent, without failing the row; unknown members are skipped.
    #[test]
    fn fields_read_what_they_expect_and_nothing_else() {
        let s = sample(
            r#"{"name":"a","hosts":["x",1,{"y":2},"z"],"service":{"id":"s1","n":[1]},"port":80,"priority":-3,
               "strip":false,"at":1500,"extra":{"deep":[null]}}"#,
        );
        assert_eq!(s.name.as_deref(), Some("a"));
        assert_eq!(s.hosts, vec![Box::from("x"), Box::from("z")]);
        assert_eq!(
            (s.service.as_deref(), s.port, s.priority, s.strip, s.at),
            (Some("s1"), Some(80), Some(-3), Some(false), 1500)
        );
        let odd = sample(r#"{"name":5,"hosts":"x","service":"s1","port":-1,"priority":1.5,"strip":"yes","at":1.5e3}"#);
        assert_eq!(
            (odd.name, odd.hosts.len(), odd.service, odd.port, odd.priority, odd.strip, odd.at),
            (None, 0, None, None, None, None, 0)
        );
        let empty = sample(r#"{"name":null,"hosts":null,"service":null}"#);
        assert!(empty.name.is_none() && empty.hosts.is_empty() && empty.service.is_none());
    }
}
