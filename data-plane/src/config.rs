//! Data-plane configuration: an optional TOML file, then `GATEHOUSE_*` environment overrides,
//! then typed validation. The data plane needs no database: only where its control plane is,
//! its TLS material, and a directory for the configuration cache.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_shared::enabled_headers::{self, EnabledHeaders};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid value for {key}: '{value}' ({reason})")]
    Invalid { key: &'static str, value: String, reason: &'static str },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub cluster_control_plane: Option<String>,
    pub proxy_listen: Option<String>,
    pub proxy_ssl_listen: Option<String>,
    pub proxy_workers: Option<usize>,
    pub proxy_busy_poll: Option<String>,
    pub proxy_metrics: Option<String>,
    pub ssl_cert: Option<PathBuf>,
    pub ssl_cert_key: Option<PathBuf>,
    pub trusted_ips: Option<String>,
    pub headers: Option<String>,
    pub cluster_mtls: Option<String>,
    pub cluster_cert: Option<PathBuf>,
    pub cluster_cert_key: Option<PathBuf>,
    pub cluster_ca_cert: Option<PathBuf>,
    pub cluster_server_name: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub status_listen: Option<String>,
    pub client_header_timeout_ms: Option<u64>,
    pub node_id: Option<String>,
    pub plugins: Option<String>,
    pub status_interval_ms: Option<u64>,
    pub backoff_min_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub tracing_endpoint: Option<String>,
    pub tracing_sampling_rate: Option<f64>,
    pub tracing_service_name: Option<String>,
    pub metrics_otlp_interval_ms: Option<u64>,
}

pub use gatehouse_shared::lookup::{Env, Lookup};

/// Builds the configuration a DB-less data plane serves, numbered with the revision given.
pub type BuildSet = dyn Fn(
        i64,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<gatehouse_shared::snapshot::ConfigSet>> + Send>,
    > + Send
    + Sync;

/// A DB-less data plane's configuration source (a declarative file, read by the caller).
#[derive(Clone)]
pub struct Declarative(pub std::sync::Arc<BuildSet>);

impl std::fmt::Debug for Declarative {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Declarative")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtls {
    Shared,
    Pki,
    Off,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub proxy_listen: Option<SocketAddr>,
    pub proxy_ssl_listen: Option<SocketAddr>,
    /// Proxy worker threads, each with its own listening socket (default: one per core).
    pub proxy_workers: Option<usize>,
    /// Whether a saturated worker polls for events instead of sleeping (`crate::busy_poll`).
    pub proxy_busy_poll: bool,
    /// Whether the proxy counts requests for `/metrics` (`crate::metrics`; on by default).
    pub proxy_metrics: bool,
    /// The default certificate (when no SNI matches); self-signed when unset.
    pub ssl_cert: Option<PathBuf>,
    pub ssl_cert_key: Option<PathBuf>,
    /// Peers whose X-Forwarded-* / X-Real-IP headers are trusted.
    pub trusted_ips: Vec<crate::ip_net::IpNet>,
    /// Kong's `headers` setting: which of Server, Via and the latency headers are sent.
    pub headers: EnabledHeaders,
    /// `host:port` of a control plane's cluster listener.
    pub control_plane: String,
    /// An in-process link to the control plane, used instead of `control_plane` (and of
    /// mTLS) by the data plane that `gatehouse-cp standalone` embeds. Never read from a file.
    pub link: Option<gatehouse_shared::link::Link>,
    /// A DB-less data plane's source: it serves what this builds (at start and on SIGHUP)
    /// and follows no control plane. Never read from a file.
    pub declarative: Option<Declarative>,
    pub mtls: Mtls,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub server_name: String,
    pub cache_dir: PathBuf,
    pub status_listen: Option<SocketAddr>,
    /// How long a status connection may take to send a head, or stay idle between requests.
    pub client_header_timeout: Duration,
    pub node_id: Option<String>,
    /// Plugins this data plane can run; a config using another one is refused (NACK).
    pub plugins: Vec<String>,
    pub status_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub log_level: String,
    pub log_json: bool,
    /// Traces and OTLP metrics (off unless an endpoint is set).
    pub telemetry: gatehouse_shared::telemetry::Settings,
}

impl Config {
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
        let var = |key: &str| env.get(&format!("GATEHOUSE_{}", key.to_ascii_uppercase()));
        let pick = |key: &str, file: Option<String>, default: &str| var(key).or(file).unwrap_or_else(|| default.into());
        let path = |key: &str, file: Option<PathBuf>| var(key).map(PathBuf::from).or(file);
        let millis = |key: &'static str, file: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            let v = match var(key) {
                Some(v) => {
                    v.parse().map_err(|_| ConfigError::Invalid { key, value: v, reason: "expected milliseconds" })?
                }
                None => file.unwrap_or(default),
            };
            Ok(Duration::from_millis(v.max(1)))
        };
        let mtls = match pick("cluster_mtls", raw.cluster_mtls, "shared").as_str() {
            "shared" => Mtls::Shared,
            "pki" => Mtls::Pki,
            "off" => Mtls::Off,
            other => {
                return Err(ConfigError::Invalid {
                    key: "cluster_mtls",
                    value: other.into(),
                    reason: "expected shared, pki or off",
                })
            }
        };
        let listen = |key: &'static str, value: String| -> Result<Option<SocketAddr>, ConfigError> {
            if value.eq_ignore_ascii_case("off") {
                return Ok(None);
            }
            value.parse().map(Some).map_err(|_| ConfigError::Invalid {
                key,
                value,
                reason: "expected host:port or off",
            })
        };
        let status_listen = listen("status_listen", pick("status_listen", raw.status_listen, "127.0.0.1:8100"))?;
        let proxy_listen = listen("proxy_listen", pick("proxy_listen", raw.proxy_listen, "0.0.0.0:8000"))?;
        let proxy_ssl_listen =
            listen("proxy_ssl_listen", pick("proxy_ssl_listen", raw.proxy_ssl_listen, "0.0.0.0:8443"))?;
        let proxy_workers = match var("proxy_workers") {
            Some(v) => Some(v.parse().ok().filter(|n: &usize| *n > 0).ok_or(ConfigError::Invalid {
                key: "proxy_workers",
                value: v,
                reason: "expected a positive integer",
            })?),
            None => raw.proxy_workers,
        };
        let proxy_busy_poll = match pick("proxy_busy_poll", raw.proxy_busy_poll, "on").as_str() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError::Invalid {
                    key: "proxy_busy_poll",
                    value: other.into(),
                    reason: "expected on or off",
                })
            }
        };
        let proxy_metrics = match pick("proxy_metrics", raw.proxy_metrics, "on").as_str() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError::Invalid {
                    key: "proxy_metrics",
                    value: other.into(),
                    reason: "expected on or off",
                })
            }
        };
        let trusted_ips = pick("trusted_ips", raw.trusted_ips, "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| ConfigError::Invalid {
                    key: "trusted_ips",
                    value: s.to_string(),
                    reason: "expected IP addresses or CIDR ranges",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = pick("headers", raw.headers, enabled_headers::DEFAULT).parse().map_err(
            |e: enabled_headers::InvalidEntry| ConfigError::Invalid {
                key: "headers",
                value: e.0,
                reason: enabled_headers::EXPECTED,
            },
        )?;
        let plugins = pick("plugins", raw.plugins, "bundled");
        let plugins = plugins
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .flat_map(|p| {
                if p == "bundled" {
                    gatehouse_shared::schema::enabled_names().iter().map(|s| s.to_string()).collect()
                } else {
                    vec![p.to_string()]
                }
            })
            .collect();
        let format = pick("log_format", raw.log_format, "text");
        let telemetry = gatehouse_shared::telemetry::Settings::parse(
            var("tracing_endpoint").or(raw.tracing_endpoint),
            var("tracing_sampling_rate").or(raw.tracing_sampling_rate.map(|r| r.to_string())),
            var("tracing_service_name").or(raw.tracing_service_name),
            var("metrics_otlp_interval_ms").or(raw.metrics_otlp_interval_ms.map(|m| m.to_string())),
            "gatehouse-dp",
        )
        .map_err(|e| ConfigError::Invalid { key: e.key, value: e.value, reason: e.reason })?;
        Ok(Config {
            proxy_listen,
            proxy_ssl_listen,
            proxy_workers,
            proxy_busy_poll,
            proxy_metrics,
            ssl_cert: path("ssl_cert", raw.ssl_cert),
            ssl_cert_key: path("ssl_cert_key", raw.ssl_cert_key),
            trusted_ips,
            headers,
            control_plane: pick("cluster_control_plane", raw.cluster_control_plane, "127.0.0.1:8005"),
            link: None,
            declarative: None,
            mtls,
            cert: path("cluster_cert", raw.cluster_cert),
            key: path("cluster_cert_key", raw.cluster_cert_key),
            ca: path("cluster_ca_cert", raw.cluster_ca_cert),
            server_name: pick("cluster_server_name", raw.cluster_server_name, "gatehouse-cluster"),
            cache_dir: path("cache_dir", raw.cache_dir).unwrap_or_else(|| PathBuf::from(".gatehouse-dp")),
            status_listen,
            client_header_timeout: millis("client_header_timeout_ms", raw.client_header_timeout_ms, 60_000)?,
            node_id: var("node_id").or(raw.node_id),
            plugins,
            status_interval: millis("status_interval_ms", raw.status_interval_ms, 10_000)?,
            backoff_min: millis("backoff_min_ms", raw.backoff_min_ms, 200)?,
            backoff_max: millis("backoff_max_ms", raw.backoff_max_ms, 30_000)?,
            log_level: pick("log_level", raw.log_level, "info"),
            log_json: format == "json",
            telemetry,
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
    fn defaults_and_overrides() {
        let c = Config::from_raw(RawConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.control_plane, "127.0.0.1:8005");
        assert_eq!(c.mtls, Mtls::Shared);
        assert_eq!(c.plugins, gatehouse_shared::schema::enabled_names(), "bundled: every enabled plugin");
        let c = Config::from_raw(
            RawConfig::default(),
            &env(&[("GATEHOUSE_PLUGINS", "key-auth,acl"), ("GATEHOUSE_STATUS_LISTEN", "off")]),
        )
        .unwrap();
        assert_eq!(c.plugins, vec!["key-auth", "acl"]);
        assert!(c.status_listen.is_none());
        assert!(Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_CLUSTER_MTLS", "maybe")])).is_err());
    }

    #[test]
    fn busy_polling_is_on_unless_turned_off() {
        assert!(Config::from_raw(RawConfig::default(), &env(&[])).unwrap().proxy_busy_poll);
        let off = env(&[("GATEHOUSE_PROXY_BUSY_POLL", "off")]);
        assert!(!Config::from_raw(RawConfig::default(), &off).unwrap().proxy_busy_poll);
        let raw = RawConfig { proxy_busy_poll: Some("off".into()), ..RawConfig::default() };
        assert!(!Config::from_raw(raw, &env(&[])).unwrap().proxy_busy_poll);
        let bad = Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_PROXY_BUSY_POLL", "sometimes")]));
        assert!(bad.unwrap_err().to_string().contains("proxy_busy_poll"));
    }

    #[test]
    fn headers_come_from_the_file_or_environment_and_refuse_unknown_entries() {
        let c = Config::from_raw(RawConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.headers, EnabledHeaders::default());
        let raw = RawConfig { headers: Some("via".into()), ..RawConfig::default() };
        assert_eq!(
            Config::from_raw(raw, &env(&[])).unwrap().headers,
            EnabledHeaders { via: true, ..EnabledHeaders::NONE }
        );
        let off = env(&[("GATEHOUSE_HEADERS", "off")]);
        assert_eq!(Config::from_raw(RawConfig::default(), &off).unwrap().headers, EnabledHeaders::NONE);
        let bad = Config::from_raw(RawConfig::default(), &env(&[("GATEHOUSE_HEADERS", "server, x-powered-by")]));
        let message = bad.unwrap_err().to_string();
        assert!(message.contains("headers") && message.contains("'x-powered-by'"), "{message}");
    }
}
