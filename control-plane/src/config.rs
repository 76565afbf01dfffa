//! Process configuration: an optional TOML file, then `GATEHOUSE_*` environment overrides
//! (environment wins), then typed validation. Every key is documented once, in README.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sync::{ClusterTls, MtlsMode, SyncSettings};
use gatehouse_shared::enabled_headers::{self, EnabledHeaders};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid value for {key}: '{value}' ({reason})")]
    Invalid { key: &'static str, value: String, reason: &'static str },
}

/// The file's shape; unknown keys are errors so that typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin_listen: Option<String>,
    pub admin_ssl_listen: Option<String>,
    pub admin_ssl_cert: Option<PathBuf>,
    pub admin_ssl_cert_key: Option<PathBuf>,
    pub cluster_listen: Option<String>,
    pub cluster_mtls: Option<String>,
    pub cluster_cert: Option<PathBuf>,
    pub cluster_cert_key: Option<PathBuf>,
    pub cluster_ca_cert: Option<PathBuf>,
    pub cluster_changelog_retention: Option<i64>,
    pub cluster_max_snapshots: Option<usize>,
    pub database_url: Option<String>,
    pub prefix: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub headers: Option<String>,
    pub client_header_timeout_ms: Option<u64>,
    pub admin_max_connections: Option<usize>,
    pub admin_token: Option<String>,
    pub admin_auth: Option<String>,
    pub admin_cors_origins: Option<String>,
    pub admin_server_names: Option<String>,
    pub tracing_endpoint: Option<String>,
    pub tracing_sampling_rate: Option<f64>,
    pub tracing_service_name: Option<String>,
    pub metrics_otlp_interval_ms: Option<u64>,
}

pub use gatehouse_shared::lookup::{Env, Lookup};

/// A listener address, or `off`.
pub type Listen = Option<SocketAddr>;

#[derive(Clone)]
pub struct Config {
    pub admin_listen: Listen,
    pub admin_ssl_listen: Listen,
    pub admin_ssl_cert: Option<PathBuf>,
    pub admin_ssl_cert_key: Option<PathBuf>,
    pub cluster_listen: Listen,
    /// Whether `cluster_listen` was set (file or environment) rather than defaulted:
    /// `standalone` opens a cluster listener only when asked to.
    pub cluster_listen_explicit: bool,
    pub cluster_tls: ClusterTls,
    pub sync: SyncSettings,
    pub database_url: String,
    pub prefix: PathBuf,
    pub log_level: String,
    pub log_json: bool,
    /// Kong's `headers` setting; the Admin API reads its `server` entry.
    pub headers: EnabledHeaders,
    /// How long an Admin API connection may take to send a request head, or stay idle between
    /// requests, before it is closed (nginx's `client_header_timeout`).
    pub client_header_timeout: std::time::Duration,
    /// Admin API connections served at once; more are answered 503 and closed.
    pub admin_max_connections: usize,
    pub admin_security: AdminSecurity,
    /// `admin_auth = off`: the operator accepts an unauthenticated Admin API off loopback.
    pub admin_auth_off: bool,
    /// Traces and OTLP metrics (off unless an endpoint is set).
    pub telemetry: gatehouse_shared::telemetry::Settings,
}

/// Who may use the Admin API, and from which web pages.
#[derive(Debug, Clone, Default)]
pub struct AdminSecurity {
    /// Requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Origins whose pages may read answers (`Access-Control-Allow-Origin`); none by default.
    pub cors_origins: Vec<String>,
    /// Host names besides loopback ones accepted while no token is required.
    pub server_names: Vec<String>,
}

impl Config {
    /// Refuses an Admin API reachable from other hosts with no authentication, unless
    /// `admin_auth = off` says so explicitly.
    ///
    /// # Errors
    /// The refusal, naming what to set.
    pub fn check_admin_exposure(&self) -> Result<(), String> {
        let exposed = [self.admin_listen, self.admin_ssl_listen].into_iter().flatten().find(|a| !a.ip().is_loopback());
        match exposed {
            Some(addr) if self.admin_security.token.is_none() && !self.admin_auth_off => Err(format!(
                "the Admin API would listen on {addr}, reachable from other hosts, without authentication: \
                 set admin_token (GATEHOUSE_ADMIN_TOKEN), or admin_auth = off to allow it"
            )),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("admin_listen", &self.admin_listen)
            .field("admin_ssl_listen", &self.admin_ssl_listen)
            .field("cluster_listen", &self.cluster_listen)
            .field("database_url", &redact(&self.database_url))
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced by `******`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("******"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn listen(key: &'static str, value: &str) -> Result<Listen, ConfigError> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: "expected host:port or off",
    })
}

impl Config {
    /// Reads the optional file, applies `GATEHOUSE_*` overrides from `env`, and validates.
    ///
    /// # Errors
    /// An unreadable or invalid file, or a value that does not parse, naming the key.
    pub fn load(file: Option<&std::path::Path>, env: &dyn Lookup) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                toml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(source) })?
            }
            None => RawConfig::default(),
        };
        Config::from_raw(raw, env)
    }

    fn from_raw(raw: RawConfig, env: &dyn Lookup) -> Result<Config, ConfigError> {
        let pick = |key: &str, file: Option<String>, default: &str| {
            env.get(&format!("GATEHOUSE_{}", key.to_ascii_uppercase())).or(file).unwrap_or_else(|| default.to_string())
        };
        let path = |key: &str, file: Option<PathBuf>| {
            env.get(&format!("GATEHOUSE_{}", key.to_ascii_uppercase())).map(PathBuf::from).or(file)
        };
        let telemetry = gatehouse_shared::telemetry::Settings::parse(
            env.get("GATEHOUSE_TRACING_ENDPOINT").or(raw.tracing_endpoint),
            env.get("GATEHOUSE_TRACING_SAMPLING_RATE").or(raw.tracing_sampling_rate.map(|r| r.to_string())),
            env.get("GATEHOUSE_TRACING_SERVICE_NAME").or(raw.tracing_service_name),
            env.get("GATEHOUSE_METRICS_OTLP_INTERVAL_MS").or(raw.metrics_otlp_interval_ms.map(|m| m.to_string())),
            "gatehouse-cp",
        )
        .map_err(|e| ConfigError::Invalid { key: e.key, value: e.value, reason: e.reason })?;
        let format = pick("log_format", raw.log_format, "text");
        if format != "text" && format != "json" {
            return Err(ConfigError::Invalid { key: "log_format", value: format, reason: "expected text or json" });
        }
        let database_url = pick("database_url", raw.database_url, "sqlite://gatehouse.db");
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            return Err(ConfigError::Invalid {
                key: "database_url",
                value: redact(&database_url),
                reason: "expected sqlite://… or postgres://…",
            });
        }
        let mtls = pick("cluster_mtls", raw.cluster_mtls, "shared");
        let mode: MtlsMode = mtls.parse().map_err(|_| ConfigError::Invalid {
            key: "cluster_mtls",
            value: mtls.clone(),
            reason: "expected shared, pki or off",
        })?;
        let number = |key: &'static str, file: Option<i64>, default: i64| -> Result<i64, ConfigError> {
            match env.get(&format!("GATEHOUSE_{}", key.to_ascii_uppercase())) {
                Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
                    key,
                    value: v,
                    reason: "expected a positive integer",
                }),
                None => Ok(file.unwrap_or(default)),
            }
        };
        let headers = pick("headers", raw.headers, enabled_headers::DEFAULT);
        let headers = headers.parse().map_err(|e: enabled_headers::InvalidEntry| ConfigError::Invalid {
            key: "headers",
            value: e.0,
            reason: enabled_headers::EXPECTED,
        })?;
        let cluster_listen_explicit = env.get("GATEHOUSE_CLUSTER_LISTEN").is_some() || raw.cluster_listen.is_some();
        let list = |key: &str, file: Option<String>| -> Vec<String> {
            pick(key, file, "").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        };
        let admin_security = AdminSecurity {
            token: env.get("GATEHOUSE_ADMIN_TOKEN").or(raw.admin_token).filter(|t| !t.is_empty()),
            cors_origins: list("admin_cors_origins", raw.admin_cors_origins),
            server_names: list("admin_server_names", raw.admin_server_names)
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        };
        let admin_auth = pick("admin_auth", raw.admin_auth, "on");
        if admin_auth != "on" && admin_auth != "off" {
            return Err(ConfigError::Invalid { key: "admin_auth", value: admin_auth, reason: "expected on or off" });
        }
        let header_timeout =
            number("client_header_timeout_ms", raw.client_header_timeout_ms.map(|n| n as i64), 60_000)?;
        let max_connections =
            number("admin_max_connections", raw.admin_max_connections.map(|n| n as i64), 1024)? as usize;
        let defaults = SyncSettings::default();
        let sync = SyncSettings {
            retention: number("cluster_changelog_retention", raw.cluster_changelog_retention, defaults.retention)?,
            max_snapshots: number(
                "cluster_max_snapshots",
                raw.cluster_max_snapshots.map(|n| n as i64),
                defaults.max_snapshots as i64,
            )? as usize,
            ..defaults
        };
        Ok(Config {
            admin_listen: listen("admin_listen", &pick("admin_listen", raw.admin_listen, "127.0.0.1:8001"))?,
            admin_ssl_listen: listen(
                "admin_ssl_listen",
                &pick("admin_ssl_listen", raw.admin_ssl_listen, "127.0.0.1:8444"),
            )?,
            admin_ssl_cert: path("admin_ssl_cert", raw.admin_ssl_cert),
            admin_ssl_cert_key: path("admin_ssl_cert_key", raw.admin_ssl_cert_key),
            cluster_listen: listen("cluster_listen", &pick("cluster_listen", raw.cluster_listen, "0.0.0.0:8005"))?,
            cluster_listen_explicit,
            cluster_tls: ClusterTls {
                mode,
                cert: path("cluster_cert", raw.cluster_cert),
                key: path("cluster_cert_key", raw.cluster_cert_key),
                ca: path("cluster_ca_cert", raw.cluster_ca_cert),
            },
            sync,
            database_url,
            prefix: path("prefix", raw.prefix).unwrap_or_else(|| PathBuf::from(".gatehouse")),
            log_level: pick("log_level", raw.log_level, "info"),
            log_json: format == "json",
            headers,
            client_header_timeout: std::time::Duration::from_millis(header_timeout as u64),
            admin_max_connections: max_connections,
            admin_auth_off: admin_auth == "off",
            admin_security,
            telemetry,
        })
    }

    /// The configuration as `GET /` shows it (Kong's `configuration`), secrets redacted.
    pub fn to_json(&self) -> serde_json::Value {
        let show = |l: &Listen| l.map_or_else(|| "off".to_string(), |a| a.to_string());
        serde_json::json!({
            "admin_listen": show(&self.admin_listen),
            "admin_ssl_listen": show(&self.admin_ssl_listen),
            "admin_ssl_enabled": self.admin_ssl_listen.is_some(),
            "cluster_listen": show(&self.cluster_listen),
            "cluster_mtls": format!("{:?}", self.cluster_tls.mode).to_ascii_lowercase(),
            "cluster_changelog_retention": self.sync.retention,
            "database": if self.database_url.starts_with("sqlite") { "sqlite" } else { "postgres" },
            "database_url": redact(&self.database_url),
            "prefix": self.prefix.display().to_string(),
            "log_level": self.log_level,
            "log_format": if self.log_json { "json" } else { "text" },
            "enabled_headers": {
                "Server": self.headers.server,
                "Via": self.headers.via,
                "X-Kong-Proxy-Latency": self.headers.proxy_latency,
                "X-Kong-Upstream-Latency": self.headers.upstream_latency,
                "X-Kong-Upstream-Status": self.headers.upstream_status,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_kong_like() {
        let c = Config::from_raw(RawConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.admin_listen, Some("127.0.0.1:8001".parse().unwrap()));
        assert_eq!(c.admin_ssl_listen, Some("127.0.0.1:8444".parse().unwrap()));
        assert_eq!(c.cluster_listen, Some("0.0.0.0:8005".parse().unwrap()));
        assert!(!c.cluster_listen_explicit);
        let c = Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_CLUSTER_LISTEN", "off")])).unwrap();
        assert!(c.cluster_listen_explicit);
        assert_eq!(c.database_url, "sqlite://gatehouse.db");
    }

    #[test]
    fn environment_wins_over_file_and_off_disables() {
        let raw: RawConfig = toml::from_str("admin_listen = \"127.0.0.1:9001\"\nadmin_ssl_listen = \"off\"").unwrap();
        let c = Config::from_raw(raw, &env(&[("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:9002")])).unwrap();
        assert_eq!(c.admin_listen, Some("127.0.0.1:9002".parse().unwrap()));
        assert_eq!(c.admin_ssl_listen, None);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_ADMIN_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("admin_listen"));
        assert!(toml::from_str::<RawConfig>("admin_lisen = \"x\"").is_err());
        let e = Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_HEADERS", "server, bogus")])).unwrap_err();
        assert!(e.to_string().contains("headers") && e.to_string().contains("'bogus'"), "{e}");
    }

    #[test]
    fn the_admin_api_reads_the_headers_setting() {
        assert!(Config::from_raw(RawConfig::default(), &env(&[])).unwrap().headers.server);
        let raw: RawConfig = toml::from_str("headers = \"latency_tokens\"").unwrap();
        assert!(!Config::from_raw(raw, &env(&[])).unwrap().headers.server);
    }

    #[test]
    fn debug_redacts_the_database_password() {
        let c = Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_DATABASE_URL", "postgres://u:secret@db/x")]))
            .unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
