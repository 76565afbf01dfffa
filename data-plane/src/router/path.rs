//! Route paths: plain prefixes (compared as strings, no segment boundary) and regexes
//! (anchored at the start of the URI only), with what `strip_path` removes.

/// Where the upstream path starts inside the request path after `strip_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strip {
    /// Byte offset of the remainder in the request path.
    pub offset: usize,
    /// Regex matches always get a `/` prepended; prefixes only when the rest lacks one.
    pub regex: bool,
}

#[derive(Debug)]
pub enum Matcher {
    Fast(regex::Regex),
    /// Look-around and other PCRE features the `regex` crate lacks.
    Fancy(fancy_regex::Regex),
}

#[derive(Debug)]
pub enum PathRule {
    Prefix(String),
    /// The matcher is boxed: a `fancy_regex::Regex` is hundreds of bytes, and every route's
    /// paths (plain ones too) would pay for it inline.
    Regex {
        source: String,
        matcher: Box<Matcher>,
    },
}

impl PathRule {
    /// A plain path when it only uses RFC 3986 unreserved characters, `/` and `%`; a regex
    /// otherwise, compiled as `^(?:<path>)/?(?<rest>.*)`.
    ///
    /// # Errors
    /// A regex that neither engine accepts.
    pub fn parse(path: &str) -> Result<PathRule, String> {
        if gatehouse_shared::validate::is_plain_path(path) {
            return Ok(PathRule::Prefix(path.to_string()));
        }
        let anchored = format!("^(?:{path})/?(?P<rest>.*)");
        let matcher = match regex::Regex::new(&anchored) {
            Ok(re) => Matcher::Fast(re),
            Err(_) => {
                Matcher::Fancy(fancy_regex::Regex::new(&anchored).map_err(|e| format!("invalid regex '{path}': {e}"))?)
            }
        };
        Ok(PathRule::Regex { source: path.to_string(), matcher: Box::new(matcher) })
    }

    pub fn source(&self) -> &str {
        match self {
            PathRule::Prefix(s) => s,
            PathRule::Regex { source, .. } => source,
        }
    }

    /// The anchored pattern, when the fast engine can run it (for a `RegexSet`).
    pub fn fast_pattern(&self) -> Option<&str> {
        match self {
            PathRule::Regex { matcher, .. } => match &**matcher {
                Matcher::Fast(re) => Some(re.as_str()),
                Matcher::Fancy(_) => None,
            },
            _ => None,
        }
    }

    pub fn matches(&self, uri: &str) -> bool {
        self.strip(uri).is_some()
    }

    /// Matches `uri`; returns where the stripped remainder starts.
    pub fn strip(&self, uri: &str) -> Option<Strip> {
        match self {
            PathRule::Prefix(p) => uri.starts_with(p.as_str()).then_some(Strip { offset: p.len(), regex: false }),
            PathRule::Regex { matcher, .. } => {
                let offset = match &**matcher {
                    Matcher::Fast(re) => re.captures(uri)?.name("rest")?.start(),
                    Matcher::Fancy(re) => re.captures(uri).ok()??.name("rest")?.start(),
                };
                Some(Strip { offset, regex: true })
            }
        }
    }
}
