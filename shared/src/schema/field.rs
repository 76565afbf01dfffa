//! The declarative vocabulary plugin schemas are written in: field kinds, field descriptors
//! and table descriptors, mirroring the attributes of Kong 0.14's "old DAO" schema tables.
//!
//! Everything here is `const`-constructible so each plugin's schema is a `static`; the rules
//! that give these attributes meaning live in `validate.rs`, their JSON form in `render.rs`.

use serde_json::{Map, Value};

/// A JSON object as the validator sees it (a Lua table with string keys in Kong).
pub(crate) type Object = Map<String, Value>;

/// A field's custom rule (Kong's `func`). It receives the field's value (absent on create
/// when the field has neither value nor default) and the whole table, because a few rules
/// look at sibling fields; `Err` carries the exact message clients see.
pub(crate) type FieldCheck = fn(Option<&Value>, &Object) -> Result<(), String>;

/// A table-wide rule (Kong's `self_check`), run only when every field passed.
pub(crate) type SelfCheck = fn(&Object) -> Result<(), String>;

/// The schema types of the old DAO. The name and article feed the type-error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Number,
    Boolean,
    Array,
    /// A JSON object, optionally validated by a nested [`Table`].
    Table,
    /// A string with a scheme and a host.
    Url,
    /// A number greater than zero. No bundled plugin config uses it.
    #[cfg_attr(not(test), allow(dead_code))]
    Timestamp,
}

impl Kind {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Boolean => "boolean",
            Kind::Array => "array",
            Kind::Table => "table",
            Kind::Url => "url",
            Kind::Timestamp => "timestamp",
        }
    }

    /// Kong's message is `"<field> is not <article> <type>"`; only `array` takes "an".
    pub(crate) fn type_error(self, field: &str) -> String {
        let article = if matches!(self, Kind::Array) { "an" } else { "a" };
        format!("{field} is not {article} {}", self.name())
    }
}

/// A field's default. Static defaults are rendered by value in `/plugins/schema`; computed
/// ones (random keys, Kong's `default = function`) render as the string `"function"`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fill {
    None,
    Bool(bool),
    Int(i64),
    Str(&'static str),
    List(&'static [&'static str]),
    /// A static default too rich for the variants above (e.g. statsd's metric list).
    Json(fn() -> Value),
    Computed(fn() -> Value),
}

impl Fill {
    /// The value to store for a missing field, if any.
    pub(crate) fn value(self) -> Option<Value> {
        match self {
            Fill::None => None,
            Fill::Bool(b) => Some(Value::Bool(b)),
            Fill::Int(n) => Some(Value::from(n)),
            Fill::Str(s) => Some(Value::from(s)),
            Fill::List(items) => Some(Value::from(items.to_vec())),
            Fill::Json(f) | Fill::Computed(f) => Some(f()),
        }
    }

    pub(crate) const fn is_some(self) -> bool {
        !matches!(self, Fill::None)
    }
}

/// One field of a table schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// `None` for Kong's few untyped fields (http-log `method`), which skip coercion.
    pub(crate) kind: Option<Kind>,
    /// Kept as written in Kong (`Some(false)` renders as `"required": false`).
    pub(crate) required: Option<bool>,
    /// Only rendered; uniqueness of config values is not enforced by Kong either.
    pub(crate) unique: bool,
    pub(crate) default: Fill,
    pub(crate) one_of: &'static [&'static str],
    pub(crate) regex: Option<&'static str>,
    pub(crate) check: Option<FieldCheck>,
    pub(crate) schema: Option<&'static Table>,
    /// String input is whitespace-trimmed unless a field opts out (secrets such as passwords).
    pub(crate) trim: bool,
}

impl Field {
    pub(crate) const fn new(name: &'static str, kind: Kind) -> Self {
        Field {
            name,
            kind: Some(kind),
            required: None,
            unique: false,
            default: Fill::None,
            one_of: &[],
            regex: None,
            check: None,
            schema: None,
            trim: true,
        }
    }

    /// A field without a `type`: no coercion, no trimming, no type error.
    pub(crate) const fn untyped(name: &'static str) -> Self {
        let mut field = Field::new(name, Kind::String);
        field.kind = None;
        field
    }

    pub(crate) const fn required(mut self) -> Self {
        self.required = Some(true);
        self
    }

    /// Kong spells some optional fields out as `required = false`; the schema endpoint shows it.
    pub(crate) const fn optional(mut self) -> Self {
        self.required = Some(false);
        self
    }

    pub(crate) const fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    pub(crate) const fn default(mut self, fill: Fill) -> Self {
        self.default = fill;
        self
    }

    pub(crate) const fn one_of(mut self, values: &'static [&'static str]) -> Self {
        self.one_of = values;
        self
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const fn regex(mut self, pattern: &'static str) -> Self {
        self.regex = Some(pattern);
        self
    }

    pub(crate) const fn check(mut self, f: FieldCheck) -> Self {
        self.check = Some(f);
        self
    }

    pub(crate) const fn schema(mut self, table: &'static Table) -> Self {
        self.schema = Some(table);
        self
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const fn keep_whitespace(mut self) -> Self {
        self.trim = false;
        self
    }
}

/// A table schema: a plugin's `config`, or a nested table inside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub(crate) fields: &'static [Field],
    /// Free keys, each value validated against `fields` (response-ratelimiting `limits`).
    pub(crate) flexible: bool,
    /// Refuse plugin rows bound to a consumer; only meaningful on a plugin's top table.
    pub(crate) no_consumer: bool,
    pub(crate) self_check: Option<SelfCheck>,
}

impl Table {
    pub(crate) const fn new(fields: &'static [Field]) -> Self {
        Table { fields, flexible: false, no_consumer: false, self_check: None }
    }

    pub(crate) const fn flexible(mut self) -> Self {
        self.flexible = true;
        self
    }

    pub(crate) const fn no_consumer(mut self) -> Self {
        self.no_consumer = true;
        self
    }

    pub(crate) const fn self_check(mut self, f: SelfCheck) -> Self {
        self.self_check = Some(f);
        self
    }

    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}
