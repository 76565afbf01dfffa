//! Kong's `headers` setting: which of the gateway's own response headers it sends.
//!
//! Operators turn these off to hide what fronts their APIs, or to spare clients the bytes.
//! Kong 0.14 reads a comma-separated list (`server_tokens, latency_tokens` by default) of
//! header names and two shorthands; both planes read the same list, the Admin API for its
//! `Server` field and the proxy for everything else.

/// The headers the gateway adds, each on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnabledHeaders {
    /// `Server` on the gateway's own answers (errors, plugin rejections, the Admin API).
    /// Proxied answers keep the upstream's `Server` whatever this says.
    pub server: bool,
    /// `Via` on proxied answers.
    pub via: bool,
    /// `X-Kong-Proxy-Latency` on proxied answers.
    pub proxy_latency: bool,
    /// `X-Kong-Upstream-Latency` on proxied answers.
    pub upstream_latency: bool,
    /// `X-Kong-Upstream-Status` on proxied answers: off unless asked for.
    pub upstream_status: bool,
}

/// The setting's default, as Kong's.
pub const DEFAULT: &str = "server_tokens, latency_tokens";

/// What a configuration error says the setting accepts.
pub const EXPECTED: &str = "expected off, server_tokens, latency_tokens or a header Gatehouse adds";

/// An entry that names none of the headers or shorthands (an empty one included), as Kong
/// refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("headers: invalid entry '{0}'")]
pub struct InvalidEntry(pub String);

impl EnabledHeaders {
    pub const NONE: EnabledHeaders = EnabledHeaders {
        server: false,
        via: false,
        proxy_latency: false,
        upstream_latency: false,
        upstream_status: false,
    };
}

impl Default for EnabledHeaders {
    fn default() -> Self {
        EnabledHeaders { server: true, via: true, proxy_latency: true, upstream_latency: true, upstream_status: false }
    }
}

impl std::str::FromStr for EnabledHeaders {
    type Err = InvalidEntry;

    /// Kong's reading: entries are separated by commas; names are case-insensitive, `off`
    /// is not; `off` as the first entry (or no entry at all) turns everything off, and
    /// anywhere else it is ignored.
    fn from_str(list: &str) -> Result<Self, InvalidEntry> {
        let entries: Vec<&str> =
            if list.trim().is_empty() { Vec::new() } else { list.split(',').map(str::trim).collect() };
        let mut on = EnabledHeaders::NONE;
        for entry in &entries {
            if *entry == "off" {
                continue;
            }
            match entry.to_ascii_lowercase().as_str() {
                "server_tokens" => (on.server, on.via) = (true, true),
                "latency_tokens" => (on.proxy_latency, on.upstream_latency) = (true, true),
                "server" => on.server = true,
                "via" => on.via = true,
                "x-kong-proxy-latency" => on.proxy_latency = true,
                "x-kong-upstream-latency" => on.upstream_latency = true,
                "x-kong-upstream-status" => on.upstream_status = true,
                _ => return Err(InvalidEntry((*entry).to_string())),
            }
        }
        match entries.first() {
            Some(first) if *first != "off" => Ok(on),
            _ => Ok(EnabledHeaders::NONE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_sends_server_via_and_both_latencies() {
        let parsed: EnabledHeaders = DEFAULT.parse().unwrap();
        assert_eq!(parsed, EnabledHeaders::default());
        assert!(parsed.server && parsed.via && parsed.proxy_latency && parsed.upstream_latency);
        assert!(!parsed.upstream_status);
    }

    #[test]
    fn names_and_shorthands_combine_case_insensitively() {
        let parsed: EnabledHeaders = "Via, X-Kong-Upstream-Status,latency_tokens".parse().unwrap();
        assert_eq!(
            parsed,
            EnabledHeaders {
                server: false,
                via: true,
                proxy_latency: true,
                upstream_latency: true,
                upstream_status: true
            }
        );
    }

    #[test]
    fn off_first_or_nothing_turns_everything_off() {
        assert_eq!("off".parse::<EnabledHeaders>().unwrap(), EnabledHeaders::NONE);
        assert_eq!("off, server".parse::<EnabledHeaders>().unwrap(), EnabledHeaders::NONE);
        assert_eq!("".parse::<EnabledHeaders>().unwrap(), EnabledHeaders::NONE);
        // Later, `off` is ignored (Kong only looks at the first entry).
        let parsed: EnabledHeaders = "server, off".parse().unwrap();
        assert_eq!(parsed, EnabledHeaders { server: true, ..EnabledHeaders::NONE });
    }

    #[test]
    fn an_unknown_entry_is_refused_by_name() {
        let err = "server_tokens, x-powered-by".parse::<EnabledHeaders>().unwrap_err();
        assert_eq!(err.to_string(), "headers: invalid entry 'x-powered-by'");
        // Kong compares `off` exactly and keeps empty entries, which name nothing.
        assert_eq!("OFF".parse::<EnabledHeaders>().unwrap_err(), InvalidEntry("OFF".into()));
        assert_eq!("server,".parse::<EnabledHeaders>().unwrap_err(), InvalidEntry(String::new()));
        assert_eq!("server,,via".parse::<EnabledHeaders>().unwrap_err(), InvalidEntry(String::new()));
    }
}
